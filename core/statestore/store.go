// Package statestore keeps the saved state of cells that keep state, one
// file per cell under a node's data directory, so that a node restarted
// after a drain restores each cell where it was.
//
// A file is written whole to a temporary name, synced and renamed over the
// old one, so a crash or a full disk while saving leaves the previous
// state (or none), never half of one. Reads refuse what is not a regular
// file (a symlink, a FIFO), what is larger than the cell's module could
// have produced, and every snapshot the wasm package refuses (corrupt,
// truncated, of another module, layout or format version); each error
// names the file.
package statestore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/celluster/celluster/core/wasm"
	"github.com/celluster/celluster/core/wasm/snapshot"
)

// Ext is the extension of saved states.
const Ext = ".state"

// Store is a directory of saved cell states. It is safe for concurrent
// use by different cells.
type Store struct {
	dir string
}

// Open returns the store in dir, creating the directory.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("statestore: creating %s: %w", dir, err)
	}
	return &Store{dir: dir}, nil
}

// Path is where cell's state is saved.
func (s *Store) Path(cell string) string { return filepath.Join(s.dir, cell+Ext) }

// Put stores an encoded state of cell as it came (from a peer); it is
// verified when it is loaded.
func (s *Store) Put(cell string, b []byte) error {
	path := s.Path(cell)
	f, err := os.CreateTemp(s.dir, "."+cell+".*.tmp")
	if err != nil {
		return fmt.Errorf("keeping state of cell %s: %w", cell, err)
	}
	tmp := f.Name()
	_, werr := f.Write(b)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("keeping state of cell %s in %s: %w", cell, path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("keeping state of cell %s in %s: %w", cell, path, err)
	}
	return nil
}

// SaveState implements cell.StateStore.
func (s *Store) SaveState(cell string, snap *wasm.Snapshot, mod *wasm.Module) error {
	path := s.Path(cell)
	f, err := os.CreateTemp(s.dir, "."+cell+".*.tmp")
	if err != nil {
		return fmt.Errorf("saving state of cell %s: %w", cell, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		_ = f.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("saving state of cell %s to %s: %w", cell, path, err)
	}
	if _, err := mod.EncodeSnapshot(f, snap, snapshot.KindState); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("saving state of cell %s to %s: %w", cell, path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("saving state of cell %s to %s: %w", cell, path, err)
	}
	if d, err := os.Open(s.dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// LoadState implements cell.StateStore.
func (s *Store) LoadState(cell string, mod *wasm.Module) (*wasm.Snapshot, error) {
	path := s.Path(cell)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%s: a symlink, not a saved state", path)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: a %s, not a saved state", path, fileKind(fi.Mode()))
	}
	limit := mod.MaxSnapshotBytes()
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than a state of this module can take (%d): %w", path, fi.Size(), limit, snapshot.ErrTooLarge)
	}
	snap, kind, err := mod.DecodeSnapshot(io.LimitReader(f, limit+1), limit)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if kind != snapshot.KindState {
		return nil, fmt.Errorf("%s: a %s snapshot, not a cell's state: %w", path, kind, snapshot.ErrFormat)
	}
	return snap, nil
}

func fileKind(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "FIFO"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeDevice != 0:
		return "device"
	case m.IsDir():
		return "directory"
	}
	return "special file"
}

// Remove deletes cell's saved state, if any.
func (s *Store) Remove(cell string) error {
	if err := os.Remove(s.Path(cell)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("statestore: %w", err)
	}
	return nil
}
