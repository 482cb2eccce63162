package wasm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// MaxResponse bounds a response envelope a guest may return.
const MaxResponse = 64 << 20

// Reactor is one live instance of a reactor module. It is not safe for
// concurrent use: a pool hands each instance to one request at a time.
type Reactor struct {
	m      *Module
	clock  func() int64 // the instance's monotonic clock
	mod    api.Module
	mem    api.Memory
	alloc  api.Function
	handle api.Function
	ctx    context.Context // carries the guest identity for host calls
	intr   *interrupter
	stack  [2]uint64
}

// InstanceConfig names the cell an instance serves.
type InstanceConfig struct {
	// Cell is the cell name, used in logs and host calls.
	Cell string
	// Logger receives the guest's log lines, stdout and stderr.
	Logger *slog.Logger
	// InitTimeout bounds _initialize (reactors).
	InitTimeout time.Duration
	// Call carries out the cell's cel.call; nil refuses every call.
	Call CallFunc
	// Signal publishes the cell's cel.signal readings; nil refuses them.
	Signal SignalFunc
}

func (c InstanceConfig) guestContext(fallback *slog.Logger) context.Context {
	log := c.Logger
	if log == nil {
		log = fallback
	}
	return context.WithValue(context.Background(), guestKey{}, &guest{cell: c.Cell, log: log, call: c.Call, signal: c.Signal})
}

func baseModuleConfig() wazero.ModuleConfig {
	return wazero.NewModuleConfig().
		WithSysWalltime().
		WithSysNanotime().
		WithSysNanosleep().
		WithRandSource(rand.Reader)
}

// NewReactor starts an instance: from the module's pre-initialised
// snapshot for this cell when there is one, else by instantiating the
// module and running its _initialize export — after which, for a module
// that can be snapshotted, the fresh instance is captured so that the next
// replicas start from it.
func (m *Module) NewReactor(ctx context.Context, cfg InstanceConfig) (*Reactor, error) {
	if m.ABI != ABIReactor {
		return nil, fmt.Errorf("module %s is a %s, not a reactor", m.SHA256[:12], m.ABI)
	}
	if s := m.initSnapshot(cfg.Cell); s != nil {
		return m.NewReactorFrom(ctx, cfg, s)
	}
	if s := m.loadInit(cfg.Cell); s != nil {
		r, err := m.NewReactorFrom(ctx, cfg, s)
		if err == nil {
			m.keepInit(cfg.Cell, s)
			return r, nil
		}
		m.engine.log.Warn("cannot start a replica from the cached snapshot; it initialises", "cell", cfg.Cell, "err", err)
	}
	r, err := m.newInstance(ctx, cfg, nil, 0)
	if err != nil {
		return nil, err
	}
	if init := r.mod.ExportedFunction("_initialize"); init != nil {
		err := r.intr.run(ctx, r.ctx, cfg.InitTimeout, func(cctx context.Context) error {
			if err := init.CallWithStack(cctx, r.stack[:]); err != nil {
				return trapError("_initialize", err)
			}
			return nil
		})
		if err != nil {
			_ = r.Close(context.Background())
			return nil, fmt.Errorf("initializing module %s: %w", m.SHA256[:12], err)
		}
	}
	if m.snapshotable() {
		if s, err := r.Snapshot(); err == nil {
			if m.keepInit(cfg.Cell, s) {
				m.engine.background(func() { m.storeInit(cfg.Cell, s) })
			}
		} else {
			m.engine.log.Warn("cannot snapshot a fresh instance; replicas initialise one by one", "cell", cfg.Cell, "sha256", m.SHA256[:12], "err", err)
		}
	}
	return r, nil
}

// Handle passes one request envelope to the guest and returns a copy of the
// response envelope. Any error leaves the instance unusable: close it.
func (r *Reactor) Handle(ctx context.Context, timeout time.Duration, req []byte) ([]byte, error) {
	g := guestFrom(r.ctx)
	g.req = ctx
	defer func() { g.req = nil }()
	var resp []byte
	err := r.intr.run(ctx, r.ctx, timeout, func(cctx context.Context) error {
		r.stack[0] = uint64(len(req))
		if err := r.alloc.CallWithStack(cctx, r.stack[:]); err != nil {
			return trapError("cel_alloc", err)
		}
		ptr := uint32(r.stack[0])
		if !r.mem.Write(ptr, req) {
			return &TrapError{Export: "cel_alloc", ExitCode: -1,
				Err: fmt.Errorf("returned pointer %#x cannot hold %d bytes (memory is %d bytes)", ptr, len(req), r.mem.Size())}
		}
		r.stack[0], r.stack[1] = uint64(ptr), uint64(len(req))
		if err := r.handle.CallWithStack(cctx, r.stack[:]); err != nil {
			return trapError("cel_handle", err)
		}
		rptr, rlen := uint32(r.stack[0]>>32), uint32(r.stack[0])
		if rlen > MaxResponse {
			return &TrapError{Export: "cel_handle", ExitCode: -1,
				Err: fmt.Errorf("response of %d bytes exceeds the %d-byte limit", rlen, MaxResponse)}
		}
		b, ok := r.mem.Read(rptr, rlen)
		if !ok {
			return &TrapError{Export: "cel_handle", ExitCode: -1,
				Err: fmt.Errorf("response at %#x+%d is outside memory (%d bytes)", rptr, rlen, r.mem.Size())}
		}
		resp = append([]byte(nil), b...)
		return nil
	})
	return resp, err
}

// MemorySize reports the instance's linear memory size in bytes.
func (r *Reactor) MemorySize() uint32 { return r.mem.Size() }

// Close releases the instance.
func (r *Reactor) Close(ctx context.Context) error { return r.mod.Close(ctx) }

// interrupter returns the time-limit mechanism for an instance of m.
func (m *Module) interrupter(mod api.Module) (*interrupter, error) {
	in := &interrupter{mode: m.engine.mode}
	if in.mode == InterruptEpoch {
		g, ok := mod.ExportedGlobal(interruptGlobal).(api.MutableGlobal)
		cd, ok2 := mod.ExportedGlobal(countdownGlobal).(api.MutableGlobal)
		if !ok || !ok2 {
			return nil, errors.New("instantiated module lacks its interrupt globals")
		}
		in.g, in.cd = g, cd
	}
	return in, nil
}
