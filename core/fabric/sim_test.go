//go:build !race

package fabric

import (
	"context"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// The membership simulation runs hundreds to thousands of memberlist
// members in this process, on an in-memory network, with the failure
// detection and gossip settings the fabric runs (Membership{}.apply). It
// measures what a member sends per second, how long joining takes to
// converge and how long a death takes to reach every member, as N grows.
// It exercises memberlist and an in-memory network, no fabric code, and is
// built without the race detector, which slows memberlist's timers and
// goroutines down so unevenly that its timing means nothing; make test runs
// it in a separate go test run without -race.

// simNet is an in-memory datagram network with streams: packets go to a
// member's buffered queue and are dropped, as UDP would drop them, when it
// is full or the member is down; streams are net.Pipes.
type simNet struct {
	mu     sync.RWMutex
	byAddr map[string]*simTransport

	packets, bytes, streams atomic.Uint64
}

func newSimNet() *simNet { return &simNet{byAddr: make(map[string]*simTransport)} }

// simTransport is one member's memberlist.Transport on a simNet.
type simTransport struct {
	net     *simNet
	addr    *net.UDPAddr
	packets chan *memberlist.Packet
	streams chan net.Conn
	down    atomic.Bool
	sent    atomic.Uint64
}

var _ memberlist.NodeAwareTransport = (*simTransport)(nil)

func (n *simNet) transport(i int) *simTransport {
	ip := net.IPv4(10, byte(i>>16), byte(i>>8), byte(i))
	t := &simTransport{
		net:     n,
		addr:    &net.UDPAddr{IP: ip, Port: 7946},
		packets: make(chan *memberlist.Packet, 1024),
		streams: make(chan net.Conn, 64),
	}
	n.mu.Lock()
	n.byAddr[t.addr.String()] = t
	n.mu.Unlock()
	return t
}

func (n *simNet) peer(addr string) *simTransport {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.byAddr[addr]
}

func (t *simTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return t.addr.IP, t.addr.Port, nil
}

func (t *simTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *simTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	if t.down.Load() {
		return now, nil
	}
	t.sent.Add(1)
	t.net.packets.Add(1)
	t.net.bytes.Add(uint64(len(b)))
	dst := t.net.peer(a.Addr)
	if dst == nil || dst.down.Load() {
		return now, nil
	}
	select {
	case dst.packets <- &memberlist.Packet{Buf: append([]byte(nil), b...), From: t.addr, Timestamp: now}:
	default:
	}
	return now, nil
}

func (t *simTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *simTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *simTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	dst := t.net.peer(a.Addr)
	if t.down.Load() || dst == nil || dst.down.Load() {
		return nil, fmt.Errorf("sim: %s unreachable", a.Addr)
	}
	t.net.streams.Add(1)
	c1, c2 := net.Pipe()
	select {
	case dst.streams <- &simConn{Conn: c1, local: dst.addr, remote: t.addr}:
	case <-time.After(timeout):
		c1.Close()
		c2.Close()
		return nil, fmt.Errorf("sim: %s does not accept streams", a.Addr)
	}
	return &simConn{Conn: c2, local: t.addr, remote: dst.addr}, nil
}

func (t *simTransport) StreamCh() <-chan net.Conn { return t.streams }
func (t *simTransport) Shutdown() error           { return nil }

// simConn gives a net.Pipe end the addresses memberlist logs.
type simConn struct {
	net.Conn
	local, remote net.Addr
}

func (c *simConn) LocalAddr() net.Addr  { return c.local }
func (c *simConn) RemoteAddr() net.Addr { return c.remote }

// simMember is one member of the simulation.
type simMember struct {
	t  *simTransport
	ml *memberlist.Memberlist
}

func startSimMember(t testing.TB, n *simNet, i int, mem Membership, k time.Duration) *simMember {
	tr := n.transport(i)
	c := memberlist.DefaultLANConfig()
	mem.applyDilated(c, k)
	c.TCPTimeout *= k
	c.Name = fmt.Sprintf("s%05d", i)
	c.Transport = tr
	c.Logger = log.New(io.Discard, "", 0)
	ml, err := memberlist.Create(c)
	if err != nil {
		t.Fatalf("member %d: %v", i, err)
	}
	return &simMember{t: tr, ml: ml}
}

// simResult is what one simulation run measured.
type simResult struct {
	n              int
	join           time.Duration // from the first join to every member seeing n alive
	msgsPerNode    float64       // packets sent per member per second, idle
	bytesPerNode   float64       // their bytes per member per second
	streamsPerNode float64       // streams (push/pull) per member per second
	detect         time.Duration // crash to the first member declaring it dead
	disseminate    time.Duration // crash to every member having it dead
	cpuPerNode     time.Duration // process CPU per member per second, idle
}

// runSim starts n members, which join one after the other, each through a
// random member already in, and measures them. The protocol runs k times slower than
// configured (Membership.applyDilated), so that the machine's CPU keeps up
// with many members; the results are given in protocol time: durations
// divided by k, rates multiplied by k. bound limits each phase (in wall
// time); a phase that does not finish within it fails the test.
func runSim(t testing.TB, n int, mem Membership, k, idle, bound time.Duration) simResult {
	t.Helper()
	sn := newSimNet()
	ms := make([]*simMember, n)
	defer func() {
		var wg sync.WaitGroup
		for _, m := range ms {
			if m != nil {
				wg.Go(func() { _ = m.ml.Shutdown() })
			}
		}
		wg.Wait()
	}()
	for i := range n {
		ms[i] = startSimMember(t, sn, i, mem, k)
	}
	r := simResult{n: n}
	ctx, cancel := context.WithCancel(context.Background())
	var catching sync.WaitGroup
	defer catching.Wait()
	defer cancel()
	start := time.Now()
	for i := 1; i < n; i++ {
		seed := ms[rand.IntN(i)]
		if _, err := ms[i].ml.Join([]string{seed.t.addr.String()}); err != nil {
			t.Fatalf("member %d joins: %v", i, err)
		}
		catching.Go(func() { catchUp(ctx, ms[i].ml, k) }) // as Fabric.Join does
	}
	waitAll(t, ms, bound, "every member sees all alive", func(m *simMember) bool { return m.ml.NumMembers() == n })
	r.join = time.Since(start) / k

	// Idle: settle, then count.
	time.Sleep(k * time.Second)
	p0, b0, s0, c0, t0 := sn.packets.Load(), sn.bytes.Load(), sn.streams.Load(), cpuTime(), time.Now()
	time.Sleep(k * idle)
	secs := (time.Since(t0) / k).Seconds()
	r.msgsPerNode = float64(sn.packets.Load()-p0) / secs / float64(n)
	r.bytesPerNode = float64(sn.bytes.Load()-b0) / secs / float64(n)
	r.streamsPerNode = float64(sn.streams.Load()-s0) / secs / float64(n)
	r.cpuPerNode = time.Duration(float64(cpuTime()-c0) / secs / float64(n))

	// A crash: the victim stops sending and receiving at once.
	victim := ms[n-1]
	name := victim.ml.LocalNode().Name
	crash := time.Now()
	victim.t.down.Store(true)
	survivors := ms[:n-1]
	var first sync.Once
	seesDead := func(m *simMember) bool {
		for _, x := range m.ml.Members() {
			if x.Name == name {
				return false
			}
		}
		first.Do(func() { r.detect = time.Since(crash) / k })
		return true
	}
	waitAll(t, survivors, bound, "every survivor has "+name+" dead", seesDead)
	r.disseminate = time.Since(crash) / k
	return r
}

// waitAll polls every 20ms until cond holds for every member.
func waitAll(t testing.TB, ms []*simMember, bound time.Duration, what string, cond func(*simMember) bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	pending := ms
	for {
		var still []*simMember
		for _, m := range pending {
			if !cond(m) {
				still = append(still, m)
			}
		}
		if pending = still; len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			var counts []int
			for _, m := range pending {
				counts = append(counts, m.ml.NumMembers())
			}
			t.Fatalf("not within %s: %s (%d of %d members not yet; they see %v members)", bound, what, len(pending), len(ms), counts)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r simResult) row() string {
	return fmt.Sprintf("%6d  %8.1f  %9.0f  %9.3f  %8.2fs  %8.2fs  %8.2fs  %7.2fms",
		r.n, r.msgsPerNode, r.bytesPerNode, r.streamsPerNode, r.join.Seconds(), r.detect.Seconds(), r.disseminate.Seconds(),
		float64(r.cpuPerNode)/float64(time.Millisecond))
}

const simHeader = "     N  msgs/s/n  bytes/s/n  streams/s  join-conv    detect  all-dead  cpu/s/n"

// The simulation, small: 10, 20 and 40 members on the in-memory network
// with the fabric's membership settings, run simDilation (2) times slower
// (see runSim) so the shared test machine keeps up.
// Every member converges after the joins — by gossip, or for a member that
// missed a rumour by the next push/pull, so within minutes at worst — and
// learns of a crash; what a member sends per second when idle does not grow
// with N (at 40 members at most 1.5× what it is at 10: memberlist sends one
// probe per interval and gossips only what is new, whatever N); and a crash
// is detected by someone within 4s (twice the 2s aim, so a loaded machine
// does not fail it).
func TestMembershipSimulation(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 70 members for a while")
	}
	var rs []simResult
	for _, n := range []int{10, 20, 40} {
		rs = append(rs, runSim(t, n, Membership{}, simDilation, 2*time.Second, 2*time.Minute))
	}
	t.Logf("protocol time dilated %d×\n%s", simDilation, simHeader)
	for _, r := range rs {
		t.Log(r.row())
	}
	if rs[2].msgsPerNode > 1.5*rs[0].msgsPerNode {
		t.Errorf("messages per member per second grew from %.1f at %d members to %.1f at %d", rs[0].msgsPerNode, rs[0].n, rs[2].msgsPerNode, rs[2].n)
	}
	for _, r := range rs {
		if r.msgsPerNode == 0 {
			t.Errorf("%d members sent nothing while idle", r.n)
		}
		if r.detect > 4*time.Second {
			t.Errorf("%d members: crash detected after %s", r.n, r.detect)
		}
	}
}

// simDilation slows the small simulation's protocol down, see runSim.
const simDilation = 2

// TestMembershipSimulationLarge is the simulation at scale, run by
// `make sim`: FABRIC_SIM=50,100,250,500,1000 (the member counts) and
// FABRIC_SIM_DILATION (how many times slower the protocol runs, default 10),
// each phase bounded at 10 minutes. It prints a table.
func TestMembershipSimulationLarge(t *testing.T) {
	spec := os.Getenv("FABRIC_SIM")
	if spec == "" {
		t.Skip("set FABRIC_SIM=50,100,... (make sim)")
	}
	k := 10
	if d := os.Getenv("FABRIC_SIM_DILATION"); d != "" {
		var err error
		if k, err = strconv.Atoi(d); err != nil || k < 1 {
			t.Fatalf("FABRIC_SIM_DILATION=%q: want a whole number ≥ 1", d)
		}
	}
	var rs []simResult
	fmt.Fprintf(os.Stderr, "protocol time dilated %d×\n%s\n", k, simHeader)
	for _, f := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 3 {
			t.Fatalf("FABRIC_SIM: %q is not a member count ≥ 3", f)
		}
		r := runSim(t, n, Membership{}, time.Duration(k), 10*time.Second, 10*time.Minute)
		fmt.Fprintln(os.Stderr, r.row())
		rs = append(rs, r)
	}
	fmt.Printf("\nMembership simulation: in-memory network, the fabric's Membership defaults, protocol time dilated %d×\n", k)
	fmt.Println(simHeader)
	for _, r := range rs {
		fmt.Println(r.row())
	}
}
