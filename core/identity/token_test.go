package identity

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// csrFor returns a key and a CSR for it asking for name.
func csrFor(t *testing.T, name string) (crypto.Signer, []byte) {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(key, name)
	if err != nil {
		t.Fatal(err)
	}
	return key, csr
}

// noSecrets checks err does not quote token or its signature.
func noSecrets(t *testing.T, err error, token string) {
	t.Helper()
	if err == nil {
		return
	}
	parts := strings.Split(token, ".")
	for _, p := range append(parts[1:], token) {
		if len(p) > 8 && strings.Contains(err.Error(), p) {
			t.Errorf("error %q quotes the token", err)
		}
	}
}

func TestJoinTokenWorksOnce(t *testing.T) {
	clk := newFakeClock()
	dir := t.TempDir()
	ca, err := InitCA(dir, testTD, CAOptions{Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	token, err := ca.NewJoinToken("node-a", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(token, "celjoin1.") || strings.Count(token, ".") != 2 {
		t.Errorf("token %q does not look like celjoin1.<payload>.<signature>", token)
	}
	fi, err := os.Stat(filepath.Join(dir, TokensFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("tokens.json mode %o, want 600", fi.Mode().Perm())
	}

	key, csr := csrFor(t, "node-a")
	chain, err := ca.RedeemJoinToken(token, csr)
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	if !samePublicKey(leaf.PublicKey, key.Public()) {
		t.Error("certificate is not for the CSR's key")
	}
	if name, err := VerifyPeer(chain, ca.Bundle(), testTD, clk.Now()); err != nil || name != "node-a" {
		t.Errorf("VerifyPeer = %q, %v; want node-a", name, err)
	}

	_, csr2 := csrFor(t, "node-a")
	_, err = ca.RedeemJoinToken(token, csr2)
	wantErr(t, err, ErrTokenUsed, "join token for node node-a already used at 2030-01-01T00:00:00Z")
	noSecrets(t, err, token)
}

func TestJoinTokenExpires(t *testing.T) {
	clk := newFakeClock()
	ca := testCA(t, testTD, clk.Now)
	early, _ := ca.NewJoinToken("a", 0)
	late, _ := ca.NewJoinToken("a", 0)
	_, csr := csrFor(t, "")

	clk.Advance(DefaultJoinTokenTTL - time.Second)
	if _, err := ca.RedeemJoinToken(early, csr); err != nil {
		t.Fatalf("a second before expiry: %v", err)
	}
	clk.Advance(time.Second)
	_, err := ca.RedeemJoinToken(late, csr)
	wantErr(t, err, ErrTokenExpired, "join token for node a expired at 2030-01-01T00:10:00Z")
	noSecrets(t, err, late)

	short, _ := ca.NewJoinToken("a", time.Minute)
	clk.Advance(time.Minute)
	_, err = ca.RedeemJoinToken(short, csr)
	wantErr(t, err, ErrTokenExpired)

	_, err = ca.NewJoinToken("a", -time.Minute)
	wantErr(t, err, nil, "negative TTL")
	_, err = ca.NewJoinToken("Not A Name", 0)
	wantErr(t, err, nil, "invalid node name")
}

func TestJoinTokenTampered(t *testing.T) {
	clk := newFakeClock()
	ca := testCA(t, testTD, clk.Now)
	token, _ := ca.NewJoinToken("a", 0)
	parts := strings.Split(token, ".")
	_, csr := csrFor(t, "")

	// Rewrite the payload to name another node, keep the signature.
	pj, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var p map[string]any
	if err := json.Unmarshal(pj, &p); err != nil {
		t.Fatal(err)
	}
	if p["node"] != "a" || p["td"] != "example.test" || p["id"] == "" || p["exp"] != "2030-01-01T00:10:00Z" {
		t.Errorf("payload %v", p)
	}
	p["node"] = "admin"
	pj, _ = json.Marshal(p)
	renamed := parts[0] + "." + base64.RawURLEncoding.EncodeToString(pj) + "." + parts[2]

	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[0] ^= 1
	flipped := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)

	otherCA := testCA(t, testTD, clk.Now)
	foreign, _ := otherCA.NewJoinToken("a", 0)

	for name, tok := range map[string]string{"payload": renamed, "signature": flipped, "another CA": foreign} {
		_, err := ca.RedeemJoinToken(tok, csr)
		wantErr(t, err, ErrTokenSignature, "invalid signature")
		noSecrets(t, err, tok)
		if t.Failed() {
			t.Logf("case %s", name)
		}
	}
	// The genuine token is still good.
	if _, err := ca.RedeemJoinToken(token, csr); err != nil {
		t.Errorf("genuine token after tampered ones: %v", err)
	}
}

func TestJoinTokenMalformed(t *testing.T) {
	ca := testCA(t, testTD, newFakeClock().Now)
	token, _ := ca.NewJoinToken("a", 0)
	parts := strings.Split(token, ".")
	_, csr := csrFor(t, "")
	for _, tok := range []string{
		"",
		"garbage",
		"celjoin1.abc",
		"celjoin2." + parts[1] + "." + parts[2],
		parts[1] + "." + parts[2],
		token + ".x",
		parts[0] + "." + parts[1] + ".!!!",
		parts[0] + "." + parts[1] + "." + parts[2][:10],
		strings.Repeat("a", 5000),
	} {
		_, err := ca.RedeemJoinToken(tok, csr)
		wantErr(t, err, ErrTokenMalformed, "malformed join token")
		noSecrets(t, err, token)
	}
}

func TestJoinTokenSurvivesLoadCA(t *testing.T) {
	clk := newFakeClock()
	dir := t.TempDir()
	ca, err := InitCA(dir, testTD, CAOptions{Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	token, _ := ca.NewJoinToken("a", 0)
	other, _ := ca.NewJoinToken("b", 0)

	restarted, err := LoadCA(dir, CAOptions{Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	_, csr := csrFor(t, "a")
	if _, err := restarted.RedeemJoinToken(token, csr); err != nil {
		t.Fatalf("token issued before the restart: %v", err)
	}

	again, err := LoadCA(dir, CAOptions{Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	_, err = again.RedeemJoinToken(token, csr)
	wantErr(t, err, ErrTokenUsed, "already used")
	_, csrB := csrFor(t, "b")
	if _, err := again.RedeemJoinToken(other, csrB); err != nil {
		t.Errorf("the other token: %v", err)
	}

	// Without its record a token is refused, even with a good signature.
	third, _ := again.NewJoinToken("c", 0)
	if err := os.Remove(filepath.Join(dir, TokensFile)); err != nil {
		t.Fatal(err)
	}
	_, csrAny := csrFor(t, "")
	_, err = again.RedeemJoinToken(third, csrAny)
	wantErr(t, err, ErrTokenUnknown, "not issued by this CA, or its record was lost")
}

func TestJoinTokenCSRChecks(t *testing.T) {
	clk := newFakeClock()
	ca := testCA(t, testTD, clk.Now)
	token, _ := ca.NewJoinToken("a", 0)

	_, wrongName := csrFor(t, "b")
	_, err := ca.RedeemJoinToken(token, wrongName)
	wantErr(t, err, nil, `CSR asks for node "b", the token is for "a"`)
	noSecrets(t, err, token)

	key, _ := NewKey()
	for _, uri := range []string{"spiffe://example.test/node/b", "spiffe://example.test/cell/a"} {
		u, _ := url.Parse(uri)
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ca.RedeemJoinToken(token, der)
		wantErr(t, err, nil, "CSR asks for URI SANs")
	}

	_, err = ca.RedeemJoinToken(token, []byte("not a CSR"))
	wantErr(t, err, nil, "parsing CSR")

	// Refused CSRs did not use the token up; a CSR with the node's URI
	// (and common name) is fine.
	u, _ := url.Parse("spiffe://example.test/node/a")
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "a"}, URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.RedeemJoinToken(token, der)
	if err != nil {
		t.Fatalf("token after refused CSRs: %v", err)
	}
	if len(chain[0].URIs) != 1 || chain[0].URIs[0].String() != "spiffe://example.test/node/a" {
		t.Errorf("URIs %v", chain[0].URIs)
	}
}

func TestJoinTokenConcurrentRedeem(t *testing.T) {
	ca := testCA(t, testTD, newFakeClock().Now)
	token, _ := ca.NewJoinToken("a", 0)
	_, csr := csrFor(t, "a")
	const n = 8
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := ca.RedeemJoinToken(token, csr)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrTokenUsed):
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d redemptions succeeded, want exactly 1", ok)
	}
}

func TestJoinTokenRecordPruned(t *testing.T) {
	clk := newFakeClock()
	dir := t.TempDir()
	ca, err := InitCA(dir, testTD, CAOptions{Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	old, _ := ca.NewJoinToken("a", time.Minute)
	clk.Advance(2 * time.Minute)
	if _, err := ca.NewJoinToken("b", 0); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, TokensFile))
	var tf tokenFile
	if err := json.Unmarshal(b, &tf); err != nil {
		t.Fatal(err)
	}
	if len(tf.Tokens) != 1 {
		t.Errorf("tokens.json keeps %d tokens, want the live one", len(tf.Tokens))
	}
	_, csr := csrFor(t, "")
	_, err = ca.RedeemJoinToken(old, csr)
	wantErr(t, err, ErrTokenExpired)
}
