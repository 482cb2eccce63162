package wasm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/celluster/celluster/core/wasm/instrument"
)

// interruptGlobal is the export name of the global injected by package
// instrument; the host sets it to 1 to stop the guest.
const interruptGlobal = "__cel_interrupt"

// countdownGlobal is the export name of the yield countdown; the host zeroes
// it after setting the interrupt global so the guest takes its slow path at
// the next check.
const countdownGlobal = "__cel_countdown"

// yieldInterval is how many checks (loop back-edges and calls) a guest runs
// between returns to Go. Compiled guest code cannot be preempted, so a guest
// that never returned to Go would hold its thread through the garbage
// collector's stop-the-world, freezing the whole process (including the
// timer that would interrupt it). A yield costs about a microsecond (an
// exit from compiled code into Go and back), so it is taken rarely: at ~2.5 ns
// a check, a spinning guest yields every ~250 µs, which bounds how long it can
// delay a stop-the-world, while yields cost under 1 % of its speed
// (BenchmarkCPUBound: 1 000 checks between yields cost 50 %).
const yieldInterval = 100_000

// PageSize is the WebAssembly page size in bytes.
const PageSize = 64 << 10

// Config configures an Engine.
type Config struct {
	// CacheDir holds wazero's on-disk compilation cache. Empty disables it.
	CacheDir string
	// CompileWorkers is the number of goroutines compiling one module;
	// zero means GOMAXPROCS.
	CompileWorkers int
	// Logger receives guest log lines and engine events.
	Logger *slog.Logger
	// Interrupt selects how time limits stop a running guest. The zero
	// value, InterruptEpoch, is the one to use; the others exist so
	// benchmarks can compare against them.
	Interrupt InterruptMode
	// Retain is how many compiled modules no cell references are kept in
	// memory, so that a removed and re-added module is not compiled again.
	Retain int
	// NoSnapshots compiles modules as they are and starts every replica by
	// instantiating the module and running _initialize: no pre-initialised
	// snapshots. For comparison in benchmarks, and as a way out should a
	// module misbehave when restored.
	NoSnapshots bool
}

// InterruptMode is how a call past its time limit is stopped.
type InterruptMode int

const (
	// InterruptEpoch instruments modules with a check of one global at
	// every function entry and loop header (package instrument).
	InterruptEpoch InterruptMode = iota
	// InterruptContext uses wazero's WithCloseOnContextDone: the runtime
	// checks the call's context on every loop back-edge and call.
	InterruptContext
	// InterruptNone compiles modules unmodified and cannot stop a running
	// guest: time limits are not enforced. For benchmarks only.
	InterruptNone
)

func (m InterruptMode) String() string {
	switch m {
	case InterruptEpoch:
		return "epoch"
	case InterruptContext:
		return "close-on-context-done"
	case InterruptNone:
		return "none"
	}
	return "unknown"
}

// Engine compiles and runs cell modules. It is safe for concurrent use.
type Engine struct {
	mode     InterruptMode
	nosnap   bool
	rt       wazero.Runtime
	rc       wazero.RuntimeConfig // rt's configuration
	cached   bool                 // rt writes compiled code to a disk cache
	cacheDir string               // the disk cache's directory; "" for none
	log      *slog.Logger
	workers  int
	retain   int

	mu       sync.Mutex
	uncached wazero.Runtime // started when the disk cache fails a write
	cacheErr error          // the last cache failure
	cacheAt  time.Time      // when it happened
	modules  map[moduleKey]*moduleEntry
	idle     []moduleKey // unreferenced modules, oldest first
	closed   bool
	compiles int
	bg       sync.WaitGroup // cache writes in flight; Close waits for them
}

type moduleKey struct {
	sha   [32]byte
	pages uint32
}

type moduleEntry struct {
	ready chan struct{} // closed when mod/err are set
	mod   *Module
	err   error
	refs  int
	// bgTid is the thread of a background compile in progress (0: none):
	// a foreground Compile that waits for it raises its priority, and
	// counts itself in waiters first, so that a compile that lowers its
	// priority after a waiter came raises it back at once.
	bgTid   atomic.Int64
	waiters atomic.Int32
}

// NewEngine starts a wazero runtime with the compiler engine, the WASI
// preview1 host module and the `cel` host module.
func NewEngine(ctx context.Context, cfg Config) (*Engine, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.CompileWorkers <= 0 {
		cfg.CompileWorkers = runtime.GOMAXPROCS(0)
	}
	if cfg.Retain <= 0 {
		cfg.Retain = 8
	}
	rc := runtimeConfig(cfg.Interrupt)
	if cfg.CacheDir != "" {
		if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("wasm: creating compilation cache dir: %w", err)
		}
		cache, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasm: opening compilation cache %s: %w", cfg.CacheDir, err)
		}
		rc = rc.WithCompilationCache(cache)
	}
	rt := wazero.NewRuntimeWithConfig(ctx, rc)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		_ = rt.Close(ctx)
		return nil, fmt.Errorf("wasm: instantiating WASI: %w", err)
	}
	e := &Engine{
		mode:     cfg.Interrupt,
		nosnap:   cfg.NoSnapshots,
		rt:       rt,
		rc:       rc,
		cached:   cfg.CacheDir != "",
		cacheDir: cfg.CacheDir,
		log:      cfg.Logger,
		workers:  cfg.CompileWorkers,
		retain:   cfg.Retain,
		modules:  make(map[moduleKey]*moduleEntry),
	}
	if err := instantiateHost(ctx, rt, e.log); err != nil {
		_ = rt.Close(ctx)
		return nil, err
	}
	return e, nil
}

func runtimeConfig(mode InterruptMode) wazero.RuntimeConfig {
	rc := wazero.NewRuntimeConfigCompiler()
	if mode == InterruptContext {
		rc = rc.WithCloseOnContextDone(true)
	}
	return rc
}

// Close stops the runtime and every instance created from it.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	e.closed = true
	un := e.uncached
	e.mu.Unlock()
	e.bg.Wait()
	if un != nil {
		_ = un.Close(ctx)
	}
	return e.rt.Close(ctx)
}

// uncachedRuntime returns a runtime like the engine's without the disk
// cache, starting it on first use: modules whose cache write failed (a
// full or read-only disk) are compiled and run there.
func (e *Engine) uncachedRuntime(ctx context.Context) (wazero.Runtime, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.uncached != nil {
		return e.uncached, nil
	}
	if e.closed {
		return nil, errors.New("wasm: engine closed")
	}
	rt := wazero.NewRuntimeWithConfig(ctx, runtimeConfig(e.mode))
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		_ = rt.Close(ctx)
		return nil, fmt.Errorf("wasm: instantiating WASI: %w", err)
	}
	if err := instantiateHost(ctx, rt, e.log); err != nil {
		_ = rt.Close(ctx)
		return nil, err
	}
	e.uncached = rt
	return rt, nil
}

// CompileOptions are the per-cell settings fixed at compile time.
type CompileOptions struct {
	// MemoryLimit caps the guest's linear memory in bytes (rounded down to
	// whole pages). Zero means the wasm limit of 4 GiB.
	MemoryLimit uint64
	// Background marks a compile nobody waits for yet (a peer's module,
	// compiled ahead of a take-over): it runs with one worker on an OS
	// thread of its own at a lower CPU priority (nice 10), so that a node
	// compiling its peers' modules as it joins cannot starve its own
	// membership probes, or another node's, of CPU. A later foreground
	// Compile of the same module waits for it.
	Background bool
}

// backgroundNice is the nice value of background compiles.
const backgroundNice = 10

// Compile returns the module for src, compiling it at most once per content
// hash and memory limit. Concurrent calls for the same module wait for one
// compilation. Every successful Compile must be paired with Module.Release.
func (e *Engine) Compile(ctx context.Context, src []byte, opts CompileOptions) (*Module, error) {
	key := moduleKey{sha: sha256.Sum256(src), pages: pagesFor(opts.MemoryLimit)}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, errors.New("wasm: engine closed")
	}
	ent, ok := e.modules[key]
	if ok {
		ent.refs++
		e.unidle(key)
		e.mu.Unlock()
		if !opts.Background {
			ent.waiters.Add(1)
			raiseThreadPriority(int(ent.bgTid.Load()))
		}
		select {
		case <-ent.ready:
		case <-ctx.Done():
			e.release(key, ent)
			return nil, ctx.Err()
		}
		if ent.err != nil {
			return nil, ent.err // the failed entry is already gone
		}
		return ent.mod, nil
	}
	ent = &moduleEntry{ready: make(chan struct{}), refs: 1}
	e.modules[key] = ent
	e.compiles++
	e.mu.Unlock()

	if opts.Background {
		done := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			tid, restore := lowerThreadPriority(backgroundNice)
			ent.bgTid.Store(int64(tid))
			if ent.waiters.Load() > 0 {
				raiseThreadPriority(tid) // a foreground Compile came first
			}
			ent.mod, ent.err = e.compile(ctx, src, key, 1)
			ent.bgTid.Store(0)
			if restore() {
				runtime.UnlockOSThread()
			} // else the thread stays locked and ends with this goroutine
			close(done)
		}()
		<-done
	} else {
		ent.mod, ent.err = e.compile(ctx, src, key, e.workers)
	}
	close(ent.ready)
	if ent.err != nil {
		e.mu.Lock()
		delete(e.modules, key) // a later attempt may succeed (e.g. ctx canceled)
		e.mu.Unlock()
		return nil, ent.err
	}
	return ent.mod, nil
}

// Compilations reports how many compilations the engine has started, for
// tests and status.
func (e *Engine) Compilations() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.compiles
}

func (e *Engine) compile(ctx context.Context, src []byte, key moduleKey, workers int) (*Module, error) {
	start := time.Now()
	opts := instrument.Options{MaxMemoryPages: key.pages}
	if e.mode == InterruptEpoch {
		opts.InterruptGlobal = interruptGlobal
		opts.YieldInterval = yieldInterval
		opts.CountdownGlobal = countdownGlobal
	}
	opts.Snapshot = !e.nosnap
	prep := e.loadPrepared(key)
	if prep == nil || e.nosnap {
		var err error
		if prep, err = instrument.Prepare(src, opts); err != nil {
			return nil, fmt.Errorf("not a usable WebAssembly module: %w", err)
		}
		if !e.nosnap {
			e.storePrepared(key, prep)
		}
	}
	sha := hex.EncodeToString(key.sha[:])
	var data *image
	var err error
	if e.nosnap {
		prep.NoSnapshot = "snapshots are off on this node"
	} else if prep.NoSnapshot == "" {
		if data, err = dataImage(sha, prep); err != nil {
			return nil, fmt.Errorf("not a usable WebAssembly module: %w", err)
		}
	}
	cctx := experimental.WithCompilationWorkers(ctx, workers)
	cm, rt, cacheErr, err := e.compileCached(cctx, prep.Module, key)
	if err != nil {
		return nil, fmt.Errorf("compiling module: %w", err)
	}
	abi, err := classify(cm)
	if err != nil {
		_ = cm.Close(ctx)
		return nil, err
	}
	m := &Module{
		SHA256:      sha,
		ABI:         abi,
		ABIMinor:    abiMinor(cm, abi),
		Size:        len(src),
		CompileTime: time.Since(start),
		CacheError:  cacheErr,
		NoSnapshot:  prep.NoSnapshot,
		engine:      e,
		data:        data,
		globals:     globalNames(prep.Globals),
		rt:          rt,
		key:         key,
		compiled:    cm,
	}
	e.log.Debug("compiled module", "sha256", m.SHA256[:12], "abi", abi.String(), "bytes", len(src), "took", m.CompileTime)
	return m, nil
}

// cacheRetry is how long the engine compiles without the disk cache after
// a cache write failed, before it tries the cache again.
const cacheRetry = time.Minute

// compileCached compiles inst in the cached runtime. wazero fails the
// compilation when it cannot write the disk cache (a full or read-only
// disk): then the module is compiled again in a runtime without the cache,
// and if that works it serves uncached (each restart compiles it again),
// with the cache's error returned as cacheErr. For cacheRetry after a
// failure, modules go straight to the uncached runtime.
func (e *Engine) compileCached(ctx context.Context, inst []byte, key moduleKey) (cm wazero.CompiledModule, rt wazero.Runtime, cacheErr string, err error) {
	if !e.cached {
		cm, err = e.rt.CompileModule(ctx, inst)
		return cm, e.rt, "", err
	}
	e.mu.Lock()
	recent, last := time.Since(e.cacheAt) < cacheRetry, e.cacheErr
	e.mu.Unlock()
	if !recent {
		cm, err = e.rt.CompileModule(ctx, inst)
		if err == nil || ctx.Err() != nil {
			return cm, e.rt, "", err
		}
		last = err
	}
	urt, uerr := e.uncachedRuntime(ctx)
	if uerr != nil {
		return nil, nil, "", err
	}
	ucm, uerr := urt.CompileModule(ctx, inst)
	if uerr != nil {
		if err != nil {
			return nil, nil, "", err // the module is at fault, not the cache
		}
		return nil, nil, "", uerr
	}
	if !recent {
		e.mu.Lock()
		e.cacheErr, e.cacheAt = last, time.Now()
		e.mu.Unlock()
		e.log.Warn("compile cache write failed; modules are compiled without it for a while", "sha256", hex.EncodeToString(key.sha[:6]), "retry", cacheRetry, "err", last)
	}
	return ucm, urt, "compile cache unavailable, serving uncached: " + last.Error(), nil
}

// release drops one reference to key; unreferenced modules are retained in a
// small LRU and closed when they fall out of it.
func (e *Engine) release(key moduleKey, ent *moduleEntry) {
	e.mu.Lock()
	if e.modules[key] != ent {
		e.mu.Unlock()
		return
	}
	ent.refs--
	if ent.refs > 0 {
		e.mu.Unlock()
		return
	}
	e.idle = append(e.idle, key)
	var evict []*moduleEntry
	for len(e.idle) > e.retain {
		k := e.idle[0]
		e.idle = e.idle[1:]
		evict = append(evict, e.modules[k])
		delete(e.modules, k)
	}
	e.mu.Unlock()
	for _, ent := range evict {
		<-ent.ready
		if ent.mod != nil {
			_ = ent.mod.compiled.Close(context.Background())
		}
	}
}

// unidle removes key from the idle list; e.mu is held.
func (e *Engine) unidle(key moduleKey) {
	for i, k := range e.idle {
		if k == key {
			e.idle = append(e.idle[:i], e.idle[i+1:]...)
			return
		}
	}
}

func pagesFor(limit uint64) uint32 {
	if limit == 0 {
		return 0
	}
	p := limit / PageSize
	if p == 0 {
		p = 1
	}
	if p > 65536 {
		p = 65536
	}
	return uint32(p)
}
