package verbs

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/celluster/celluster/sdk/plugin"
	"github.com/celluster/celluster/sdk/plugin/plugintest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// simHost is a simulated core: a plugin.Host that keeps each cell's
// replicas and versions (weights and counters), clamps replica counts to
// the cell's bounds as the core does, and lets the test decide how much
// traffic each version takes and which call fails. It stands in for the
// core only where the real one cannot be steered (failing a given call,
// chosen counters, a cancellation at a given point); the verbs' behaviour
// against the real host API is tested through a real node in cmd/celcore.
type simHost struct {
	// idle names cells past their `decay after` time: the host lets them
	// drain to 0 below their min.
	idle map[string]bool
	// traffic, if set, is called for each version of a cell each time the
	// cell is listed, with the version's share of traffic (weight/sum);
	// it adds to the version's counters and may set its P99.
	traffic func(v *plugin.VersionState, share float64)
	// before, if set, is called (outside the host's lock) at the start of
	// each call with the method and its 1-based number among calls of that
	// method; an error fails the call.
	before func(method string, n int) error

	mu     sync.Mutex
	nodes  []plugin.NodeState // what ListNodes answers
	cells  []*plugin.CellState
	calls  []plugintest.HostCall
	counts map[string]int
}

var _ plugin.Host = (*simHost)(nil)

func newSimHost(cells ...plugin.CellState) *simHost {
	h := &simHost{counts: make(map[string]int)}
	for _, c := range cells {
		c.Versions = slices.Clone(c.Versions)
		h.cells = append(h.cells, &c)
	}
	return h
}

// enter records a call, fails it if ctx has ended, then runs the before
// hook.
func (h *simHost) enter(ctx context.Context, c plugintest.HostCall) error {
	h.mu.Lock()
	h.calls = append(h.calls, c)
	h.counts[c.Method]++
	n := h.counts[c.Method]
	h.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if h.before != nil {
		return h.before(c.Method, n)
	}
	return nil
}

// callsTo returns the calls of one method, oldest first.
func (h *simHost) callsTo(method string) []plugintest.HostCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []plugintest.HostCall
	for _, c := range h.calls {
		if c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

// cell returns a copy of a cell's state now.
func (h *simHost) cell(name string) plugin.CellState {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.find(name)
	if c == nil {
		return plugin.CellState{}
	}
	out := *c
	out.Versions = slices.Clone(c.Versions)
	return out
}

func (h *simHost) find(name string) *plugin.CellState {
	for _, c := range h.cells {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func (h *simHost) lookup(name string) (*plugin.CellState, error) {
	c := h.find(name)
	if c == nil {
		return nil, status.Errorf(codes.NotFound, "no cell named %q on this node", name)
	}
	return c, nil
}

// version finds a version by sha256 or a prefix of 8+ digits.
func version(c *plugin.CellState, ref string) int {
	if len(ref) < 8 {
		return -1
	}
	return slices.IndexFunc(c.Versions, func(v plugin.VersionState) bool { return strings.HasPrefix(v.SHA256, ref) })
}

func (h *simHost) ListCells(ctx context.Context) ([]plugin.CellState, error) {
	if err := h.enter(ctx, plugintest.HostCall{Method: "ListCells"}); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]plugin.CellState, len(h.cells))
	for i, c := range h.cells {
		if h.traffic != nil {
			var sum uint32
			for _, v := range c.Versions {
				sum += v.Weight
			}
			for j := range c.Versions {
				share := 0.0
				if sum > 0 {
					share = float64(c.Versions[j].Weight) / float64(sum)
				}
				h.traffic(&c.Versions[j], share)
			}
		}
		out[i] = *c
		out[i].Versions = slices.Clone(c.Versions)
	}
	return out, nil
}

func (h *simHost) ReadSignals(ctx context.Context, names ...string) ([]plugin.Reading, error) {
	return nil, h.enter(ctx, plugintest.HostCall{Method: "ReadSignals", Names: names})
}

func (h *simHost) SpawnReplicas(ctx context.Context, cell string, count int) (int, error) {
	if err := h.enter(ctx, plugintest.HostCall{Method: "SpawnReplicas", Cell: cell, Count: count}); err != nil {
		return 0, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	c, err := h.lookup(cell)
	if err != nil {
		return 0, err
	}
	n := c.Replicas + count
	if c.MaxReplicas > 0 {
		n = min(n, max(c.MaxReplicas, c.Replicas))
	}
	c.Replicas = n
	return n, nil
}

func (h *simHost) DrainReplicas(ctx context.Context, cell string, count int) (int, error) {
	if err := h.enter(ctx, plugintest.HostCall{Method: "DrainReplicas", Cell: cell, Count: count}); err != nil {
		return 0, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	c, err := h.lookup(cell)
	if err != nil {
		return 0, err
	}
	floor := c.MinReplicas
	if h.idle[cell] {
		floor = 0
	}
	c.Replicas = max(c.Replicas-count, min(floor, c.Replicas))
	return c.Replicas, nil
}

// SetRouteWeights replaces the cell's route table: versions not named get
// weight 0; targets that are not versions are taken for nodes.
func (h *simHost) SetRouteWeights(ctx context.Context, cell string, weights []plugin.RouteWeight) error {
	if err := h.enter(ctx, plugintest.HostCall{Method: "SetRouteWeights", Cell: cell, Weights: slices.Clone(weights)}); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	c, err := h.lookup(cell)
	if err != nil {
		return err
	}
	next := make([]uint32, len(c.Versions))
	for _, w := range weights {
		if i := version(c, w.Target); i >= 0 {
			next[i] = w.Weight
		}
	}
	for i := range c.Versions {
		c.Versions[i].Weight = next[i]
	}
	return nil
}

func (h *simHost) EmitSignal(ctx context.Context, samples ...plugin.Sample) error {
	return h.enter(ctx, plugintest.HostCall{Method: "EmitSignal", Samples: samples})
}

func (h *simHost) AddJournalNote(ctx context.Context, cell, note string) error {
	return h.enter(ctx, plugintest.HostCall{Method: "AddJournalNote", Cell: cell, Note: note})
}

func (h *simHost) LoadBPF(context.Context, string, []byte, map[string]uint64) (plugin.BPFObject, error) {
	return plugin.BPFObject{}, errors.New("simHost: no BPF")
}

func (h *simHost) ReadBPFMap(context.Context, string, string) ([]plugin.BPFMapEntry, error) {
	return nil, errors.New("simHost: no BPF")
}

func (h *simHost) WaitBPFEvents(context.Context, string, string, time.Duration) ([][]byte, error) {
	return nil, errors.New("simHost: no BPF")
}

func (h *simHost) PlaceReplicas(_ context.Context, cell, node string, count int, _ string) (string, int, error) {
	if err := h.enter(context.Background(), plugintest.HostCall{Method: "PlaceReplicas", Cell: cell, Count: count, Note: node}); err != nil {
		return "", 0, err
	}
	if node == "" {
		node = "peer-1"
	}
	return node, count, nil
}

func (h *simHost) ListNodes(context.Context) ([]plugin.NodeState, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.nodes), nil
}

func (h *simHost) UnloadBPF(context.Context, string) error { return errors.New("simHost: no BPF") }

func (h *simHost) RetireVersion(ctx context.Context, cell, sha256 string) error {
	if err := h.enter(ctx, plugintest.HostCall{Method: "RetireVersion", Cell: cell, Version: sha256}); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	c, err := h.lookup(cell)
	if err != nil {
		return err
	}
	i := version(c, sha256)
	switch {
	case i < 0:
		return status.Errorf(codes.NotFound, "cell %s has no version %s", cell, sha256)
	case len(c.Versions) == 1:
		return status.Errorf(codes.FailedPrecondition, "version %s is the last routed version of cell %s", sha256, cell)
	}
	c.Versions = slices.Delete(c.Versions, i, i+1)
	return nil
}

// failOn returns a before hook that fails the nth call of method (every
// call when n is 0) with err.
func failOn(method string, n int, err error) func(string, int) error {
	return func(m string, i int) error {
		if m == method && (n == 0 || i == n) {
			return err
		}
		return nil
	}
}

// run executes a verb against h with a deadline.
func run(t *testing.T, h plugin.Host, verb, cell string, args ...string) plugin.VerbResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return runCtx(t, ctx, h, verb, cell, args...)
}

func runCtx(t *testing.T, ctx context.Context, h plugin.Host, verb, cell string, args ...string) plugin.VerbResult {
	t.Helper()
	res, err := New().Execute(ctx, h, plugin.VerbRequest{Verb: verb, Cell: cell, Args: args, Trigger: plugin.Trigger{Manual: true}})
	if err != nil {
		t.Fatalf("%s %s %v: error %v", verb, cell, args, err)
	}
	return res
}

// want checks a result's outcome and that its message contains each of
// parts.
func want(t *testing.T, res plugin.VerbResult, o plugin.Outcome, parts ...string) {
	t.Helper()
	if res.Outcome != o {
		t.Errorf("outcome %v (%q), want %v", res.Outcome, res.Message, o)
	}
	for _, p := range parts {
		if !strings.Contains(res.Message, p) {
			t.Errorf("message %q lacks %q", res.Message, p)
		}
	}
}

// wantMessage checks a result's outcome and exact message.
func wantMessage(t *testing.T, res plugin.VerbResult, o plugin.Outcome, msg string) {
	t.Helper()
	if res.Outcome != o || res.Message != msg {
		t.Errorf("got %v %q\nwant %v %q", res.Outcome, res.Message, o, msg)
	}
}
