package wasm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"

	"github.com/celluster/celluster/core/wasm/instrument"
)

// A Snapshot is the state of a reactor instance between calls: its whole
// linear memory and the values of its mutable globals. An instance restored
// from it continues where the captured one was, without running
// _initialize. Its memory is shared copy-on-write (see image), so a
// snapshot costs its memory once however many instances start from it.
//
// What a snapshot does not hold: tables (modules that change them are not
// snapshotted, see instrument.Prepare), host state (WASI file descriptors
// beyond stdio, a pending cel.call result) and anything outside the
// instance. Every instance restored from one snapshot shares what the
// guest computed before it was taken, a random seed included.
type Snapshot struct {
	module   string // the module's sha256
	img      *image
	globals  []uint64
	nanotime int64 // the guest's monotonic clock when it was taken
	taken    time.Time
	id       string
}

var snapshotSeq atomic.Uint64

// newID names a snapshot: unique in practice, cheap to make.
func newID(module string, taken time.Time) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s %d %d %d", module, taken.UnixNano(), os.Getpid(), snapshotSeq.Add(1))
	return hex.EncodeToString(h.Sum(nil)[:6])
}

// ID names the snapshot in logs, the journal and `celctl cells`.
func (s *Snapshot) ID() string { return s.id }

// Size is the snapshot's memory in bytes.
func (s *Snapshot) Size() int { return s.img.size }

// Taken is when the snapshot was taken.
func (s *Snapshot) Taken() time.Time { return s.taken }

// Module is the sha256 of the module the snapshot is of.
func (s *Snapshot) Module() string { return s.module }

// snapshotable reports whether instances of m can be captured.
func (m *Module) snapshotable() bool { return m.ABI == ABIReactor && m.NoSnapshot == "" }

// Snapshot captures the instance's state. Call it between calls, never
// during one. It copies the pages that differ from the root of the image
// the instance started from, not the whole memory, when it can (see
// fork.go): a fork costs in proportion to what changed.
func (r *Reactor) Snapshot() (*Snapshot, error) {
	if !r.m.snapshotable() {
		return nil, fmt.Errorf("wasm: module %s cannot be snapshotted: %s", r.m.SHA256[:12], r.m.NoSnapshot)
	}
	b, ok := r.mem.Read(0, r.mem.Size())
	if !ok {
		return nil, errors.New("wasm: reading instance memory")
	}
	img, err := r.memoryImage(b)
	if err != nil {
		return nil, err
	}
	s := &Snapshot{module: r.m.SHA256, img: img, globals: make([]uint64, len(r.m.globals)), nanotime: r.clock(), taken: time.Now()}
	s.id = newID(s.module, s.taken)
	for i, name := range r.m.globals {
		g := r.mod.ExportedGlobal(name)
		if g == nil {
			return nil, fmt.Errorf("wasm: instance lacks global export %s", name)
		}
		s.globals[i] = g.Get()
	}
	return s, nil
}

// NewReactorFrom starts an instance from a snapshot of this module's
// instances: no data segments are applied and _initialize does not run.
func (m *Module) NewReactorFrom(ctx context.Context, cfg InstanceConfig, s *Snapshot) (*Reactor, error) {
	switch {
	case m.ABI != ABIReactor:
		return nil, fmt.Errorf("module %s is a %s, not a reactor", m.SHA256[:12], m.ABI)
	case !m.snapshotable():
		return nil, fmt.Errorf("wasm: module %s cannot be restored from a snapshot: %s", m.SHA256[:12], m.NoSnapshot)
	case s.module != m.SHA256:
		return nil, fmt.Errorf("wasm: snapshot of module %s given to module %s", s.module[:12], m.SHA256[:12])
	case len(s.globals) != len(m.globals):
		return nil, fmt.Errorf("wasm: snapshot has %d globals, module %s has %d", len(s.globals), m.SHA256[:12], len(m.globals))
	case m.key.pages != 0 && uint64(s.img.size) > uint64(m.key.pages)*PageSize:
		return nil, fmt.Errorf("wasm: snapshot memory of %d pages exceeds the %d-page limit of module %s", s.img.size/PageSize, m.key.pages, m.SHA256[:12])
	}
	r, err := m.newInstance(ctx, cfg, s.img, s.nanotime)
	if err != nil {
		return nil, err
	}
	for i, name := range m.globals {
		g, ok := r.mod.ExportedGlobal(name).(api.MutableGlobal)
		if !ok {
			_ = r.Close(context.Background())
			return nil, fmt.Errorf("wasm: instance lacks mutable global export %s", name)
		}
		g.Set(s.globals[i])
	}
	return r, nil
}

// initSnapshot returns the snapshot of m right after _initialize with argv
// [cell], or nil when there is none yet.
func (m *Module) initSnapshot(cell string) *Snapshot {
	m.snapMu.Lock()
	defer m.snapMu.Unlock()
	return m.inits[cell]
}

// InitSnapshot is the pre-initialised snapshot replicas of cell start
// from, or nil while there is none (the first replica has not started, or
// the module cannot be snapshotted: see NoSnapshot).
func (m *Module) InitSnapshot(cell string) *Snapshot { return m.initSnapshot(cell) }

// keepInit records s as cell's pre-initialised snapshot unless one is
// there, and reports whether it did.
func (m *Module) keepInit(cell string, s *Snapshot) bool {
	m.snapMu.Lock()
	defer m.snapMu.Unlock()
	if m.inits == nil {
		m.inits = make(map[string]*Snapshot)
	}
	if _, ok := m.inits[cell]; ok {
		return false
	}
	m.inits[cell] = s
	return true
}

// newInstance instantiates m with its memory starting from img (nil: the
// module's own data, applied by wazero) and a guest clock that never reads
// below floor, and binds the ABI exports. It runs no start function.
func (m *Module) newInstance(ctx context.Context, cfg InstanceConfig, img *image, floor int64) (*Reactor, error) {
	gctx := holdMemory(cfg.guestContext(m.engine.log)) // Snapshot forks the memory it holds
	g := guestFrom(gctx)
	clock := guestClock(floor)
	mcfg := baseModuleConfig().
		WithNanotime(clock, 1).
		WithArgs(cfg.Cell).
		WithStdout(newLogWriter(g.log, cfg.Cell, "stdout")).
		WithStderr(newLogWriter(g.log, cfg.Cell, "stderr"))
	mod, err := m.instantiateFrom(gctx, mcfg, img)
	if err != nil {
		return nil, err
	}
	r := &Reactor{
		m:      m,
		mod:    mod,
		mem:    mod.Memory(),
		alloc:  mod.ExportedFunction("cel_alloc"),
		handle: mod.ExportedFunction("cel_handle"),
		ctx:    gctx,
		clock:  clock,
	}
	if r.mem == nil || r.alloc == nil || r.handle == nil {
		_ = mod.Close(context.Background())
		return nil, errors.New("instantiated module lacks its ABI exports")
	}
	if r.intr, err = m.interrupter(mod); err != nil {
		_ = mod.Close(context.Background())
		return nil, err
	}
	return r, nil
}

// instantiateFrom is instantiate with linear memory starting from img;
// with a nil img, from the module's data image when it has one.
func (m *Module) instantiateFrom(ctx context.Context, cfg wazero.ModuleConfig, img *image) (api.Module, error) {
	if img == nil {
		img = m.data
	}
	if img != nil {
		held := heldMemoryOf(ctx)
		ctx = experimental.WithMemoryAllocator(ctx, experimental.MemoryAllocatorFunc(
			func(_, limit uint64) experimental.LinearMemory { return held.record(img.memory(limit)) }))
	}
	return m.instantiate(ctx, cfg)
}

// dataImage lays the module's data segments into its minimum memory.
func dataImage(sha string, p *instrument.Prepared) (*image, error) {
	size := uint64(p.MemoryPages) * PageSize
	if size > 1<<32 {
		return nil, fmt.Errorf("memory minimum of %d pages is too large", p.MemoryPages)
	}
	b := make([]byte, size)
	for i, seg := range p.Data {
		if uint64(seg.Offset)+uint64(len(seg.Bytes)) > size {
			return nil, fmt.Errorf("data segment %d (%d bytes at %#x) is outside the memory's %d pages", i, len(seg.Bytes), seg.Offset, p.MemoryPages)
		}
		copy(b[seg.Offset:], seg.Bytes)
	}
	return newImage(sha[:12]+"-data", b)
}

func globalNames(idx []uint32) []string {
	names := make([]string, len(idx))
	for i, g := range idx {
		names[i] = instrument.SnapshotGlobalPrefix + strconv.FormatUint(uint64(g), 10)
	}
	return names
}

// guestClock is an instance's monotonic clock: the host's, moved forward
// if need be so that it never reads below floor (a reading the guest took
// before its snapshot, maybe in another process or on another host).
func guestClock(floor int64) func() int64 {
	off := int64(0)
	if now := hostNanotime(); now <= floor {
		off = floor - now + 1
	}
	return func() int64 { return hostNanotime() + off }
}

var processStart = time.Now()

// hostNanotime is a monotonic clock in nanoseconds, counted from the boot
// where the platform allows (so readings compare across processes of one
// boot) and from process start otherwise.
func hostNanotime() int64 { return bootOffset + int64(time.Since(processStart)) }
