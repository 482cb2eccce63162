package mesh

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Store keeps modules by their sha256, in a directory: the node's content
// store, from which it serves modules to peers and takes cells over.
type Store struct{ dir string }

// NewStore is a store in dir (created on first write).
func NewStore(dir string) *Store { return &Store{dir: dir} }

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// Put keeps module bytes under their sha256 and returns it.
func (s *Store) Put(b []byte) (string, error) {
	sum := sha256.Sum256(b)
	sha := hex.EncodeToString(sum[:])
	path := filepath.Join(s.dir, sha+".wasm")
	if _, err := os.Stat(path); err == nil {
		return sha, nil
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(s.dir, ".module-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return sha, os.Rename(tmp.Name(), path)
}

// Has reports whether the store holds the module.
func (s *Store) Has(sha string) bool {
	if !validSHA(sha) {
		return false
	}
	_, err := os.Stat(filepath.Join(s.dir, sha+".wasm"))
	return err == nil
}

// Get reads a stored module and checks its hash.
func (s *Store) Get(sha string) ([]byte, error) {
	if !validSHA(sha) {
		return nil, fmt.Errorf("module hash %q is not a hex sha256", sha)
	}
	b, err := os.ReadFile(filepath.Join(s.dir, sha+".wasm"))
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != sha {
		return nil, fmt.Errorf("stored module %s does not match its hash", sha[:12])
	}
	return b, nil
}

// remove drops a module.
func (s *Store) remove(sha string) {
	if validSHA(sha) {
		_ = os.Remove(filepath.Join(s.dir, sha+".wasm"))
	}
}

func validSHA(sha string) bool {
	return len(sha) == 64 && strings.Trim(sha, "0123456789abcdef") == ""
}
