package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/celluster/celluster/core/mesh"
	"github.com/celluster/celluster/core/testbuild"
)

// cluster starts real nodes sharing a test CA; names[0] is the seed.
// extra gives per-node arguments.
type cluster struct {
	t     *testing.T
	ca    string
	seed  string
	nodes map[string]*proc
	data  map[string]string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	if out, err := runCelctl(t, "ca", "init", "--trust-domain", "test.local", "--out", ca); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	return &cluster{t: t, ca: ca, nodes: map[string]*proc{}, data: map[string]string{}}
}

// start runs a node named name (again, on its data directory, if it ran
// before) and joins it to the seed.
func (c *cluster) start(name string, extra ...string) *proc {
	c.t.Helper()
	args := []string{"--node", name, "--fabric", "127.0.0.1:0", "--ca", c.ca, "--trust-domain", "test.local", "--telemetry-interval", "200ms"}
	if c.seed != "" {
		args = append(args, "--join", c.seed)
	}
	data := c.data[name]
	if data == "" {
		data = filepath.Join(c.t.TempDir(), "data")
		c.data[name] = data
	}
	n := startNode(c.t, data, append(args, extra...)...)
	if c.seed == "" {
		c.seed, _ = n.fabricAddr()
	}
	c.nodes[name] = n
	return n
}

// converged waits until every running node sees want alive members.
func (c *cluster) converged(want ...string) {
	c.t.Helper()
	eventually(c.t, fmt.Sprintf("%v to see each other alive", want), func() bool {
		for _, name := range want {
			ns := c.nodes[name].nodes()
			for _, other := range want {
				if ns[other].State != "alive" {
					return false
				}
			}
		}
		return true
	})
}

// serving lists the nodes (of names) whose own copy of cellName serves.
func (c *cluster) serving(cellName string, names ...string) []string {
	var on []string
	for _, name := range names {
		if c.nodes[name].listCells()[cellName].State == "serving" {
			on = append(on, name)
		}
	}
	return on
}

func (n *proc) kill() {
	n.t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		n.t.Fatal(err)
	}
	<-n.exited
}

// TestMeshCatalogPulledOnChange: an idle fleet pulls no catalogs (each
// node gossips its catalog's version and peers pull only a change); a new
// cell on one node is pulled once by each other node.
func TestMeshCatalogPulledOnChange(t *testing.T) {
	c := newCluster(t)
	names := []string{"m1", "m2", "m3", "m4"}
	for _, name := range names {
		c.start(name)
	}
	c.converged(names...)
	c.nodes["m1"].drop("hello", testbuild.Cell(t, "hello"))
	eventually(t, "every node to know hello on m1", func() bool {
		for _, name := range names[1:] {
			if !slices.Contains(c.nodes[name].nodes()["m1"].Cells, "hello") {
				return false
			}
		}
		return true
	})
	count := func(msg string) int {
		total := 0
		for _, name := range names {
			total += strings.Count(c.nodes[name].Logs(), `"msg":"`+msg+`"`)
		}
		return total
	}
	pulls := func() int { return count("pulled a peer's catalog") }
	// A member that comes back (after a false death on a loaded host) is
	// pulled again, once per node that saw it come back.
	joins := func() int { return count("node joined") }
	eventually(t, "each other node to pull m1's new catalog", func() bool {
		for _, name := range names[1:] {
			if !strings.Contains(c.nodes[name].Logs(), `"msg":"pulled a peer's catalog","node":"m1"`) {
				return false
			}
		}
		return true
	})
	// The catalog may change once more as the cell's intent is applied;
	// then pulls stop (before, every node pulled every peer's catalog each
	// second: 12 pulls a second here, never settling).
	last, lastAt := pulls(), time.Now()
	eventually(t, "catalog pulls to stop (none for 2s)", func() bool {
		if p := pulls(); p != last {
			last, lastAt = p, time.Now()
		}
		return time.Since(lastAt) > 2*time.Second
	})
	// Idle now: over a window of several sync periods (1s each) no node
	// pulls a catalog.
	before, joined := pulls(), joins()
	time.Sleep(3 * time.Second)
	if got, rejoined := pulls()-before, joins()-joined; got > rejoined {
		t.Fatalf("an idle fleet of 4 pulled %d catalogs in 3s (%d members came back), want none but for those", got, rejoined)
	}
	// A change is pulled.
	c.nodes["m2"].drop("counter", testbuild.Cell(t, "counter"))
	eventually(t, "the others to pull m2's changed catalog", func() bool {
		for _, name := range []string{"m1", "m3", "m4"} {
			if !strings.Contains(c.nodes[name].Logs(), `"msg":"pulled a peer's catalog","node":"m2"`) {
				return false
			}
		}
		return true
	})
}

// TestMeshTakeoverFetchesFromAnyNode: the survivor that wins a dead node's
// cell lacks its module (no prefetch) and fetches it from the one survivor
// that keeps it: the cell is restored, once.
func TestMeshTakeoverFetchesFromAnyNode(t *testing.T) {
	survivors := []string{"t1", "t2", "t3"}
	rank := mesh.Rendezvous("counter", survivors)
	c := newCluster(t)
	c.start("th")
	c.start(rank[0], "--no-prefetch")
	c.start(rank[1], "--no-prefetch")
	c.start(rank[2])
	all := append([]string{"th"}, survivors...)
	c.converged(all...)
	h := c.nodes["th"]
	h.drop("counter", testbuild.Cell(t, "counter"))
	h.waitStatus("/counter", 200)
	sha := h.listCells()["counter"].SHA256
	keeper := c.nodes[rank[2]]
	eventually(t, "the third in line to keep counter's module", func() bool {
		_, err := os.Stat(filepath.Join(keeper.data, "modules", sha+".wasm"))
		return err == nil
	})
	for _, name := range rank[:2] {
		if _, err := os.Stat(filepath.Join(c.nodes[name].data, "modules", sha+".wasm")); err == nil {
			t.Fatalf("%s keeps the module although started with --no-prefetch", name)
		}
	}
	h.kill()
	eventually(t, "counter restored on the winner "+rank[0], func() bool {
		return slices.Contains(c.serving("counter", survivors...), rank[0])
	})
	// Exactly one copy, and the others know it.
	eventually(t, "every survivor to know the winner serves counter", func() bool {
		for _, name := range survivors {
			if !slices.Contains(c.nodes[name].nodes()[rank[0]].Cells, "counter") {
				return false
			}
		}
		return true
	})
	if on := c.serving("counter", survivors...); len(on) != 1 {
		t.Fatalf("counter serves on %v, want only %s", on, rank[0])
	}
	if r := c.nodes[rank[1]].get("/counter"); r.status != 200 || r.header.Get("X-Celluster-Served-By") != rank[0] {
		t.Fatalf("counter through %s: %d %q from %q", rank[1], r.status, r.body, r.header.Get("X-Celluster-Served-By"))
	}
}

// TestMeshNoRequestLost: a forwarding node spreads requests over two
// remote replicas; kill -9 of one loses no GET (the requests in flight
// go to the other replica); kill -9 of the last leaves the forwarding
// node to take the cell over, and meanwhile requests wait or get 503
// with Retry-After — never 404 or 502.
func TestMeshNoRequestLost(t *testing.T) {
	c := newCluster(t)
	a, b := c.start("ra"), c.start("rb")
	cc := c.start("rc")
	c.converged("ra", "rb", "rc")
	b.drop("hello", testbuild.Cell(t, "hello"))
	b.waitStatus("/hello", 200)
	if out, err := b.celctl("verb", "clone", "hello", "1", "on", "rc"); err != nil {
		t.Fatalf("clone on rc: %v\n%s", err, out)
	}
	eventually(t, "ra to know both replicas", func() bool {
		ns := a.nodes()
		return slices.Contains(ns["rb"].Cells, "hello") && slices.Contains(ns["rc"].Cells, "hello")
	})
	by := map[string]int{}
	for range 40 {
		r := a.get("/hello")
		if r.status != 200 {
			t.Fatalf("GET /hello through ra: %d %q", r.status, r.body)
		}
		by[r.header.Get("X-Celluster-Served-By")]++
	}
	if by["rb"] == 0 || by["rc"] == 0 {
		t.Fatalf("40 requests through ra with equal loads served by %v, want both replicas", by)
	}

	// Load through ra while replicas die.
	var stop atomic.Bool
	var mu sync.Mutex
	bad := map[string]int{}
	var ok, unavailable atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				r, err := a.do("GET", "/hello", "")
				switch {
				case err == nil && r.status == 200:
					ok.Add(1)
				case err == nil && r.status == 503 && r.header.Get("Retry-After") != "":
					unavailable.Add(1)
				default:
					mu.Lock()
					bad[fmt.Sprintf("%d %v %.60q", r.status, err, r.body)]++
					mu.Unlock()
				}
			}
		}()
	}
	waitOK := func(n int64) {
		t.Helper()
		from := ok.Load()
		eventually(t, fmt.Sprintf("%d more requests to succeed", n), func() bool { return ok.Load() >= from+n })
	}
	waitOK(20)
	b.kill()
	eventually(t, "ra to see rb dead", func() bool { return a.nodes()["rb"].State == "dead" })
	waitOK(20)
	mu.Lock()
	if len(bad) > 0 || unavailable.Load() > 0 {
		t.Errorf("with a replica left, kill -9 of the other: failed requests %v, 503s %d", bad, unavailable.Load())
	}
	mu.Unlock()
	cc.kill()
	eventually(t, "ra to take hello over", func() bool { return a.listCells()["hello"].State == "serving" })
	waitOK(20)
	stop.Store(true)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("requests lost in the transitions: %v (ok %d, 503 with Retry-After %d)", bad, ok.Load(), unavailable.Load())
	}
	t.Logf("through the transitions: %d ok, %d 503 with Retry-After", ok.Load(), unavailable.Load())
}

// TestMeshSpreadKept: `spread across 2 nodes` keeps the cell on two nodes: the fleet places a copy, the copy comes
// back when its node restarts, and when that node dies another copy is
// placed on the node left.
func TestMeshSpreadKept(t *testing.T) {
	c := newCluster(t)
	names := []string{"sa", "sb", "sc"}
	for _, name := range names {
		c.start(name)
	}
	c.converged(names...)
	a := c.nodes["sa"]
	a.writeIntent("hello", "cell hello\nkeep replicas 1..4\nspread across 2 nodes\n")
	a.drop("hello", testbuild.Cell(t, "hello"))
	var peer string
	eventually(t, "a copy of hello on a second node", func() bool {
		on := c.serving("hello", "sb", "sc")
		if len(on) > 0 {
			peer = on[0]
		}
		return len(on) == 1
	})
	other := "sb"
	if peer == "sb" {
		other = "sc"
	}
	// Restart the peer: it serves its copy again.
	c.nodes[peer].stop()
	eventually(t, "sa to see "+peer+" gone", func() bool { return a.nodes()[peer].State == "dead" })
	eventually(t, "a copy placed on "+other+" while "+peer+" is away", func() bool {
		return len(c.serving("hello", other)) == 1
	})
	p := c.start(peer)
	eventually(t, peer+" to serve hello again after its restart, from what it served", func() bool {
		return p.listCells()["hello"].State == "serving" && strings.Contains(p.Logs(), "this node served it before it restarted")
	})
	// The node that restarted serves its copy again, and the other kept the
	// one placed while it was away: three nodes for two asked. One of the
	// spread copies is drained (the last of the two by rendezvous) and
	// journals why.
	c.converged(names...)
	eventuallyState(t, "hello back on exactly 2 nodes", func() (bool, string) {
		on := c.serving("hello", names...)
		return len(on) == 2 && slices.Contains(on, "sa"), fmt.Sprint("hello serves on ", on)
	})
	trimmed := mesh.Rendezvous("hello", []string{peer, other})[1]
	if e := find(c.nodes[trimmed].journal("hello"), func(e journalEntry) bool { return e.Verb == "decay" }); e == nil || !strings.Contains(e.Origin, "one too many") {
		t.Fatalf("%s journals no decay of its extra spread copy: %+v", trimmed, e)
	}
	kept := map[string]string{peer: other, other: peer}[trimmed]
	if on := c.serving("hello", names...); !slices.Contains(on, kept) {
		t.Fatalf("hello serves on %v, want sa and %s", on, kept)
	}
	peer, other = kept, trimmed
	p = c.nodes[peer]
	// kill -9 of the peer: the copy is kept on the node left.
	p.kill()
	eventually(t, "hello on sa and "+other+" after "+peer+" died", func() bool {
		return len(c.serving("hello", "sa", other)) == 2
	})
}

// TestMeshWinnerDies: the node that holds a cell and the survivor first in
// line to take it over die together (kill -9); the survivors left
// re-evaluate without it and exactly one of them restores the cell.
func TestMeshWinnerDies(t *testing.T) {
	survivors := []string{"w1", "w2", "w3"}
	rank := mesh.Rendezvous("counter", survivors)
	c := newCluster(t)
	c.start("wh")
	for _, name := range survivors {
		c.start(name)
	}
	c.converged(append([]string{"wh"}, survivors...)...)
	h := c.nodes["wh"]
	h.drop("counter", testbuild.Cell(t, "counter"))
	h.waitStatus("/counter", 200)
	sha := h.listCells()["counter"].SHA256
	eventually(t, "the survivors to keep counter's module", func() bool {
		for _, name := range survivors {
			if _, err := os.Stat(filepath.Join(c.nodes[name].data, "modules", sha+".wasm")); err != nil {
				return false
			}
		}
		return true
	})
	h.kill()
	c.nodes[rank[0]].kill()
	left := rank[1:]
	eventually(t, "counter restored on one of "+strings.Join(left, ", "), func() bool {
		return len(c.serving("counter", left...)) > 0
	})
	eventuallyState(t, "both survivors to see one copy", func() (bool, string) {
		on := c.serving("counter", left...)
		state := fmt.Sprintf("serving on %v", on)
		ok := len(on) == 1
		for _, name := range left {
			ns := c.nodes[name].nodes()
			state += fmt.Sprintf("; %s sees %s %s", name, rank[0], ns[rank[0]].State)
			for _, o := range on {
				state += fmt.Sprintf(", %s with cells %v", o, ns[o].Cells)
			}
			ok = ok && ns[rank[0]].State == "dead" && slices.Contains(ns[on[0]].Cells, "counter")
		}
		return ok, state
	})
	if on := c.serving("counter", left...); len(on) != 1 {
		t.Fatalf("counter serves on %v, want exactly one of %v", on, left)
	}
	if r := c.nodes[left[0]].get("/counter"); r.status != 200 {
		t.Fatalf("counter after the double death: %d %q", r.status, r.body)
	}
}

// TestMeshWithdrawnWithItsHome: a cell spread across three nodes from its
// home. Its module removed on the home, the copies placed on the other two
// go too, journaled as withdrawn by the home; dropped on the home again,
// it is spread again (the home asking ends the withdrawal).
func TestMeshWithdrawnWithItsHome(t *testing.T) {
	c := newCluster(t)
	names := []string{"ha", "hb", "hc"}
	for _, name := range names {
		c.start(name)
	}
	c.converged(names...)
	a := c.nodes["ha"]
	a.writeIntent("hello", "cell hello\nkeep replicas 1..4\nspread across 3 nodes\n")
	spreadOn := func(want int) {
		t.Helper()
		eventuallyState(t, fmt.Sprintf("hello on %d nodes", want), func() (bool, string) {
			on := c.serving("hello", names...)
			return len(on) == want, fmt.Sprint("hello serves on ", on)
		})
	}
	a.drop("hello", testbuild.Cell(t, "hello"))
	spreadOn(3)
	a.remove("hello")
	spreadOn(0)
	// Withdrawn, hello is gone for good: 404 at once, not a transition's
	// wait and 503, even after hb has pulled ha's catalog without it.
	b := c.nodes["hb"]
	eventually(t, "hb to see ha without hello", func() bool { return !slices.Contains(b.nodes()["ha"].Cells, "hello") })
	if r := b.get("/hello"); r.status != 404 {
		t.Fatalf("GET /hello on hb after its home withdrew it: %d %q, want 404", r.status, r.body)
	}
	for _, name := range []string{"hb", "hc"} {
		e := find(c.nodes[name].journal("hello"), func(e journalEntry) bool { return e.Verb == "decay" })
		if e == nil || e.Origin != "node ha, the cell's home, withdrew it" {
			t.Fatalf("%s journals no decay of its copy withdrawn by ha: %+v", name, e)
		}
	}
	a.drop("hello", testbuild.Cell(t, "hello"))
	spreadOn(3)

	// A holder that misses the withdrawal — paused, and declared dead by
	// ha before ha withdraws the cell, so ha does not even try it — drops
	// its copy when it comes back and pulls ha's catalog, which lists the
	// withdrawal; no survivor takes its copy over meanwhile.
	hc := c.nodes["hc"]
	hc.signal(syscall.SIGSTOP)
	eventually(t, "ha to see the paused hc dead", func() bool { return a.nodes()["hc"].State == "dead" })
	a.remove("hello")
	eventually(t, "hello gone from hb", func() bool { return len(c.serving("hello", "ha", "hb")) == 0 })
	hc.signal(syscall.SIGCONT)
	spreadOn(0)
	e := find(hc.journal("hello"), func(e journalEntry) bool {
		return e.Verb == "decay" && strings.Contains(e.Origin, "this node missed the withdrawal")
	})
	if e == nil {
		t.Fatalf("hc journals no decay of the copy it missed the withdrawal of: %+v", hc.journal("hello"))
	}
	for _, name := range []string{"ha", "hb"} {
		if slices.ContainsFunc(strings.Split(c.nodes[name].Logs(), "\n"), func(l string) bool {
			return strings.Contains(l, "taking over a dead node's cell") && strings.Contains(l, `"cell":"hello"`)
		}) {
			t.Fatalf("%s took over hc's copy of the withdrawn hello", name)
		}
	}
}

// signal sends sig to the node's process.
func (n *proc) signal(sig syscall.Signal) {
	n.t.Helper()
	if err := n.cmd.Process.Signal(sig); err != nil {
		n.t.Fatal(err)
	}
}
