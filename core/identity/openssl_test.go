package identity

import (
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// openssl returns the openssl binary, skipping the test where it is missing
// unless CI=true, where it must be there.
func openssl(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("openssl not found and CI=true: %v", err)
		}
		t.Skipf("openssl not found: %v", err)
	}
	return p
}

// TestOpenSSLAcceptsNodeCertificate checks the certificates with a second,
// independent X.509 implementation.
func TestOpenSSLAcceptsNodeCertificate(t *testing.T) {
	bin := openssl(t)
	dir := t.TempDir()
	// openssl checks validity against the wall clock: use the real one.
	ca, err := InitCA(dir, testTD, CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	creds := nodeCreds(t, ca, "node-a", 0)
	node := filepath.Join(dir, "node.crt")
	if err := WriteChain(node, []*x509.Certificate{creds.Leaf()}); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, CACertFile)

	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	for _, purpose := range [][]string{nil, {"-purpose", "sslserver"}, {"-purpose", "sslclient"}} {
		args := append(append([]string{"verify"}, purpose...), "-CAfile", caFile, node)
		if out := run(args...); !strings.Contains(out, "node.crt: OK") {
			t.Errorf("openssl %s: %s", strings.Join(args, " "), out)
		}
	}

	out := run("x509", "-noout", "-ext", "subjectAltName", "-in", node)
	t.Logf("subjectAltName:\n%s", out)
	if n := strings.Count(out, "URI:"); n != 1 {
		t.Errorf("%d URI SANs, want exactly 1:\n%s", n, out)
	}
	if !strings.Contains(out, "URI:spiffe://example.test/node/node-a") {
		t.Errorf("SAN is not the node's SPIFFE ID:\n%s", out)
	}
	for _, other := range []string{"DNS:", "IP Address:", "email:"} {
		if strings.Contains(out, other) {
			t.Errorf("unexpected %s SAN:\n%s", other, out)
		}
	}

	// A certificate from another CA does not verify against this ca.crt.
	other := testCA(t, testTD, nil)
	stranger := filepath.Join(dir, "stranger.crt")
	if err := WriteChain(stranger, []*x509.Certificate{nodeCreds(t, other, "node-a", 0).Leaf()}); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "verify", "-CAfile", caFile, stranger).CombinedOutput(); err == nil {
		t.Errorf("openssl accepted a certificate from another CA:\n%s", out)
	}
}
