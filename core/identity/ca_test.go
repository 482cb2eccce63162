package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestInitCAWritesDirectory(t *testing.T) {
	clk := newFakeClock()
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := InitCA(dir, testTD, CAOptions{Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{".": 0o700, CAKeyFile: 0o600, CACertFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode %o, want %o", name, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, TokensFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tokens.json exists before any token: %v", err)
	}

	c := ca.Certificate()
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("CA constraints: IsCA=%v valid=%v maxPathLen=%d zero=%v", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("CA certificate cannot sign certificates")
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://example.test" {
		t.Errorf("CA URIs = %v, want [spiffe://example.test]", c.URIs)
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", c.PublicKey)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("CA certificate is not self-signed: %v", err)
	}
	if want := clk.Now().Add(-Backdate); !c.NotBefore.Equal(want) {
		t.Errorf("NotBefore %s, want %s", c.NotBefore, want)
	}
	if want := clk.Now().Add(DefaultCAValidity); !c.NotAfter.Equal(want) {
		t.Errorf("NotAfter %s, want %s (default validity)", c.NotAfter, want)
	}
	if ca.TrustDomain() != testTD {
		t.Errorf("TrustDomain %s", ca.TrustDomain())
	}
	b := ca.Bundle()
	if b.TrustDomain() != testTD || len(b.X509Authorities()) != 1 || !b.X509Authorities()[0].Equal(c) {
		t.Errorf("Bundle: %s with %d authorities", b.TrustDomain(), len(b.X509Authorities()))
	}
	onDisk, err := ReadChain(filepath.Join(dir, CACertFile))
	if err != nil || len(onDisk) != 1 || !onDisk[0].Equal(c) {
		t.Errorf("ca.crt does not hold the CA certificate: %v", err)
	}

	ca2, err := InitCA(t.TempDir(), testTD, CAOptions{Clock: clk.Now, Validity: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if want := clk.Now().Add(48 * time.Hour); !ca2.Certificate().NotAfter.Equal(want) {
		t.Errorf("NotAfter %s, want %s", ca2.Certificate().NotAfter, want)
	}
}

func TestInitCARefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	if _, err := InitCA(dir, testTD, CAOptions{}); err != nil {
		t.Fatal(err)
	}
	before := map[string][]byte{}
	for _, f := range []string{CACertFile, CAKeyFile} {
		before[f], _ = os.ReadFile(filepath.Join(dir, f))
	}
	_, err := InitCA(dir, testTD, CAOptions{})
	wantErr(t, err, nil, "already exists", "refusing to overwrite")
	for f, b := range before {
		now, _ := os.ReadFile(filepath.Join(dir, f))
		if !bytes.Equal(now, b) {
			t.Errorf("%s changed", f)
		}
	}

	// A lone key (or certificate) is enough to refuse, and nothing is
	// written beside it.
	dir2 := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir2, CAKeyFile), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = InitCA(dir2, testTD, CAOptions{})
	wantErr(t, err, nil, CAKeyFile, "refusing to overwrite")
	if _, err := os.Stat(filepath.Join(dir2, CACertFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ca.crt written next to an existing ca.key: %v", err)
	}
}

func TestInitCARejectsBadOptions(t *testing.T) {
	_, err := InitCA(t.TempDir(), testTD, CAOptions{Validity: -time.Hour})
	wantErr(t, err, nil, "negative validity")
	_, err = InitCA(t.TempDir(), spiffeid.TrustDomain{}, CAOptions{})
	wantErr(t, err, nil, "no trust domain")
}

func TestLoadCA(t *testing.T) {
	clk := newFakeClock()
	dir := t.TempDir()
	ca, err := InitCA(dir, testTD, CAOptions{Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCA(dir, CAOptions{Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if loaded.TrustDomain() != testTD {
		t.Errorf("loaded trust domain %s, want %s", loaded.TrustDomain(), testTD)
	}
	if !loaded.Certificate().Equal(ca.Certificate()) {
		t.Error("loaded a different CA certificate")
	}
	// The loaded CA signs certificates the original's bundle accepts.
	key, _ := NewKey()
	chain, err := loaded.IssueNode("n1", key.Public(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if name, err := VerifyPeer(chain, ca.Bundle(), testTD, clk.Now()); err != nil || name != "n1" {
		t.Errorf("VerifyPeer = %q, %v", name, err)
	}

	_, err = LoadCA(filepath.Join(t.TempDir(), "missing"), CAOptions{})
	wantErr(t, err, nil, "load CA", CACertFile)

	// A key from another CA is refused.
	other := t.TempDir()
	if _, err := InitCA(other, testTD, CAOptions{}); err != nil {
		t.Fatal(err)
	}
	mixed := t.TempDir()
	for f, from := range map[string]string{CACertFile: dir, CAKeyFile: other} {
		b, _ := os.ReadFile(filepath.Join(from, f))
		if err := os.WriteFile(filepath.Join(mixed, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, err = LoadCA(mixed, CAOptions{})
	wantErr(t, err, nil, "does not belong")

	// A node certificate is not a CA certificate.
	notCA := t.TempDir()
	if err := WriteChain(filepath.Join(notCA, CACertFile), chain); err != nil {
		t.Fatal(err)
	}
	_, err = LoadCA(notCA, CAOptions{})
	wantErr(t, err, nil, "not a CA certificate")
}

func TestIssueNode(t *testing.T) {
	clk := newFakeClock()
	ca := testCA(t, testTD, clk.Now)
	key, _ := NewKey()
	chain, err := ca.IssueNode("node-a", key.Public(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 1 {
		t.Fatalf("chain of %d certificates, want the leaf alone", len(chain))
	}
	leaf := chain[0]

	// The chain verifies against the CA, for servers and for clients.
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool(ca), CurrentTime: clk.Now(), KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("Verify for usage %v: %v", usage, err)
		}
	}
	// Exactly one SAN, the node's SPIFFE ID.
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://example.test/node/node-a" {
		t.Errorf("URIs = %v, want exactly [spiffe://example.test/node/node-a]", leaf.URIs)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("extra SANs: DNS %v IP %v email %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("IsCA=%v KeyUsage=%v, want a DigitalSignature-only leaf", leaf.IsCA, leaf.KeyUsage)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) || len(leaf.ExtKeyUsage) != 2 {
		t.Errorf("ExtKeyUsage = %v, want ServerAuth and ClientAuth", leaf.ExtKeyUsage)
	}
	if !samePublicKey(leaf.PublicKey, key.Public()) {
		t.Error("leaf certifies another key")
	}
	if want := clk.Now().Add(-time.Minute); !leaf.NotBefore.Equal(want) {
		t.Errorf("NotBefore %s, want %s", leaf.NotBefore, want)
	}
	if want := clk.Now().Add(DefaultNodeTTL); !leaf.NotAfter.Equal(want) {
		t.Errorf("NotAfter %s, want %s (default TTL)", leaf.NotAfter, want)
	}

	// Serial numbers differ between certificates.
	chain2, err := ca.IssueNode("node-a", key.Public(), 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if chain2[0].SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("two certificates share a serial number")
	}
	if want := clk.Now().Add(5 * time.Minute); !chain2[0].NotAfter.Equal(want) {
		t.Errorf("NotAfter %s, want %s", chain2[0].NotAfter, want)
	}

	// Other key types are fine.
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := ca.IssueNode("node-b", edPub, 0); err != nil {
		t.Errorf("Ed25519 key: %v", err)
	}
}

func TestIssueNodeRefuses(t *testing.T) {
	clk := newFakeClock()
	ca, err := InitCA(t.TempDir(), testTD, CAOptions{Clock: clk.Now, Validity: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := NewKey()
	for _, name := range []string{"", "Node", "a/b", "-a", "a-", "..", "a b", strings.Repeat("a", 64)} {
		if _, err := ca.IssueNode(name, key.Public(), 0); err == nil {
			t.Errorf("IssueNode(%q) accepted an invalid name", name)
		}
	}
	_, err = ca.IssueNode("a", nil, 0)
	wantErr(t, err, nil, "no public key")
	_, err = ca.IssueNode("a", key.Public(), -time.Second)
	wantErr(t, err, nil, "negative TTL")

	// A certificate never outlives its CA.
	chain, err := ca.IssueNode("a", key.Public(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !chain[0].NotAfter.Equal(ca.Certificate().NotAfter) {
		t.Errorf("NotAfter %s, want capped at the CA's %s", chain[0].NotAfter, ca.Certificate().NotAfter)
	}
	clk.Advance(3 * time.Hour)
	_, err = ca.IssueNode("a", key.Public(), 0)
	wantErr(t, err, nil, "CA certificate expired at")
}
