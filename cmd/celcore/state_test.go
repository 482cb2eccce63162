package main

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/celluster/celluster/core/mesh"
	"github.com/celluster/celluster/core/testbuild"
)

// keepStateIntent keeps the counter's state and lets it decay to zero
// after a second idle.
const keepStateIntent = "cell counter\nkeep replicas 1..4\nkeep state\ndecay after 1s idle\n"

// count sends GET /counter and returns the count it answered.
func (n *proc) count() string {
	n.t.Helper()
	r := n.get("/counter")
	if r.status != 200 {
		n.t.Fatalf("GET /counter: %d %q", r.status, r.body)
	}
	return strings.TrimSpace(r.body)
}

// TestKeepStateEndToEnd: the counter cell with `keep state` goes on
// counting through a decay to zero and a wake, a SIGTERM and restart of
// the node, and a clone, whose new replica continues from the state at
// clone time. Without `keep state` a restart starts it at 1.
func TestKeepStateEndToEnd(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	counter := testbuild.Cell(t, "counter")
	n := startNode(t, data, "--telemetry-interval", "100ms")
	n.writeIntent("counter", keepStateIntent)
	n.drop("counter", counter)
	n.waitStatus("/counter", 200) // 1
	for _, want := range []string{"2", "3"} {
		if got := n.count(); got != want {
			t.Fatalf("count %s, want %s", got, want)
		}
	}
	c := n.listCells()["counter"]
	if c.Snapshot.InitBytes == 0 || !c.Snapshot.Kept {
		t.Fatalf("snapshot info after three requests: %+v", c.Snapshot)
	}

	// Decay to zero and wake.
	eventually(t, "zero replicas after idling", func() bool { return n.listCells()["counter"].Replicas == 0 })
	if c := n.listCells()["counter"]; c.Snapshot.StateHow != "decay" || c.Snapshot.StateID == "" || c.Snapshot.StateBytes == 0 {
		t.Fatalf("kept state after the decay: %+v", c.Snapshot)
	}
	if got := n.count(); got != "4" {
		t.Fatalf("after decay and wake: %s, want 4", got)
	}
	out, err := n.celctl("cells")
	if err != nil || !strings.Contains(out, "KEPT STATE") || !strings.Contains(out, "(decay)") {
		t.Fatalf("celctl cells: %v\n%s", err, out)
	}

	// SIGTERM and restart on the same data directory.
	n.stop()
	if !strings.Contains(n.Logs(), "saved the cell's state") {
		t.Fatalf("no state saved at drain:\n%s", n.Logs())
	}
	n2 := startNode(t, data, "--telemetry-interval", "100ms")
	n2.writeIntent("counter", keepStateIntent)
	n2.drop("counter", counter)
	if r := n2.waitStatus("/counter", 200); strings.TrimSpace(r.body) != "5" {
		t.Fatalf("after restart: %q, want 5", r.body)
	}
	if !strings.Contains(n2.Logs(), "restored the cell's saved state") {
		t.Fatalf("no restore logged:\n%s", n2.Logs())
	}
	if e := find(n2.journal("counter"), func(e journalEntry) bool { return e.Verb == "state" && len(e.Args) > 0 && e.Args[0] == "restored" }); e == nil ||
		!strings.Contains(e.Message, "restored state ") || !strings.Contains(e.Message, " ago") {
		t.Fatalf("journal entry of the restore: %+v", e)
	}

	// Clone: the new replica forks the state (5), so both replicas answer
	// past it.
	if out, err := n2.celctl("verb", "clone", "counter"); err != nil {
		t.Fatalf("clone: %v\n%s", err, out)
	}
	if c := n2.listCells()["counter"]; c.Replicas < 2 || c.Snapshot.StateHow != "fork" {
		t.Fatalf("after the clone: replicas %d, state %+v", c.Replicas, c.Snapshot)
	}
	for i := 0; i < 4; i++ {
		if got, _ := strconv.Atoi(n2.count()); got <= 5 {
			t.Fatalf("request %d after the clone answered %d: a replica started from nothing", i, got)
		}
	}
	n2.stop()

	// A corrupt saved state is refused: the cell starts fresh, and the
	// journal and celctl cells say why.
	path := filepath.Join(data, "state", "counter.state")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	n3 := startNode(t, data)
	n3.writeIntent("counter", keepStateIntent)
	n3.drop("counter", counter)
	if r := n3.waitStatus("/counter", 200); strings.TrimSpace(r.body) != "1" {
		t.Fatalf("after a corrupt saved state: %q, want 1", r.body)
	}
	e := find(n3.journal("counter"), func(e journalEntry) bool { return e.Verb == "state" && e.Outcome == "refused" })
	if e == nil || !strings.Contains(e.Message, "counter.state") || !strings.Contains(e.Message, "corrupt") {
		t.Fatalf("journal entry of the refusal: %+v", e)
	}
	if c := n3.listCells()["counter"]; !strings.Contains(c.Snapshot.Note, "refused") {
		t.Fatalf("celctl cells note: %+v", c.Snapshot)
	}
	n3.stop()

	// Without keep state: a restart starts from 1.
	n4 := startNode(t, data)
	n4.writeIntent("counter", "cell counter\nkeep replicas 1..4\n")
	n4.drop("counter", counter)
	if r := n4.waitStatus("/counter", 200); strings.TrimSpace(r.body) != "1" {
		t.Fatalf("without keep state, after restart: %q, want 1", r.body)
	}
}

// TestMeshStateFollowsTheCell: a cell with kept state cloned onto a peer
// continues there from the state at clone time; one replicated every 1s
// continues, after kill -9 of its node, on the survivor next in line from
// the last copy pushed, and that survivor's journal says how old it was.
func TestMeshStateFollowsTheCell(t *testing.T) {
	survivors := []string{"s2", "s3"}
	rank := mesh.Rendezvous("tally", survivors)
	c := newCluster(t)
	home := c.start("s1")
	c.start("s2")
	c.start("s3")
	c.converged("s1", "s2", "s3")
	counter := testbuild.Cell(t, "counter")

	// Clone with state.
	home.writeIntent("counter", "cell counter\nkeep replicas 1..2\nkeep state\n")
	home.drop("counter", counter)
	home.waitStatus("/counter", 200)
	for i := 0; i < 2; i++ {
		home.count() // 2, 3
	}
	peer := c.nodes[rank[1]]
	if out, err := home.celctl("verb", "clone", "counter", "1", "on", rank[1]); err != nil {
		t.Fatalf("clone on %s: %v\n%s", rank[1], err, out)
	}
	r := peer.get("/counter")
	if r.status != 200 || r.header.Get("X-Celluster-Served-By") != "" || strings.TrimSpace(r.body) != "4" {
		t.Fatalf("the clone on %s answered %d %q (served by %q), want its own replica continuing at 4", rank[1], r.status, r.body, r.header.Get("X-Celluster-Served-By"))
	}

	// Replicated state, and a kill -9.
	home.writeIntent("tally", "cell tally\nkeep replicas 1..2\nkeep state replicated every 1s\n")
	home.drop("tally", counter)
	home.waitStatus("/tally", 200)
	for i := 0; i < 4; i++ {
		home.get("/tally") // 2..5
	}
	fifth := time.Now()
	copyPath := filepath.Join(c.data[rank[0]], "state", "tally.state")
	eventually(t, "a copy of tally's state pushed to "+rank[0]+" after its fifth request", func() bool {
		fi, err := os.Stat(copyPath)
		return err == nil && fi.ModTime().After(fifth.Add(100*time.Millisecond))
	})
	if e := find(home.journal("tally"), func(e journalEntry) bool { return e.Verb == "state" && len(e.Args) == 2 && e.Args[0] == "replicate" }); e == nil || e.Args[1] != rank[0] {
		t.Fatalf("journal entry of the replication: %+v, want to %s", e, rank[0])
	}
	home.kill()
	winner := c.nodes[rank[0]]
	eventually(t, "tally taken over by "+rank[0], func() bool { return slices.Contains(c.serving("tally", survivors...), rank[0]) })
	if r := winner.get("/tally"); r.status != 200 || strings.TrimSpace(r.body) != "6" {
		t.Fatalf("tally after the take-over: %d %q, want 6", r.status, r.body)
	}
	e := find(winner.journal("tally"), func(e journalEntry) bool { return e.Verb == "state" && len(e.Args) > 0 && e.Args[0] == "restored" })
	if e == nil || !strings.Contains(e.Message, "taken ") || !strings.Contains(e.Message, " ago") {
		t.Fatalf("journal of the take-over's restore: %+v", e)
	}
}
