package plugintest

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/celluster/celluster/sdk/plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// RecordingHost is a fake core: a [plugin.Host] that records every call it
// receives and answers from the cells and readings it was given. The
// suites serve it to the plugin over go-plugin's broker, so what it
// records are the callbacks that crossed the gRPC boundary. It can also be
// passed to a plugin's methods directly in unit tests.
//
// Set the exported fields before the plugin calls it; the methods are safe
// for concurrent use.
type RecordingHost struct {
	// Cells is what ListCells answers. When it is non-empty,
	// SpawnReplicas and DrainReplicas fail with codes.NotFound for cells
	// not in it; either way they keep count of each cell's replicas,
	// starting from its Replicas here, and ListCells reports the counts.
	Cells []plugin.CellState
	// Readings is what ReadSignals answers, filtered by the names asked
	// for.
	Readings []plugin.Reading
	// BPFMaps is what ReadBPFMap answers, by "objectID/map"; LoadBPF
	// answers an object whose ID is the name loaded.
	BPFMaps map[string][]plugin.BPFMapEntry
	// Nodes is what ListNodes answers.
	Nodes []plugin.NodeState
	// BPFEvents is what WaitBPFEvents answers, once, by "objectID/map".
	BPFEvents map[string][][]byte
	// Err, if set, is returned by every call after it has been recorded,
	// to test how the plugin copes with a failing host. A gRPC status
	// error reaches the plugin with its code.
	Err error

	mu       sync.Mutex
	calls    []HostCall
	replicas map[string]int
}

// HostCall is one call a [RecordingHost] received. Only the fields of the
// method's parameters are set.
type HostCall struct {
	// Method is the Host method's name, e.g. "SpawnReplicas".
	Method string
	// Cell is the cell argument.
	Cell string
	// Count is the count of SpawnReplicas and DrainReplicas.
	Count int
	// Names are the signal names of ReadSignals.
	Names []string
	// Weights are the weights of SetRouteWeights.
	Weights []plugin.RouteWeight
	// Samples are the samples of EmitSignal.
	Samples []plugin.Sample
	// Note is the note of AddJournalNote.
	Note string
	// Version is the version of RetireVersion.
	Version string
}

var _ plugin.Host = (*RecordingHost)(nil)

// Calls returns the calls received so far, oldest first.
func (h *RecordingHost) Calls() []HostCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls)
}

// CallsTo returns the calls of one method received so far, oldest first.
func (h *RecordingHost) CallsTo(method string) []HostCall {
	var out []HostCall
	for _, c := range h.Calls() {
		if c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

// Reset forgets the calls received so far and the replica counts.
func (h *RecordingHost) Reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = nil
	h.replicas = nil
}

func (h *RecordingHost) record(c HostCall) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, c)
}

// ListCells implements plugin.Host.
func (h *RecordingHost) ListCells(ctx context.Context) ([]plugin.CellState, error) {
	h.record(HostCall{Method: "ListCells"})
	if h.Err != nil {
		return nil, h.Err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	cells := slices.Clone(h.Cells)
	for i := range cells {
		if n, ok := h.replicas[cells[i].Name]; ok {
			cells[i].Replicas = n
		}
	}
	return cells, nil
}

// ReadSignals implements plugin.Host.
func (h *RecordingHost) ReadSignals(ctx context.Context, names ...string) ([]plugin.Reading, error) {
	h.record(HostCall{Method: "ReadSignals", Names: slices.Clone(names)})
	if h.Err != nil {
		return nil, h.Err
	}
	var out []plugin.Reading
	for _, r := range h.Readings {
		if len(names) == 0 || slices.Contains(names, r.Signal) {
			out = append(out, r)
		}
	}
	return out, nil
}

// SpawnReplicas implements plugin.Host.
func (h *RecordingHost) SpawnReplicas(ctx context.Context, cell string, count int) (int, error) {
	h.record(HostCall{Method: "SpawnReplicas", Cell: cell, Count: count})
	return h.adjust(cell, count)
}

// DrainReplicas implements plugin.Host.
func (h *RecordingHost) DrainReplicas(ctx context.Context, cell string, count int) (int, error) {
	h.record(HostCall{Method: "DrainReplicas", Cell: cell, Count: count})
	return h.adjust(cell, -count)
}

func (h *RecordingHost) adjust(cell string, delta int) (int, error) {
	if h.Err != nil {
		return 0, h.Err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	n, ok := h.replicas[cell]
	if !ok {
		i := slices.IndexFunc(h.Cells, func(c plugin.CellState) bool { return c.Name == cell })
		if i < 0 && len(h.Cells) > 0 {
			return 0, status.Errorf(codes.NotFound, "no cell %q", cell)
		}
		if i >= 0 {
			n = h.Cells[i].Replicas
		}
	}
	n = max(n+delta, 0)
	if h.replicas == nil {
		h.replicas = make(map[string]int)
	}
	h.replicas[cell] = n
	return n, nil
}

// SetRouteWeights implements plugin.Host.
func (h *RecordingHost) SetRouteWeights(ctx context.Context, cell string, weights []plugin.RouteWeight) error {
	h.record(HostCall{Method: "SetRouteWeights", Cell: cell, Weights: slices.Clone(weights)})
	return h.Err
}

// EmitSignal implements plugin.Host.
func (h *RecordingHost) EmitSignal(ctx context.Context, samples ...plugin.Sample) error {
	h.record(HostCall{Method: "EmitSignal", Samples: slices.Clone(samples)})
	return h.Err
}

// RetireVersion implements plugin.Host.
func (h *RecordingHost) RetireVersion(ctx context.Context, cell, sha256 string) error {
	h.record(HostCall{Method: "RetireVersion", Cell: cell, Version: sha256})
	return h.Err
}

// LoadBPF implements plugin.Host: it records the call and answers with
// BPF, or an object named after the request when BPF is nil.
func (h *RecordingHost) LoadBPF(ctx context.Context, name string, object []byte, constants map[string]uint64) (plugin.BPFObject, error) {
	h.record(HostCall{Method: "LoadBPF", Note: name})
	if h.Err != nil {
		return plugin.BPFObject{}, h.Err
	}
	return plugin.BPFObject{ID: name}, nil
}

// ReadBPFMap implements plugin.Host: it records the call and answers
// BPFMaps[objectID+"/"+mapName].
func (h *RecordingHost) ReadBPFMap(ctx context.Context, objectID, mapName string) ([]plugin.BPFMapEntry, error) {
	h.record(HostCall{Method: "ReadBPFMap", Note: objectID + "/" + mapName})
	if h.Err != nil {
		return nil, h.Err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.BPFMaps[objectID+"/"+mapName], nil
}

// WaitBPFEvents implements plugin.Host: it records the call and answers
// BPFEvents[objectID+"/"+mapName] once (then nothing, after the timeout or
// when ctx ends, whichever is first).
func (h *RecordingHost) WaitBPFEvents(ctx context.Context, objectID, mapName string, timeout time.Duration) ([][]byte, error) {
	h.record(HostCall{Method: "WaitBPFEvents", Note: objectID + "/" + mapName})
	if h.Err != nil {
		return nil, h.Err
	}
	h.mu.Lock()
	recs := h.BPFEvents[objectID+"/"+mapName]
	delete(h.BPFEvents, objectID+"/"+mapName)
	h.mu.Unlock()
	if len(recs) > 0 {
		return recs, nil
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return nil, nil
}

// PlaceReplicas implements plugin.Host: it records the call and answers
// the node asked for ("peer-1" when none) with count replicas.
func (h *RecordingHost) PlaceReplicas(ctx context.Context, cell, node string, count int, reason string) (string, int, error) {
	h.record(HostCall{Method: "PlaceReplicas", Cell: cell, Count: count, Note: node})
	if h.Err != nil {
		return "", 0, h.Err
	}
	if node == "" {
		node = "peer-1"
	}
	return node, count, nil
}

// ListNodes implements plugin.Host: it answers Nodes.
func (h *RecordingHost) ListNodes(ctx context.Context) ([]plugin.NodeState, error) {
	h.record(HostCall{Method: "ListNodes"})
	if h.Err != nil {
		return nil, h.Err
	}
	return slices.Clone(h.Nodes), nil
}

// UnloadBPF implements plugin.Host.
func (h *RecordingHost) UnloadBPF(ctx context.Context, objectID string) error {
	h.record(HostCall{Method: "UnloadBPF", Note: objectID})
	return h.Err
}

// AddJournalNote implements plugin.Host.
func (h *RecordingHost) AddJournalNote(ctx context.Context, cell, note string) error {
	h.record(HostCall{Method: "AddJournalNote", Cell: cell, Note: note})
	return h.Err
}
