package fabric

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"log/slog"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/celluster/celluster/core/identity"
)

// The fabric with core/identity's TLS configurations (RequireAnyClientCert
// and InsecureSkipVerify with SPIFFE verification in VerifyConnection): the
// configuration a node runs with. The rest of the tests use a PKI of their
// own so they do not depend on core/identity.
func TestWithIdentityConfigs(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.test")
	ca, err := identity.InitCA(t.TempDir(), td, identity.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rogueCA, err := identity.InitCA(t.TempDir(), td, identity.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start := func(name string, issuer *identity.CA) (*Fabric, *logRecorder) {
		t.Helper()
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		chain, err := issuer.IssueNode(name, key.Public(), 0)
		if err != nil {
			t.Fatal(err)
		}
		creds := identity.NewCredentials(key, chain)
		logs := newLogRecorder()
		f, err := Listen(t.Context(), Config{
			Addr:       "127.0.0.1:0",
			Node:       name,
			TLSServer:  func() *tls.Config { return identity.ServerConfig(creds, ca.Bundle(), td, nil) },
			TLSClient:  func() *tls.Config { return identity.ClientConfig(creds, ca.Bundle(), td, nil) },
			VerifyPeer: func(cs tls.ConnectionState) (string, error) { return identity.PeerNode(cs, td) },
			Logger:     slog.New(logs),
		})
		if err != nil {
			t.Fatalf("Listen %s: %v", name, err)
		}
		t.Cleanup(func() { f.Close() })
		return f, logs
	}
	a, alogs := start("a", ca)
	b, _ := start("b", ca)
	b.HandleRequest(typeEcho, 0, echo)
	p, err := a.Dial(t.Context(), b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p.Request(t.Context(), typeEcho, []byte("hi")); err != nil || string(got) != "a:HI" {
		t.Fatalf("Request = %q, %v", got, err)
	}

	// A node certified by another CA (trusting the real one) is refused, and
	// the listener logs identity's reason.
	rogue, _ := start("rogue", rogueCA)
	if _, err := rogue.Dial(t.Context(), a.Addr().String()); err == nil || !strings.Contains(err.Error(), "peer refused the handshake") {
		t.Fatalf("rogue Dial = %v, want refusal", err)
	}
	if _, ok := alogs.find("refused peer", "spiffe://example.test/node/rogue", "another CA"); !ok {
		t.Fatal("listener did not log identity's refusal")
	}
}
