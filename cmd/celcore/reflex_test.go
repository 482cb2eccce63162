package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/celluster/celluster/core/testbuild"
)

// journalEntry is what `celctl journal -o json` prints per entry.
type journalEntry struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Cell    string    `json:"cell"`
	Verb    string    `json:"verb"`
	Args    []string  `json:"args"`
	Rule    string    `json:"rule"`
	Origin  string    `json:"origin"`
	Manual  bool      `json:"manual"`
	Outcome string    `json:"outcome"`
	Message string    `json:"message"`
	Plugin  string    `json:"plugin"`
	TraceID string    `json:"trace_id"`
	// DurationMs is how long the verb ran.
	DurationMs float64 `json:"duration_ms"`
	Values     []struct {
		Signal string            `json:"signal"`
		Labels map[string]string `json:"labels"`
		Value  float64           `json:"value"`
	} `json:"values"`
	Explanation string `json:"explanation"`
}

func (n *proc) journal(cell string) []journalEntry {
	n.t.Helper()
	args := []string{"journal", "-o", "json", "--limit", "0"}
	if cell != "" {
		args = append(args, cell)
	}
	out, err := n.celctl(args...)
	if err != nil {
		n.t.Fatalf("celctl journal: %v\n%s", err, out)
	}
	var es []journalEntry
	if err := json.Unmarshal([]byte(out), &es); err != nil {
		n.t.Fatalf("celctl journal -o json: %v\n%s", err, out)
	}
	return es
}

// find returns the last entry matching, or nil.
func find(es []journalEntry, match func(journalEntry) bool) *journalEntry {
	for i := len(es) - 1; i >= 0; i-- {
		if match(es[i]) {
			return &es[i]
		}
	}
	return nil
}

func (n *proc) writeIntent(name, text string) {
	n.t.Helper()
	tmp := filepath.Join(n.cellsDir, "."+name+".intent.tmp")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		n.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(n.cellsDir, name+".intent")); err != nil {
		n.t.Fatal(err)
	}
}

type intentJSON struct {
	Origin   string   `json:"origin"`
	Source   string   `json:"source"`
	Text     string   `json:"text"`
	Error    string   `json:"error"`
	Warnings []string `json:"warnings"`
	Replicas struct {
		Min, Max, Warm int
	} `json:"replicas"`
	Rules []struct {
		Name string `json:"name"`
		Rule string `json:"rule"`
	} `json:"rules"`
}

func (n *proc) intent(cell string) (intentJSON, bool) {
	n.t.Helper()
	out, err := n.celctl("intent", cell, "-o", "json")
	if err != nil {
		return intentJSON{}, false
	}
	var in intentJSON
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		n.t.Fatalf("celctl intent -o json: %v\n%s", err, out)
	}
	return in, true
}

// load runs clients concurrent requests against path until stop is
// closed, recording each latency and status.
type load struct {
	mu        sync.Mutex
	latencies []time.Duration
	statuses  map[int]int
	stop      chan struct{}
	once      sync.Once
	wg        sync.WaitGroup
}

func startLoad(n *proc, path string, clients int) *load {
	l := &load{statuses: map[int]int{}, stop: make(chan struct{})}
	for range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				start := time.Now()
				r, err := n.do("GET", path, "")
				d := time.Since(start)
				l.mu.Lock()
				if err != nil {
					l.statuses[-1]++
				} else {
					l.statuses[r.status]++
					l.latencies = append(l.latencies, d)
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// window returns the p99 of the latencies recorded since the last call.
func (l *load) window() (p99 time.Duration, count int) {
	l.mu.Lock()
	ls := l.latencies
	l.latencies = nil
	l.mu.Unlock()
	if len(ls) == 0 {
		return 0, 0
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i] < ls[j] })
	return ls[(len(ls)*99)/100], len(ls)
}

// end stops the clients (once; later calls just wait) and returns the
// count of each status, -1 for transport errors.
func (l *load) end() map[int]int {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.statuses
}

// TestReflexCloneUnderLoad: sustained load on the slow cell pushes its p99
// over the intent's objective, the p99-clone rule fires a clone (journaled
// with the latency that caused it), and latency recovers.
func TestReflexCloneUnderLoad(t *testing.T) {
	n := startNode(t, "", "--telemetry-interval", "200ms")
	n.writeIntent("slow", "cell slow\nkeep replicas 1..4\nkeep p99 latency under 120ms\n")
	n.drop("slow", testbuild.Cell(t, "slow"))
	n.waitStatus("/slow?ms=1", 200)
	eventually(t, "the slow intent to be applied", func() bool {
		in, ok := n.intent("slow")
		return ok && in.Source != "defaults" && in.Replicas.Max == 4
	})

	// Six clients, 30ms each, on one replica: about 180ms per request.
	l := startLoad(n, "/slow?ms=30", 6)
	defer l.end()
	var clone *journalEntry
	eventually(t, "a clone fired by p99-clone", func() bool {
		clone = find(n.journal("slow"), func(e journalEntry) bool { return e.Verb == "clone" && e.Outcome == "done" })
		return clone != nil
	})
	if clone.Rule != "p99-clone" || len(clone.Values) == 0 || clone.Values[0].Signal != "latency.p99" || clone.Values[len(clone.Values)-1].Value <= 0.12 {
		t.Fatalf("clone entry = %+v, want rule p99-clone fired by latency.p99 > 0.12", clone)
	}
	if clone.Plugin != "verbs" || !strings.Contains(clone.Explanation, "latency.p99") {
		t.Fatalf("clone entry not explained: %+v", clone)
	}
	if r := n.listCells()["slow"].Replicas; r < 2 {
		t.Fatalf("replicas after clone = %d, want >= 2", r)
	}
	// Latency recovers: a window of client-side p99 under the objective.
	l.window()
	eventually(t, "client p99 back under 120ms", func() bool {
		time.Sleep(time.Second)
		p99, count := l.window()
		t.Logf("client p99 %v over %d requests, replicas %d", p99, count, n.listCells()["slow"].Replicas)
		return count > 20 && p99 < 120*time.Millisecond
	})
	if st := l.end(); st[200] == 0 || len(st) != 1 {
		t.Fatalf("statuses under load: %v, want only 200", st)
	}
	out, err := n.celctl("why", "slow")
	if err != nil || !strings.Contains(out, "clone") || !strings.Contains(out, "p99-clone") {
		t.Fatalf("celctl why slow: %v\n%s", err, out)
	}
}

// TestReflexDecayToZeroAndWake: an idle cell with `decay after` goes to zero
// replicas; the next request wakes it and is served, not failed.
func TestReflexDecayToZeroAndWake(t *testing.T) {
	n := startNode(t, "", "--telemetry-interval", "100ms")
	n.writeIntent("hello", "cell hello\nkeep replicas 1..4\nkeep warm 2\ndecay after 1s idle\n")
	n.drop("hello", testbuild.Cell(t, "hello"))
	n.waitStatus("/hello", 200)
	eventually(t, "zero replicas after idling", func() bool { return n.listCells()["hello"].Replicas == 0 })
	e := find(n.journal("hello"), func(e journalEntry) bool { return e.Verb == "decay" && e.Outcome == "done" })
	if e == nil || e.Rule != "idle-decay" || len(e.Values) == 0 || e.Values[len(e.Values)-1].Signal != "idle" || e.Values[len(e.Values)-1].Value < 1 {
		t.Fatalf("decay entry = %+v, want idle-decay fired by idle >= 1", e)
	}
	if r := n.get("/hello?name=wake"); r.status != 200 || r.body != "Hello, wake!\n" {
		t.Fatalf("waking request answered %d %q", r.status, r.body)
	}
	if c := n.listCells()["hello"]; c.Replicas < 1 || c.State != "serving" {
		t.Fatalf("after waking: %+v", c)
	}
}

// TestReflexBrokenUpgradeRolledBack: a replaced module that fails its
// requests is caught by the upgrade verb at its first traffic step and
// rolled back; the journal says why and the old version serves on.
func TestReflexBrokenUpgradeRolledBack(t *testing.T) {
	n := startNode(t, "", "--upgrade-step-time", "500ms")
	n.writeIntent("hello", "cell hello\nkeep error rate under 1%\n")
	n.drop("hello", testbuild.Cell(t, "hello", "-X main.version=v1"))
	n.waitStatus("/hello", 200)
	eventually(t, "the intent to be applied", func() bool {
		in, ok := n.intent("hello")
		return ok && in.Source != "defaults"
	})
	l := startLoad(n, "/hello", 2)
	defer l.end()
	n.drop("hello", testbuild.Cell(t, "hello", "-X main.version=broken", "-X main.broken=true"))
	var up *journalEntry
	eventually(t, "the upgrade to end", func() bool {
		up = find(n.journal("hello"), func(e journalEntry) bool { return e.Verb == "upgrade" })
		return up != nil
	})
	st := l.end()
	if up.Outcome != "rolled-back" || !strings.Contains(up.Message, "error rate") || up.Rule != "module-changed" {
		t.Fatalf("upgrade entry = %+v, want rolled-back on error rate", up)
	}
	if r := n.get("/hello"); r.status != 200 || r.header.Get("X-Cell-Version") != "v1" {
		t.Fatalf("after rollback: %d %q version %q", r.status, r.body, r.header.Get("X-Cell-Version"))
	}
	c := n.listCells()["hello"]
	if !strings.Contains(c.Error, "rolled back") || c.Upgrades != 0 {
		t.Fatalf("cell after rollback: %+v", c)
	}
	// Only the canary share of traffic met the broken build.
	if st[500] == 0 || st[500]*4 > st[200] {
		t.Fatalf("statuses across the broken upgrade: %v", st)
	}
	out, err := n.celctl("why", "hello")
	if err != nil || !strings.Contains(out, "rolled") {
		t.Fatalf("celctl why hello: %v\n%s", err, out)
	}
}

// TestReflexBadIntentKeepsOld: an intent with an error is reported with
// file, line and column, the intent in force stays, and a corrected intent
// is applied without restarting the cell.
func TestReflexBadIntentKeepsOld(t *testing.T) {
	n := startNode(t, "")
	n.writeIntent("hello", "cell hello\nkeep replicas 2..4\nkeep warm 2\n")
	n.drop("hello", testbuild.Cell(t, "hello"))
	n.waitStatus("/hello", 200)
	eventually(t, "two replicas", func() bool { return n.listCells()["hello"].Replicas == 2 })
	sha := n.listCells()["hello"].SHA256

	n.writeIntent("hello", "cell hello\nkeep replicas 2-4\n")
	eventually(t, "the bad intent reported", func() bool {
		return strings.Contains(n.listCells()["hello"].Error, "hello.intent:2:")
	})
	c := n.listCells()["hello"]
	if !strings.Contains(c.Error, "1..8") && !strings.Contains(c.Error, "..") {
		t.Fatalf("error lacks what was expected: %q", c.Error)
	}
	in, _ := n.intent("hello")
	if in.Replicas.Min != 2 || in.Error == "" || c.Replicas != 2 || c.State != "serving" {
		t.Fatalf("after a bad intent: intent %+v, cell %+v", in, c)
	}
	if r := n.get("/hello"); r.status != 200 {
		t.Fatalf("serving after a bad intent: %d", r.status)
	}

	n.writeIntent("hello", "cell hello\nkeep replicas 1..4\nkeep warm 3\n")
	eventually(t, "the corrected intent applied: 3 warm replicas", func() bool {
		c := n.listCells()["hello"]
		return c.Replicas == 3 && c.Error == ""
	})
	if c := n.listCells()["hello"]; c.SHA256 != sha || c.Upgrades != 0 {
		t.Fatalf("the intent change touched the module: %+v", c)
	}
	out, err := n.celctl("intent", "hello")
	if err != nil || !strings.Contains(out, "replicas 1..4, warm 3") || !strings.Contains(out, "compiled rules") {
		t.Fatalf("celctl intent hello: %v\n%s", err, out)
	}
}

// TestReflexManualVerbsAndJournalRestart: verbs given by hand go through
// the dispatch loop, obey the replica bounds, are journaled as manual, and
// the journal survives a restart.
func TestReflexManualVerbsAndJournalRestart(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	n := startNode(t, data)
	n.writeIntent("hello", "cell hello\nkeep replicas 1..3\n")
	n.drop("hello", testbuild.Cell(t, "hello"))
	n.waitStatus("/hello", 200)
	eventually(t, "the intent applied", func() bool { in, ok := n.intent("hello"); return ok && in.Replicas.Max == 3 })

	if out, err := n.celctl("verb", "clone", "hello", "2"); err != nil || !strings.Contains(out, "clone") {
		t.Fatalf("celctl verb clone: %v\n%s", err, out)
	}
	if r := n.listCells()["hello"].Replicas; r != 3 {
		t.Fatalf("replicas after clone 2 = %d, want 3", r)
	}
	out, err := n.celctl("verb", "clone", "hello")
	if err != nil || !strings.Contains(out, "max replicas") {
		t.Fatalf("clone at the maximum: %v\n%s", err, out)
	}
	if out, err := n.celctl("verb", "decay", "hello", "all"); err != nil {
		t.Fatalf("celctl verb decay: %v\n%s", err, out)
	}
	if r := n.listCells()["hello"].Replicas; r != 1 {
		t.Fatalf("replicas after decay all = %d, want the minimum 1", r)
	}
	if out, err := n.celctl("verb", "reroute", "hello", "nonsense"); err == nil {
		t.Fatalf("reroute with a bad argument succeeded:\n%s", out)
	}
	if out, err := n.celctl("verb", "clone", "nosuchcell"); err == nil || !strings.Contains(out, "nosuchcell") {
		t.Fatalf("verb on an unknown cell: %v\n%s", err, out)
	}
	es := n.journal("hello")
	var manual []string
	for _, e := range es {
		if e.Manual {
			if e.Rule != "manual" || e.Time.IsZero() || e.Cell != "hello" {
				t.Fatalf("manual entry = %+v", e)
			}
			manual = append(manual, e.Verb+":"+e.Outcome)
		}
	}
	if want := []string{"clone:done", "clone:noop", "decay:done", "reroute:failed"}; !slices.Equal(manual, want) {
		t.Fatalf("manual entries = %v, want %v", manual, want)
	}
	last := es[len(es)-1].Seq
	n.stop()

	n2 := startNode(t, data)
	n2.drop("hello", testbuild.Cell(t, "hello"))
	n2.waitStatus("/hello", 200)
	if _, err := n2.celctl("verb", "clone", "hello"); err != nil {
		t.Fatal(err)
	}
	es2 := n2.journal("hello")
	if len(es2) <= len(es) || es2[len(es)-1].Seq != last || es2[len(es2)-1].Seq <= last {
		t.Fatalf("journal after restart: %d entries (had %d, last seq %d); newest seq %d", len(es2), len(es), last, es2[len(es2)-1].Seq)
	}
}

// TestEmbeddedIntent: `celctl embed-intent` writes an intent into the
// module's cel.intent section, and the node applies it when no .intent file
// is beside the module.
func TestEmbeddedIntent(t *testing.T) {
	n := startNode(t, "")
	mod := filepath.Join(t.TempDir(), "hello.wasm")
	if err := os.WriteFile(mod, testbuild.Cell(t, "hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	intent := filepath.Join(t.TempDir(), "hello.intent")
	if err := os.WriteFile(intent, []byte("cell hello\nkeep replicas 2..5\nkeep warm 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := testbuild.Binary(t, "./cmd/celctl", false)
	if out, err := exec.Command(bin, "embed-intent", mod, intent).CombinedOutput(); err != nil {
		t.Fatalf("embed-intent: %v\n%s", err, out)
	}
	b, err := os.ReadFile(mod)
	if err != nil {
		t.Fatal(err)
	}
	n.drop("hello", b)
	n.waitStatus("/hello", 200)
	var in intentJSON
	eventually(t, "the embedded intent applied", func() bool {
		var ok bool
		in, ok = n.intent("hello")
		return ok && in.Origin == "module"
	})
	if in.Replicas.Min != 2 || in.Replicas.Max != 5 || !strings.HasSuffix(in.Source, "hello.wasm#cel.intent") {
		t.Fatalf("embedded intent = %+v", in)
	}
	eventually(t, "two replicas", func() bool { return n.listCells()["hello"].Replicas == 2 })
}
