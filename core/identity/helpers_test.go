package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	testTD  = spiffeid.RequireTrustDomainFromString("example.test")
	otherTD = spiffeid.RequireTrustDomainFromString("other.test")
)

// fakeClock is a Clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testCA makes a CA for td in a fresh directory.
func testCA(t *testing.T, td spiffeid.TrustDomain, clock Clock) *CA {
	t.Helper()
	ca, err := InitCA(t.TempDir(), td, CAOptions{Clock: clock})
	if err != nil {
		t.Fatalf("InitCA: %v", err)
	}
	return ca
}

// nodeCreds makes a key and a certificate for node name from ca.
func nodeCreds(t *testing.T, ca *CA, name string, ttl time.Duration) *Credentials {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.IssueNode(name, key.Public(), ttl)
	if err != nil {
		t.Fatalf("IssueNode(%s): %v", name, err)
	}
	return NewCredentials(key, chain)
}

// pool returns a pool holding ca's certificate.
func pool(ca *CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Certificate())
	return p
}

// accepted is what the test server learned from one connection.
type accepted struct {
	name   string   // PeerNode
	serial *big.Int // the client's leaf serial
	proto  string
	err    error // the server's handshake or PeerNode error
}

// serve runs a TLS echo server with cfg on 127.0.0.1 and reports every
// accepted connection on the returned channel.
func serve(t *testing.T, cfg *tls.Config) (string, <-chan accepted) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan accepted, 256)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				tc := tls.Server(c, cfg)
				defer tc.Close()
				if err := tc.Handshake(); err != nil {
					out <- accepted{err: err}
					return
				}
				cs := tc.ConnectionState()
				name, err := PeerNode(cs, testTD)
				out <- accepted{name: name, serial: cs.PeerCertificates[0].SerialNumber, proto: cs.NegotiatedProtocol, err: err}
				_, _ = io.Copy(tc, tc)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), out
}

// dial connects to addr with cfg and completes the client's handshake.
func dial(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	// A guard against hanging, not a speed expectation.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c.(*tls.Conn), nil
}

// next returns the server's report on the next connection.
func next(t *testing.T, ch <-chan accepted) accepted {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(time.Minute): // a hang guard
		t.Fatal("server reported no connection")
		return accepted{}
	}
}

// echo sends msg over c and checks it comes back.
func echo(t *testing.T, c *tls.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read echo of %q: %v", msg, err)
	}
	if string(buf) != msg {
		t.Fatalf("echo = %q, want %q", buf, msg)
	}
}

// wantErr checks err matches kind and its message contains each of parts.
func wantErr(t *testing.T, err, kind error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", kind)
	}
	if kind != nil && !errors.Is(err, kind) {
		t.Errorf("error %q does not match %v", err, kind)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}
