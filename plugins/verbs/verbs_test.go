package verbs

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/celluster/celluster/sdk/plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Digests of a cell's old and new versions, and their short forms.
var (
	oldSHA = "9e8d7c6b5a41" + strings.Repeat("0", 52)
	newSHA = "3f2a9c01ab12" + strings.Repeat("1", 52)
	thdSHA = "77aa55bb33cc" + strings.Repeat("2", 52)
)

func TestVerbsDeclared(t *testing.T) {
	got := New().Verbs()
	if want := []string{"spawn", "clone", "reroute", "upgrade", "decay"}; !slices.Equal(got, want) {
		t.Errorf("Verbs() = %v, want %v", got, want)
	}
}

func TestUnknownVerbIsAnError(t *testing.T) {
	_, err := New().Execute(context.Background(), newSimHost(), plugin.VerbRequest{Verb: "explode", Cell: "web"})
	if err == nil || !strings.Contains(err.Error(), `"explode"`) {
		t.Errorf("Execute(explode) error = %v, want one naming the verb", err)
	}
}

func TestUnknownCell(t *testing.T) {
	for _, verb := range New().Verbs() {
		t.Run(verb, func(t *testing.T) {
			h := newSimHost(plugin.CellState{Name: "web", Replicas: 1})
			wantMessage(t, run(t, h, verb, "ghost"), plugin.Failed, "no cell ghost")
			if n := len(h.callsTo("SpawnReplicas")) + len(h.callsTo("DrainReplicas")) + len(h.callsTo("SetRouteWeights")); n != 0 {
				t.Errorf("%d changing calls to the host for an unknown cell", n)
			}
		})
	}
}

func TestListCellsFails(t *testing.T) {
	h := newSimHost(plugin.CellState{Name: "web"})
	h.before = failOn("ListCells", 0, status.Error(codes.Unavailable, "host is restarting"))
	want(t, run(t, h, "spawn", "web"), plugin.Failed, "listing cells", "host is restarting")
}

func TestSpawn(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cell      plugin.CellState
		args      []string
		outcome   plugin.Outcome
		msg       string
		spawned   int // count asked of SpawnReplicas; 0: not called
		replicas  int // live afterwards
		hostError error
	}{
		{name: "to warm", cell: plugin.CellState{Replicas: 0, Warm: 2, MinReplicas: 1, MaxReplicas: 8},
			outcome: plugin.Done, msg: "spawned 2 replicas: 0 -> 2 live (warm 2, min 1)", spawned: 2, replicas: 2},
		{name: "to min", cell: plugin.CellState{Replicas: 1, Warm: 1, MinReplicas: 3, MaxReplicas: 8},
			outcome: plugin.Done, msg: "spawned 2 replicas: 1 -> 3 live (warm 1, min 3)", spawned: 2, replicas: 3},
		{name: "one", cell: plugin.CellState{Replicas: 0, Warm: 1, MinReplicas: 1},
			outcome: plugin.Done, msg: "spawned 1 replica: 0 -> 1 live (warm 1, min 1)", spawned: 1, replicas: 1},
		{name: "capped at max", cell: plugin.CellState{Replicas: 0, Warm: 5, MaxReplicas: 3},
			outcome: plugin.Done, msg: "spawned 3 replicas: 0 -> 3 live (warm 5, min 0)", spawned: 3, replicas: 3},
		{name: "already there", cell: plugin.CellState{Replicas: 2, Warm: 2, MinReplicas: 1},
			outcome: plugin.Noop, msg: "already 2 live, warm 2, min 1", replicas: 2},
		{name: "above", cell: plugin.CellState{Replicas: 5, Warm: 1, MinReplicas: 1},
			outcome: plugin.Noop, msg: "already 5 live, warm 1, min 1", replicas: 5},
		{name: "command cell", cell: plugin.CellState{ABI: "command", Warm: 1, MinReplicas: 1},
			outcome: plugin.Noop, msg: "command cell: each request runs a fresh instance, so it keeps no replicas"},
		{name: "arguments", cell: plugin.CellState{Warm: 1}, args: []string{"2"},
			outcome: plugin.Failed, msg: `bad argument "2": spawn takes no arguments; expected "spawn" with no arguments`},
		{name: "host error", cell: plugin.CellState{Warm: 1}, hostError: status.Error(codes.Aborted, "out of memory"),
			outcome: plugin.Failed, msg: "spawning 1 replica for cell web (0 live): rpc error: code = Aborted desc = out of memory", spawned: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cell.Name = "web"
			h := newSimHost(tc.cell)
			if tc.hostError != nil {
				h.before = failOn("SpawnReplicas", 0, tc.hostError)
			}
			wantMessage(t, run(t, h, "spawn", "web", tc.args...), tc.outcome, tc.msg)
			checkCount(t, h, "SpawnReplicas", tc.spawned)
			if tc.hostError == nil {
				if got := h.cell("web").Replicas; got != tc.replicas {
					t.Errorf("%d live afterwards, want %d", got, tc.replicas)
				}
			}
		})
	}
}

// checkCount checks that method was called once with count n, or not at
// all when n is 0.
func checkCount(t *testing.T, h *simHost, method string, n int) {
	t.Helper()
	calls := h.callsTo(method)
	switch {
	case n == 0 && len(calls) != 0:
		t.Errorf("%s called %d times, want none", method, len(calls))
	case n != 0 && (len(calls) != 1 || calls[0].Count != n || calls[0].Cell != "web"):
		t.Errorf("%s calls %+v, want one for web with count %d", method, calls, n)
	}
}

func TestClone(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cell     plugin.CellState
		args     []string
		outcome  plugin.Outcome
		msg      string
		asked    int
		replicas int
	}{
		{name: "default one", cell: plugin.CellState{Replicas: 2, MinReplicas: 1, MaxReplicas: 8},
			outcome: plugin.Done, msg: "spawned 1 replica: 2 -> 3 live (max 8)", asked: 1, replicas: 3},
		{name: "three unbounded", cell: plugin.CellState{Replicas: 2}, args: []string{"3"},
			outcome: plugin.Done, msg: "spawned 3 replicas: 2 -> 5 live (no max)", asked: 3, replicas: 5},
		{name: "cut short by max", cell: plugin.CellState{Replicas: 7, MaxReplicas: 8}, args: []string{"3"},
			outcome: plugin.Done, msg: "spawned 1 of 3 replicas: 7 -> 8 live (max 8)", asked: 1, replicas: 8},
		{name: "at max", cell: plugin.CellState{Replicas: 8, MaxReplicas: 8},
			outcome: plugin.Noop, msg: "at max replicas 8 (8 live)", replicas: 8},
		{name: "above max", cell: plugin.CellState{Replicas: 9, MaxReplicas: 8}, args: []string{"2"},
			outcome: plugin.Noop, msg: "at max replicas 8 (9 live)", replicas: 9},
		{name: "command cell", cell: plugin.CellState{ABI: "command"},
			outcome: plugin.Noop, msg: "command cell: each request runs a fresh instance, so it keeps no replicas"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cell.Name = "web"
			h := newSimHost(tc.cell)
			wantMessage(t, run(t, h, "clone", "web", tc.args...), tc.outcome, tc.msg)
			checkCount(t, h, "SpawnReplicas", tc.asked)
			if got := h.cell("web").Replicas; got != tc.replicas {
				t.Errorf("%d live afterwards, want %d", got, tc.replicas)
			}
		})
	}
}

func TestCloneHostError(t *testing.T) {
	h := newSimHost(plugin.CellState{Name: "web", Replicas: 1})
	h.before = failOn("SpawnReplicas", 0, status.Error(codes.FailedPrecondition, "cell is failed"))
	wantMessage(t, run(t, h, "clone", "web", "2"), plugin.Failed,
		"spawning 2 replicas for cell web (1 live): rpc error: code = FailedPrecondition desc = cell is failed")
}

func TestDecay(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cell     plugin.CellState
		idle     bool
		args     []string
		outcome  plugin.Outcome
		msg      string
		asked    int
		replicas int
	}{
		{name: "default one", cell: plugin.CellState{Replicas: 3, MinReplicas: 1},
			outcome: plugin.Done, msg: "drained 1 replica: 3 -> 2 live", asked: 1, replicas: 2},
		{name: "two", cell: plugin.CellState{Replicas: 3, MinReplicas: 1}, args: []string{"2"},
			outcome: plugin.Done, msg: "drained 2 replicas: 3 -> 1 live", asked: 2, replicas: 1},
		{name: "all floored at min", cell: plugin.CellState{Replicas: 3, MinReplicas: 1}, args: []string{"all"},
			outcome: plugin.Done, msg: "drained 2 of 3 replicas: 3 -> 1 live (min 1)", asked: 3, replicas: 1},
		{name: "all of an idle cell", cell: plugin.CellState{Replicas: 3, MinReplicas: 1}, idle: true, args: []string{"all"},
			outcome: plugin.Done, msg: "drained 3 replicas: 3 -> 0 live", asked: 3, replicas: 0},
		{name: "host keeps min", cell: plugin.CellState{Replicas: 1, MinReplicas: 1},
			outcome: plugin.Noop, msg: "nothing to drain: 1 live, min 1", asked: 1, replicas: 1},
		{name: "none live", cell: plugin.CellState{Replicas: 0}, args: []string{"all"},
			outcome: plugin.Noop, msg: "nothing to drain: 0 live"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cell.Name = "web"
			h := newSimHost(tc.cell)
			h.idle = map[string]bool{"web": tc.idle}
			wantMessage(t, run(t, h, "decay", "web", tc.args...), tc.outcome, tc.msg)
			checkCount(t, h, "DrainReplicas", tc.asked)
			if got := h.cell("web").Replicas; got != tc.replicas {
				t.Errorf("%d live afterwards, want %d", got, tc.replicas)
			}
		})
	}
}

func TestDecayHostError(t *testing.T) {
	h := newSimHost(plugin.CellState{Name: "web", Replicas: 3})
	h.before = failOn("DrainReplicas", 0, errors.New("boom"))
	wantMessage(t, run(t, h, "decay", "web", "2"), plugin.Failed, "draining 2 replicas of cell web (3 live): boom")
}

func TestReplicaVerbsBadArgs(t *testing.T) {
	for _, tc := range []struct {
		verb string
		args []string
		bad  string // the argument the message must name
		form string
	}{
		{"clone", []string{"0"}, "0", cloneForm},
		{"clone", []string{"-1"}, "-1", cloneForm},
		{"clone", []string{"two"}, "two", cloneForm},
		{"clone", []string{"1001"}, "1001", cloneForm},
		{"clone", []string{"1", "2"}, "2", cloneForm},
		{"clone", []string{"on"}, "on", cloneForm},
		{"clone", []string{"2", "on", "edge-1", "x"}, "x", cloneForm},
		{"clone", []string{"1", "2", "on", "edge-1"}, "2", cloneForm},
		{"decay", []string{"none"}, "none", decayForm},
		{"decay", []string{"0"}, "0", decayForm},
		{"decay", []string{"all", "2"}, "2", decayForm},
		{"spawn", []string{"all"}, "all", spawnForm},
	} {
		t.Run(tc.verb+" "+strings.Join(tc.args, " "), func(t *testing.T) {
			h := newSimHost(plugin.CellState{Name: "web", Replicas: 2})
			want(t, run(t, h, tc.verb, "web", tc.args...), plugin.Failed, `bad argument "`+tc.bad+`"`, "expected "+tc.form)
			checkCount(t, h, "SpawnReplicas", 0)
			checkCount(t, h, "DrainReplicas", 0)
		})
	}
}

// TestCloneOnPeer: `clone [N] on NODE|peer` asks the host to place the
// replicas on another node ("peer": the host picks the least loaded).
func TestCloneOnPeer(t *testing.T) {
	h := newSimHost(plugin.CellState{Name: "web", Replicas: 8, MaxReplicas: 8, Prefer: []string{"far"}, Avoid: []string{"bad"}})
	h.nodes = []plugin.NodeState{
		{Name: "me", State: "alive", Self: true},
		{Name: "bad", State: "alive"},
		{Name: "busy", State: "alive", Load: 9},
		{Name: "calm", State: "alive", Load: 1},
		{Name: "has", State: "alive", Cells: []string{"web"}},
		{Name: "far", State: "dead"},
	}
	want(t, run(t, h, "clone", "web", "2", "on", "edge-1"), plugin.Done, "node edge-1 serves web: 2 live there")
	// The least loaded live peer without the cell, not the avoided one
	// (the preferred one is dead).
	want(t, run(t, h, "clone", "web", "on", "peer"), plugin.Done, "node calm serves web: 1 live there")
	if calls := h.callsTo("PlaceReplicas"); len(calls) != 2 || calls[0].Note != "edge-1" || calls[0].Count != 2 || calls[1].Note != "calm" || calls[1].Count != 1 {
		t.Fatalf("PlaceReplicas calls %+v", calls)
	}
	h.nodes[5].State = "alive" // the preferred node is back
	want(t, run(t, h, "clone", "web", "on", "peer"), plugin.Done, "node far serves web")
	h.nodes = h.nodes[:1]
	want(t, run(t, h, "clone", "web", "on", "peer"), plugin.Noop, "no live peer")
	checkCount(t, h, "SpawnReplicas", 0)
}

// twoVersions is a cell serving old with all traffic and new staged beside
// it with weight 0.
func twoVersions() plugin.CellState {
	return plugin.CellState{Name: "web", Replicas: 2, MinReplicas: 1, MaxReplicas: 8, Versions: []plugin.VersionState{
		{SHA256: oldSHA, Weight: 100, Requests: 1000, Errors: 2},
		{SHA256: newSHA, Weight: 0},
	}}
}

// lastWeights returns the weights of the last SetRouteWeights call.
func lastWeights(t *testing.T, h *simHost) []plugin.RouteWeight {
	t.Helper()
	calls := h.callsTo("SetRouteWeights")
	if len(calls) == 0 {
		t.Fatalf("no SetRouteWeights call")
	}
	return calls[len(calls)-1].Weights
}

func rw(target string, w uint32) plugin.RouteWeight {
	return plugin.RouteWeight{Target: target, Weight: w}
}

func TestRerouteWeights(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		weights []plugin.RouteWeight
		msg     string
	}{
		{"versions", []string{"3f2a9c01=90", "9e8d7c6b=10"}, []plugin.RouteWeight{rw(newSHA, 90), rw(oldSHA, 10)},
			"route weights set: 3f2a9c01ab12=90, 9e8d7c6b5a41=10"},
		{"full digest and upper case", []string{oldSHA + "=1", "3F2A9C01AB=3"}, []plugin.RouteWeight{rw(oldSHA, 1), rw(newSHA, 3)},
			"route weights set: 9e8d7c6b5a41=1, 3f2a9c01ab12=3"},
		{"a node", []string{"9e8d7c6b=100", "edge-1.lan=50"}, []plugin.RouteWeight{rw(oldSHA, 100), rw("edge-1.lan", 50)},
			"route weights set: 9e8d7c6b5a41=100, edge-1.lan=50"},
		{"zero and max", []string{"9e8d7c6b=0", "3f2a9c01=1000"}, []plugin.RouteWeight{rw(oldSHA, 0), rw(newSHA, 1000)},
			"route weights set: 9e8d7c6b5a41=0, 3f2a9c01ab12=1000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSimHost(twoVersions())
			wantMessage(t, run(t, h, "reroute", "web", tc.args...), plugin.Done, tc.msg)
			if got := lastWeights(t, h); !slices.Equal(got, tc.weights) {
				t.Errorf("weights %v, want %v", got, tc.weights)
			}
		})
	}
}

func TestRerouteWeightsNoopAndRefused(t *testing.T) {
	h := newSimHost(twoVersions())
	wantMessage(t, run(t, h, "reroute", "web", "3f2a9c01=0", "9e8d7c6b=100"), plugin.Noop,
		"route weights already 3f2a9c01ab12=0, 9e8d7c6b5a41=100")
	wantMessage(t, run(t, h, "reroute", "web", "3f2a9c01=0", "9e8d7c6b=0"), plugin.Refused,
		"every weight is 0: the cell would get no traffic")
	if n := len(h.callsTo("SetRouteWeights")); n != 0 {
		t.Errorf("%d SetRouteWeights calls, want none", n)
	}
	// Naming a node as well is not a no-op even when the versions match.
	want(t, run(t, h, "reroute", "web", "3f2a9c01=0", "9e8d7c6b=100", "edge-1=5"), plugin.Done)
}

func TestRerouteBadArgs(t *testing.T) {
	cell := twoVersions()
	cell.Versions = append(cell.Versions, plugin.VersionState{SHA256: "3f2a9c01ff" + strings.Repeat("3", 54)})
	for _, tc := range []struct {
		args []string
		bad  string
		why  string
	}{
		{[]string{"3f2a9c01ab"}, "3f2a9c01ab", "want TARGET=WEIGHT"},
		{[]string{"fast"}, "fast", "want TARGET=WEIGHT"},
		{[]string{"3f2a9c01ab=1001"}, "3f2a9c01ab=1001", "not a whole number 0..1000"},
		{[]string{"3f2a9c01ab=-1"}, "3f2a9c01ab=-1", "not a whole number 0..1000"},
		{[]string{"3f2a9c01ab=half"}, "3f2a9c01ab=half", "not a whole number 0..1000"},
		{[]string{"=5"}, "=5", "neither a version"},
		{[]string{"-edge=5"}, "-edge=5", "neither a version"},
		{[]string{"deadbeef00=5"}, "deadbeef00=5", "no version deadbeef00 of cell web"},
		{[]string{"3f2a9c01=5"}, "3f2a9c01=5", "ambiguous"},
		{[]string{"3f2a9c01ab=1", "3f2a9c01ab12=2"}, "3f2a9c01ab12=2", "named twice"},
		{[]string{"max-error-rate=5%"}, "max-error-rate=5%", `reroute away max-error-rate=5%`},
		{[]string{"even", "now"}, "now", "no further arguments"},
		{[]string{"away", "fast"}, "fast", "only max-error-rate=RATE"},
		{[]string{"away", "max-error-rate=2"}, "max-error-rate=2", "between 0 and 1"},
		{[]string{"away", "max-error-rate=x"}, "max-error-rate=x", "fraction such as 0.01"},
		{[]string{"away", "max-error-rate=1%", "max-error-rate=2%"}, "max-error-rate=2%", "given twice"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			h := newSimHost(cell)
			want(t, run(t, h, "reroute", "web", tc.args...), plugin.Failed, `bad argument "`+tc.bad+`"`, tc.why, "expected "+rerouteForm)
			if n := len(h.callsTo("SetRouteWeights")); n != 0 {
				t.Errorf("%d SetRouteWeights calls, want none", n)
			}
		})
	}
}

func TestRerouteHostError(t *testing.T) {
	h := newSimHost(twoVersions())
	h.before = failOn("SetRouteWeights", 0, status.Error(codes.Unimplemented, "weighted routing is not available"))
	want(t, run(t, h, "reroute", "web", "3f2a9c01=50", "9e8d7c6b=50"), plugin.Failed,
		"setting route weights 3f2a9c01ab12=50, 9e8d7c6b5a41=50 of cell web", "weighted routing is not available")
}

func TestRerouteEven(t *testing.T) {
	h := newSimHost(twoVersions())
	wantMessage(t, run(t, h, "reroute", "web", "even"), plugin.Done, "rerouted evenly: 9e8d7c6b5a41=100, 3f2a9c01ab12=100")
	if got, w := lastWeights(t, h), []plugin.RouteWeight{rw(oldSHA, 100), rw(newSHA, 100)}; !slices.Equal(got, w) {
		t.Errorf("weights %v, want %v", got, w)
	}
	wantMessage(t, run(t, h, "reroute", "web", "even"), plugin.Noop, "already even: 9e8d7c6b5a41=100, 3f2a9c01ab12=100")

	one := newSimHost(plugin.CellState{Name: "web", Versions: []plugin.VersionState{{SHA256: oldSHA, Weight: 1}}})
	wantMessage(t, run(t, one, "reroute", "web", "even"), plugin.Noop, "only one version routed (9e8d7c6b5a41); nothing to share")
	if n := len(one.callsTo("SetRouteWeights")) + len(h.callsTo("SetRouteWeights")); n != 1 {
		t.Errorf("%d SetRouteWeights calls, want 1", n)
	}
}

func TestRerouteAway(t *testing.T) {
	healthy := plugin.VersionState{SHA256: oldSHA, Weight: 90, Requests: 100, Errors: 1}
	broken := plugin.VersionState{SHA256: newSHA, Weight: 10, Requests: 20, Errors: 5}
	cell := func(vs ...plugin.VersionState) plugin.CellState {
		return plugin.CellState{Name: "web", Replicas: 2, Versions: vs}
	}
	for _, tc := range []struct {
		name    string
		cell    plugin.CellState
		args    []string
		outcome plugin.Outcome
		msg     string
		weights []plugin.RouteWeight // of the one SetRouteWeights call; nil: none
	}{
		{name: "away", cell: cell(healthy, broken), args: []string{"away"}, outcome: plugin.Done,
			msg:     "rerouted away from 3f2a9c01ab12 25% (5 of 20 requests): error rate above 1%; weights now 9e8d7c6b5a41=90, 3f2a9c01ab12=0",
			weights: []plugin.RouteWeight{rw(oldSHA, 90), rw(newSHA, 0)}},
		{name: "bare reroute is away", cell: cell(broken, healthy), outcome: plugin.Done,
			msg:     "rerouted away from 3f2a9c01ab12 25% (5 of 20 requests): error rate above 1%; weights now 3f2a9c01ab12=0, 9e8d7c6b5a41=90",
			weights: []plugin.RouteWeight{rw(newSHA, 0), rw(oldSHA, 90)}},
		{name: "untried version is healthy", cell: cell(healthy, broken, plugin.VersionState{SHA256: thdSHA, Weight: 5}), outcome: plugin.Done,
			msg:     "rerouted away from 3f2a9c01ab12 25% (5 of 20 requests): error rate above 1%; weights now 9e8d7c6b5a41=90, 3f2a9c01ab12=0, 77aa55bb33cc=5",
			weights: []plugin.RouteWeight{rw(oldSHA, 90), rw(newSHA, 0), rw(thdSHA, 5)}},
		{name: "threshold as percent", cell: cell(healthy, broken), args: []string{"away", "max-error-rate=30%"}, outcome: plugin.Noop,
			msg: "no version's error rate is above 30%: 9e8d7c6b5a41 1% (1 of 100 requests), 3f2a9c01ab12 25% (5 of 20 requests)"},
		{name: "threshold as fraction", cell: cell(healthy, broken), args: []string{"away", "max-error-rate=0.2"}, outcome: plugin.Done,
			msg:     "rerouted away from 3f2a9c01ab12 25% (5 of 20 requests): error rate above 20%; weights now 9e8d7c6b5a41=90, 3f2a9c01ab12=0",
			weights: []plugin.RouteWeight{rw(oldSHA, 90), rw(newSHA, 0)}},
		{name: "one version", cell: cell(broken), outcome: plugin.Noop,
			msg: "only one version routed (3f2a9c01ab12); nowhere to reroute to"},
		{name: "all healthy", cell: cell(healthy, plugin.VersionState{SHA256: newSHA, Weight: 10}), outcome: plugin.Noop,
			msg: "no version's error rate is above 1%: 9e8d7c6b5a41 1% (1 of 100 requests), 3f2a9c01ab12 0% (0 of 0 requests)"},
		{name: "all unhealthy", cell: cell(broken, plugin.VersionState{SHA256: oldSHA, Weight: 90, Requests: 10, Errors: 10}), outcome: plugin.Refused,
			msg: "would leave no healthy version: every version's error rate is above 1%: 3f2a9c01ab12 25% (5 of 20 requests), 9e8d7c6b5a41 100% (10 of 10 requests)"},
		{name: "unhealthy already off", cell: cell(healthy, plugin.VersionState{SHA256: newSHA, Weight: 0, Requests: 20, Errors: 5}), outcome: plugin.Noop,
			msg: "versions above error rate 1% already get no traffic: 3f2a9c01ab12 25% (5 of 20 requests)"},
		{name: "healthy gets no traffic", cell: cell(plugin.VersionState{SHA256: oldSHA, Weight: 0}, broken), outcome: plugin.Refused,
			msg: "would leave no healthy version serving: the healthy versions have weight 0 and the unhealthy ones (3f2a9c01ab12 25% (5 of 20 requests)) serve all traffic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSimHost(tc.cell)
			wantMessage(t, run(t, h, "reroute", "web", tc.args...), tc.outcome, tc.msg)
			calls := h.callsTo("SetRouteWeights")
			switch {
			case tc.weights == nil && len(calls) != 0:
				t.Errorf("SetRouteWeights calls %+v, want none", calls)
			case tc.weights != nil && (len(calls) != 1 || !slices.Equal(calls[0].Weights, tc.weights)):
				t.Errorf("SetRouteWeights calls %+v, want one with %v", calls, tc.weights)
			}
		})
	}
}

func TestHelpers(t *testing.T) {
	for _, tc := range []struct {
		total   uint32
		weights []uint32
		want    []uint32
	}{
		{90, []uint32{100}, []uint32{90}},
		{90, []uint32{3, 1}, []uint32{68, 22}},
		{50, []uint32{3, 1}, []uint32{38, 12}},
		{10, []uint32{1, 1, 1}, []uint32{4, 3, 3}},
		{100, []uint32{0, 0}, []uint32{50, 50}},
		{100, []uint32{5, 0}, []uint32{100, 0}},
		{0, []uint32{5, 7}, []uint32{0, 0}},
		{7, []uint32{1, 2, 4}, []uint32{1, 2, 4}},
	} {
		if got := split(tc.total, tc.weights); !slices.Equal(got, tc.want) {
			t.Errorf("split(%d, %v) = %v, want %v", tc.total, tc.weights, got, tc.want)
		}
	}
	for f, want := range map[float64]string{0: "0%", 0.01: "1%", 0.005: "0.5%", 1.0 / 3: "33.33%", 1: "100%", 0.2: "20%"} {
		if got := percent(f); got != want {
			t.Errorf("percent(%v) = %q, want %q", f, got, want)
		}
	}
	for d, want := range map[time.Duration]string{
		0: "0s", 2 * time.Millisecond: "2ms", 2345678: "2.35ms", 250 * time.Millisecond: "250ms",
		1500 * time.Microsecond: "1.5ms", 999: "999ns", 61 * time.Second: "1m1s",
	} {
		if got := duration(d); got != want {
			t.Errorf("duration(%v) = %q, want %q", d, got, want)
		}
	}
	for s, want := range map[string]float64{"0.01": 0.01, "1%": 0.01, "0": 0, "100%": 1, "1": 1, "0.5%": 0.005} {
		if got, err := parseRate(s); err != nil || got != want {
			t.Errorf("parseRate(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "%", "-1%", "101%", "1.5", "NaN", "Inf", "x"} {
		if _, err := parseRate(s); err == nil {
			t.Errorf("parseRate(%q) succeeded", s)
		}
	}
}
