package cell

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"sort"
	"sync"

	"github.com/celluster/celluster/core/wasm"
)

// nameRE is what a cell name may look like: it becomes a URL path segment
// and, later, part of a SPIFFE ID.
var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$`)

// ValidName reports whether name can name a cell, and why not.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid cell name %q: use 1-63 lowercase letters, digits, '-' or '_', starting and ending with a letter or digit", name)
	}
	return nil
}

// Caller carries out cel.call for the cell named caller: the node checks
// the caller's grants and the target's `allow from`, and routes the call to
// the target here or on a peer. Request and response are cell ABI
// envelopes.
type Caller func(ctx context.Context, caller, target string, request []byte) ([]byte, error)

// Registry holds a node's cells by name. It is safe for concurrent use.
type Registry struct {
	eng    *wasm.Engine
	log    *slog.Logger
	limits Limits
	// Caller, if set before cells are created, carries out their cel.call.
	Caller Caller
	// States, if set before cells are created, keeps the state of cells
	// that keep state across restarts.
	States StateStore
	// OnState, if set before cells are created, is told of what happens to
	// kept states (for the node's journal). It must not block.
	OnState func(StateEvent)
	// Signals, if set before cells are created, receives what cells
	// publish with cel.signal (those whose intent grants signal).
	Signals SignalSink

	mu    sync.RWMutex
	cells map[string]*Cell
}

// NewRegistry returns an empty registry whose cells run on eng with limits.
func NewRegistry(eng *wasm.Engine, log *slog.Logger, limits Limits) *Registry {
	return &Registry{eng: eng, log: log, limits: limits, cells: make(map[string]*Cell)}
}

// Lookup returns the named cell, or nil.
func (r *Registry) Lookup(name string) *Cell {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cells[name]
}

// ensure returns the named cell, creating it in StateLoading.
func (r *Registry) ensure(name string) *Cell {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.cells[name]
	if !ok {
		c = newCell(name, r.eng, r.log, r.limits)
		c.caller = r.Caller
		c.store = r.States
		c.onState = r.OnState
		c.sink = r.Signals
		r.cells[name] = c
	}
	return c
}

// Load spawns or upgrades the named cell from src. source names where the
// module came from (a path) for logs and errors.
func (r *Registry) Load(ctx context.Context, name string, src []byte, source string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	return r.ensure(name).Load(ctx, src, source)
}

// Declare makes the named cell known (state loading) before its module is
// compiled, so that requests arriving meanwhile wait for it instead of
// getting 404.
func (r *Registry) Declare(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	r.ensure(name)
	return nil
}

// Reject records err against the named cell without touching what it serves.
func (r *Registry) Reject(name string, err error) {
	r.ensure(name).Reject(err)
}

// Remove takes the cell out of service: new requests get 404, those in
// flight finish (bounded by ctx), then its instances are freed.
func (r *Registry) Remove(ctx context.Context, name string) bool {
	r.mu.Lock()
	c, ok := r.cells[name]
	delete(r.cells, name)
	r.mu.Unlock()
	if !ok {
		return false
	}
	c.drain(ctx)
	r.log.Info("removed cell", "cell", name)
	return true
}

// List returns a snapshot of every cell, sorted by name.
func (r *Registry) List() []Info {
	r.mu.RLock()
	cells := make([]*Cell, 0, len(r.cells))
	for _, c := range r.cells {
		cells = append(cells, c)
	}
	r.mu.RUnlock()
	out := make([]Info, len(cells))
	for i, c := range cells {
		out[i] = c.Info()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Close drains every cell, bounded by ctx.
func (r *Registry) Close(ctx context.Context) {
	r.mu.Lock()
	cells := r.cells
	r.cells = make(map[string]*Cell)
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cells {
		wg.Add(1)
		go func() { defer wg.Done(); c.drain(ctx) }()
	}
	wg.Wait()
}

// Handler returns the named cell as an http.Handler, or nil.
func (r *Registry) Handler(name string) http.Handler {
	if c := r.Lookup(name); c != nil {
		return c
	}
	return nil
}

// Cells returns the registry's cells, sorted by name.
func (r *Registry) Cells() []*Cell {
	r.mu.RLock()
	out := make([]*Cell, 0, len(r.cells))
	for _, c := range r.cells {
		out = append(out, c)
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}
