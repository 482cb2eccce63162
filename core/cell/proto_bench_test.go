package cell

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/celluster/celluster/core/ingress"
)

// BenchmarkIngressProtocols measures requests per second through the
// node's ingress to the hello example cell (a Go reactor, 64 requests at
// once, 2 replicas warm) over each protocol the ingress speaks, in the
// same run: HTTP/1.1 and h2c on the plain listener, HTTP/2 over TLS and
// HTTP/3 over QUIC on the HTTPS listener (a self-signed P-256
// certificate). Clients run in the same process, benchClients×GOMAXPROCS
// at once, on kept-alive connections (HTTP/2 and HTTP/3 multiplex them
// over one connection per client transport), reading every body in full.
// The timed span is the requests only: listeners, certificates and
// connections are set up before it.
func BenchmarkIngressProtocols(b *testing.B) {
	reg := benchRegistry(b, Limits{Concurrency: 64, Warm: 2}, "hello")
	warmReplicas(b, reg.Lookup("hello"))
	ing := ingress.New(benchCells{reg}, slog.New(slog.DiscardHandler), ingress.Options{})
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ul, err := net.ListenPacket("udp", tl.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	certs, pool := benchCerts(b)
	go func() { _ = ing.Serve(plain) }()
	go func() { _ = ing.ServeTLS(tl, ul, certs) }()
	b.Cleanup(func() { _ = ing.Shutdown(b.Context()) })

	tlsConf := &tls.Config{RootCAs: pool}
	h2c := &http.Transport{Protocols: new(http.Protocols), MaxIdleConnsPerHost: 256}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	cases := []struct {
		name, url string
		rt        http.RoundTripper
	}{
		{"proto=http1.1", "http://" + plain.Addr().String() + "/hello", &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}},
		{"proto=h2c", "http://" + plain.Addr().String() + "/hello", h2c},
		{"proto=https-h2", "https://" + tl.Addr().String() + "/hello", &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 256}},
		{"proto=h3", "https://" + tl.Addr().String() + "/hello", &http3.Transport{TLSClientConfig: tlsConf}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			client := &http.Client{Transport: tc.rt, Timeout: time.Minute}
			get := func() error {
				resp, err := client.Get(tc.url)
				if err != nil {
					return err
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil && (resp.StatusCode != 200 || string(body) != "Hello, world!\n") {
					b.Errorf("%s: %d %q", tc.name, resp.StatusCode, body)
				}
				return err
			}
			for range 20 { // connections open before the clock starts
				if err := get(); err != nil {
					b.Fatal(err)
				}
			}
			b.SetParallelism(benchClients)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := get(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}

// benchCerts writes a self-signed certificate for 127.0.0.1 and loads it
// as the ingress would.
func benchCerts(b *testing.B) (*ingress.Certs, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := b.TempDir()
	cf, kf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		b.Fatal(err)
	}
	certs, err := ingress.LoadCerts(cf, kf, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return certs, pool
}
