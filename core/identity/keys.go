package identity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// PEM block types written and read by this package.
const (
	pemPrivateKey  = "PRIVATE KEY" // PKCS #8
	pemCertificate = "CERTIFICATE"
)

// NewKey returns a new ECDSA P-256 key, the kind this package uses for CAs
// and nodes.
func NewKey() (crypto.Signer, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: generating P-256 key: %w", err)
	}
	return k, nil
}

// WriteKey writes key to path as a PEM "PRIVATE KEY" (PKCS #8) block with
// mode 0600, replacing any file there atomically (the new file is written
// beside it and renamed into place).
func WriteKey(path string, key crypto.Signer) error {
	b, err := marshalKey(key)
	if err != nil {
		return fmt.Errorf("identity: writing key %s: %w", path, err)
	}
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return fmt.Errorf("identity: writing key %s: %w", path, err)
	}
	return nil
}

// ReadKey reads a private key written by WriteKey (a PEM PKCS #8 block).
// Errors never quote the file's contents.
func ReadKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: reading key: %w", err)
	}
	k, err := parseKey(b)
	if err != nil {
		return nil, fmt.Errorf("identity: reading key %s: %w", path, err)
	}
	return k, nil
}

// WriteChain writes chain (leaf first) to path as PEM "CERTIFICATE" blocks
// with mode 0644, replacing any file there atomically.
func WriteChain(path string, chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return fmt.Errorf("identity: writing chain %s: no certificates", path)
	}
	if err := writeFileAtomic(path, encodeChain(chain), 0o644); err != nil {
		return fmt.Errorf("identity: writing chain %s: %w", path, err)
	}
	return nil
}

// ReadChain reads PEM "CERTIFICATE" blocks from path, in file order (leaf
// first). Other block types are an error, and so is a file without
// certificates.
func ReadChain(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: reading chain: %w", err)
	}
	chain, err := parseChain(b)
	if err != nil {
		return nil, fmt.Errorf("identity: reading chain %s: %w", path, err)
	}
	return chain, nil
}

func marshalKey(key crypto.Signer) ([]byte, error) {
	if key == nil {
		return nil, errors.New("no key")
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding PKCS #8: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

func parseKey(b []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(b)
	switch {
	case block == nil:
		return nil, errors.New("no PEM block")
	case block.Type != pemPrivateKey:
		return nil, fmt.Errorf("PEM block %q, want %q (PKCS #8)", block.Type, pemPrivateKey)
	case len(bytes.TrimSpace(rest)) != 0:
		return nil, errors.New("data after the key's PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		// The parser's errors describe the structure, not the key bytes.
		return nil, fmt.Errorf("parsing PKCS #8: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key of type %T cannot sign", k)
	}
	return s, nil
}

func encodeChain(chain []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range chain {
		// Writing to a bytes.Buffer cannot fail.
		_ = pem.Encode(&buf, &pem.Block{Type: pemCertificate, Bytes: c.Raw})
	}
	return buf.Bytes()
}

func parseChain(b []byte) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	for i := 0; ; i++ {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != pemCertificate {
			return nil, fmt.Errorf("PEM block %d is %q, want %q", i+1, block.Type, pemCertificate)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i+1, err)
		}
		chain = append(chain, c)
	}
	if len(bytes.TrimSpace(b)) != 0 {
		return nil, errors.New("data that is not PEM after the certificates")
	}
	if len(chain) == 0 {
		return nil, errors.New("no certificates")
	}
	return chain, nil
}

// writeFileAtomic writes b to a new file beside path, syncs it, gives it
// mode perm and renames it over path, so readers see the old or the new
// content, never a mix.
func writeFileAtomic(path string, b []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(b); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// writeFileExcl creates path with mode perm and writes b to it, refusing
// if path exists.
func writeFileExcl(path string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
