package fabric

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// The test PKI stands in for core/identity: a throwaway CA per trust domain
// and node certificates with exactly one URI SAN, spiffe://TD/node/NAME.

var testTD = spiffeid.RequireTrustDomainFromString("test.local")

type testCA struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t testing.TB, td spiffeid.TrustDomain) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA " + td.Name()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{td: td, cert: cert, key: key}
}

var serial struct {
	sync.Mutex
	n int64
}

func nextSerial() *big.Int {
	serial.Lock()
	defer serial.Unlock()
	serial.n++
	return big.NewInt(serial.n + 1)
}

// issue signs a node certificate for id, valid from notBefore to notAfter.
func (ca *testCA) issue(t testing.TB, id spiffeid.ID, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func (ca *testCA) node(t testing.TB, name string) tls.Certificate {
	t.Helper()
	id, err := spiffeid.FromSegments(ca.td, "node", name)
	if err != nil {
		t.Fatal(err)
	}
	return ca.issue(t, id, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
}

func pool(cas ...*testCA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.cert)
	}
	return p
}

// serverTLS is what identity.ServerConfig gives: TLS 1.3, ALPN, client
// certificates required and verified against the CA.
func serverTLS(cert tls.Certificate, roots *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{ALPN},
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    roots,
	}
}

// clientTLS verifies the server's chain itself: node certificates carry no
// DNS or IP names for crypto/tls's hostname check, only a SPIFFE ID.
func clientTLS(cert tls.Certificate, roots *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{ALPN},
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server sent no certificate")
			}
			opts := x509.VerifyOptions{
				Roots:         roots,
				Intermediates: x509.NewCertPool(),
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
				return fmt.Errorf("server certificate: %w", err)
			}
			return nil
		},
	}
}

// verifyPeer is what identity.PeerNode does: the leaf's single URI SAN must
// be a node ID of the trust domain.
func verifyPeer(td spiffeid.TrustDomain) func(tls.ConnectionState) (string, error) {
	return func(cs tls.ConnectionState) (string, error) {
		if len(cs.PeerCertificates) == 0 {
			return "", errors.New("no peer certificate")
		}
		id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
		if err != nil {
			return "", err
		}
		if id.TrustDomain() != td {
			return "", fmt.Errorf("trust domain %s, want %s", id.TrustDomain(), td)
		}
		name, ok := strings.CutPrefix(id.Path(), "/node/")
		if !ok || name == "" || strings.Contains(name, "/") {
			return "", fmt.Errorf("%s is not a node ID", id)
		}
		return name, nil
	}
}

// logRecorder is a slog.Handler that keeps every record as one line.
type logRecorder struct {
	mu    *sync.Mutex
	lines *[]string
	attrs []slog.Attr
}

func newLogRecorder() *logRecorder {
	return &logRecorder{mu: new(sync.Mutex), lines: new([]string)}
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s", rec.Time.Format("15:04:05.000"), rec.Level, rec.Message)
	for _, a := range r.attrs {
		fmt.Fprintf(&b, " %s=%q", a.Key, a.Value.String())
	}
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%q", a.Key, a.Value.String())
		return true
	})
	r.mu.Lock()
	*r.lines = append(*r.lines, b.String())
	r.mu.Unlock()
	return nil
}

func (r *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{mu: r.mu, lines: r.lines, attrs: append(append([]slog.Attr(nil), r.attrs...), as...)}
}

func (r *logRecorder) WithGroup(string) slog.Handler { return r }

// find returns the first line containing every part.
func (r *logRecorder) find(parts ...string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range *r.lines {
		ok := true
		for _, p := range parts {
			if !strings.Contains(l, p) {
				ok = false
				break
			}
		}
		if ok {
			return l, true
		}
	}
	return "", false
}

func (r *logRecorder) dump(t testing.TB) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range *r.lines {
		t.Log(l)
	}
}

// testNode is one fabric under test with its certificate and log.
type testNode struct {
	*Fabric
	name string
	logs *logRecorder
}

type nodeOpts struct {
	cert  *tls.Certificate // default: issued by ca for name
	trust []*testCA        // default: ca
	node  string           // Config.Node; default name
	mem   Membership
}

func startNode(t testing.TB, ca *testCA, name string, o nodeOpts) *testNode {
	t.Helper()
	cert := ca.node(t, name)
	if o.cert != nil {
		cert = *o.cert
	}
	trust := o.trust
	if trust == nil {
		trust = []*testCA{ca}
	}
	roots := pool(trust...)
	if o.node == "" {
		o.node = name
	}
	logs := newLogRecorder()
	f, err := Listen(t.Context(), Config{
		Addr:        "127.0.0.1:0",
		Node:        o.node,
		TLSServer:   func() *tls.Config { return serverTLS(cert, roots) },
		TLSClient:   func() *tls.Config { return clientTLS(cert, roots) },
		VerifyPeer:  verifyPeer(ca.td),
		Logger:      slog.New(logs),
		DialTimeout: 3 * time.Second,
		Membership:  o.mem,
	})
	if err != nil {
		t.Fatalf("Listen %s: %v", name, err)
	}
	t.Cleanup(func() {
		f.Close()
		if t.Failed() || os.Getenv("FABRIC_TEST_LOGS") != "" { // FABRIC_TEST_LOGS=1 shows the logs of passing tests too
			t.Logf("--- logs of %s", name)
			logs.dump(t)
		}
	})
	return &testNode{Fabric: f, name: name, logs: logs}
}

func (n *testNode) addr() string { return n.Addr().String() }

// eventually polls cond every 10ms until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
