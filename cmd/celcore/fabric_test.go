package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/celluster/celluster/core/mesh"
	"github.com/celluster/celluster/core/testbuild"
)

type nodeJSON struct {
	Name    string   `json:"name"`
	Address string   `json:"address"`
	State   string   `json:"state"`
	Cells   []string `json:"cells"`
	Load    int64    `json:"load"`
	Self    bool     `json:"self"`
}

func (n *proc) nodes() map[string]nodeJSON {
	n.t.Helper()
	out, err := n.celctl("nodes", "-o", "json")
	if err != nil {
		n.t.Fatalf("celctl nodes: %v\n%s", err, out)
	}
	var list []nodeJSON
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		n.t.Fatalf("celctl nodes -o json: %v\n%s", err, out)
	}
	m := map[string]nodeJSON{}
	for _, nd := range list {
		m[nd.Name] = nd
	}
	return m
}

func (n *proc) fabricAddr() (addr, name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fabric, n.name
}

// TestFabricThreeNodes: three real nodes sharing a trust domain's CA join
// over the QUIC fabric and converge; a request sent to node A for a cell
// only node B has is served by B; a node killed with SIGKILL is detected
// as dead; a node with a certificate from another CA is refused at the
// handshake, with the reason in the log.
func TestFabricThreeNodes(t *testing.T) {
	dir := t.TempDir()
	ca, otherCA := filepath.Join(dir, "ca"), filepath.Join(dir, "other-ca")
	for _, d := range []string{ca, otherCA} {
		if out, err := runCelctl(t, "ca", "init", "--trust-domain", "test.local", "--out", d); err != nil {
			t.Fatalf("ca init: %v\n%s", err, out)
		}
	}
	fab := func(caDir string, join string) []string {
		args := []string{"--fabric", "127.0.0.1:0", "--ca", caDir, "--trust-domain", "test.local", "--telemetry-interval", "200ms"}
		if join != "" {
			args = append(args, "--join", join)
		}
		return args
	}
	a := startNode(t, "", fab(ca, "")...)
	seed, nameA := a.fabricAddr()
	if seed == "" {
		t.Fatal("node A logged no fabric address")
	}
	b := startNode(t, "", fab(ca, seed)...)
	c := startNode(t, "", fab(ca, seed)...)
	_, nameB := b.fabricAddr()
	_, nameC := c.fabricAddr()
	eventually(t, "three alive nodes, seen from A and from C", func() bool {
		for _, n := range []*proc{a, c} {
			ns := n.nodes()
			if len(ns) != 3 || ns[nameA].State != "alive" || ns[nameB].State != "alive" || ns[nameC].State != "alive" {
				return false
			}
		}
		return true
	})

	// A cell only on B, asked of A.
	b.drop("hello", testbuild.Cell(t, "hello"))
	b.waitStatus("/hello", 200)
	eventually(t, "A to learn that B serves hello", func() bool {
		cells := a.nodes()[nameB].Cells
		return len(cells) == 1 && cells[0] == "hello"
	})
	r := a.get("/hello?name=mesh")
	if r.status != 200 || r.body != "Hello, mesh!\n" || r.header.Get("X-Celluster-Served-By") != nameB {
		t.Fatalf("GET /hello on A: %d %q served by %q, want 200 from %s", r.status, r.body, r.header.Get("X-Celluster-Served-By"), nameB)
	}
	if r := a.get("/nosuchcell"); r.status != 404 {
		t.Fatalf("a cell no node has: %d", r.status)
	}

	// A cell on A calls a cell on B over the fabric, as itself.
	b.writeIntent("hello", "cell hello\nallow from cell:front\n")
	a.writeIntent("front", "cell front\ngrant call cell:hello\n")
	a.drop("front", testbuild.Cell(t, "front"))
	eventually(t, "front on A to call hello on B", func() bool {
		r, err := a.do("GET", "/front?name=far", "")
		return err == nil && r.status == 200 && r.body == "front got: Hello, far!\n"
	})
	b.writeIntent("hello", "cell hello\nallow from cell:someone-else\n")
	eventually(t, "B to refuse front's call", func() bool {
		r, err := a.do("GET", "/front", "")
		return err == nil && r.status == 403 && strings.Contains(r.body, "does not allow calls from cell:front")
	})

	// SIGKILL: no goodbye; the others detect the failure.
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, "A and B to see C dead", func() bool {
		return a.nodes()[nameC].State == "dead" && b.nodes()[nameC].State == "dead"
	})

	// A node whose certificate comes from another CA is refused.
	d := startNode(t, "", fab(otherCA, seed)...)
	_, nameD := d.fabricAddr()
	// The handshake fails on whichever side verifies first (here D, checking
	// A's certificate), and that side logs why.
	eventually(t, "the handshake between A and D to be refused, saying why", func() bool {
		return strings.Contains(d.Logs(), "peer certificate from another CA") || strings.Contains(a.Logs(), "peer certificate from another CA")
	})
	if _, ok := a.nodes()[nameD]; ok {
		t.Fatalf("A lists the refused node %s", nameD)
	}
	if ns := d.nodes(); len(ns) != 1 {
		t.Fatalf("the refused node sees members %v", ns)
	}

	// So is a node of another trust domain.
	otherTD := filepath.Join(dir, "other-td")
	if out, err := runCelctl(t, "ca", "init", "--trust-domain", "other.local", "--out", otherTD); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	e := startNode(t, "", "--fabric", "127.0.0.1:0", "--ca", otherTD, "--trust-domain", "other.local", "--join", seed)
	_, nameE := e.fabricAddr()
	eventually(t, "the node of another trust domain to be refused, saying why", func() bool {
		return strings.Contains(e.Logs(), "refused") && (strings.Contains(e.Logs(), "trust domain") || strings.Contains(a.Logs(), "trust domain other.local"))
	})
	if _, ok := a.nodes()[nameE]; ok {
		t.Fatalf("A lists %s, of another trust domain", nameE)
	}
}

// runCelctl runs the real celctl without a node (e.g. ca commands).
func runCelctl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(testbuild.Binary(t, "./cmd/celctl", false), args...).CombinedOutput()
	return string(out), err
}

// TestFabricCloneAndHeal: `clone on NODE` places a cell on a peer, which
// fetches the module by hash; when a node is killed, the cell only it
// served is restored on exactly one survivor, chosen by rendezvous hashing.
func TestFabricCloneAndHeal(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	if out, err := runCelctl(t, "ca", "init", "--trust-domain", "test.local", "--out", ca); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	args := []string{"--fabric", "127.0.0.1:0", "--ca", ca, "--trust-domain", "test.local", "--telemetry-interval", "200ms"}
	a := startNode(t, "", args...)
	seed, nameA := a.fabricAddr()
	b := startNode(t, "", append(args, "--join", seed)...)
	c := startNode(t, "", append(args, "--join", seed)...)
	_, nameB := b.fabricAddr()
	_, nameC := c.fabricAddr()
	eventually(t, "three alive nodes", func() bool {
		ns := a.nodes()
		return len(ns) == 3 && ns[nameB].State == "alive" && ns[nameC].State == "alive"
	})

	// Clone onto a named peer.
	a.writeIntent("hello", "cell hello\nkeep replicas 1..4\n")
	a.drop("hello", testbuild.Cell(t, "hello"))
	a.waitStatus("/hello", 200)
	out, err := a.celctl("verb", "clone", "hello", "1", "on", nameB)
	if err != nil || !strings.Contains(out, "node "+nameB+" serves hello") {
		t.Fatalf("clone on %s: %v\n%s", nameB, err, out)
	}
	if hb := b.listCells()["hello"]; hb.State != "serving" || hb.SHA256 != a.listCells()["hello"].SHA256 {
		t.Fatalf("hello on B after the clone: %+v", hb)
	}
	if r := b.get("/hello?name=b"); r.status != 200 || r.header.Get("X-Celluster-Served-By") != "" {
		t.Fatalf("B serving its own replica: %d %q %q", r.status, r.body, r.header.Get("X-Celluster-Served-By"))
	}
	if in, ok := b.intent("hello"); !ok || in.Replicas.Max != 4 {
		t.Fatalf("the intent did not travel with the clone: %+v", in)
	}

	// `on peer`: the verbs plugin picks, from the gossiped nodes, the one
	// not serving hello yet: C (once gossip says B serves it).
	eventually(t, "A to learn that B serves hello", func() bool { return slices.Contains(a.nodes()[nameB].Cells, "hello") })
	if out, err := a.celctl("verb", "clone", "hello", "1", "on", "peer"); err != nil || !strings.Contains(out, "node "+nameC+" serves hello") {
		t.Fatalf("clone on peer: %v\n%s", err, out)
	}
	if hc := c.listCells()["hello"]; hc.State != "serving" {
		t.Fatalf("hello on C after clone on peer: %+v", hc)
	}

	// reroute shifts A's traffic for hello between the nodes.
	servedBy := func(n *proc, count int) map[string]int {
		got := map[string]int{}
		for range count {
			r := n.get("/hello")
			if r.status != 200 {
				t.Fatalf("GET /hello: %d %q", r.status, r.body)
			}
			got[r.header.Get("X-Celluster-Served-By")]++
		}
		return got
	}
	if out, err := a.celctl("verb", "reroute", "hello", nameA+"=0", nameB+"=100"); err != nil {
		t.Fatalf("reroute to B: %v\n%s", err, out)
	}
	if out, err := a.celctl("verb", "reroute", "hello", nameA+"=0", nameB+"=100", nameC+"=0"); err != nil {
		t.Fatalf("reroute to B only: %v\n%s", err, out)
	}
	if got := servedBy(a, 10); got[nameB] != 10 {
		t.Fatalf("after reroute %s=100: served by %v", nameB, got)
	}
	if out, err := a.celctl("verb", "reroute", "hello", nameA+"=50", nameB+"=50", nameC+"=0"); err != nil {
		t.Fatalf("reroute evenly: %v\n%s", err, out)
	}
	if got := servedBy(a, 20); got[nameB] == 0 || got[""] == 0 {
		t.Fatalf("after reroute 50/50: served by %v (\"\" is A itself)", got)
	}

	// A cell only C serves; A and B learn it and keep its module.
	c.drop("counter", testbuild.Cell(t, "counter"))
	c.waitStatus("/counter", 200)
	sha := c.listCells()["counter"].SHA256
	eventually(t, "A and B to keep counter's module", func() bool {
		for _, n := range []*proc{a, b} {
			if _, err := os.Stat(filepath.Join(n.data, "modules", sha+".wasm")); err != nil {
				return false
			}
		}
		return true
	})
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var takers []string
	eventually(t, "counter to be restored on a survivor", func() bool {
		takers = nil
		for _, n := range []*proc{a, b} {
			if n.listCells()["counter"].State == "serving" {
				_, name := n.fabricAddr()
				takers = append(takers, name)
			}
		}
		return len(takers) > 0
	})
	time.Sleep(2 * time.Second) // a second taker, if any, would show by now
	takers = nil
	for _, n := range []*proc{a, b} {
		if n.listCells()["counter"].State == "serving" {
			_, name := n.fabricAddr()
			takers = append(takers, name)
		}
	}
	if len(takers) != 1 {
		t.Fatalf("counter restored on %v, want exactly one of %s, %s", takers, nameA, nameB)
	}
	if r := a.get("/counter"); r.status != 200 {
		t.Fatalf("counter through A after the heal: %d %q", r.status, r.body)
	}
}

// TestFabricJoinToken: a node with no certificate joins with a single-use
// join token: it gets its certificate over a certificate-less fabric
// connection from the node holding the CA (checked against the CA the
// token names) and joins; the same token again, or an expired one, is
// refused and the node says why.
func TestFabricJoinToken(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	if out, err := runCelctl(t, "ca", "init", "--trust-domain", "test.local", "--out", ca); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	// Six-second certificates: renewed (at two thirds) while the test runs.
	a := startNode(t, "", "--fabric", "127.0.0.1:0", "--ca", ca, "--trust-domain", "test.local", "--cert-ttl", "6s")
	seed, _ := a.fabricAddr()
	tok, err := runCelctl(t, "ca", "token", "joiner", "--ca", ca)
	if err != nil {
		t.Fatalf("ca token: %v\n%s", err, tok)
	}
	tok = strings.TrimSpace(tok)
	joinArgs := func(token string) []string {
		return []string{"--fabric", "127.0.0.1:0", "--trust-domain", "test.local", "--join", seed, "--token", token, "--node", "joiner"}
	}
	b := startNode(t, "", joinArgs(tok)...)
	eventually(t, "the joiner to be a member", func() bool { return a.nodes()["joiner"].State == "alive" })
	if st, err := os.Stat(filepath.Join(b.data, "identity", "node.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("joiner's key: %v %v", st, err)
	}
	// Both renew before expiry (the joiner through A, over the fabric) and
	// stay members past their first certificates' lifetime.
	eventually(t, "both nodes to renew their certificates", func() bool {
		return strings.Contains(a.Logs(), "node certificate renewed") && strings.Contains(b.Logs(), "node certificate renewed") &&
			strings.Contains(a.Logs(), "renewed a peer's certificate")
	})
	time.Sleep(7 * time.Second) // past the first certificates' expiry
	if st := a.nodes()["joiner"].State; st != "alive" {
		t.Fatalf("joiner after its first certificate expired: %s", st)
	}
	r := b.get("/nosuch") // the joiner still serves, and forwards nothing it lacks
	if r.status != 404 {
		t.Fatalf("joiner: %d", r.status)
	}

	refused := func(token, want string) {
		t.Helper()
		d := t.TempDir()
		n := launch(t, filepath.Join(d, "cells"), filepath.Join(d, "data"), joinArgs(token)...)
		select {
		case <-n.exited:
		case <-time.After(60 * time.Second):
			t.Fatalf("a node with a bad token kept running")
		}
		if !strings.Contains(n.Logs(), want) {
			t.Fatalf("refused join: logs lack %q:\n%s", want, n.Logs())
		}
	}
	refused(tok, "already used")
	short, err := runCelctl(t, "ca", "token", "joiner", "--ca", ca, "--ttl", "1ms")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	refused(strings.TrimSpace(short), "expired")
}

// nsCluster is a few real nodes in a network namespace the test creates,
// on fixed ports of its loopback, so that nftables can cut them apart.
type nsCluster struct {
	t     *testing.T
	ns    string
	dir   string
	ca    string
	nodes map[string]*proc
}

func newNSCluster(t *testing.T) *nsCluster {
	ns, _ := testNetns(t)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	if out, err := runCelctl(t, "ca", "init", "--trust-domain", "test.local", "--out", ca); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	return &nsCluster{t: t, ns: ns, dir: dir, ca: ca, nodes: map[string]*proc{}}
}

// start starts node name on port, joining join if set, and waits until it
// is ready.
func (c *nsCluster) start(name, port, join string) *proc {
	d := filepath.Join(c.dir, name)
	args := []string{"--node", name, "--fabric", "127.0.0.1:" + port, "--ca", c.ca, "--trust-domain", "test.local", "--telemetry-interval", "200ms"}
	if join != "" {
		args = append(args, "--join", join)
	}
	n := launchWrapped(c.t, []string{"ip", "netns", "exec", c.ns}, filepath.Join(d, "cells"), filepath.Join(d, "data"), args...)
	n.awaitReady()
	c.nodes[name] = n
	return n
}

// nft applies nftables rules in the namespace.
func (c *nsCluster) nft(rules string) {
	c.t.Helper()
	cmd := exec.Command("ip", "netns", "exec", c.ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("nft: %v: %s", err, out)
	}
}

// serving lists the nodes (sorted) that serve cellName.
func (c *nsCluster) serving(cellName string) []string {
	var on []string
	for name, n := range c.nodes {
		if n.listCells()[cellName].State == "serving" {
			on = append(on, name)
		}
	}
	slices.Sort(on)
	return on
}

// keepsModule waits until every node but from holds from's module of
// cellName, so that any of them can take it over.
func (c *nsCluster) keepsModule(from, cellName string) {
	c.t.Helper()
	sha := c.nodes[from].listCells()[cellName].SHA256
	eventually(c.t, "every node to keep "+cellName+"'s module", func() bool {
		for _, n := range c.nodes {
			if _, err := os.Stat(filepath.Join(n.data, "modules", sha+".wasm")); err != nil {
				return false
			}
		}
		return true
	})
}

// threeWithCounterOnC starts nodes pa, pb and pc on ports base, base+1
// and base+2 (pb and pc joining pa), waits until they see each other,
// drops counter on pc and waits until it serves there and every node keeps
// its module.
func (c *nsCluster) threeWithCounterOnC(base int) (a, b, pc *proc) {
	c.t.Helper()
	seed := fmt.Sprint("127.0.0.1:", base)
	a = c.start("pa", fmt.Sprint(base), "")
	b = c.start("pb", fmt.Sprint(base+1), seed)
	pc = c.start("pc", fmt.Sprint(base+2), seed)
	eventually(c.t, "three alive nodes", func() bool {
		ns := a.nodes()
		return len(ns) == 3 && ns["pb"].State == "alive" && ns["pc"].State == "alive"
	})
	pc.drop("counter", testbuild.Cell(c.t, "counter"))
	eventually(c.t, "counter serving on C", func() bool { return pc.listCells()["counter"].State == "serving" })
	c.keepsModule("pc", "counter")
	return a, b, pc
}

// TestFabricPartitionHeals: three nodes in a network namespace the test
// creates; nftables cuts node C off. Each side declares the other dead, and
// the cell only C served is taken over on exactly one of A and B. When the
// cut is lifted the sides find each other again and the stand-in is
// drained: one copy of the cell, on C, as before.
func TestFabricPartitionHeals(t *testing.T) {
	cl := newNSCluster(t)
	a, _, c := cl.threeWithCounterOnC(17001)

	cl.nft("table inet celpart {\n chain out {\n  type filter hook output priority 0;\n  udp sport 17003 drop\n  udp dport 17003 drop\n }\n}\n")
	eventually(t, "A to see C dead and counter taken over on A or B", func() bool {
		return a.nodes()["pc"].State == "dead" && len(cl.serving("counter")) == 2
	})
	if on := cl.serving("counter"); !slices.Contains(on, "pc") || (slices.Contains(on, "pa") == slices.Contains(on, "pb")) {
		t.Fatalf("during the partition counter serves on %v, want pc and exactly one of pa, pb", on)
	}

	cl.nft("delete table inet celpart\n")
	eventuallyState(t, "the partition to heal: three alive, counter on C only", func() (bool, string) {
		ns := a.nodes()
		on := cl.serving("counter")
		return len(ns) == 3 && ns["pc"].State == "alive" && c.nodes()["pa"].State == "alive" && slices.Equal(on, []string{"pc"}),
			fmt.Sprintf("counter on %v, A sees C %s", on, ns["pc"].State)
	})
}

// TestFabricDuplicateStandInsResolve: three nodes cut into three islands.
// The cell only C served is taken over on both A and B — each saw the
// other dead too. When A and B find each other again, exactly one of the
// two stand-ins yields (the same one whichever node decides: the first by
// rendezvous hashing over the stand-ins), and when C is back, the last
// stand-in yields to it: one copy, on C.
func TestFabricDuplicateStandInsResolve(t *testing.T) {
	cl := newNSCluster(t)
	a, b, _ := cl.threeWithCounterOnC(17101)

	cl.nft("table inet cutc {\n chain out {\n  type filter hook output priority 0;\n  udp sport 17103 drop\n  udp dport 17103 drop\n }\n}\n")
	cl.nft("table inet cutab {\n chain out {\n  type filter hook output priority 0;\n" +
		"  udp sport 17101 udp dport 17102 drop\n  udp sport 17102 udp dport 17101 drop\n }\n}\n")
	eventuallyState(t, "counter taken over on both A and B", func() (bool, string) {
		on := cl.serving("counter")
		return slices.Equal(on, []string{"pa", "pb", "pc"}), fmt.Sprintf("counter on %v", on)
	})

	cl.nft("delete table inet cutab\n")
	winner := mesh.Rendezvous("counter", []string{"pa", "pb"})[0]
	eventuallyState(t, "A and B to see each other and keep one stand-in", func() (bool, string) {
		on := cl.serving("counter")
		ab, ba := a.nodes()["pb"].State, b.nodes()["pa"].State
		return ab == "alive" && ba == "alive" && slices.Equal(on, []string{winner, "pc"}),
			fmt.Sprintf("counter on %v; A sees B %s, B sees A %s", on, ab, ba)
	})
	loser := map[string]*proc{"pa": a, "pb": b}[map[string]string{"pa": "pb", "pb": "pa"}[winner]]
	if e := find(loser.journal("counter"), func(e journalEntry) bool { return e.Verb == "decay" }); e == nil || !strings.Contains(e.Origin, "stands in for it too") {
		t.Fatalf("the stand-in that yielded journals no decay saying why: %+v", e)
	}

	cl.nft("delete table inet cutc\n")
	eventuallyState(t, "C back: counter on C only", func() (bool, string) {
		on := cl.serving("counter")
		return slices.Equal(on, []string{"pc"}), fmt.Sprintf("counter on %v", on)
	})
}
