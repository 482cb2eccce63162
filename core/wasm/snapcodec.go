package wasm

import (
	"crypto/sha256"
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/celluster/celluster/core/wasm/snapshot"
)

// snapshotLayout names everything besides the module's bytes that a
// snapshot's contents depend on: the instrumentation (its settings and
// this code's version of it), the wazero version and the platform. A
// snapshot taken under another layout is refused.
const snapshotLayout = "celluster-snapshot-layout 1; instrument 1; wazero v1.12.0; wasm32"

// settings is the binding of m's snapshots besides its sha256.
func (m *Module) settings() [32]byte {
	return sha256.Sum256(fmt.Appendf(nil, "%s; %s; interrupt %s; yield %d; pages %d; globals %s",
		snapshotLayout, runtime.GOARCH, m.engine.mode, yieldInterval, m.key.pages, strings.Join(m.globals, ",")))
}

func (m *Module) binding() snapshot.Binding {
	return snapshot.Binding{Module: m.key.sha, Settings: m.settings()}
}

// base is what snapshots of m are encoded against: the module's data laid
// out in memory, which every node holding the module can lay out the same
// way (a pre-initialised snapshot is not: the guest's runtime seeds itself
// from random numbers and clocks during _initialize).
func (m *Module) base() ([]byte, [32]byte) {
	m.baseOnce.Do(func() {
		if m.data != nil {
			m.baseBytes = m.data.contents()
			m.baseSum = sha256.Sum256(m.baseBytes)
		}
	})
	return m.baseBytes, m.baseSum
}

// EncodeSnapshot writes s, a snapshot of m's instances, for a disk or a
// peer: the pages that differ from the module's data, compressed, bound to
// the module and this node's layout. It returns the bytes written.
func (m *Module) EncodeSnapshot(w io.Writer, s *Snapshot, kind snapshot.Kind) (int64, error) {
	if s.module != m.SHA256 {
		return 0, fmt.Errorf("wasm: snapshot of module %s given to module %s", s.module[:12], m.SHA256[:12])
	}
	mem, release, err := s.img.view()
	if err != nil {
		return 0, fmt.Errorf("wasm: reading snapshot memory: %w", err)
	}
	defer release()
	base, sum := m.base()
	return snapshot.EncodeBase(w, &snapshot.Snapshot{
		Binding: m.binding(), Kind: kind, Taken: s.taken, Nanotime: s.nanotime,
		Globals: s.globals, Memory: mem,
	}, base, sum)
}

// DecodeSnapshot reads a snapshot EncodeSnapshot wrote for this module.
// One of another module, another layout, another format version, or one
// that is corrupt or truncated is refused with an error that says which
// (errors.Is with the snapshot package's errors), as is one larger than
// maxBytes encoded (0: no limit) or than the module's memory limit.
func (m *Module) DecodeSnapshot(r io.Reader, maxBytes int64) (*Snapshot, snapshot.Kind, error) {
	if !m.snapshotable() {
		return nil, 0, fmt.Errorf("wasm: module %s cannot be snapshotted: %s", m.SHA256[:12], m.NoSnapshot)
	}
	base, sum := m.base()
	maxPages := m.key.pages
	if maxPages == 0 {
		maxPages = snapshot.MaxPages
	}
	// Sparse where the module's data image can be mapped: the pages that
	// differ from it become an overlay over it, at a cost in proportion to
	// them, not to the memory.
	sparse := canOverlay(m.data)
	d, err := snapshot.Decode(r, snapshot.Options{Expect: m.binding(), Base: base, BaseSum: sum, MaxPages: maxPages, MaxBytes: maxBytes, Sparse: sparse})
	if err != nil {
		return nil, 0, err
	}
	if len(d.Globals) != len(m.globals) {
		return nil, 0, fmt.Errorf("wasm: snapshot holds %d globals, module %s has %d: %w", len(d.Globals), m.SHA256[:12], len(m.globals), snapshot.ErrForeign)
	}
	var img *image
	if sparse {
		size := int(d.Pages) * PageSize
		if img = overlayImage(m.data, size, d.Dirty, d.DirtyData, m.SHA256[:12]); img == nil {
			mem := make([]byte, size)
			copy(mem, base)
			for i, p := range d.Dirty {
				copy(mem[int(p)*PageSize:], d.DirtyData[i*PageSize:(i+1)*PageSize])
			}
			d.Memory = mem
		}
	}
	if img == nil {
		if img, err = newImage(m.SHA256[:12], d.Memory); err != nil {
			return nil, 0, err
		}
	}
	s := &Snapshot{module: m.SHA256, img: img, globals: d.Globals, nanotime: d.Nanotime, taken: d.Taken}
	s.id = newID(s.module, s.taken)
	return s, d.Kind, nil
}

// MaxSnapshotBytes bounds an encoded snapshot of m: its memory limit,
// stored raw, with room for the framing.
func (m *Module) MaxSnapshotBytes() int64 {
	pages := int64(m.key.pages)
	if pages == 0 {
		pages = snapshot.MaxPages
	}
	return pages*(PageSize+64) + 1<<20
}
