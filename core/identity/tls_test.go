package identity

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// pair makes server and client TLS configs for nodes "server" and "client"
// of ca, verifying with clk.
func pair(t *testing.T, ca *CA, clk *fakeClock) (srv, cli *Credentials, srvCfg, cliCfg *tls.Config) {
	srv = nodeCreds(t, ca, "server", 0)
	cli = nodeCreds(t, ca, "client", 0)
	return srv, cli, ServerConfig(srv, ca.Bundle(), testTD, clk.Now), ClientConfig(cli, ca.Bundle(), testTD, clk.Now)
}

func TestTLSConfigs(t *testing.T) {
	clk := newFakeClock()
	ca := testCA(t, testTD, clk.Now)
	_, _, s, c := pair(t, ca, clk)
	for name, cfg := range map[string]*tls.Config{"server": s, "client": c} {
		if cfg.MinVersion != tls.VersionTLS13 || cfg.MaxVersion != tls.VersionTLS13 {
			t.Errorf("%s: versions %x..%x, want TLS 1.3 only", name, cfg.MinVersion, cfg.MaxVersion)
		}
		if len(cfg.NextProtos) != 1 || cfg.NextProtos[0] != ALPN {
			t.Errorf("%s: NextProtos %v", name, cfg.NextProtos)
		}
		if cfg.VerifyConnection == nil {
			t.Errorf("%s: no VerifyConnection", name)
		}
	}
	if s.ClientAuth != tls.RequireAnyClientCert {
		t.Errorf("server ClientAuth %v", s.ClientAuth)
	}
}

func TestHandshakeBetweenNodes(t *testing.T) {
	clk := newFakeClock()
	ca := testCA(t, testTD, clk.Now)
	_, cli, srvCfg, cliCfg := pair(t, ca, clk)
	addr, accepted := serve(t, srvCfg)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("listening on %s", addr)
	}

	conn, err := dial(t, addr, cliCfg)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	a := next(t, accepted)
	if a.err != nil {
		t.Fatalf("server: %v", a.err)
	}
	if a.name != "client" || a.serial.Cmp(cli.Leaf().SerialNumber) != 0 {
		t.Errorf("server sees peer %q serial %x, want client %x", a.name, a.serial, cli.Leaf().SerialNumber)
	}
	cs := conn.ConnectionState()
	if name, err := PeerNode(cs, testTD); err != nil || name != "server" {
		t.Errorf("client PeerNode = %q, %v; want server", name, err)
	}
	if cs.Version != tls.VersionTLS13 || cs.NegotiatedProtocol != ALPN || a.proto != ALPN {
		t.Errorf("version %x, protocols %q/%q", cs.Version, cs.NegotiatedProtocol, a.proto)
	}
	if _, err := PeerNode(cs, otherTD); !errors.Is(err, ErrTrustDomain) {
		t.Errorf("PeerNode for another trust domain: %v", err)
	}
	echo(t, conn, "hello")
}

// TestHandshakeRefusals: the server refuses client certificates that are
// not nodes of its trust domain, saying why.
func TestHandshakeRefusals(t *testing.T) {
	clk := newFakeClock()
	ca := testCA(t, testTD, clk.Now)
	otherCA := testCA(t, testTD, clk.Now)    // same trust domain, another key
	otherTDCA := testCA(t, otherTD, clk.Now) // another trust domain

	cellKey, _ := NewKey()
	cellID, _ := CellID(testTD, "web")
	cellChain, err := ca.issue(cellID, "web", cellKey.Public(), 0)
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name  string
		creds *Credentials
		skew  time.Duration // how far the server's clock is ahead
		kind  error
		says  []string
	}{
		{"another CA", nodeCreds(t, otherCA, "client", 0), 0, ErrOtherCA,
			[]string{"peer spiffe://example.test/node/client refused", "peer certificate from another CA"}},
		{"another trust domain", nodeCreds(t, otherTDCA, "client", 0), 0, ErrTrustDomain,
			[]string{"trust domain other.test, want example.test"}},
		{"expired", nodeCreds(t, ca, "client", time.Hour), 2 * time.Hour, ErrExpired,
			[]string{"certificate expired at 2030-01-01T01:00:00Z (now 2030-01-01T02:00:00Z)"}},
		{"not yet valid", nodeCreds(t, ca, "client", time.Hour), -time.Hour, ErrNotYetValid,
			[]string{"not valid before 2029-12-31T23:59:00Z"}},
		{"cell ID", NewCredentials(cellKey, cellChain), 0, ErrNotNodeID,
			[]string{"peer spiffe://example.test/cell/web refused: not a node ID"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			srvClk := newFakeClock()
			srvClk.Advance(c.skew)
			srv := nodeCreds(t, ca, "server", 0)
			addr, accepted := serve(t, ServerConfig(srv, ca.Bundle(), testTD, srvClk.Now))

			conn, err := dial(t, addr, ClientConfig(c.creds, ca.Bundle(), testTD, clk.Now))
			a := next(t, accepted)
			t.Logf("server: %v", a.err)
			wantErr(t, a.err, c.kind, c.says...)
			// TLS 1.3 clients finish their handshake before the server
			// checks them; the refusal shows up on the first read.
			if err == nil {
				if _, err = conn.Read(make([]byte, 1)); err == nil {
					t.Fatal("refused client could read")
				}
			}
			if !strings.Contains(err.Error(), "bad certificate") {
				t.Errorf("client error %q, want a bad certificate alert", err)
			}
		})
	}
}

// TestClientRefusesServer: the client verifies the server just the same.
func TestClientRefusesServer(t *testing.T) {
	clk := newFakeClock()
	ca := testCA(t, testTD, clk.Now)
	otherCA := testCA(t, testTD, clk.Now)
	impostor := nodeCreds(t, otherCA, "server", 0)
	// The impostor's server trusts everyone from its own CA.
	addr, accepted := serve(t, ServerConfig(impostor, otherCA.Bundle(), testTD, clk.Now))
	cli := nodeCreds(t, ca, "client", 0)
	_, err := dial(t, addr, ClientConfig(cli, ca.Bundle(), testTD, clk.Now))
	wantErr(t, err, ErrOtherCA, "peer spiffe://example.test/node/server refused: peer certificate from another CA")
	if a := next(t, accepted); a.err == nil || !strings.Contains(a.err.Error(), "bad certificate") {
		t.Errorf("server: %v, want a bad certificate alert", a.err)
	}

	// An expired server is refused per the client's clock.
	srv := nodeCreds(t, ca, "server", time.Hour)
	addr, _ = serve(t, ServerConfig(srv, ca.Bundle(), testTD, clk.Now))
	late := newFakeClock()
	late.Advance(90 * time.Minute)
	_, err = dial(t, addr, ClientConfig(cli, ca.Bundle(), testTD, late.Now))
	wantErr(t, err, ErrExpired, "expired at 2030-01-01T01:00:00Z")
}

// TestRenewalKeepsConnections: Renew swaps the certificate for new
// handshakes while an established connection keeps working.
func TestRenewalKeepsConnections(t *testing.T) {
	clk := newFakeClock()
	ca := testCA(t, testTD, clk.Now)
	srv, cli, srvCfg, cliCfg := pair(t, ca, clk)
	addr, accepted := serve(t, srvCfg)

	long, err := dial(t, addr, cliCfg)
	if err != nil {
		t.Fatal(err)
	}
	if a := next(t, accepted); a.err != nil {
		t.Fatal(a.err)
	}
	echo(t, long, "before")
	oldSrv := long.ConnectionState().PeerCertificates[0].SerialNumber

	clk.Advance(45 * time.Minute)
	if !srv.NeedsRenewal(clk.Now()) || !cli.NeedsRenewal(clk.Now()) {
		t.Fatal("credentials do not need renewal at 3/4 of their life")
	}
	for _, c := range []struct {
		creds *Credentials
		name  string
	}{{srv, "server"}, {cli, "client"}} {
		chain, err := ca.IssueNode(c.name, c.creds.Key().Public(), 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.creds.Renew(chain); err != nil {
			t.Fatal(err)
		}
	}
	echo(t, long, "during")

	// The old certificates expire; the long connection does not care.
	clk.Advance(30 * time.Minute)
	echo(t, long, "after the old certificates expired")

	fresh, err := dial(t, addr, cliCfg)
	if err != nil {
		t.Fatal(err)
	}
	a := next(t, accepted)
	if a.err != nil {
		t.Fatal(a.err)
	}
	if got := fresh.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(srv.Leaf().SerialNumber) != 0 || got.Cmp(oldSrv) == 0 {
		t.Errorf("new handshake sees server serial %x, want the renewed %x", got, srv.Leaf().SerialNumber)
	}
	if a.serial.Cmp(cli.Leaf().SerialNumber) != 0 {
		t.Errorf("server sees client serial %x, want the renewed %x", a.serial, cli.Leaf().SerialNumber)
	}
	echo(t, fresh, "fresh")
	echo(t, long, "still")
}

// TestHandshakesDuringRenewal races handshakes against Renew.
func TestHandshakesDuringRenewal(t *testing.T) {
	clk := newFakeClock()
	ca := testCA(t, testTD, clk.Now)
	srv, _, srvCfg, cliCfg := pair(t, ca, clk)
	addr, accepted := serve(t, srvCfg)
	const n = 16
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			c, err := dial(t, addr, cliCfg)
			if err != nil {
				t.Errorf("handshake during renewal: %v", err)
				return
			}
			echo(t, c, "x")
		})
	}
	for range 10 {
		chain, err := ca.IssueNode("server", srv.Key().Public(), 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Renew(chain); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for range n {
		if a := next(t, accepted); a.err != nil || a.name != "client" {
			t.Errorf("server: %q, %v", a.name, a.err)
		}
	}
}

func TestVerifyPeer(t *testing.T) {
	clk := newFakeClock()
	ca := testCA(t, testTD, clk.Now)
	c := nodeCreds(t, ca, "n", time.Hour)
	chain := []*x509.Certificate{c.Leaf()}
	if name, err := VerifyPeer(chain, ca.Bundle(), testTD, clk.Now()); err != nil || name != "n" {
		t.Errorf("VerifyPeer = %q, %v", name, err)
	}
	_, err := VerifyPeer(nil, ca.Bundle(), testTD, clk.Now())
	wantErr(t, err, ErrNoPeerCertificate)
	// The CA certificate itself is no node.
	_, err = VerifyPeer([]*x509.Certificate{ca.Certificate()}, ca.Bundle(), testTD, clk.Now())
	wantErr(t, err, ErrNotSVID)
	_, err = VerifyPeer(chain, nil, testTD, clk.Now())
	wantErr(t, err, ErrOtherCA, "no CA bundle")
	// An expired certificate from another CA is refused for its CA.
	other := testCA(t, testTD, clk.Now)
	oc := nodeCreds(t, other, "n", time.Hour)
	_, err = VerifyPeer([]*x509.Certificate{oc.Leaf()}, ca.Bundle(), testTD, clk.Now().Add(2*time.Hour))
	wantErr(t, err, ErrOtherCA, "from another CA")
	// A certificate with two URI SANs is no X509-SVID.
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		NotBefore:    clk.Now().Add(-time.Minute),
		NotAfter:     clk.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		URIs: []*url.URL{
			spiffeid.RequireFromString("spiffe://example.test/node/a").URL(),
			spiffeid.RequireFromString("spiffe://example.test/node/b").URL(),
		},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, c.Key().Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	two, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	_, err = VerifyPeer([]*x509.Certificate{two}, ca.Bundle(), testTD, clk.Now())
	wantErr(t, err, ErrNotSVID, "more than one URI SAN")
}
