package cell

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/celluster/celluster/core/wasm"
)

// version is one module serving a cell. Requests hold a reference while
// they run; a retired version closes once the last reference is gone.
type version struct {
	mod    *wasm.Module
	pool   *pool // nil for command modules
	loaded time.Time
	source string
	memory uint64 // the memory limit it was compiled with
	stats  *stats // what this version served

	mu      sync.Mutex
	refs    int
	retired bool
	drained chan struct{}
}

func newVersion(mod *wasm.Module, pool *pool, source string, memory uint64) *version {
	return &version{mod: mod, pool: pool, loaded: time.Now(), source: source, memory: memory,
		stats: newStats(), drained: make(chan struct{})}
}

func (v *version) tryAcquire() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.retired {
		return false
	}
	v.refs++
	return true
}

func (v *version) release() {
	v.mu.Lock()
	v.refs--
	done := v.retired && v.refs == 0
	v.mu.Unlock()
	if done {
		close(v.drained)
	}
}

// retire stops new requests from taking the version, waits (bounded by ctx)
// for those that hold it, then closes its instances and module.
func (v *version) retire(ctx context.Context) {
	v.mu.Lock()
	if v.retired {
		v.mu.Unlock()
		return
	}
	v.retired = true
	done := v.refs == 0
	v.mu.Unlock()
	if done {
		close(v.drained)
	}
	select {
	case <-v.drained:
	case <-ctx.Done():
	}
	if v.pool != nil {
		v.pool.close()
	}
	v.mod.Release()
}

// replicas reports the version's live instances.
func (v *version) replicas() int {
	if v.pool == nil {
		return 0
	}
	return v.pool.size()
}

// errPoolClosed is returned by get on a retired version's pool.
var errPoolClosed = errors.New("version retired")

// pool keeps a reactor module's replicas: live instances, each serving one
// request at a time. The target is how many the pool keeps; a request finding
// no idle instance waits for one (it does not start a new one), so the
// number of replicas bounds the cell's parallelism and a backlog shows as
// queue and latency, which the reflex rules answer with clone. A pool at
// zero wakes on the first request: it starts an instance for it and raises
// its target to the wake count.
type pool struct {
	mod    *wasm.Module
	cfg    wasm.InstanceConfig
	queued *atomic.Int64 // the cell's waiting-requests gauge

	mu      sync.Mutex
	target  int
	wake    int
	idle    []*wasm.Reactor
	live    int
	closed  bool
	waiters []chan *wasm.Reactor

	// With keep set, new replicas continue from the cell's state rather
	// than from the module's start: a fork of the replica that served
	// last when one is idle, else state, the state saved last (when the
	// last replica decayed, the pool closed, or the node restarted).
	keep    bool
	state   *wasm.Snapshot
	stateOf string                             // how state was taken: "decay", "fork", "drain", "restart"
	onState func(how string, s *wasm.Snapshot) // told of each capture; may be nil
}

func newPool(mod *wasm.Module, cfg wasm.InstanceConfig, target, wake int, queued *atomic.Int64) *pool {
	return &pool{mod: mod, cfg: cfg, target: target, wake: max(wake, 1), queued: queued}
}

// fill instantiates instances until n are live.
func (p *pool) fill(ctx context.Context, n int) error {
	var from *wasm.Snapshot
	forked := false
	for {
		p.mu.Lock()
		if p.closed || p.live >= n {
			p.mu.Unlock()
			return nil
		}
		p.mu.Unlock()
		if !forked {
			from, forked = p.forkSource(), true
		}
		p.mu.Lock()
		if p.closed || p.live >= n {
			p.mu.Unlock()
			return nil
		}
		p.live++
		p.mu.Unlock()
		r, err := p.spawn(ctx, from)
		if err != nil {
			p.mu.Lock()
			p.live--
			p.mu.Unlock()
			return err
		}
		p.put(r, true)
	}
}

// get returns an idle instance; with none idle it starts one while the pool
// is below its target (or empty: a wake), else waits up to wait for one to
// be returned.
func (p *pool) get(ctx context.Context, wait time.Duration) (*wasm.Reactor, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errPoolClosed
	}
	if n := len(p.idle); n > 0 {
		r := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return r, nil
	}
	if p.live < p.target || p.live == 0 {
		if p.target == 0 {
			p.target = p.wake
		}
		p.live++
		p.mu.Unlock()
		r, err := p.spawn(ctx, p.savedState()) // none is idle: no fork
		if err != nil {
			p.mu.Lock()
			p.live--
			p.mu.Unlock()
			return nil, err
		}
		return r, nil
	}
	ch := make(chan *wasm.Reactor, 1)
	p.waiters = append(p.waiters, ch)
	p.mu.Unlock()

	p.queued.Add(1)
	defer p.queued.Add(-1)
	t := time.NewTimer(wait)
	defer t.Stop()
	var cause error
	select {
	case r := <-ch:
		if r == nil {
			return nil, errPoolClosed
		}
		return r, nil
	case <-t.C:
		cause = errQueueTimeout
	case <-ctx.Done():
		cause = ctx.Err()
	}
	p.mu.Lock()
	for i, w := range p.waiters {
		if w == ch {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			p.mu.Unlock()
			return nil, cause
		}
	}
	p.mu.Unlock()
	// An instance was handed over as we gave up: give it back.
	if r := <-ch; r != nil {
		p.put(r, true)
	}
	return nil, cause
}

// put returns an instance. A healthy one goes to the longest waiting
// request, else back to idle (or is closed when the pool is above its
// target); a broken one is closed and replaced when needed.
func (p *pool) put(r *wasm.Reactor, healthy bool) {
	p.mu.Lock()
	if healthy && !p.closed {
		if len(p.waiters) > 0 {
			ch := p.waiters[0]
			p.waiters = p.waiters[1:]
			p.mu.Unlock()
			ch <- r
			return
		}
		if p.live <= p.target {
			p.idle = append(p.idle, r)
			p.mu.Unlock()
			return
		}
		if p.keep && p.live == 1 {
			// The last replica goes: its state is the cell's.
			p.mu.Unlock()
			p.saveState(r, "decay")
			p.mu.Lock()
		}
	}
	p.live--
	refill := !p.closed && (p.live < p.target || (p.live == 0 && len(p.waiters) > 0))
	p.mu.Unlock()
	_ = r.Close(context.Background())
	if refill {
		go p.replace()
	}
}

// replace starts one instance for the pool after one was discarded.
func (p *pool) replace() {
	p.mu.Lock()
	if p.closed || (p.live >= p.target && !(p.live == 0 && len(p.waiters) > 0)) {
		p.mu.Unlock()
		return
	}
	p.live++
	p.mu.Unlock()
	r, err := p.spawn(context.Background(), p.forkSource())
	if err != nil {
		p.mu.Lock()
		p.live--
		p.mu.Unlock()
		p.cfg.Logger.Error("cannot replace instance", "err", err)
		return
	}
	p.put(r, true)
}

// size reports live instances (idle and busy).
func (p *pool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.live
}

func (p *pool) close() {
	p.mu.Lock()
	if p.keep && !p.closed && len(p.idle) > 0 {
		// The replica that served last holds the state to keep.
		r := p.idle[len(p.idle)-1]
		p.mu.Unlock()
		p.saveState(r, "drain")
		p.mu.Lock()
	}
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.live -= len(idle)
	waiters := p.waiters
	p.waiters = nil
	p.mu.Unlock()
	for _, w := range waiters {
		w <- nil
	}
	for _, r := range idle {
		_ = r.Close(context.Background())
	}
}

// grow raises the target by n (bounded by limit) and instantiates up to it.
func (p *pool) grow(ctx context.Context, n, limit int) (int, error) {
	p.mu.Lock()
	p.target = min(max(p.live, p.target)+n, limit)
	target := p.target
	p.mu.Unlock()
	err := p.fill(ctx, target)
	return p.size(), err
}

// shrink lowers the target by n (not below floor) and closes idle instances
// down to it; busy ones are closed as their requests finish.
func (p *pool) shrink(n, floor int) int {
	p.mu.Lock()
	p.target = max(p.live-n, floor, 0)
	var victims []*wasm.Reactor
	for p.live > p.target && len(p.idle) > 0 {
		victims = append(victims, p.idle[len(p.idle)-1])
		p.idle = p.idle[:len(p.idle)-1]
		p.live--
	}
	live := p.live
	keep := p.keep
	p.mu.Unlock()
	if keep && live == 0 && len(victims) > 0 {
		p.saveState(victims[0], "decay") // the replica that served last
	}
	for _, r := range victims {
		_ = r.Close(context.Background())
	}
	return live
}

// spawn starts one instance: from the snapshot from when there is one,
// else as the module starts replicas. A snapshot that cannot be restored
// is logged and the instance starts fresh.
func (p *pool) spawn(ctx context.Context, from *wasm.Snapshot) (*wasm.Reactor, error) {
	if from != nil {
		r, err := p.mod.NewReactorFrom(ctx, p.cfg, from)
		if err == nil {
			return r, nil
		}
		p.cfg.Logger.Warn("cannot start a replica from the kept state; it starts fresh", "err", err)
	}
	return p.mod.NewReactor(ctx, p.cfg)
}

// forkSource is the state a new replica continues from: with keep set, a
// capture of the replica that served last when one is idle (taken between
// its requests), else the state saved last; nil without keep.
func (p *pool) forkSource() *wasm.Snapshot {
	p.mu.Lock()
	if !p.keep {
		p.mu.Unlock()
		return nil
	}
	if n := len(p.idle); n > 0 {
		r := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		s := p.saveState(r, "fork")
		p.put(r, true)
		if s != nil {
			return s
		}
		p.mu.Lock()
	}
	s := p.state
	p.mu.Unlock()
	return s
}

// currentState is the pool's state now, for a peer: a capture of the
// replica that served last when one is idle (recorded as the pool's
// state, without an event), else the state saved last.
func (p *pool) currentState() (*wasm.Snapshot, error) {
	p.mu.Lock()
	if !p.keep {
		p.mu.Unlock()
		return nil, errors.New("the cell does not keep state")
	}
	if n := len(p.idle); n > 0 {
		r := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		s, err := r.Snapshot()
		p.put(r, true)
		if err != nil {
			return nil, err
		}
		p.mu.Lock()
		p.state = s
		p.mu.Unlock()
		return s, nil
	}
	s := p.state
	p.mu.Unlock()
	if s == nil {
		return nil, errors.New("no state captured yet: every replica is busy")
	}
	return s, nil
}

// savedState is the state saved last, when the pool keeps state.
func (p *pool) savedState() *wasm.Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.keep {
		return nil
	}
	return p.state
}

// saveState captures r, which no request is using, as the pool's state.
func (p *pool) saveState(r *wasm.Reactor, how string) *wasm.Snapshot {
	s, err := r.Snapshot()
	if err != nil {
		p.cfg.Logger.Warn("cannot capture the cell's state", "when", how, "err", err)
		return nil
	}
	p.mu.Lock()
	p.state, p.stateOf = s, how
	p.mu.Unlock()
	if p.onState != nil {
		p.onState(how, s)
	}
	return s
}

// keptState returns the pool's state and how it was taken.
func (p *pool) keptState() (*wasm.Snapshot, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state, p.stateOf
}

// setKeep turns kept state on or off.
func (p *pool) setKeep(keep bool) {
	p.mu.Lock()
	p.keep = keep
	if !keep {
		p.state, p.stateOf = nil, ""
	}
	p.mu.Unlock()
}

// setWake sets how many instances a pool at zero starts when woken.
func (p *pool) setWake(n int) {
	p.mu.Lock()
	p.wake = max(n, 1)
	p.mu.Unlock()
}
