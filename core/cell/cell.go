package cell

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/celluster/celluster/core/tracing"
	"github.com/celluster/celluster/core/wasm"
	"github.com/celluster/celluster/pluginapi/cellabi"
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

// Cell is one named workload served by the node. It routes requests to one
// or more versions (module builds) by weight; each reactor version keeps a
// pool of replicas.
type Cell struct {
	name string
	eng  *wasm.Engine
	log  *slog.Logger

	lim    atomic.Pointer[Limits]
	pol    atomic.Pointer[Policy]
	req    atomic.Pointer[Requirement]
	slots  atomic.Pointer[chan struct{}] // concurrency limiter
	table  atomic.Pointer[routeTable]
	rr     atomic.Uint64
	stats  *stats
	loaded chan struct{} // closed once the first load attempt ends
	once   sync.Once
	born   time.Time

	rmu sync.Mutex // serialises route table changes

	caller    Caller     // cel.call, from the registry; may be nil
	sink      SignalSink // cel.signal, from the registry; may be nil
	sig       signals
	store     StateStore             // kept state across restarts, from the registry; may be nil
	onState   func(StateEvent)       // from the registry; may be nil
	keep      atomic.Bool            // the intent keeps state (set before the first load)
	stateNote atomic.Pointer[string] // why kept state was not restored, if so
	calls     atomic.Pointer[CallPolicy]

	mu       sync.Mutex
	state    State
	err      string
	updated  time.Time
	upgrades int
}

// Policy is what the cell's intent asks of its replicas; the cell enforces
// it on every replica change, whoever asks.
type Policy struct {
	// Min and Max bound live replicas (Max 0: the concurrency limit).
	Min, Max int
	// Warm is how many replicas a woken cell starts with and spawn keeps.
	Warm int
	// DecayIdle lets the cell go below Min, to zero, once it has been idle
	// this long (0: never).
	DecayIdle time.Duration
	// KeepState keeps the cell's in-memory state: new replicas fork the
	// replica that served last, a cell woken from zero continues from the
	// state its last replica had, and the state is saved when the node
	// drains and restored when it starts (see StateStore). Reactor cells
	// whose module can be snapshotted only.
	KeepState bool
	// StateEvery is how often the state is replicated to a peer (0: never).
	StateEvery time.Duration
}

// StateEvent is something that happened to a cell's kept state, for the
// node's journal.
type StateEvent struct {
	Cell string
	// What happened: "decay", "fork", "drain", "reload" (the state was
	// captured that way), "saved" (written for a restart), "restored"
	// (read back at start) or "refused" (a saved state that could not be
	// used, or could not be saved; Err says why).
	What string
	// ID, Size and Taken describe the state (none when refused).
	ID    string
	Size  int
	Taken time.Time
	Err   string
}

// StateStore keeps the state of cells that keep state across node
// restarts.
type StateStore interface {
	// SaveState stores cell's state, a snapshot of mod's instances,
	// replacing what was stored.
	SaveState(cell string, s *wasm.Snapshot, mod *wasm.Module) error
	// LoadState returns cell's stored state, to restore into replicas of
	// mod, or nil when none is stored. A stored state that cannot be used
	// (corrupt, truncated, of another module or format) is an error that
	// says why.
	LoadState(cell string, mod *wasm.Module) (*wasm.Snapshot, error)
}

// ErrUnknownVersion is returned when a version named by sha is not routed.
var ErrUnknownVersion = errors.New("unknown version")

func newCell(name string, eng *wasm.Engine, log *slog.Logger, limits Limits) *Cell {
	limits = limits.WithDefaults()
	c := &Cell{
		name:    name,
		eng:     eng,
		log:     log.With("cell", name),
		stats:   newStats(),
		state:   StateLoading,
		updated: time.Now(),
		born:    time.Now(),
		loaded:  make(chan struct{}),
	}
	c.lim.Store(&limits)
	slots := make(chan struct{}, limits.Concurrency)
	c.slots.Store(&slots)
	c.pol.Store(&Policy{Min: 1, Max: limits.Concurrency, Warm: limits.Warm})
	return c
}

// Name returns the cell's name.
func (c *Cell) Name() string { return c.name }

// Limits returns the cell's limits.
func (c *Cell) Limits() Limits { return *c.lim.Load() }

// SetLimits changes the cell's limits; zero fields take the defaults. The
// request time, concurrency and queue limits apply to the next request; a
// new memory limit applies to the next module loaded, so reload reports
// whether the caller should load the module again.
func (c *Cell) SetLimits(l Limits) (reload bool, err error) {
	if err := l.Validate(); err != nil {
		return false, fmt.Errorf("cell %s: %w", c.name, err)
	}
	l = l.WithDefaults()
	old := c.lim.Swap(&l)
	if old.Concurrency != l.Concurrency {
		slots := make(chan struct{}, l.Concurrency)
		c.slots.Store(&slots)
		// Keep the replica bounds within the new limit.
		pol := c.Policy()
		pol.Max = min(pol.Max, l.Concurrency)
		pol.Min = min(pol.Min, pol.Max)
		pol.Warm = min(pol.Warm, pol.Max)
		c.pol.Store(&pol)
	}
	if t := c.table.Load(); t != nil {
		for _, r := range t.routes {
			if r.v.memory != l.Memory {
				return true, nil
			}
		}
	}
	return false, nil
}

// Policy returns the cell's replica policy.
func (c *Cell) Policy() Policy { return *c.pol.Load() }

// SetPolicy sets the cell's replica policy; Max is capped by the
// concurrency limit.
func (c *Cell) SetPolicy(p Policy) error {
	conc := c.Limits().Concurrency
	if p.Max <= 0 || p.Max > conc {
		p.Max = conc
	}
	if p.Min < 0 || p.Min > p.Max {
		return fmt.Errorf("cell %s: replica bounds %d..%d are not a range within the concurrency limit %d", c.name, p.Min, p.Max, conc)
	}
	p.Warm = min(max(p.Warm, 0), p.Max)
	c.pol.Store(&p)
	c.keep.Store(p.KeepState)
	if t := c.table.Load(); t != nil {
		for _, r := range t.routes {
			if r.v.pool != nil {
				r.v.pool.setWake(max(p.Warm, p.Min))
				r.v.pool.setKeep(p.KeepState && r.v.mod.NoSnapshot == "")
			}
		}
	}
	return nil
}

// SetKeepState says whether the cell keeps its state before its policy is
// set, so that the first load restores a stored state (SetPolicy sets it
// too).
func (c *Cell) SetKeepState(keep bool) { c.keep.Store(keep) }

// restoredState is the stored state the first replicas of mod continue
// from, when the cell keeps state and one is stored.
func (c *Cell) restoredState(mod *wasm.Module) *wasm.Snapshot {
	if !c.keep.Load() || c.store == nil || mod.ABI != wasm.ABIReactor {
		return nil
	}
	if mod.NoSnapshot != "" {
		note := "state is not kept: " + mod.NoSnapshot
		c.stateNote.Store(&note)
		return nil
	}
	s, err := c.store.LoadState(c.name, mod)
	if err != nil {
		note := "the saved state was refused; the cell starts fresh: " + err.Error()
		c.stateNote.Store(&note)
		c.log.Warn("the saved state was refused; the cell starts fresh", "err", err)
		c.stateEvent("refused", nil, err)
		return nil
	}
	if s != nil {
		c.log.Info("restored the cell's saved state", "id", s.ID(), "size", s.Size(), "taken", s.Taken().Format(time.RFC3339Nano), "age", time.Since(s.Taken()).Round(time.Millisecond))
		c.stateEvent("restored", s, nil)
	}
	return s
}

// stateEvent reports an event of the cell's kept state to the registry.
func (c *Cell) stateEvent(what string, s *wasm.Snapshot, err error) {
	if c.onState == nil {
		return
	}
	ev := StateEvent{Cell: c.name, What: what}
	if s != nil {
		ev.ID, ev.Size, ev.Taken = s.ID(), s.Size(), s.Taken()
	}
	if err != nil {
		ev.Err = err.Error()
	}
	c.onState(ev)
}

// ExportState returns the cell's kept state as it is now, with the module
// it is a snapshot of (to encode it for a peer): a capture of the replica
// that served last when one is idle, else the state captured last. sha,
// when not empty, must be the serving module's.
func (c *Cell) ExportState(sha string) (*wasm.Snapshot, *wasm.Module, error) {
	var s *wasm.Snapshot
	var mod *wasm.Module
	err := c.withPool(context.Background(), func(p *pool) error {
		if sha != "" && p.mod.SHA256 != sha {
			return fmt.Errorf("cell %s serves module %s, not %s", c.name, p.mod.SHA256[:12], sha[:min(12, len(sha))])
		}
		var err error
		s, err = p.currentState()
		mod = p.mod
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("cell %s: %w", c.name, err)
	}
	return s, mod, nil
}

// saveState stores the state of a drained pool.
func (c *Cell) saveState(p *pool) {
	if c.store == nil || !c.keep.Load() {
		return
	}
	s, _ := p.keptState()
	if s == nil {
		return
	}
	if err := c.store.SaveState(c.name, s, p.mod); err != nil {
		c.log.Error("cannot save the cell's state; a restart starts it fresh", "err", err)
		c.stateEvent("refused", nil, fmt.Errorf("saving: %w", err))
		return
	}
	c.log.Info("saved the cell's state", "id", s.ID(), "size", s.Size())
	c.stateEvent("saved", s, nil)
}

// Idle returns how long the cell has gone without a request (since it was
// created, if it never had one).
func (c *Cell) Idle() time.Duration {
	last := c.born
	if ns := c.stats.lastReq.Load(); ns != 0 {
		last = time.Unix(0, ns)
	}
	return time.Since(last)
}

// Load compiles src and makes it the only serving version: the first load
// spawns the cell, a later one with different content replaces the versions
// routed (warm first, then swapped in one step). On any error the previous
// versions keep serving and the error stays visible in Info until a later
// load succeeds.
func (c *Cell) Load(ctx context.Context, src []byte, source string) error {
	_, _, err := c.load(ctx, src, source, false)
	return c.finish(err)
}

// Stage compiles src and warms it as a new version routed with weight 0
// beside the current ones, for an upgrade to shift traffic onto; the first
// version of a cell is routed at once. It returns the version's sha256 and
// whether it was staged beside others (false: it is the cell's first
// version, or that module is already routed).
func (c *Cell) Stage(ctx context.Context, src []byte, source string) (sha string, staged bool, err error) {
	sha, staged, err = c.load(ctx, src, source, true)
	return sha, staged, c.finish(err)
}

// finish records the outcome of a load.
func (c *Cell) finish(err error) error {
	defer c.once.Do(func() { close(c.loaded) })
	c.mu.Lock()
	defer c.mu.Unlock()
	c.updated = time.Now()
	if err != nil {
		c.err = err.Error()
		if c.table.Load() == nil {
			c.state = StateFailed
		}
		return err
	}
	c.err = ""
	c.state = StateServing
	return nil
}

// NoteError records an error about the cell (e.g. a rolled back upgrade or
// a rejected intent) shown in Info until the next successful load.
func (c *Cell) NoteError(msg string) {
	c.mu.Lock()
	c.err = msg
	c.updated = time.Now()
	c.mu.Unlock()
}

// ClearError forgets a noted error.
func (c *Cell) ClearError() {
	c.mu.Lock()
	c.err = ""
	c.mu.Unlock()
}

func (c *Cell) load(ctx context.Context, src []byte, source string, stage bool) (string, bool, error) {
	lim := c.Limits()
	if err := c.checkSource(src, source); err != nil {
		return "", false, err
	}
	mod, err := c.eng.Compile(ctx, src, wasm.CompileOptions{MemoryLimit: lim.Memory})
	if err != nil {
		return "", false, fmt.Errorf("%s: %w", source, err)
	}
	if err := c.checkABI(mod, source); err != nil {
		mod.Release()
		return "", false, err
	}
	c.rmu.Lock()
	old := c.table.Load()
	if old != nil {
		for i, r := range old.routes {
			if r.v.mod.SHA256 == mod.SHA256 && r.v.memory == lim.Memory {
				mod.Release()
				var retired []route
				if !stage && len(old.routes) > 1 {
					retired = c.promoteLocked(old, i)
				}
				c.rmu.Unlock()
				retireAll(retired)
				return r.v.mod.SHA256, false, nil
			}
		}
	}
	c.rmu.Unlock()

	var p *pool
	if mod.ABI == wasm.ABIReactor {
		pol := c.Policy()
		warm := max(pol.Warm, pol.Min)
		if old != nil {
			if pv := old.primary(); pv != nil && pv.pool != nil {
				// Take over the load the old version carries, not just the minimum.
				warm = max(warm, min(pv.pool.size(), pol.Max))
			}
		}
		p = newPool(mod, wasm.InstanceConfig{Cell: c.name, Logger: c.log, InitTimeout: lim.RequestTimeout, Call: c.callFunc(), Signal: c.signalFunc()}, warm, max(pol.Warm, pol.Min), &c.stats.queued)
		p.onState = func(how string, s *wasm.Snapshot) { c.stateEvent(how, s, nil) }
		if c.keep.Load() && mod.NoSnapshot == "" {
			p.keep = true
			var pv *version
			if old != nil {
				pv = old.primary()
			}
			switch {
			case old == nil:
				p.state, p.stateOf = c.restoredState(mod), "restart"
			case pv != nil && pv.pool != nil && pv.mod.SHA256 == mod.SHA256:
				// The same module under a new memory limit: the state
				// goes on. A new module starts fresh.
				p.state, p.stateOf = pv.pool.forkSource(), "reload"
			}
		}
		if err := p.fill(ctx, warm); err != nil {
			p.close()
			mod.Release()
			return "", false, fmt.Errorf("%s: starting instance: %w", source, err)
		}
	}
	v := newVersion(mod, p, source, lim.Memory)

	c.rmu.Lock()
	old = c.table.Load()
	if old != nil {
		// Another load of the same module may have won while this one
		// warmed: keep the one routed.
		for i, r := range old.routes {
			if r.v.mod.SHA256 == mod.SHA256 && r.v.memory == lim.Memory {
				var retired []route
				if !stage && len(old.routes) > 1 {
					retired = c.promoteLocked(old, i)
				}
				c.rmu.Unlock()
				retireAll(retired)
				retireAll([]route{{v: v}})
				return r.v.mod.SHA256, false, nil
			}
			if r.v.mod.SHA256 == mod.SHA256 {
				// The same module under a new memory limit is not a new
				// version: replace it in one step.
				stage = false
			}
		}
	}
	if stage && old != nil && len(old.routes) > 0 {
		routes := append(append([]route(nil), old.routes...), route{v: v, weight: 0})
		c.table.Store(newRouteTable(routes))
		c.rmu.Unlock()
		c.log.Info("staged version", "sha256", mod.SHA256[:12], "abi", mod.ABI.String(), "beside", old.primary().mod.SHA256[:12])
		return mod.SHA256, true, nil
	}
	c.table.Store(newRouteTable([]route{{v: v, weight: 100}}))
	c.rmu.Unlock()
	if old != nil && len(old.routes) > 0 {
		c.mu.Lock()
		c.upgrades++
		c.mu.Unlock()
		c.log.Info("upgraded cell", "from", old.primary().mod.SHA256[:12], "to", mod.SHA256[:12], "abi", mod.ABI.String())
		retireAll(old.routes)
	} else {
		c.log.Info("spawned cell", "sha256", mod.SHA256[:12], "abi", mod.ABI.String(), "compile", mod.CompileTime.Round(time.Millisecond))
	}
	return mod.SHA256, false, nil
}

// promoteLocked routes everything to t's i-th version and returns the
// others, to be retired once c.rmu is released.
func (c *Cell) promoteLocked(t *routeTable, i int) []route {
	keep := t.routes[i]
	keep.weight = 100
	c.table.Store(newRouteTable([]route{keep}))
	var out []route
	for j, r := range t.routes {
		if j != i {
			out = append(out, r)
		}
	}
	if len(out) > 0 {
		c.mu.Lock()
		c.upgrades++
		c.mu.Unlock()
		c.log.Info("promoted version", "sha256", keep.v.mod.SHA256[:12])
	}
	return out
}

// retireAll retires versions in the background.
func retireAll(routes []route) {
	for _, r := range routes {
		go r.v.retire(context.Background())
	}
}

// SetWeights sets the route weights of the versions named (by sha256 or a
// unique prefix of at least 8 hex digits); versions not named keep theirs.
// At least one version must keep a weight above zero.
func (c *Cell) SetWeights(weights map[string]uint32) error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	t := c.table.Load()
	if t == nil || len(t.routes) == 0 {
		return fmt.Errorf("cell %s is not serving", c.name)
	}
	routes := append([]route(nil), t.routes...)
	named := make(map[int]string, len(weights))
	for target, w := range weights {
		i, err := t.find(target)
		if err != nil {
			return fmt.Errorf("cell %s: %w", c.name, err)
		}
		if prev, dup := named[i]; dup {
			return fmt.Errorf("cell %s: %q and %q name the same version", c.name, prev, target)
		}
		named[i] = target
		routes[i].weight = w
	}
	nt := newRouteTable(routes)
	if nt.total == 0 {
		return fmt.Errorf("cell %s: weights would route no traffic to any version", c.name)
	}
	c.table.Store(nt)
	c.log.Info("route weights set", "weights", nt.String())
	return nil
}

// Promote routes all traffic to the named version and retires the others:
// the end of an upgrade.
func (c *Cell) Promote(sha string) error {
	c.rmu.Lock()
	t := c.table.Load()
	if t == nil {
		c.rmu.Unlock()
		return fmt.Errorf("cell %s is not serving", c.name)
	}
	i, err := t.find(sha)
	if err != nil {
		c.rmu.Unlock()
		return fmt.Errorf("cell %s: %w", c.name, err)
	}
	retired := c.promoteLocked(t, i)
	c.rmu.Unlock()
	retireAll(retired)
	return nil
}

// RetireVersion takes a version out of routing and drains it in the
// background. The last version, or the last one with weight, cannot be
// retired. Retiring the last version older than the one left counts as a
// completed upgrade in Info.
func (c *Cell) RetireVersion(sha string) error {
	c.rmu.Lock()
	t := c.table.Load()
	if t == nil {
		c.rmu.Unlock()
		return fmt.Errorf("cell %s is not serving", c.name)
	}
	i, err := t.find(sha)
	if err != nil {
		c.rmu.Unlock()
		return fmt.Errorf("cell %s: %w", c.name, err)
	}
	if len(t.routes) == 1 {
		c.rmu.Unlock()
		return fmt.Errorf("cell %s: version %s is the only one; load another first", c.name, t.routes[i].v.mod.SHA256[:12])
	}
	routes := append(append([]route(nil), t.routes[:i]...), t.routes[i+1:]...)
	nt := newRouteTable(routes)
	if nt.total == 0 {
		c.rmu.Unlock()
		return fmt.Errorf("cell %s: retiring %s would leave no version with traffic; set weights first", c.name, t.routes[i].v.mod.SHA256[:12])
	}
	c.table.Store(nt)
	c.rmu.Unlock()
	v := t.routes[i].v
	if len(nt.routes) == 1 && nt.routes[0].v.loaded.After(v.loaded) {
		// The last older version went: an upgrade completed. (A rollback
		// retires the newer one and counts nothing.)
		c.mu.Lock()
		c.upgrades++
		c.mu.Unlock()
	}
	c.log.Info("retired version", "sha256", v.mod.SHA256[:12])
	go v.retire(context.Background())
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
	if c.table.Load() == nil {
		c.state = StateFailed
	}
}

// drain stops the cell taking requests and waits, bounded by ctx, for those
// in flight, then frees its instances.
func (c *Cell) drain(ctx context.Context) {
	c.mu.Lock()
	c.state = StateDraining
	c.mu.Unlock()
	c.rmu.Lock()
	t := c.table.Swap(nil)
	c.rmu.Unlock()
	if t == nil {
		return
	}
	var wg sync.WaitGroup
	for _, r := range t.routes {
		wg.Add(1)
		go func() { defer wg.Done(); r.v.retire(ctx) }()
	}
	wg.Wait()
	if p := t.primary(); p != nil && p.pool != nil {
		c.saveState(p.pool)
	}
}

// acquire returns a version for one request, chosen by route weight, with
// a reference held, or nil. A cell still loading its first module is
// waited for, bounded by ctx and the request time limit, so requests racing
// a node's start are served.
func (c *Cell) acquire(ctx context.Context) *version {
	select {
	case <-c.loaded:
	default:
		t := time.NewTimer(c.Limits().RequestTimeout)
		select {
		case <-c.loaded:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	for {
		t := c.table.Load()
		if t == nil || len(t.routes) == 0 {
			return nil
		}
		v := t.pick(c.rr.Add(1))
		if v.tryAcquire() {
			return v
		}
		// v was retired between Load and tryAcquire; the table that
		// replaced it is already stored.
	}
}

// errQueueFull and errQueueTimeout are the two ways a request is refused by
// the concurrency limiter.
var (
	errQueueFull    = errors.New("queue full")
	errQueueTimeout = errors.New("queue wait timed out")
)

// enter takes a concurrency slot, queueing for at most QueueTimeout behind
// at most QueueLength others. It returns the limiter to leave.
func (c *Cell) enter(ctx context.Context, lim *Limits) (chan struct{}, error) {
	slots := *c.slots.Load()
	select {
	case slots <- struct{}{}:
		return slots, nil
	default:
	}
	if c.stats.queued.Add(1) > int64(lim.QueueLength) {
		c.stats.queued.Add(-1)
		return nil, errQueueFull
	}
	defer c.stats.queued.Add(-1)
	t := time.NewTimer(lim.QueueTimeout)
	defer t.Stop()
	select {
	case slots <- struct{}{}:
		return slots, nil
	case <-t.C:
		return nil, errQueueTimeout
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

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
	Idle     time.Duration
	Limits   Limits
	Policy   Policy
	// Versions are the versions routed, the primary first.
	Versions []VersionInfo
	// Snapshot is about the primary version's snapshots.
	Snapshot SnapshotInfo
}

// SnapshotInfo says how the primary version's replicas start and what
// state the cell keeps.
type SnapshotInfo struct {
	// Init is the size in bytes of the pre-initialised snapshot replicas
	// start from (0: none yet).
	Init int
	// NoSnapshot, when not empty, says why replicas initialise one by one.
	NoSnapshot string
	// Kept says the cell keeps its state; State is its size, Taken when it
	// was captured and How ("fork", "decay", "drain", "restart", "reload").
	Kept  bool
	State int
	Taken time.Time
	How   string
	// ID identifies the kept state: the first bytes of its hash.
	ID string
	// Note says why kept state was not restored or is not kept, if so.
	Note string
}

// VersionInfo is one routed version of a cell.
type VersionInfo struct {
	SHA256   string
	Source   string
	Weight   uint32
	Replicas int
	Requests uint64
	Errors   uint64
	P99      time.Duration
	Loaded   time.Time
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
		Limits:   c.Limits(),
		Policy:   c.Policy(),
	}
	c.mu.Unlock()
	if t := c.table.Load(); t != nil && len(t.routes) > 0 {
		p := t.primary()
		in.SHA256 = p.mod.SHA256
		in.ABI = p.mod.ABI.String()
		in.Size = p.mod.Size
		in.Source = p.source
		in.Versions = append(in.Versions, versionInfo(p, t))
		for _, r := range t.routes {
			in.Replicas += r.v.replicas()
			if r.v != p {
				in.Versions = append(in.Versions, versionInfo(r.v, t))
			}
		}
		if p.pool == nil {
			in.Replicas = int(c.stats.inflight.Load())
		}
		// A version serving without the disk cache still serves; say so.
		for _, r := range t.routes {
			if w := r.v.mod.CacheError; w != "" {
				if in.Error != "" {
					in.Error += "; "
				}
				in.Error += "version " + r.v.mod.SHA256[:12] + ": " + w
			}
		}
	}
	if t := c.table.Load(); t != nil && len(t.routes) > 0 {
		p := t.primary()
		in.Snapshot.NoSnapshot = p.mod.NoSnapshot
		if s := p.mod.InitSnapshot(c.name); s != nil {
			in.Snapshot.Init = s.Size()
		}
		if p.pool != nil {
			p.pool.mu.Lock()
			in.Snapshot.Kept = p.pool.keep
			p.pool.mu.Unlock()
			if s, how := p.pool.keptState(); s != nil {
				in.Snapshot.State, in.Snapshot.Taken, in.Snapshot.How, in.Snapshot.ID = s.Size(), s.Taken(), how, s.ID()
			}
		}
	}
	if n := c.stateNote.Load(); n != nil {
		in.Snapshot.Note = *n
	}
	in.InFlight = c.stats.inflight.Load()
	in.Queued = c.stats.queued.Load()
	in.Requests = c.stats.requests.Load()
	in.Errors = c.stats.errors.Load()
	in.P50, in.P99 = c.stats.quantiles()
	if ns := c.stats.lastReq.Load(); ns != 0 {
		in.LastUsed = time.Unix(0, ns)
	}
	in.Idle = c.Idle()
	return in
}

func versionInfo(v *version, t *routeTable) VersionInfo {
	vi := VersionInfo{SHA256: v.mod.SHA256, Source: v.source, Replicas: v.replicas(), Loaded: v.loaded,
		Requests: v.stats.requests.Load(), Errors: v.stats.errors.Load()}
	for _, r := range t.routes {
		if r.v == v {
			vi.Weight = r.weight
		}
	}
	_, vi.P99 = v.stats.quantiles()
	return vi
}

// ErrNoReplicas is returned when scaling a cell whose module is a command:
// it runs a fresh instance per request and keeps none.
var ErrNoReplicas = errors.New("command cells keep no replicas: each request runs a fresh instance")

// SpawnReplicas adds up to n replicas to the primary version, never beyond
// the policy's maximum, and returns how many are live.
func (c *Cell) SpawnReplicas(ctx context.Context, n int) (int, error) {
	var live int
	err := c.withPool(ctx, func(p *pool) (err error) {
		if live, err = p.grow(ctx, n, c.Policy().Max); err != nil {
			return fmt.Errorf("cell %s: starting replica: %w", c.name, err)
		}
		return nil
	})
	return live, err
}

// DrainReplicas closes up to n replicas of the primary version, never below
// the policy's minimum, except that a cell idle for its DecayIdle time may
// go to zero (its compiled module is kept; the next request wakes it). It
// returns how many are live.
func (c *Cell) DrainReplicas(ctx context.Context, n int) (int, error) {
	var live int
	err := c.withPool(ctx, func(p *pool) error {
		live = p.shrink(n, c.Floor())
		return nil
	})
	return live, err
}

// Floor is the fewest replicas the cell may have now: its minimum, or zero
// once it has been idle for its DecayIdle time.
func (c *Cell) Floor() int {
	pol := c.Policy()
	if pol.DecayIdle > 0 && c.Idle() >= pol.DecayIdle && c.stats.inflight.Load() == 0 {
		return 0
	}
	return pol.Min
}

// withPool runs fn on the primary version's replica pool.
func (c *Cell) withPool(ctx context.Context, fn func(*pool) error) error {
	t := c.table.Load()
	if t == nil || len(t.routes) == 0 {
		return fmt.Errorf("cell %s is not serving", c.name)
	}
	v := t.primary()
	if !v.tryAcquire() {
		return fmt.Errorf("cell %s: its version changed; try again", c.name)
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

// VersionWindow is one version's window, from TakeVersionWindows.
type VersionWindow struct {
	SHA256 string
	Window
}

// TakeVersionWindows returns each routed version's window when more than
// one version is routed (none otherwise) and starts new ones.
func (c *Cell) TakeVersionWindows() []VersionWindow {
	t := c.table.Load()
	if t == nil {
		return nil
	}
	out := make([]VersionWindow, 0, len(t.routes))
	for _, r := range t.routes {
		// Every window is taken, so the first one after a Stage starts
		// from the previous tick, not from the version's load.
		out = append(out, VersionWindow{SHA256: r.v.mod.SHA256, Window: r.v.stats.takeWindow()})
	}
	if len(out) < 2 {
		return nil
	}
	return out
}

// LatencyBuckets returns the cell's request latencies since it was created
// as cumulative counts at or below each of LatencyBounds (seconds), their
// sum in seconds and their count: a Prometheus histogram.
func (c *Cell) LatencyBuckets() (counts []uint64, sum float64, count uint64) {
	return c.stats.buckets.cumulative()
}

// callFunc is the cell's cel.call, bound to its name, or nil when the
// registry has no Caller.
func (c *Cell) callFunc() wasm.CallFunc {
	if c.caller == nil {
		return nil
	}
	return func(ctx context.Context, target string, req []byte) ([]byte, error) {
		if !tracing.Enabled() {
			return c.caller(ctx, c.name, target, req)
		}
		ctx, span := tracing.Start(ctx, "cel.call "+target, trace.SpanKindClient,
			attribute.String("celluster.cell", c.name), attribute.String("celluster.call.target", target))
		defer span.End()
		resp, err := c.caller(ctx, c.name, target, tracing.InjectEnvelope(ctx, req))
		traceStatus(span, resp, err)
		return resp, err
	}
}

// traceStatus records a response envelope's status on span.
func traceStatus(span trace.Span, resp []byte, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return
	}
	if r, derr := cellabi.DecodeResponse(resp); derr == nil {
		span.SetAttributes(attribute.Int("http.response.status_code", r.Status))
		if r.Status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(r.Status))
		}
	}
}

// Queued is how many requests wait for a slot or a replica now.
func (c *Cell) Queued() int64 { return c.stats.queued.Load() }

// InFlight is how many requests run now.
func (c *Cell) InFlight() int64 { return c.stats.inflight.Load() }
