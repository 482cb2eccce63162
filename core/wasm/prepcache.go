package wasm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/celluster/celluster/core/wasm/instrument"
	"github.com/celluster/celluster/core/wasm/snapshot"
)

// The engine keeps, beside wazero's compilation cache, what makes a
// restart warm: each module as package instrument prepared it (so a
// restart does not instrument it again) and each cell's pre-initialised
// snapshot (so a restart does not run _initialize again). Files are named
// by the module's sha256, its memory limit and, for snapshots, the cell;
// each holds a checksum and is refused (and rebuilt) when it does not
// verify, is of another format, or is not a regular file.

// prepMagic starts a prepared-module file; its last byte is the format.
const prepMagic = "CELPREP\x01"

// maxPrepared bounds a prepared-module file: wasm modules larger than this
// are not cached.
const maxPrepared = 256 << 20

// prepDir is the engine's directory of prepared modules and snapshots.
func (e *Engine) prepDir() string {
	if e.cacheDir == "" {
		return ""
	}
	return filepath.Join(e.cacheDir, "celluster-prepared-v1")
}

func (e *Engine) prepPath(key moduleKey) string {
	return filepath.Join(e.prepDir(), hex.EncodeToString(key.sha[:])+"-"+strconv.FormatUint(uint64(key.pages), 10)+".prep")
}

func (e *Engine) initPath(key moduleKey, cell string) string {
	return filepath.Join(e.prepDir(), hex.EncodeToString(key.sha[:])+"-"+strconv.FormatUint(uint64(key.pages), 10)+"-"+cell+".init")
}

// encodePrepared serialises p.
func encodePrepared(p *instrument.Prepared) []byte {
	var b []byte
	u32 := func(v uint32) { b = binary.LittleEndian.AppendUint32(b, v) }
	u32(p.MemoryPages)
	u32(uint32(len(p.Globals)))
	for _, g := range p.Globals {
		u32(g)
	}
	u32(uint32(len(p.NoSnapshot)))
	b = append(b, p.NoSnapshot...)
	u32(uint32(len(p.Data)))
	for _, s := range p.Data {
		u32(s.Offset)
		u32(uint32(len(s.Bytes)))
		b = append(b, s.Bytes...)
	}
	u32(uint32(len(p.Module)))
	b = append(b, p.Module...)
	sum := sha256.Sum256(b)
	return append(append([]byte(prepMagic), sum[:]...), b...)
}

var errPrepared = errors.New("not a valid prepared module")

// decodePrepared parses what encodePrepared wrote, checking everything.
func decodePrepared(b []byte) (*instrument.Prepared, error) {
	if len(b) < len(prepMagic)+32 || string(b[:len(prepMagic)]) != prepMagic {
		return nil, fmt.Errorf("%w: bad header", errPrepared)
	}
	body := b[len(prepMagic)+32:]
	if sha256.Sum256(body) != [32]byte(b[len(prepMagic):len(prepMagic)+32]) {
		return nil, fmt.Errorf("%w: checksum mismatch", errPrepared)
	}
	p := &instrument.Prepared{}
	bad := false
	u32 := func() uint32 {
		if len(body) < 4 {
			bad = true
			return 0
		}
		v := binary.LittleEndian.Uint32(body)
		body = body[4:]
		return v
	}
	take := func(n uint32) []byte {
		if bad || uint64(n) > uint64(len(body)) {
			bad = true
			return nil
		}
		v := body[:n:n]
		body = body[n:]
		return v
	}
	p.MemoryPages = u32()
	ng := u32()
	if uint64(ng)*4 > uint64(len(body)) {
		return nil, fmt.Errorf("%w: %d globals", errPrepared, ng)
	}
	for range ng {
		p.Globals = append(p.Globals, u32())
	}
	p.NoSnapshot = string(take(u32()))
	ns := u32()
	if uint64(ns)*8 > uint64(len(body)) {
		return nil, fmt.Errorf("%w: %d data segments", errPrepared, ns)
	}
	for range ns {
		off := u32()
		p.Data = append(p.Data, instrument.Segment{Offset: off, Bytes: take(u32())})
	}
	p.Module = take(u32())
	if bad || len(body) != 0 || len(p.Module) < 8 {
		return nil, fmt.Errorf("%w: truncated or trailing bytes", errPrepared)
	}
	return p, nil
}

// loadPrepared returns the prepared module cached for key, or nil.
func (e *Engine) loadPrepared(key moduleKey) *instrument.Prepared {
	if e.prepDir() == "" {
		return nil
	}
	path := e.prepPath(key)
	b, err := readRegular(path, maxPrepared)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			e.log.Warn("ignoring a cached prepared module; preparing it again", "path", path, "err", err)
		}
		return nil
	}
	p, err := decodePrepared(b)
	if err != nil {
		e.log.Warn("ignoring a cached prepared module; preparing it again", "path", path, "err", err)
		return nil
	}
	e.log.Debug("prepared module from the cache", "sha256", hex.EncodeToString(key.sha[:6]))
	return p
}

// storePrepared caches p for key; failures are logged, not fatal.
func (e *Engine) storePrepared(key moduleKey, p *instrument.Prepared) {
	if e.prepDir() == "" {
		return
	}
	b := encodePrepared(p)
	if len(b) > maxPrepared {
		return
	}
	if err := writeAtomic(e.prepPath(key), b); err != nil {
		e.log.Warn("cannot cache a prepared module; a restart prepares it again", "err", err)
	}
}

// loadInit reads cell's pre-initialised snapshot of m from the cache.
func (m *Module) loadInit(cell string) *Snapshot {
	e := m.engine
	if e.prepDir() == "" || !m.snapshotable() || !cacheableName(cell) {
		return nil
	}
	path := e.initPath(m.key, cell)
	b, err := readRegular(path, m.MaxSnapshotBytes())
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			e.log.Warn("ignoring a cached snapshot; the replica initialises", "path", path, "err", err)
		}
		return nil
	}
	s, kind, err := m.DecodeSnapshot(bytes.NewReader(b), int64(len(b)))
	if err == nil && kind != snapshot.KindInit {
		err = fmt.Errorf("a %s snapshot, not a pre-initialised one", kind)
	}
	if err != nil {
		e.log.Warn("ignoring a cached snapshot; the replica initialises", "path", path, "err", err)
		return nil
	}
	e.log.Debug("pre-initialised snapshot from the cache", "cell", cell, "sha256", m.SHA256[:12])
	return s
}

// cacheableName reports whether a cell name can be part of a file name.
func cacheableName(cell string) bool {
	if cell == "" || len(cell) > 64 {
		return false
	}
	for _, c := range cell {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// storeInit caches cell's pre-initialised snapshot of m.
func (m *Module) storeInit(cell string, s *Snapshot) {
	e := m.engine
	if e.prepDir() == "" || !cacheableName(cell) {
		return
	}
	var buf bytes.Buffer
	if _, err := m.EncodeSnapshot(&buf, s, snapshot.KindInit); err != nil {
		e.log.Warn("cannot encode a snapshot for the cache", "err", err)
		return
	}
	if err := writeAtomic(e.initPath(m.key, cell), buf.Bytes()); err != nil {
		e.log.Warn("cannot cache a snapshot; a restart initialises the cell's first replica again", "err", err)
	}
}

// readRegular reads path, which must be a regular file (not a symlink) of
// at most limit bytes.
func readRegular(path string, limit int64) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s is %d bytes, more than %d", path, fi.Size(), limit)
	}
	return os.ReadFile(path)
}

// writeAtomic writes b to path through a temporary file renamed into place.
func writeAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, werr := f.Write(b)
	cerr := f.Close()
	if werr != nil || cerr != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("writing %s: %w", path, errors.Join(werr, cerr))
	}
	if err := os.Rename(f.Name(), path); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	return nil
}

// background runs fn (a cache write) on its own goroutine unless the
// engine is closed; Close waits for it.
func (e *Engine) background(fn func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.bg.Add(1)
	go func() {
		defer e.bg.Done()
		fn()
	}()
}
