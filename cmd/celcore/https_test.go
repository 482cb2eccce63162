package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/celluster/celluster/core/testbuild"
)

// testTLS is a CA and the files of a server certificate it issued for
// 127.0.0.1.
type testTLS struct {
	ca      *x509.Certificate
	caKey   *ecdsa.PrivateKey
	pool    *x509.CertPool
	cert    string // PEM chain file
	key     string // PEM key file
	serials int64
}

func newTestTLS(t *testing.T) *testTLS {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ingress CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	dir := t.TempDir()
	tt := &testTLS{ca: ca, caKey: key, pool: pool, cert: filepath.Join(dir, "tls.crt"), key: filepath.Join(dir, "tls.key"), serials: 1}
	tt.issue(t, "ingress one")
	return tt
}

// issue writes a new server certificate (CommonName cn) and key, each
// file replaced whole.
func (tt *testTLS) issue(t *testing.T, cn string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tt.serials++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(tt.serials), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tt.ca, &key.PublicKey, tt.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(path, typ string, b []byte) {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(tt.key, "EC PRIVATE KEY", kb)
	write(tt.cert, "CERTIFICATE", der)
}

func (n *proc) httpsAddr() string {
	n.t.Helper()
	for line := range strings.SplitSeq(n.Logs(), "\n") {
		var rec struct {
			Msg   string `json:"msg"`
			HTTPS string `json:"https"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "celcore ready" && rec.HTTPS != "" {
			return rec.HTTPS
		}
	}
	n.t.Fatal("no https address in the ready log line")
	return ""
}

// TestIngressProtocols: one cell answers over HTTP/1.1, h2c, HTTPS with
// HTTP/2 and HTTP/3 (quic-go's client), each seen by the cell as the
// protocol it was; HTTPS answers advertise HTTP/3 with Alt-Svc; a renewed
// certificate is served without a restart, and a broken one is not.
func TestIngressProtocols(t *testing.T) {
	t.Parallel() // one node of its own; waits more than it computes
	tt := newTestTLS(t)
	n := startNode(t, "", "--https", "127.0.0.1:0", "--tls-cert", tt.cert, "--tls-key", tt.key)
	n.drop("whoami", testbuild.Cell(t, "whoami"))
	n.waitStatus("/whoami", 200)
	addr := n.httpsAddr()
	_, port, _ := net.SplitHostPort(addr)

	tlsConf := &tls.Config{RootCAs: tt.pool}
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	h2 := &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true}
	h3 := &http3.Transport{TLSClientConfig: tlsConf}
	defer h2c.CloseIdleConnections()
	defer h2.CloseIdleConnections()
	defer h3.Close()
	cases := []struct {
		name, url, proto, scheme string
		rt                       http.RoundTripper
	}{
		{"HTTP/1.1", n.base + "/whoami", "HTTP/1.1", "http", http.DefaultTransport},
		{"h2c", n.base + "/whoami", "HTTP/2.0", "http", h2c},
		{"HTTPS, HTTP/2", "https://" + addr + "/whoami", "HTTP/2.0", "https", h2},
		{"HTTP/3", "https://" + addr + "/whoami", "HTTP/3.0", "https", h3},
	}
	for _, tc := range cases {
		resp, err := (&http.Client{Transport: tc.rt, Timeout: 30 * time.Second}).Get(tc.url)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var got whoamiReply
		if resp.StatusCode != 200 || json.Unmarshal(b, &got) != nil {
			t.Fatalf("%s: %d %s", tc.name, resp.StatusCode, b)
		}
		if resp.Proto != tc.proto || got.Proto != tc.proto || got.Scheme != tc.scheme {
			t.Errorf("%s: client saw %s, the cell saw %s over %s", tc.name, resp.Proto, got.Proto, got.Scheme)
		}
		alt := resp.Header.Get("Alt-Svc")
		if tc.rt == h2 && !strings.Contains(alt, `h3=":`+port+`"`) { // HTTPS over TCP advertises HTTP/3
			t.Errorf("%s: Alt-Svc %q does not advertise HTTP/3 on port %s", tc.name, alt, port)
		}
	}

	// Renewed: new connections get the new certificate.
	servedCN := func() string {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: tt.pool})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if cn := servedCN(); cn != "ingress one" {
		t.Fatalf("served certificate %q", cn)
	}
	tt.issue(t, "ingress two")
	eventually(t, "the renewed certificate served", func() bool { return servedCN() == "ingress two" })
	// Broken: refused with a log line, the certificate in use stays.
	if err := os.WriteFile(tt.key, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the broken key reported", func() bool {
		return strings.Contains(n.Logs(), "the TLS certificate files changed but do not load; the certificate in use stays")
	})
	if cn := servedCN(); cn != "ingress two" {
		t.Fatalf("after a broken key the served certificate is %q", cn)
	}
}
