package kvstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// File is the store's file name inside its directory.
const File = "kv.db"

// Bounds on what a cell may store.
const (
	// MaxKey is the longest key, in bytes.
	MaxKey = 256
	// MaxValue is the largest value, in bytes.
	MaxValue = 1 << 20
	// DefaultQuota is a cell's total (keys and values) when its intent
	// sets no `limit kv`.
	DefaultQuota = 16 << 20
	// MaxList is the most keys one List returns.
	MaxList = 1000
)

// Errors, wrapped with the cell and key they concern.
var (
	// ErrNotFound: no such key.
	ErrNotFound = errors.New("no such key")
	// ErrKey: an empty key or one longer than MaxKey.
	ErrKey = fmt.Errorf("key must be 1 to %d bytes", MaxKey)
	// ErrValue: a value longer than MaxValue.
	ErrValue = fmt.Errorf("value over %d bytes", MaxValue)
	// ErrQuota: the put would take the cell past its quota.
	ErrQuota = errors.New("over the cell's kv quota")
	// ErrUnavailable: the store cannot be read or written (not open, a
	// full disk, a read-only data directory, an I/O error); the cause is
	// wrapped beside it.
	ErrUnavailable = errors.New("kv store unavailable")
)

// Store is a node's key-value store. It is safe for concurrent use.
type Store struct {
	path string
	db   *bolt.DB // nil when unavailable
	err  error    // why it is unavailable

	mu    sync.Mutex
	usage map[string]int64 // bytes (keys and values) per cell
}

// Open opens (creating it if needed) the store in dir, and counts each
// cell's usage.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("kvstore: creating %s: %w", dir, err)
	}
	path := filepath.Join(dir, File)
	// A second node on the same data directory waits a second for the
	// file's lock, then fails rather than hang.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("kvstore: opening %s: %w", path, err)
	}
	s := &Store{path: path, db: db, usage: map[string]int64{}}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			var n int64
			err := b.ForEach(func(k, v []byte) error {
				n += int64(len(k) + len(v))
				return nil
			})
			s.usage[string(name)] = n
			return err
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("kvstore: reading %s: %w", path, err)
	}
	return s, nil
}

// Unavailable returns a store whose every call fails with ErrUnavailable
// and cause, for a node whose store could not be opened: it serves on,
// and cells are told why their kv calls fail.
func Unavailable(cause error) *Store {
	return &Store{err: cause, usage: map[string]int64{}}
}

// Path is the store's file ("" when unavailable).
func (s *Store) Path() string { return s.path }

// Err is why the store is unavailable, or nil.
func (s *Store) Err() error { return s.err }

// Close closes the store's file.
func (s *Store) Close() error {
	if s.db == nil {
		return nil
	}
	return s.db.Close()
}

// Usage is the bytes (keys and values) cell stores.
func (s *Store) Usage(cell string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.usage[cell]
}

func (s *Store) unavailable(op, cell string, key []byte) error {
	return fmt.Errorf("kvstore: %s cell %s key %q: %w: %w", op, cell, key, ErrUnavailable, s.err)
}

func checkKey(op, cell string, key []byte) error {
	if len(key) == 0 || len(key) > MaxKey {
		return fmt.Errorf("kvstore: %s cell %s: key of %d bytes: %w", op, cell, len(key), ErrKey)
	}
	return nil
}

// Get returns a copy of cell's value for key.
func (s *Store) Get(cell string, key []byte) ([]byte, error) {
	if err := checkKey("get", cell, key); err != nil {
		return nil, err
	}
	if s.db == nil {
		return nil, s.unavailable("get", cell, key)
	}
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(cell))
		if b == nil {
			return ErrNotFound
		}
		v := b.Get(key)
		if v == nil {
			return ErrNotFound
		}
		out = append(make([]byte, 0, len(v)), v...) // v lives only as long as tx
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("kvstore: get cell %s key %q: %w", cell, key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("kvstore: get cell %s key %q: %w: %w", cell, key, ErrUnavailable, err)
	}
	return out, nil
}

// Put sets cell's key to value, unless that would take the cell's usage
// past quota bytes (0: DefaultQuota). It returns when the write is on disk.
func (s *Store) Put(cell string, key, value []byte, quota int64) error {
	if err := checkKey("put", cell, key); err != nil {
		return err
	}
	if len(value) > MaxValue {
		return fmt.Errorf("kvstore: put cell %s key %q: value of %d bytes: %w", cell, key, len(value), ErrValue)
	}
	if s.db == nil {
		return s.unavailable("put", cell, key)
	}
	if quota <= 0 {
		quota = DefaultQuota
	}
	var delta, used int64
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(cell))
		if err != nil {
			return err
		}
		delta = int64(len(key) + len(value))
		if old := b.Get(key); old != nil {
			delta -= int64(len(key) + len(old))
		}
		// Writes are serialised by bbolt, so no other write changes the
		// usage between this check and the commit.
		used = s.Usage(cell)
		if delta > 0 && used+delta > quota {
			return ErrQuota
		}
		return b.Put(key, value)
	})
	switch {
	case errors.Is(err, ErrQuota):
		return fmt.Errorf("kvstore: put cell %s key %q: %d bytes used + %d > quota %d: %w", cell, key, used, delta, quota, ErrQuota)
	case err != nil:
		return fmt.Errorf("kvstore: put cell %s key %q: %w: %w", cell, key, ErrUnavailable, err)
	}
	s.mu.Lock()
	s.usage[cell] += delta
	s.mu.Unlock()
	return nil
}

// Delete removes cell's key; ErrNotFound when it was not there.
func (s *Store) Delete(cell string, key []byte) error {
	if err := checkKey("delete", cell, key); err != nil {
		return err
	}
	if s.db == nil {
		return s.unavailable("delete", cell, key)
	}
	var freed int64
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(cell))
		if b == nil {
			return ErrNotFound
		}
		old := b.Get(key)
		if old == nil {
			return ErrNotFound
		}
		freed = int64(len(key) + len(old))
		return b.Delete(key)
	})
	switch {
	case errors.Is(err, ErrNotFound):
		return fmt.Errorf("kvstore: delete cell %s key %q: %w", cell, key, ErrNotFound)
	case err != nil:
		return fmt.Errorf("kvstore: delete cell %s key %q: %w: %w", cell, key, ErrUnavailable, err)
	}
	s.mu.Lock()
	s.usage[cell] -= freed
	s.mu.Unlock()
	return nil
}

// List returns, in byte order, up to limit (at most MaxList; 0: MaxList)
// of cell's keys that start with prefix and sort after after (empty: from
// the first), and whether more follow: the next page starts after the
// last key returned. The keys come from one snapshot.
func (s *Store) List(cell string, prefix, after []byte, limit int) (keys [][]byte, more bool, err error) {
	if len(prefix) > MaxKey || len(after) > MaxKey {
		return nil, false, fmt.Errorf("kvstore: list cell %s prefix %q: prefix or start of %d/%d bytes: %w", cell, prefix, len(prefix), len(after), ErrKey)
	}
	if s.db == nil {
		return nil, false, s.unavailable("list", cell, prefix)
	}
	if limit <= 0 || limit > MaxList {
		limit = MaxList
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(cell))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		k, _ := c.Seek(prefix)
		if len(after) > 0 && bytes.Compare(after, prefix) >= 0 {
			k, _ = c.Seek(after)
			if k != nil && bytes.Equal(k, after) {
				k, _ = c.Next()
			}
		}
		for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if len(keys) == limit {
				more = true
				break
			}
			keys = append(keys, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("kvstore: list cell %s prefix %q: %w: %w", cell, prefix, ErrUnavailable, err)
	}
	return keys, more, nil
}
