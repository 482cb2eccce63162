package verbs

import (
	"slices"
	"testing"

	"github.com/celluster/celluster/sdk/plugin"
	"github.com/celluster/celluster/sdk/plugin/plugintest"
)

// TestConformance runs the plugin through the real gRPC boundary, with a
// RecordingHost served back to it over go-plugin's broker. The cases run
// in order against the same host, whose replica counts carry over.
func TestConformance(t *testing.T) {
	host := &plugintest.RecordingHost{Cells: []plugin.CellState{
		{Name: "web", ABI: "reactor", State: "ready", Replicas: 1, Warm: 2, MinReplicas: 1, MaxReplicas: 4,
			Versions: []plugin.VersionState{{SHA256: oldSHA, Weight: 100}, {SHA256: newSHA}}},
		{Name: "job", ABI: "command", State: "ready"},
	}}
	calls := func(method string, calls []plugintest.HostCall) []plugintest.HostCall {
		var out []plugintest.HostCall
		for _, c := range calls {
			if c.Method == method {
				out = append(out, c)
			}
		}
		return out
	}
	wantMsg := func(msg string) func(*testing.T, plugin.VerbResult, []plugintest.HostCall) {
		return func(t *testing.T, res plugin.VerbResult, _ []plugintest.HostCall) {
			if res.Message != msg {
				t.Errorf("message %q, want %q", res.Message, msg)
			}
		}
	}
	manual := plugin.Trigger{Manual: true}
	rule := plugin.Trigger{Rule: "line 9", Values: []plugin.SignalValue{{Signal: "cpu", Value: 91}}}
	plugintest.VerbSuite(t, Info, New(), []plugintest.VerbCase{
		{Request: plugin.VerbRequest{Verb: "spawn", Cell: "web", Trigger: manual}, WantOutcome: plugin.Done,
			Check: wantMsg("spawned 1 replica: 1 -> 2 live (warm 2, min 1)")},
		{Request: plugin.VerbRequest{Verb: "clone", Cell: "web", Args: []string{"5"}, Trigger: rule}, WantOutcome: plugin.Done,
			Check: func(t *testing.T, res plugin.VerbResult, cs []plugintest.HostCall) {
				if sp := calls("SpawnReplicas", cs); len(sp) != 1 || sp[0].Count != 2 {
					t.Errorf("SpawnReplicas calls %+v, want one asking for the 2 that fit under max 4", sp)
				}
				wantMsg("spawned 2 of 5 replicas: 2 -> 4 live (max 4)")(t, res, cs)
			}},
		{Name: "clone at max", Request: plugin.VerbRequest{Verb: "clone", Cell: "web", Trigger: rule}, WantOutcome: plugin.Noop,
			Check: wantMsg("at max replicas 4 (4 live)")},
		{Request: plugin.VerbRequest{Verb: "decay", Cell: "web", Args: []string{"3"}, Trigger: rule}, WantOutcome: plugin.Done,
			Check: wantMsg("drained 3 replicas: 4 -> 1 live")},
		{Request: plugin.VerbRequest{Verb: "spawn", Cell: "job", Trigger: manual}, WantOutcome: plugin.Noop},
		{Name: "reroute bad", Request: plugin.VerbRequest{Verb: "reroute", Cell: "web", Args: []string{"web=lots"}, Trigger: manual}, WantOutcome: plugin.Failed},
		{Request: plugin.VerbRequest{Verb: "reroute", Cell: "web", Args: []string{"9e8d7c6b=1", "3f2a9c01=3"}, Trigger: manual}, WantOutcome: plugin.Done,
			Check: func(t *testing.T, _ plugin.VerbResult, cs []plugintest.HostCall) {
				want := []plugin.RouteWeight{{Target: oldSHA, Weight: 1}, {Target: newSHA, Weight: 3}}
				if sw := calls("SetRouteWeights", cs); len(sw) != 1 || !slices.Equal(sw[0].Weights, want) {
					t.Errorf("SetRouteWeights calls %+v, want one with %v", sw, want)
				}
			}},
		// The RecordingHost's counters never move: every step sees no
		// traffic, and the upgrade goes through.
		{Request: plugin.VerbRequest{Verb: "upgrade", Cell: "web", Args: []string{newSHA[:12], "step-time=1ms"}, Trigger: manual}, WantOutcome: plugin.Done,
			Check: func(t *testing.T, res plugin.VerbResult, cs []plugintest.HostCall) {
				var got []uint32
				for _, c := range calls("SetRouteWeights", cs) {
					got = append(got, c.Weights[0].Weight)
				}
				if want := []uint32{10, 50, 100}; !slices.Equal(got, want) {
					t.Errorf("new version's weights %v, want %v", got, want)
				}
				if rv := calls("RetireVersion", cs); len(rv) != 1 || rv[0].Version != oldSHA {
					t.Errorf("RetireVersion calls %+v, want one of the old version", rv)
				}
				wantMsg("upgraded 9e8d7c6b5a41 -> 3f2a9c01ab12 in 3 steps (10%, 50%, 100%); new version: 0 requests, 0 errors, p99 0s; no traffic during 10%, 50%, 100%")(t, res, cs)
			}},
		{Name: "upgrade unstaged", Request: plugin.VerbRequest{Verb: "upgrade", Cell: "web", Args: []string{"deadbeef"}, Trigger: manual}, WantOutcome: plugin.Failed},
		{Name: "unknown cell", Request: plugin.VerbRequest{Verb: "decay", Cell: "ghost", Trigger: manual}, WantOutcome: plugin.Failed,
			Check: wantMsg("no cell ghost")},
	}, plugintest.WithHost(host))
}
