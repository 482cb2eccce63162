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

// The upgrade's behaviour against the real host API (its steps and weights
// as the core's registry applies them, rollback on errors and on p99 under
// real traffic, retirement, steps without traffic) is tested through a real
// node in cmd/celcore (upgrade_test.go, and TestReflexBrokenUpgradeRolledBack).
// The tests here use simHost for what a real host cannot be made to do on
// demand: fail a given call, be cancelled at a given point, report chosen
// counters at each step, route to three versions at once.

// fast is the step time of upgrade tests: steps end by the timer, but
// nothing asserts on how long they took.
const fast = "step-time=10ms"

// traffic returns a traffic hook: at each listing, every version gets
// per*share requests (rounded down); the new version fails errs of every
// per of them (scaled alike) and reports p99.
func traffic(per, errs uint64, p99 time.Duration) func(*plugin.VersionState, float64) {
	return func(v *plugin.VersionState, share float64) {
		n := uint64(float64(per) * share)
		v.Requests += n
		if v.SHA256 == newSHA {
			v.Errors += uint64(float64(errs) * share)
			if n > 0 {
				v.P99 = p99
			}
		}
	}
}

// weightSteps returns, for each SetRouteWeights call, the weights by
// target digest.
func weightSteps(h *simHost) []map[string]uint32 {
	var out []map[string]uint32
	for _, c := range h.callsTo("SetRouteWeights") {
		m := make(map[string]uint32)
		for _, w := range c.Weights {
			m[w.Target] = w.Weight
		}
		out = append(out, m)
	}
	return out
}

func checkSteps(t *testing.T, h *simHost, want ...map[string]uint32) {
	t.Helper()
	got := weightSteps(h)
	if len(got) != len(want) {
		t.Fatalf("SetRouteWeights calls %v, want %v", got, want)
	}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Errorf("call %d: weights %v, want %v", i, got[i], want[i])
			continue
		}
		for k, v := range want[i] {
			if w, ok := got[i][k]; !ok || w != v {
				t.Errorf("call %d: weights %v, want %v", i, got[i], want[i])
				break
			}
		}
	}
}

func checkRetired(t *testing.T, h *simHost, shas ...string) {
	t.Helper()
	var got []string
	for _, c := range h.callsTo("RetireVersion") {
		if c.Cell != "web" {
			t.Errorf("RetireVersion of cell %q", c.Cell)
		}
		got = append(got, c.Version)
	}
	if !slices.Equal(got, shas) {
		t.Errorf("retired %v, want %v", got, shas)
	}
}

// w is a shorthand for weights by digest.
func w(kv ...any) map[string]uint32 {
	m := make(map[string]uint32)
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = uint32(kv[i+1].(int))
	}
	return m
}

func TestUpgradeOptions(t *testing.T) {
	h := newSimHost(twoVersions())
	h.traffic = traffic(20, 2, time.Millisecond)
	// A prefix, options in any order, a laxer error limit, custom steps.
	res := run(t, h, "upgrade", "web", "steps=25,100", "3F2A9C01", "max-error-rate=20%", "max-p99=0.05", "min-requests=0", fast)
	wantMessage(t, res, plugin.Done,
		"upgraded 9e8d7c6b5a41 -> 3f2a9c01ab12 in 2 steps (25%, 100%); new version: 25 requests, 2 errors, p99 1ms")
	checkSteps(t, h, w(newSHA, 25, oldSHA, 75), w(newSHA, 100, oldSHA, 0))
	checkRetired(t, h, oldSHA)
}

func TestUpgradeSeveralOldVersions(t *testing.T) {
	c := twoVersions()
	c.Versions = []plugin.VersionState{{SHA256: oldSHA, Weight: 3}, {SHA256: thdSHA, Weight: 1}, {SHA256: newSHA}}
	h := newSimHost(c)
	res := run(t, h, "upgrade", "web", "3f2a9c01", fast)
	want(t, res, plugin.Done, "upgraded 9e8d7c6b5a41, 77aa55bb33cc -> 3f2a9c01ab12 in 3 steps")
	checkSteps(t, h,
		w(newSHA, 10, oldSHA, 68, thdSHA, 22),
		w(newSHA, 50, oldSHA, 38, thdSHA, 12),
		w(newSHA, 100, oldSHA, 0, thdSHA, 0))
	checkRetired(t, h, oldSHA, thdSHA)
}

func TestUpgradeRollsBackAtALaterStep(t *testing.T) {
	c := twoVersions()
	// The new version failed requests before the upgrade (warm-up probes,
	// say); only what happens during each step counts.
	c.Versions[1].Requests, c.Versions[1].Errors = 10, 10
	h := newSimHost(c)
	h.traffic = func(v *plugin.VersionState, share float64) {
		switch {
		case v.SHA256 != newSHA || share == 0:
		case share < 0.5:
			v.Requests += 4
		default:
			v.Requests += 10
			v.Errors += 3
		}
	}
	wantMessage(t, run(t, h, "upgrade", "web", newSHA, fast), plugin.RolledBack,
		"rolled back 3f2a9c01ab12 at 50%: error rate 30% (3 of 10 requests) > 1%; 9e8d7c6b5a41 serves all traffic")
	checkSteps(t, h, w(newSHA, 10, oldSHA, 90), w(newSHA, 50, oldSHA, 50), w(newSHA, 0, oldSHA, 100))
	checkRetired(t, h, newSHA)
}

func TestUpgradeP99NeedsMinRequests(t *testing.T) {
	h := newSimHost(twoVersions())
	h.traffic = func(v *plugin.VersionState, share float64) {
		if v.SHA256 == newSHA && share > 0 {
			v.Requests += 4 // below min-requests at every step
			v.P99 = time.Second
		}
	}
	want(t, run(t, h, "upgrade", "web", newSHA, "max-p99=0.1", fast), plugin.Done, "new version: 12 requests, 0 errors, p99 1s")
	checkRetired(t, h, oldSHA)

	h = newSimHost(twoVersions())
	h.traffic = func(v *plugin.VersionState, share float64) {
		if v.SHA256 == newSHA && share > 0 {
			v.Requests += 4
			v.P99 = time.Second
		}
	}
	wantMessage(t, run(t, h, "upgrade", "web", newSHA, "max-p99=0.1", "min-requests=4", fast), plugin.RolledBack,
		"rolled back 3f2a9c01ab12 at 10%: p99 1s > 100ms (4 requests, 0 errors); 9e8d7c6b5a41 serves all traffic")
}

func TestUpgradeCanceledRestoresOldWeights(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newSimHost(twoVersions())
	h.traffic = traffic(20, 0, time.Millisecond)
	h.before = func(method string, n int) error {
		if method == "SetRouteWeights" && n == 2 {
			cancel() // as the 50% step begins
		}
		return nil
	}
	res := runCtx(t, ctx, h, "upgrade", "web", newSHA, fast)
	wantMessage(t, res, plugin.Failed,
		"upgrade of cell web to 3f2a9c01ab12: canceled during the 50% step: context canceled; 9e8d7c6b5a41 serves all traffic again")
	checkSteps(t, h, w(newSHA, 10, oldSHA, 90), w(newSHA, 50, oldSHA, 50), w(newSHA, 0, oldSHA, 100))
	checkRetired(t, h)
	if c := h.cell("web"); len(c.Versions) != 2 || c.Versions[0].Weight != 100 || c.Versions[1].Weight != 0 {
		t.Errorf("versions afterwards %+v, want old=100 new=0", c.Versions)
	}
}

func TestUpgradeCanceledDuringTheWait(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newSimHost(twoVersions())
	h.before = func(method string, n int) error {
		if method == "SetRouteWeights" && n == 1 {
			go cancel() // the step lasts an hour: only the cancellation ends it
		}
		return nil
	}
	res := runCtx(t, ctx, h, "upgrade", "web", newSHA, "step-time=1h")
	wantMessage(t, res, plugin.Failed,
		"upgrade of cell web to 3f2a9c01ab12: canceled during the 10% step: context canceled; 9e8d7c6b5a41 serves all traffic again")
	checkSteps(t, h, w(newSHA, 10, oldSHA, 90), w(newSHA, 0, oldSHA, 100))
	checkRetired(t, h)
}

func TestUpgradeCanceledBeforeAStep(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newSimHost(twoVersions())
	h.before = func(method string, n int) error {
		if method == "AddJournalNote" && n == 1 {
			cancel() // after the 10% step passed
		}
		return nil
	}
	res := runCtx(t, ctx, h, "upgrade", "web", newSHA, fast)
	wantMessage(t, res, plugin.Failed,
		"upgrade of cell web to 3f2a9c01ab12: canceled before the 50% step: context canceled; 9e8d7c6b5a41 serves all traffic again")
	checkSteps(t, h, w(newSHA, 10, oldSHA, 90), w(newSHA, 0, oldSHA, 100))
}

func TestUpgradeHostFailures(t *testing.T) {
	gone := status.Error(codes.Unavailable, "host connection is gone")
	for _, tc := range []struct {
		name    string
		before  func(string, int) error
		outcome plugin.Outcome
		msg     string
		steps   []map[string]uint32
		retired []string
	}{
		{name: "first weights", before: failOn("SetRouteWeights", 1, gone), outcome: plugin.Failed,
			msg:   "upgrade of cell web to 3f2a9c01ab12: setting route weights for the 10% step: rpc error: code = Unavailable desc = host connection is gone",
			steps: []map[string]uint32{w(newSHA, 10, oldSHA, 90)}},
		{name: "second weights", before: failOn("SetRouteWeights", 2, gone), outcome: plugin.Failed,
			msg:   "upgrade of cell web to 3f2a9c01ab12: setting route weights for the 50% step: rpc error: code = Unavailable desc = host connection is gone; 9e8d7c6b5a41 serves all traffic again",
			steps: []map[string]uint32{w(newSHA, 10, oldSHA, 90), w(newSHA, 50, oldSHA, 50), w(newSHA, 0, oldSHA, 100)}},
		{name: "restoring too", before: func(m string, n int) error {
			if m == "SetRouteWeights" && n >= 2 {
				return gone
			}
			return nil
		}, outcome: plugin.Failed,
			msg:   "upgrade of cell web to 3f2a9c01ab12: setting route weights for the 50% step: rpc error: code = Unavailable desc = host connection is gone; putting traffic back on 9e8d7c6b5a41 failed too: rpc error: code = Unavailable desc = host connection is gone",
			steps: []map[string]uint32{w(newSHA, 10, oldSHA, 90), w(newSHA, 50, oldSHA, 50), w(newSHA, 0, oldSHA, 100)}},
		{name: "reading", before: failOn("ListCells", 2, errors.New("boom")), outcome: plugin.Failed,
			msg:   "upgrade of cell web to 3f2a9c01ab12: reading the cell after the 10% step: boom; 9e8d7c6b5a41 serves all traffic again",
			steps: []map[string]uint32{w(newSHA, 10, oldSHA, 90), w(newSHA, 0, oldSHA, 100)}},
		{name: "retiring old", before: failOn("RetireVersion", 0, errors.New("busy")), outcome: plugin.Failed,
			msg:     "all traffic of cell web is on 3f2a9c01ab12, but retiring the old version 9e8d7c6b5a41 failed: busy",
			steps:   []map[string]uint32{w(newSHA, 10, oldSHA, 90), w(newSHA, 50, oldSHA, 50), w(newSHA, 100, oldSHA, 0)},
			retired: []string{oldSHA}},
		{name: "journal notes do not matter", before: failOn("AddJournalNote", 0, errors.New("no journal")), outcome: plugin.Done,
			msg:     "upgraded 9e8d7c6b5a41 -> 3f2a9c01ab12 in 3 steps (10%, 50%, 100%); new version: 32 requests, 0 errors, p99 1ms",
			steps:   []map[string]uint32{w(newSHA, 10, oldSHA, 90), w(newSHA, 50, oldSHA, 50), w(newSHA, 100, oldSHA, 0)},
			retired: []string{oldSHA}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSimHost(twoVersions())
			h.traffic = traffic(20, 0, time.Millisecond)
			h.before = tc.before
			wantMessage(t, run(t, h, "upgrade", "web", newSHA, fast), tc.outcome, tc.msg)
			checkSteps(t, h, tc.steps...)
			checkRetired(t, h, tc.retired...)
		})
	}
}

func TestUpgradeRollbackRetireFails(t *testing.T) {
	h := newSimHost(twoVersions())
	h.traffic = traffic(20, 20, time.Millisecond)
	h.before = failOn("RetireVersion", 0, errors.New("busy"))
	wantMessage(t, run(t, h, "upgrade", "web", newSHA, fast), plugin.RolledBack,
		"rolled back 3f2a9c01ab12 at 10%: error rate 100% (2 of 2 requests) > 1%; 9e8d7c6b5a41 serves all traffic; retiring 3f2a9c01ab12 failed: busy")
	checkSteps(t, h, w(newSHA, 10, oldSHA, 90), w(newSHA, 0, oldSHA, 100))
}

func TestUpgradeNothingToDo(t *testing.T) {
	h := newSimHost(twoVersions())
	wantMessage(t, run(t, h, "upgrade", "web", "deadbeef00"), plugin.Failed,
		"no version deadbeef00 staged for cell web (it routes 9e8d7c6b5a41, 3f2a9c01ab12)")

	one := plugin.CellState{Name: "web", Versions: []plugin.VersionState{{SHA256: newSHA, Weight: 100}}}
	h2 := newSimHost(one)
	wantMessage(t, run(t, h2, "upgrade", "web", newSHA), plugin.Noop, "already serving 3f2a9c01ab12")
	want(t, run(t, h2, "upgrade", "web", oldSHA), plugin.Failed, "no version "+oldSHA+" staged for cell web")

	wantMessage(t, run(t, newSimHost(plugin.CellState{Name: "web", Replicas: 1}), "upgrade", "web", "3f2a9c01"), plugin.Failed,
		"no version 3f2a9c01 staged for cell web (it routes none)")

	c := twoVersions()
	c.Versions = append(c.Versions, plugin.VersionState{SHA256: "3f2a9c01ff" + strings.Repeat("3", 54)})
	want(t, run(t, newSimHost(c), "upgrade", "web", "3f2a9c01"), plugin.Failed, "version prefix 3f2a9c01 of cell web is ambiguous")

	for _, hh := range []*simHost{h, h2} {
		if n := len(hh.callsTo("SetRouteWeights")) + len(hh.callsTo("RetireVersion")); n != 0 {
			t.Errorf("%d changing calls, want none", n)
		}
	}
}

func TestUpgradeBadArgs(t *testing.T) {
	h := newSimHost(twoVersions())
	wantMessage(t, run(t, h, "upgrade", "web"), plugin.Failed, "no version to upgrade to: expected "+upgradeForm)
	wantMessage(t, run(t, h, "upgrade", "web", fast), plugin.Failed, "no version to upgrade to: expected "+upgradeForm)
	for _, tc := range []struct {
		args []string
		bad  string
		why  string
	}{
		{[]string{"rollback"}, "rollback", "want the new version's sha256"},
		{[]string{"3f2a9c0"}, "3f2a9c0", "8 to 64 hex digits"},
		{[]string{"3f2a9c01", "9e8d7c6b"}, "9e8d7c6b", "one version only"},
		{[]string{"3f2a9c01", "steps=50,10,100"}, "steps=50,10,100", "steps must increase"},
		{[]string{"3f2a9c01", "steps=10,50"}, "steps=10,50", "the last step must be 100"},
		{[]string{"3f2a9c01", "steps=0,100"}, "steps=0,100", "percentages 1..100"},
		{[]string{"3f2a9c01", "steps="}, "steps=", "percentages 1..100"},
		{[]string{"3f2a9c01", "steps=10,,100"}, "steps=10,,100", "percentages 1..100"},
		{[]string{"3f2a9c01", "step-time=0"}, "step-time=0", "above zero"},
		{[]string{"3f2a9c01", "step-time=fast"}, "step-time=fast", "above zero"},
		{[]string{"3f2a9c01", "min-requests=-1"}, "min-requests=-1", "whole number"},
		{[]string{"3f2a9c01", "max-error-rate=200%"}, "max-error-rate=200%", "between 0 and 1"},
		{[]string{"3f2a9c01", "max-p99=0"}, "max-p99=0", "above zero"},
		{[]string{"3f2a9c01", "max-p99=-5ms"}, "max-p99=-5ms", "above zero"},
		{[]string{"3f2a9c01", "max-p99=soon"}, "max-p99=soon", "duration such as 50ms"},
		{[]string{"3f2a9c01", "speed=1"}, "speed=1", `unknown option "speed"`},
		{[]string{"3f2a9c01", "steps=100", "steps=100"}, "steps=100", "steps is given twice"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			h := newSimHost(twoVersions())
			want(t, run(t, h, "upgrade", "web", tc.args...), plugin.Failed, `bad argument "`+tc.bad+`"`, tc.why, "expected "+upgradeForm)
			if n := len(h.callsTo("SetRouteWeights")); n != 0 {
				t.Errorf("%d SetRouteWeights calls, want none", n)
			}
		})
	}
}

// TestUpgradeResumes: an upgrade cut short leaves the new version with a
// share of traffic; upgrading to it again takes up from that share and
// never moves traffic back to the old version.
func TestUpgradeResumes(t *testing.T) {
	for _, tc := range []struct {
		weight uint32
		steps  []map[string]uint32
		msg    string
	}{
		{100, nil, "it already had all traffic"},
		{50, []map[string]uint32{w(newSHA, 100, oldSHA, 0)}, "in 1 step (100%)"},
		{10, []map[string]uint32{w(newSHA, 50, oldSHA, 50), w(newSHA, 100, oldSHA, 0)}, "in 2 steps (50%, 100%)"},
	} {
		c := twoVersions()
		c.Versions = []plugin.VersionState{{SHA256: oldSHA, Weight: 100 - tc.weight, Replicas: 2}, {SHA256: newSHA, Weight: tc.weight}}
		h := newSimHost(c)
		res := run(t, h, "upgrade", "web", newSHA, fast)
		want(t, res, plugin.Done, tc.msg)
		if !strings.Contains(res.Message, "resumed with") {
			t.Errorf("at %d%%: message %q does not say it resumed", tc.weight, res.Message)
		}
		checkSteps(t, h, tc.steps...)
		checkRetired(t, h, oldSHA)
	}
}
