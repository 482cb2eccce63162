package cell

import (
	"context"
	"sync"
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

	mu      sync.Mutex
	refs    int
	retired bool
	drained chan struct{}
}

func newVersion(mod *wasm.Module, pool *pool, source string) *version {
	return &version{mod: mod, pool: pool, loaded: time.Now(), source: source, drained: make(chan struct{})}
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

// pool keeps warm instances of a reactor module, one per in-flight request.
type pool struct {
	mod  *wasm.Module
	cfg  wasm.InstanceConfig
	warm int

	mu     sync.Mutex
	idle   []*wasm.Reactor
	live   int
	closed bool
}

func newPool(mod *wasm.Module, cfg wasm.InstanceConfig, warm int) *pool {
	return &pool{mod: mod, cfg: cfg, warm: warm}
}

// fill instantiates instances until n are live.
func (p *pool) fill(ctx context.Context, n int) error {
	for {
		p.mu.Lock()
		if p.closed || p.live >= n {
			p.mu.Unlock()
			return nil
		}
		p.live++
		p.mu.Unlock()
		r, err := p.mod.NewReactor(ctx, p.cfg)
		if err != nil {
			p.mu.Lock()
			p.live--
			p.mu.Unlock()
			return err
		}
		p.put(r, true)
	}
}

// get returns an idle instance or a new one.
func (p *pool) get(ctx context.Context) (*wasm.Reactor, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		r := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return r, nil
	}
	p.live++
	p.mu.Unlock()
	r, err := p.mod.NewReactor(ctx, p.cfg)
	if err != nil {
		p.mu.Lock()
		p.live--
		p.mu.Unlock()
		return nil, err
	}
	return r, nil
}

// put returns an instance; a broken one (healthy false) is closed and, when
// the pool falls below its warm count, replaced in the background.
func (p *pool) put(r *wasm.Reactor, healthy bool) {
	p.mu.Lock()
	if healthy && !p.closed {
		p.idle = append(p.idle, r)
		p.mu.Unlock()
		return
	}
	p.live--
	refill := !p.closed && p.live < p.warm
	p.mu.Unlock()
	_ = r.Close(context.Background())
	if refill {
		go func() { _ = p.fill(context.Background(), p.warm) }()
	}
}

// size reports live instances (idle and busy).
func (p *pool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.live
}

func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.live -= len(idle)
	p.mu.Unlock()
	for _, r := range idle {
		_ = r.Close(context.Background())
	}
}

// grow raises the warm count by n (bounded by max) and instantiates up to it.
func (p *pool) grow(ctx context.Context, n, max int) (int, error) {
	p.mu.Lock()
	p.warm = min(p.live+n, max)
	target := p.warm
	p.mu.Unlock()
	err := p.fill(ctx, target)
	return p.size(), err
}

// shrink lowers the warm count by n (not below floor) and closes idle
// instances down to it; busy instances stay until the pool is retired.
func (p *pool) shrink(n, floor int) int {
	p.mu.Lock()
	p.warm = max(p.live-n, floor, 0)
	var victims []*wasm.Reactor
	for p.live > p.warm && len(p.idle) > 0 {
		victims = append(victims, p.idle[len(p.idle)-1])
		p.idle = p.idle[:len(p.idle)-1]
		p.live--
	}
	live := p.live
	p.mu.Unlock()
	for _, r := range victims {
		_ = r.Close(context.Background())
	}
	return live
}
