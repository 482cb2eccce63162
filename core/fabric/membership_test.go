package fabric

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// eventLog records a node's member callbacks as "join b", "leave c", ...
type eventLog struct {
	mu  sync.Mutex
	evs []string
}

func (e *eventLog) add(kind string) func(Member) {
	return func(m Member) {
		e.mu.Lock()
		e.evs = append(e.evs, kind+" "+m.Name+" "+string(m.Meta))
		e.mu.Unlock()
	}
}

func (e *eventLog) has(ev string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.ContainsFunc(e.evs, func(s string) bool { return strings.HasPrefix(s, ev) })
}

type memberNode struct {
	*testNode
	events *eventLog
	meta   *atomic.Value // string
}

func startMember(t *testing.T, ca *testCA, name string) *memberNode {
	t.Helper()
	ev := &eventLog{}
	meta := &atomic.Value{}
	meta.Store(fmt.Sprintf(`{"node":%q,"cells":0}`, name))
	n := startNode(t, ca, name, nodeOpts{mem: Membership{
		Meta:     func() []byte { return []byte(meta.Load().(string)) },
		OnJoin:   ev.add("join"),
		OnLeave:  ev.add("leave"),
		OnUpdate: ev.add("update"),
	}})
	return &memberNode{testNode: n, events: ev, meta: meta}
}

func (n *memberNode) member(name string) (Member, bool) {
	for _, m := range n.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// Three nodes join through one seed and converge; metadata updates spread;
// a node that stops (Close, no leave) is suspected and then declared dead by
// both others, whose view of each other stays alive.
func TestMembershipConvergesAndDetectsFailure(t *testing.T) {
	ca := newTestCA(t, testTD)
	a := startMember(t, ca, "a")
	b := startMember(t, ca, "b")
	c := startMember(t, ca, "c")
	nodes := []*memberNode{a, b, c}

	if err := b.Join(t.Context(), []string{a.addr()}); err != nil {
		t.Fatalf("b joins a: %v", err)
	}
	if err := c.Join(t.Context(), []string{a.addr(), c.addr()}); err != nil {
		t.Fatalf("c joins a: %v", err)
	}
	for _, n := range nodes {
		eventually(t, 10*time.Second, n.name+" sees a, b, c alive", func() bool {
			ms := n.Members()
			if len(ms) != 3 {
				return false
			}
			for i, want := range nodes {
				m := ms[i]
				if m.Name != want.name || m.Addr != want.addr() || m.State != StateAlive ||
					string(m.Meta) != fmt.Sprintf(`{"node":%q,"cells":0}`, want.name) {
					return false
				}
			}
			return true
		})
		for _, other := range nodes {
			eventually(t, 5*time.Second, n.name+" gets a join event for "+other.name, func() bool {
				return n.events.has("join " + other.name)
			})
		}
	}

	a.meta.Store(`{"node":"a","cells":3}`)
	if err := a.UpdateMeta(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*memberNode{b, c} {
		eventually(t, 10*time.Second, n.name+" sees a's new metadata", func() bool {
			m, _ := n.member("a")
			return string(m.Meta) == `{"node":"a","cells":3}`
		})
		eventually(t, 5*time.Second, n.name+" gets an update event", func() bool {
			return n.events.has(`update a {"node":"a","cells":3}`)
		})
	}

	// Stop c (Close: no leave) and watch its state from a and b. Close
	// ends c's connections, so a and b suspect it at once.
	stop := watchState(t, []*memberNode{a, b}, "c")
	c.Close()
	for _, n := range []*memberNode{a, b} {
		eventually(t, 15*time.Second, n.name+" declares c dead", func() bool {
			m, _ := n.member("c")
			return m.State == StateDead
		})
		eventually(t, 5*time.Second, n.name+" gets a leave event for c", func() bool {
			return n.events.has("leave c")
		})
	}
	want := []State{StateAlive, StateSuspect, StateDead}
	for name, states := range stop() {
		if !slices.Equal(states, want) {
			t.Errorf("%s saw c go %v, want %v", name, states, want)
		}
	}
	for _, pair := range [][2]*memberNode{{a, b}, {b, a}} {
		if m, _ := pair[0].member(pair[1].name); m.State != StateAlive {
			t.Errorf("%s sees %s %s, want alive", pair[0].name, pair[1].name, m.State)
		}
	}
	if _, ok := a.logs.find(`component="memberlist"`, "c"); !ok {
		t.Error("memberlist's logs about c did not reach the fabric's logger")
	}
}

// watchState records, every 5ms, the distinct states the observers see
// member go through, starting now. The returned func stops watching and
// returns each observer's sequence.
func watchState(t *testing.T, observers []*memberNode, member string) func() map[string][]State {
	t.Helper()
	var mu sync.Mutex
	seen := map[string][]State{}
	record := func(n *memberNode) {
		m, _ := n.member(member)
		mu.Lock()
		defer mu.Unlock()
		if s := seen[n.name]; len(s) == 0 || s[len(s)-1] != m.State {
			seen[n.name] = append(s, m.State)
		}
	}
	for _, n := range observers {
		record(n)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, n := range observers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					record(n)
					return
				case <-time.After(5 * time.Millisecond):
					record(n)
				}
			}
		})
	}
	return func() map[string][]State {
		close(stop)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(seen)
	}
}

// A node that crashes (its socket gone, so no QUIC close reaches anyone)
// is detected by memberlist's probes alone: a and b declare it dead while
// their connections to it are still open, and keep each other alive.
func TestMembershipDetectsCrash(t *testing.T) {
	ca := newTestCA(t, testTD)
	a := startMember(t, ca, "a")
	b := startMember(t, ca, "b")
	c := startMember(t, ca, "c")
	for _, n := range []*memberNode{b, c} {
		if err := n.Join(t.Context(), []string{a.addr()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []*memberNode{a, b, c} {
		eventually(t, 10*time.Second, n.name+" sees 3 alive", func() bool {
			ms := n.Members()
			return len(ms) == 3 && !slices.ContainsFunc(ms, func(m Member) bool { return m.State != StateAlive })
		})
	}
	stop := watchState(t, []*memberNode{a, b}, "c")
	c.udp.Close() // the crash: nothing more leaves c
	c.Close()
	for _, n := range []*memberNode{a, b} {
		eventually(t, 15*time.Second, n.name+" declares c dead", func() bool {
			m, _ := n.member("c")
			return m.State == StateDead
		})
	}
	for name, states := range stop() {
		// Suspect shows only if the connection to c ends before memberlist
		// decides; either way c never comes back.
		if !slices.Equal(states, []State{StateAlive, StateDead}) && !slices.Equal(states, []State{StateAlive, StateSuspect, StateDead}) {
			t.Errorf("%s saw c go %v, want alive, (suspect,) dead", name, states)
		}
	}
	for _, pair := range [][2]*memberNode{{a, b}, {b, a}} {
		if m, _ := pair[0].member(pair[1].name); m.State != StateAlive {
			t.Errorf("%s sees %s %s, want alive", pair[0].name, pair[1].name, m.State)
		}
	}
	// The node whose suspicion timer fires first marks c failed; the other
	// may learn it from gossip.
	_, aMarked := a.logs.find("Marking c as failed")
	_, bMarked := b.logs.find("Marking c as failed")
	if !aMarked && !bMarked {
		t.Error("neither a's nor b's log says memberlist marked c as failed")
	}
}

// A node whose memberlist name is not the name in its certificate is not
// admitted: the members refuse gossip that puts the name at its address.
func TestMembershipRefusesNameNotInCertificate(t *testing.T) {
	ca := newTestCA(t, testTD)
	a := startMember(t, ca, "a")
	cert := ca.node(t, "d")
	impostor := startNode(t, ca, "impostor", nodeOpts{cert: &cert, node: "impostor"})

	// The join itself goes through (the push/pull exchange is between
	// authenticated nodes), but a ignores the impostor's alive message.
	if err := impostor.Join(t.Context(), []string{a.addr()}); err != nil {
		t.Fatalf("impostor joins a: %v", err)
	}
	eventually(t, 10*time.Second, "a logs the refused alive message", func() bool {
		_, ok := a.logs.find("impostor", `whose certificate names "d"`)
		return ok
	})
	if _, ok := a.member("impostor"); ok {
		t.Fatalf("a lists the impostor: %v", a.Members())
	}
}

func TestMembershipRefusesOversizedMeta(t *testing.T) {
	ca := newTestCA(t, testTD)
	n := startNode(t, ca, "a", nodeOpts{mem: Membership{
		Meta: func() []byte { return bytes.Repeat([]byte("m"), MaxMetaSize+1) },
	}})
	if _, ok := n.logs.find("node metadata refused", `bytes="513"`, `limit="512"`); !ok {
		t.Fatal("oversized metadata not refused in the log")
	}
	ms := n.Members()
	if len(ms) != 1 || ms[0].Name != "a" || len(ms[0].Meta) != 0 {
		t.Fatalf("Members = %+v, want only a, without metadata", ms)
	}
}
