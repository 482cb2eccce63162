package identity

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.key")
	// An existing, more open file is replaced by a 0600 one.
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	key, _ := NewKey()
	if err := WriteKey(path, key); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %o, want 600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	if block, _ := pem.Decode(b); block == nil || block.Type != "PRIVATE KEY" {
		t.Errorf("key file is not a PEM PKCS #8 block")
	}
	got, err := ReadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !key.(*ecdsa.PrivateKey).Equal(got) {
		t.Error("ReadKey returned another key")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("%d files in the directory, want the key alone (no temporary files left)", len(entries))
	}
}

func TestReadKeyRefuses(t *testing.T) {
	dir := t.TempDir()
	key, _ := NewKey()
	der, _ := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	sec1 := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	pkcs8, _ := marshalKey(key)
	block, _ := pem.Decode(pkcs8)
	corrupt := block.Bytes[:len(block.Bytes)-5]
	corruptPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: corrupt})

	for name, c := range map[string]struct {
		content []byte
		says    string
	}{
		"sec1":    {sec1, `"EC PRIVATE KEY", want "PRIVATE KEY"`},
		"corrupt": {corruptPEM, "parsing PKCS #8"},
		"empty":   {nil, "no PEM block"},
		"two":     {append(append([]byte{}, pkcs8...), pkcs8...), "data after"},
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, c.content, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := ReadKey(path)
		wantErr(t, err, nil, path, c.says)
		// Nothing secret in the message: no line of the key's base64.
		for _, line := range strings.Split(string(c.content), "\n") {
			if len(line) > 8 && !strings.HasPrefix(line, "-----") && strings.Contains(err.Error(), line) {
				t.Errorf("error %q quotes the key file", err)
			}
		}
	}
	_, err := ReadKey(filepath.Join(dir, "missing"))
	wantErr(t, err, nil, "missing")
}

func TestChainFiles(t *testing.T) {
	clk := newFakeClock()
	ca := testCA(t, testTD, clk.Now)
	creds := nodeCreds(t, ca, "a", 0)
	chain := []*x509.Certificate{creds.Leaf(), ca.Certificate()}
	path := filepath.Join(t.TempDir(), "node.crt")
	if err := WriteChain(path, chain); err != nil {
		t.Fatal(err)
	}
	got, err := ReadChain(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].Equal(chain[0]) || !got[1].Equal(chain[1]) {
		t.Errorf("ReadChain returned %d certificates, not the chain written", len(got))
	}

	if err := WriteChain(path, nil); err == nil {
		t.Error("WriteChain of no certificates accepted")
	}
	keyPath := filepath.Join(t.TempDir(), "k")
	if err := WriteKey(keyPath, creds.Key()); err != nil {
		t.Fatal(err)
	}
	_, err = ReadChain(keyPath)
	wantErr(t, err, nil, `"PRIVATE KEY", want "CERTIFICATE"`)
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o644)
	_, err = ReadChain(empty)
	wantErr(t, err, nil, "no certificates")
}
