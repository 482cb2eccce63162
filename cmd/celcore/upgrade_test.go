package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/celluster/celluster/core/testbuild"
)

// The upgrade verb (plugins/verbs) run by a real node: its steps, weights,
// rollbacks and retirements go through the core's real host API and cell
// registry, under real traffic.

type versionJSON struct {
	SHA256   string  `json:"sha256"`
	Weight   uint32  `json:"weight"`
	Replicas int     `json:"replicas"`
	Requests uint64  `json:"requests"`
	Errors   uint64  `json:"errors"`
	P99      float64 `json:"p99_ms"`
}

// versions returns the versions a cell routes to, as celctl reports them.
func (n *proc) versions(cell string) []versionJSON {
	n.t.Helper()
	out, err := n.celctl("cells", "-o", "json")
	if err != nil {
		n.t.Fatalf("celctl cells: %v\n%s", err, out)
	}
	var list []struct {
		Name     string        `json:"name"`
		Versions []versionJSON `json:"versions"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		n.t.Fatalf("celctl cells -o json: %v\n%s", err, out)
	}
	for _, c := range list {
		if c.Name == cell {
			return c.Versions
		}
	}
	return nil
}

// TestUpgradeStepsThroughRealHost: a replaced module is staged beside the
// serving one; the verbs plugin moves traffic to it in steps (10 %, 50 %,
// 100 %) through the host API, judging each step on the counters the
// node's registry keeps for the new version under real traffic (each step
// journaled as a note), then retires the old version through the host API.
// No request fails.
func TestUpgradeStepsThroughRealHost(t *testing.T) {
	n := startNode(t, "", "--upgrade-step-time", "1s")
	n.drop("hello", testbuild.Cell(t, "hello", "-X main.version=v1"))
	n.waitStatus("/hello", 200)
	old := n.listCells()["hello"].SHA256
	l := startLoad(n, "/hello", 2)
	defer l.end()

	n.drop("hello", testbuild.Cell(t, "hello", "-X main.version=v2"))
	var up *journalEntry
	eventually(t, "the upgrade to end", func() bool {
		up = find(n.journal("hello"), func(e journalEntry) bool { return e.Verb == "upgrade" })
		return up != nil
	})
	st := l.end()
	if up.Outcome != "done" || up.Plugin != "verbs" || up.Rule != "module-changed" || !strings.Contains(up.Message, "in 3 steps (10%, 50%, 100%)") {
		t.Fatalf("upgrade entry %+v, want done by the verbs plugin in 3 steps", up)
	}
	// The plugin's note for each step, in order, with what the host
	// counted for the new version during it.
	var steps []string
	for _, e := range n.journal("hello") {
		if e.Outcome == "note" && e.Plugin == "verbs" && strings.Contains(e.Message, "step") {
			steps = append(steps, e.Message)
		}
	}
	if len(steps) != 3 {
		t.Fatalf("step notes %q, want 3", steps)
	}
	for i, p := range []string{"10%", "50%", "100%"} {
		if !strings.Contains(steps[i], p+" step passed: ") || !strings.Contains(steps[i], " 0 errors") {
			t.Errorf("note %d: %q, want the %s step passed with 0 errors", i+1, steps[i], p)
		}
	}
	vs := n.versions("hello")
	if len(vs) != 1 || vs[0].SHA256 == old || vs[0].Weight != 100 {
		t.Errorf("after the upgrade the cell routes %+v, want only the new version, at 100", vs)
	}
	if r := n.get("/hello"); r.status != 200 || r.header.Get("X-Cell-Version") != "v2" {
		t.Fatalf("after the upgrade: %d %q version %q", r.status, r.body, r.header.Get("X-Cell-Version"))
	}
	if st[200] == 0 || len(st) != 1 {
		t.Fatalf("statuses across the upgrade: %v, want only 200", st)
	}
}

// TestUpgradeRollsBackOnP99: an intent's latency objective becomes the
// upgrade's max-p99; a new version slower than that (the slow cell, 20 ms
// a request, replacing hello under a 10 ms objective) is rolled back from
// its first step: the old version takes all traffic again, the new one is
// retired and the journal says why.
func TestUpgradeRollsBackOnP99(t *testing.T) {
	// Steps long enough for the new version to see its min-requests (5)
	// at 10 % of the traffic even on a loaded machine.
	n := startNode(t, "", "--upgrade-step-time", "3s")
	n.writeIntent("web", "cell web\nkeep p99 latency under 10ms\n")
	n.drop("web", testbuild.Cell(t, "hello", "-X main.version=v1"))
	n.waitStatus("/web", 200)
	eventually(t, "the intent to be applied", func() bool {
		in, ok := n.intent("web")
		return ok && in.Source != "defaults"
	})
	old := n.listCells()["web"].SHA256
	l := startLoad(n, "/web", 2)
	defer l.end()

	n.drop("web", testbuild.Cell(t, "slow"))
	var up *journalEntry
	eventually(t, "the upgrade to end", func() bool {
		up = find(n.journal("web"), func(e journalEntry) bool { return e.Verb == "upgrade" })
		return up != nil
	})
	st := l.end()
	if up.Outcome != "rolled-back" || !strings.Contains(up.Message, "p99") {
		t.Fatalf("upgrade entry %+v, want rolled-back on p99", up)
	}
	if !slices.Contains(up.Args, "max-p99=0.01") {
		t.Errorf("upgrade args %v, want the intent's max-p99=0.01", up.Args)
	}
	eventually(t, "the slow version to be retired", func() bool {
		vs := n.versions("web")
		return len(vs) == 1 && vs[0].SHA256 == old && vs[0].Weight == 100
	})
	if r := n.get("/web"); r.status != 200 || r.header.Get("X-Cell-Version") != "v1" {
		t.Fatalf("after the rollback: %d %q version %q", r.status, r.body, r.header.Get("X-Cell-Version"))
	}
	if st[200] == 0 || len(st) != 1 {
		t.Fatalf("statuses across the rollback: %v, want only 200 (slow answers too, only slower)", st)
	}
}

// TestUpgradeWithoutTrafficContinues: with no request during its steps the
// upgrade cannot judge the new version, says so in the journal, and
// completes: the new version serves alone.
func TestUpgradeWithoutTrafficContinues(t *testing.T) {
	n := startNode(t, "", "--upgrade-step-time", "100ms")
	n.writeIntent("hello", "cell hello\nkeep p99 latency under 1ms\nkeep error rate under 1%\n")
	n.drop("hello", testbuild.Cell(t, "hello", "-X main.version=v1"))
	n.waitStatus("/hello", 200)
	eventually(t, "the intent to be applied", func() bool {
		in, ok := n.intent("hello")
		return ok && in.Source != "defaults"
	})
	old := n.listCells()["hello"].SHA256

	n.drop("hello", testbuild.Cell(t, "hello", "-X main.version=v2"))
	var up *journalEntry
	eventually(t, "the upgrade to end", func() bool {
		up = find(n.journal("hello"), func(e journalEntry) bool { return e.Verb == "upgrade" })
		return up != nil
	})
	if up.Outcome != "done" || !strings.Contains(up.Message, "no traffic during 10%, 50%, 100%") {
		t.Fatalf("upgrade entry %+v, want done with no traffic during any step", up)
	}
	notes := 0
	for _, e := range n.journal("hello") {
		if e.Outcome == "note" && strings.Contains(e.Message, "saw no traffic; continuing") {
			notes++
		}
	}
	if notes != 3 {
		t.Errorf("%d journal notes of steps without traffic, want 3", notes)
	}
	if vs := n.versions("hello"); len(vs) != 1 || vs[0].SHA256 == old {
		t.Fatalf("after the upgrade the cell routes %+v, want only the new version", vs)
	}
	if r := n.get("/hello"); r.status != 200 || r.header.Get("X-Cell-Version") != "v2" {
		t.Fatalf("after the upgrade: %d %q version %q", r.status, r.body, r.header.Get("X-Cell-Version"))
	}
}
