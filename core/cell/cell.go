package cell

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/celluster/celluster/core/wasm"
)

// State is where a cell is in its life.
type State string

// Cell states.
const (
	// StateLoading: the first module is being compiled and warmed.
	StateLoading State = "loading"
	// StateServing: a version takes requests (Error may still report a
	// newer module that was rejected).
	StateServing State = "serving"
	// StateFailed: no version serves; Error says why.
	StateFailed State = "failed"
	// StateDraining: the cell is being removed.
	StateDraining State = "draining"
)

// Cell is one named workload served by the node.
type Cell struct {
	name   string
	eng    *wasm.Engine
	log    *slog.Logger
	limits Limits

	slots  chan struct{} // concurrency limiter
	cur    atomic.Pointer[version]
	stats  *stats
	loaded chan struct{} // closed once the first load attempt ends
	once   sync.Once

	mu       sync.Mutex
	state    State
	err      string
	errSHA   string
	updated  time.Time
	upgrades int
}

func newCell(name string, eng *wasm.Engine, log *slog.Logger, limits Limits) *Cell {
	limits = limits.WithDefaults()
	return &Cell{
		name:    name,
		eng:     eng,
		log:     log.With("cell", name),
		limits:  limits,
		slots:   make(chan struct{}, limits.Concurrency),
		stats:   newStats(),
		state:   StateLoading,
		updated: time.Now(),
		loaded:  make(chan struct{}),
	}
}

// Name returns the cell's name.
func (c *Cell) Name() string { return c.name }

// Load compiles src and makes it the serving version: the first load spawns
// the cell, a later one with different content upgrades it. The new version
// is warmed before it takes traffic; on any error the previous version keeps
// serving and the error stays visible in Info until a later load succeeds.
func (c *Cell) Load(ctx context.Context, src []byte, source string) error {
	err := c.load(ctx, src, source)
	defer c.once.Do(func() { close(c.loaded) })
	c.mu.Lock()
	defer c.mu.Unlock()
	c.updated = time.Now()
	if err != nil {
		c.err = err.Error()
		if c.cur.Load() == nil {
			c.state = StateFailed
		}
		return err
	}
	c.err, c.errSHA = "", ""
	c.state = StateServing
	return nil
}

func (c *Cell) load(ctx context.Context, src []byte, source string) error {
	mod, err := c.eng.Compile(ctx, src, wasm.CompileOptions{MemoryLimit: c.limits.Memory})
	if err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	old := c.cur.Load()
	if old != nil && old.mod.SHA256 == mod.SHA256 {
		mod.Release()
		return nil
	}
	var p *pool
	if mod.ABI == wasm.ABIReactor {
		p = newPool(mod, wasm.InstanceConfig{Cell: c.name, Logger: c.log, InitTimeout: c.limits.RequestTimeout}, c.limits.Warm)
		warm := c.limits.Warm
		if old != nil && old.pool != nil {
			// Take over the load the old version carries, not just the minimum.
			warm = max(warm, min(old.pool.size(), c.limits.Concurrency))
		}
		if err := p.fill(ctx, warm); err != nil {
			p.close()
			mod.Release()
			return fmt.Errorf("%s: starting instance: %w", source, err)
		}
	}
	v := newVersion(mod, p, source)
	c.cur.Store(v)
	if old != nil {
		c.mu.Lock()
		c.upgrades++
		c.mu.Unlock()
		c.log.Info("upgraded cell", "from", old.mod.SHA256[:12], "to", mod.SHA256[:12], "abi", mod.ABI.String())
		go old.retire(context.Background())
	} else {
		c.log.Info("spawned cell", "sha256", mod.SHA256[:12], "abi", mod.ABI.String(), "compile", mod.CompileTime.Round(time.Millisecond))
	}
	return nil
}

// Reject records an error about the cell's source that happened before
// compiling (for example an unreadable file); the serving version, if any,
// is untouched.
func (c *Cell) Reject(err error) {
	defer c.once.Do(func() { close(c.loaded) })
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err.Error()
	c.updated = time.Now()
	if c.cur.Load() == nil {
		c.state = StateFailed
	}
}

// drain stops the cell taking requests and waits, bounded by ctx, for those
// in flight, then frees its instances.
func (c *Cell) drain(ctx context.Context) {
	c.mu.Lock()
	c.state = StateDraining
	c.mu.Unlock()
	if v := c.cur.Swap(nil); v != nil {
		v.retire(ctx)
	}
}

// acquire returns the serving version with a reference held, or nil. A
// cell still loading its first module is waited for, bounded by ctx and the
// request time limit, so requests racing a node's start are served.
func (c *Cell) acquire(ctx context.Context) *version {
	select {
	case <-c.loaded:
	default:
		t := time.NewTimer(c.limits.RequestTimeout)
		select {
		case <-c.loaded:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	for {
		v := c.cur.Load()
		if v == nil {
			return nil
		}
		if v.tryAcquire() {
			return v
		}
		// v was retired between Load and tryAcquire; its successor (or
		// nil) is already stored.
	}
}

// errQueueFull and errQueueTimeout are the two ways a request is refused by
// the concurrency limiter.
var (
	errQueueFull    = errors.New("queue full")
	errQueueTimeout = errors.New("queue wait timed out")
)

// enter takes a concurrency slot, queueing for at most QueueTimeout behind
// at most QueueLength others.
func (c *Cell) enter(ctx context.Context) error {
	select {
	case c.slots <- struct{}{}:
		return nil
	default:
	}
	if c.stats.queued.Add(1) > int64(c.limits.QueueLength) {
		c.stats.queued.Add(-1)
		return errQueueFull
	}
	defer c.stats.queued.Add(-1)
	t := time.NewTimer(c.limits.QueueTimeout)
	defer t.Stop()
	select {
	case c.slots <- struct{}{}:
		return nil
	case <-t.C:
		return errQueueTimeout
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Cell) leave() { <-c.slots }

// Info is a snapshot of a cell for status listings.
type Info struct {
	Name     string
	SHA256   string
	ABI      string
	State    State
	Error    string
	Source   string
	Replicas int
	InFlight int64
	Queued   int64
	Requests uint64
	Errors   uint64
	P50      time.Duration
	P99      time.Duration
	Size     int
	Upgrades int
	Updated  time.Time
	LastUsed time.Time
	Limits   Limits
}

// Info returns the cell's current snapshot.
func (c *Cell) Info() Info {
	c.mu.Lock()
	in := Info{
		Name:     c.name,
		State:    c.state,
		Error:    c.err,
		Updated:  c.updated,
		Upgrades: c.upgrades,
		Limits:   c.limits,
	}
	c.mu.Unlock()
	if v := c.cur.Load(); v != nil {
		in.SHA256 = v.mod.SHA256
		in.ABI = v.mod.ABI.String()
		in.Size = v.mod.Size
		in.Source = v.source
		if v.pool != nil {
			in.Replicas = v.pool.size()
		} else {
			in.Replicas = int(c.stats.inflight.Load())
		}
	}
	in.InFlight = c.stats.inflight.Load()
	in.Queued = c.stats.queued.Load()
	in.Requests = c.stats.requests.Load()
	in.Errors = c.stats.errors.Load()
	in.P50, in.P99 = c.stats.quantiles()
	if ns := c.stats.lastReq.Load(); ns != 0 {
		in.LastUsed = time.Unix(0, ns)
	}
	return in
}

// ErrNoReplicas is returned when scaling a cell whose module is a command:
// it runs a fresh instance per request and keeps none.
var ErrNoReplicas = errors.New("command cells keep no replicas: each request runs a fresh instance")

// SpawnReplicas adds n warm instances (bounded by the concurrency limit) and
// returns how many are live.
func (c *Cell) SpawnReplicas(ctx context.Context, n int) (int, error) {
	var live int
	err := c.withPool(ctx, func(p *pool) (err error) {
		if live, err = p.grow(ctx, n, c.limits.Concurrency); err != nil {
			return fmt.Errorf("cell %s: starting replica: %w", c.name, err)
		}
		return nil
	})
	return live, err
}

// DrainReplicas closes up to n idle instances, keeping at least one warm,
// and returns how many are live.
func (c *Cell) DrainReplicas(ctx context.Context, n int) (int, error) {
	var live int
	err := c.withPool(ctx, func(p *pool) error {
		live = p.shrink(n, 1)
		return nil
	})
	return live, err
}

// withPool runs fn on the serving version's instance pool.
func (c *Cell) withPool(ctx context.Context, fn func(*pool) error) error {
	v := c.acquire(ctx)
	if v == nil {
		return fmt.Errorf("cell %s is not serving", c.name)
	}
	defer v.release()
	if v.pool == nil {
		return fmt.Errorf("cell %s: %w", c.name, ErrNoReplicas)
	}
	return fn(v.pool)
}

// TakeWindow returns what the cell did since the previous call (requests,
// errors, latency quantiles) and starts a new window. One caller should own
// the windows (the node's telemetry tick).
func (c *Cell) TakeWindow() Window { return c.stats.takeWindow() }
