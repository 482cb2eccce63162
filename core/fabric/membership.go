package fabric

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// MaxMetaSize is the largest node metadata memberlist carries.
const MaxMetaSize = memberlist.MetaMaxSize

// Membership configures failure detection, node metadata and member events.
// Zero fields take the defaults, whose reasoning and arithmetic are in the
// package comment ("Failure detection").
type Membership struct {
	// ProbeInterval is how often the node probes one member (250ms).
	// memberlist stretches it up to AwarenessMaxMultiplier times while
	// this node itself misses acks.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a direct probe waits for its ack before
	// indirect probes start (150ms); the indirect probes have the rest of
	// the probe interval.
	ProbeTimeout time.Duration
	// IndirectChecks is how many other members are asked to probe a member
	// that missed a direct probe (3).
	IndirectChecks int
	// SuspicionMult scales the time a suspect has to refute before it is
	// declared dead, once SuspicionMult-2 other members have confirmed the
	// suspicion: SuspicionMult × max(1, log10 N) × ProbeInterval (4).
	SuspicionMult int
	// SuspicionMaxTimeoutMult bounds a suspicion nobody confirms at this
	// many times the confirmed timeout (8).
	SuspicionMaxTimeoutMult int
	// AwarenessMaxMultiplier bounds how far memberlist stretches this
	// node's probe interval while it misses acks itself (8).
	AwarenessMaxMultiplier int
	// GossipInterval is how often queued gossip is sent to 3 random
	// members (100ms); nothing is sent when nothing is queued.
	GossipInterval time.Duration
	// PushPullInterval is how often the full state is synced with one
	// random member (15s; memberlist stretches it beyond 32 members).
	PushPullInterval time.Duration

	// Meta returns this node's metadata (a small JSON or protobuf summary),
	// at most MaxMetaSize bytes. It is called when the node joins and on
	// UpdateMeta; a longer result is refused and logged, and the last valid
	// metadata is kept.
	Meta func() []byte
	// OnJoin, OnLeave and OnUpdate are called, in order and one at a time,
	// on a goroutine of the fabric's, when a member joins (or comes back),
	// is declared dead or leaves, or changes its metadata. The local node
	// joins too.
	//
	// OnLeave fires only on a confirmed death (memberlist's suspicion
	// timed out, with the confirmations described in the package comment,
	// or the member left): never on a mere suspicion, never while the
	// member refutes. A member declared dead by mistake that is heard again
	// fires OnJoin with a higher Member.Generation: a consumer that took
	// over the member's work on OnLeave hands it back then.
	OnJoin, OnLeave, OnUpdate func(Member)
}

// Defaults of Membership; the package comment explains each.
const (
	DefaultProbeInterval           = 250 * time.Millisecond
	DefaultProbeTimeout            = 150 * time.Millisecond
	DefaultIndirectChecks          = 3
	DefaultSuspicionMult           = 4
	DefaultSuspicionMaxTimeoutMult = 8
	DefaultAwarenessMaxMultiplier  = 8
	DefaultGossipInterval          = 100 * time.Millisecond
	DefaultPushPullInterval        = 15 * time.Second
)

func (m Membership) withDefaults() Membership {
	if m.ProbeInterval <= 0 {
		m.ProbeInterval = DefaultProbeInterval
	}
	if m.ProbeTimeout <= 0 {
		m.ProbeTimeout = min(DefaultProbeTimeout, m.ProbeInterval*3/5)
	}
	if m.IndirectChecks <= 0 {
		m.IndirectChecks = DefaultIndirectChecks
	}
	if m.SuspicionMult <= 0 {
		m.SuspicionMult = DefaultSuspicionMult
	}
	if m.SuspicionMaxTimeoutMult <= 0 {
		m.SuspicionMaxTimeoutMult = DefaultSuspicionMaxTimeoutMult
	}
	if m.AwarenessMaxMultiplier <= 0 {
		m.AwarenessMaxMultiplier = DefaultAwarenessMaxMultiplier
	}
	if m.GossipInterval <= 0 {
		m.GossipInterval = DefaultGossipInterval
	}
	if m.PushPullInterval <= 0 {
		m.PushPullInterval = DefaultPushPullInterval
	}
	return m
}

// gossipPacketSize is memberlist's packet budget: a QUIC datagram on the
// initial 1280-byte path carries 1242 bytes after QUIC's headers and our
// kind byte; larger packets go as streams.
const gossipPacketSize = 1100

func (f *Fabric) memberlistConfig() *memberlist.Config {
	c := memberlist.DefaultLANConfig()
	f.cfg.Membership.apply(c)
	c.Name = f.cfg.Node
	c.Transport = f.gossip
	c.AdvertiseAddr = f.advertise.IP.String()
	c.AdvertisePort = f.advertise.Port
	c.TCPTimeout = f.cfg.DialTimeout
	d := &delegate{f: f}
	c.Delegate = d
	c.Events = d
	c.Alive = d
	c.Logger = log.New(&logBridge{ctx: f.ctx, log: f.log.With("component", "memberlist")}, "", 0)
	return c
}

// apply sets memberlist's failure detection and gossip settings from m
// (with defaults): everything but the node's name, transport, delegates and
// logger. The fabric and the membership simulation both use it, so the
// simulation measures the configuration the fabric runs.
func (m Membership) apply(c *memberlist.Config) {
	m.applyDilated(c, 1)
}

// applyDilated is apply with every duration multiplied by k: the same
// protocol run k times slower, which the simulation uses to run more
// members than the machine has CPU for at full speed.
func (m Membership) applyDilated(c *memberlist.Config, k time.Duration) {
	m = m.withDefaults()
	m.ProbeInterval *= k
	m.ProbeTimeout *= k
	m.GossipInterval *= k
	m.PushPullInterval *= k
	c.ProbeInterval = m.ProbeInterval
	c.ProbeTimeout = m.ProbeTimeout
	c.IndirectChecks = m.IndirectChecks
	c.SuspicionMult = m.SuspicionMult
	c.SuspicionMaxTimeoutMult = m.SuspicionMaxTimeoutMult
	c.AwarenessMaxMultiplier = m.AwarenessMaxMultiplier
	c.GossipInterval = m.GossipInterval
	c.GossipNodes = 3
	c.PushPullInterval = m.PushPullInterval
	c.GossipToTheDeadTime = k * 5 * time.Second
	c.DisableTcpPings = true
	c.UDPBufferSize = gossipPacketSize
}

// State is a member's state as this node sees it.
type State int

const (
	// StateAlive: memberlist lists the member and the fabric has no reason
	// to doubt it.
	StateAlive State = iota
	// StateSuspect: memberlist still lists the member, but the fabric's
	// last connection to it closed or the last dial failed.
	StateSuspect
	// StateDead: memberlist declared the member dead, or it left.
	StateDead
)

func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Member is one node of the cluster.
type Member struct {
	Name  string
	Addr  string // fabric address, for Dial
	State State
	Meta  []byte
	// Generation counts the times this node has seen the member admitted:
	// 1 at its first join, one more each time it is heard again after it
	// was declared dead (a restart, or a death declared by mistake and
	// refuted). It is this node's count, not the cluster's: compare
	// generations of one member seen by one node, to fence work taken over
	// from an earlier generation. memberlist's own incarnation number is
	// not published by its API.
	Generation uint64
}

// Join contacts the seeds (fabric addresses; this node's own is skipped)
// and merges their view of the cluster into ours. It succeeds when at least
// one seed answered.
func (f *Fabric) Join(ctx context.Context, seeds []string) error {
	var addrs []string
	var errs []error
	for _, s := range seeds {
		key, _, err := resolve(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if key == f.advertise.String() {
			continue
		}
		if _, err := f.Dial(ctx, key); err != nil {
			errs = append(errs, err)
			continue
		}
		addrs = append(addrs, key)
	}
	if len(addrs) == 0 {
		if len(errs) == 0 {
			return nil // only ourselves: a cluster of one
		}
		return fmt.Errorf("fabric: join: no seed reachable: %w", errors.Join(errs...))
	}
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := f.ml.Join(addrs)
		done <- result{n, err}
	}()
	select {
	case r := <-done:
		if r.n == 0 {
			return fmt.Errorf("fabric: join %v: %w", addrs, r.err)
		}
		if r.err != nil {
			f.log.Warn("fabric: join: some seeds failed", "joined", r.n, "err", r.err)
		}
		f.catchUpOnce.Do(func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			if !f.closed {
				f.wg.Add(1)
				go func() {
					defer f.wg.Done()
					catchUp(f.ctx, f.ml, 1)
				}()
			}
		})
		return nil
	case <-ctx.Done():
		return fmt.Errorf("fabric: join: %w", context.Cause(ctx))
	}
}

// joinCatchUp are the times after its first join at which a member pulls
// the state of a random other member once more (memberlist's push/pull):
// the rumours of members that joined just before it — gossiped before
// anyone knew of it, their retransmissions spent — reach it then rather
// than at its next periodic push/pull, which memberlist stretches as N
// grows (×(log2 N − 4) above 32 members: 45s at 100, 90s at 1000). Two
// pulls of O(N) bytes per join; nothing while idle.
var joinCatchUp = []time.Duration{2 * time.Second, 6 * time.Second}

// catchUp runs the joinCatchUp pulls of ml, protocol time dilated k times.
func catchUp(ctx context.Context, ml *memberlist.Memberlist, k time.Duration) {
	var last time.Duration
	for _, at := range joinCatchUp {
		select {
		case <-ctx.Done():
			return
		case <-time.After((at - last) * k):
		}
		last = at
		self := ml.LocalNode().Name
		var others []*memberlist.Node
		for _, n := range ml.Members() {
			if n.Name != self {
				others = append(others, n)
			}
		}
		if len(others) == 0 {
			continue
		}
		n := others[rand.IntN(len(others))]
		_, _ = ml.Join([]string{n.Address()}) // a failure leaves the periodic push/pull to do it
	}
}

// Leave tells the cluster this node is leaving and waits, until ctx is done
// (at most 5s), for the news to go out. Close the fabric afterwards.
func (f *Fabric) Leave(ctx context.Context) error {
	if err := f.ml.Leave(timeoutOf(ctx, 5*time.Second)); err != nil {
		return fmt.Errorf("fabric: leave: %w", err)
	}
	return nil
}

// UpdateMeta asks Membership.Meta for fresh metadata and gossips it, waiting
// until ctx is done (at most 5s) for it to go out.
func (f *Fabric) UpdateMeta(ctx context.Context) error {
	if err := f.ml.UpdateNode(timeoutOf(ctx, 5*time.Second)); err != nil {
		return fmt.Errorf("fabric: update metadata: %w", err)
	}
	return nil
}

func timeoutOf(ctx context.Context, max time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return min(max, time.Until(dl))
	}
	return max
}

// Members returns every member this node knows of, itself included, dead
// ones too, sorted by name.
func (f *Fabric) Members() []Member {
	ms := f.members.list()
	for i := range ms {
		if ms[i].State == StateAlive && ms[i].Name != f.cfg.Node && f.isUnreachable(ms[i].Addr) {
			ms[i].State = StateSuspect
		}
	}
	return ms
}

// memberView is the fabric's copy of memberlist's member list, fed by
// memberlist's events (memberlist's own list hides dead members and shares
// its internal structs).
type memberView struct {
	mu sync.Mutex
	m  map[string]Member
}

func newMemberView() *memberView { return &memberView{m: make(map[string]Member)} }

// set records m, giving it its generation: a member admitted (alive) while
// unknown or dead starts a new one. It returns m with its generation.
func (v *memberView) set(m Member) Member {
	v.mu.Lock()
	defer v.mu.Unlock()
	old, ok := v.m[m.Name]
	m.Generation = old.Generation
	if m.State == StateAlive && (!ok || old.State == StateDead) {
		m.Generation++
	}
	v.m[m.Name] = m
	return m
}

func (v *memberView) list() []Member {
	v.mu.Lock()
	ms := make([]Member, 0, len(v.m))
	for _, m := range v.m {
		m.Meta = bytes.Clone(m.Meta)
		ms = append(ms, m)
	}
	v.mu.Unlock()
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return ms
}

// delegate is memberlist's Delegate, EventDelegate and AliveDelegate.
// memberlist calls the event methods with its node lock held: they copy
// what they need and return.
type delegate struct {
	f *Fabric

	mu   sync.Mutex
	meta []byte
}

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
	_ memberlist.AliveDelegate = (*delegate)(nil)
)

func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if fn := d.f.cfg.Membership.Meta; fn != nil {
		meta := fn()
		if len(meta) <= limit {
			d.meta = bytes.Clone(meta)
		} else {
			d.f.log.Error("fabric: node metadata refused", "bytes", len(meta), "limit", limit)
		}
	}
	return d.meta
}

func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

func member(n *memberlist.Node, s State) Member {
	return Member{Name: n.Name, Addr: n.Address(), State: s, Meta: bytes.Clone(n.Meta)}
}

func (d *delegate) NotifyJoin(n *memberlist.Node) {
	m := d.f.members.set(member(n, StateAlive))
	d.f.events.push(eventJoin, m)
}

func (d *delegate) NotifyLeave(n *memberlist.Node) {
	m := d.f.members.set(member(n, StateDead))
	d.f.events.push(eventLeave, m)
	if m.Name != d.f.cfg.Node {
		go d.f.dropPeer(m.Addr)
	}
}

func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	m := d.f.members.set(member(n, StateAlive))
	d.f.events.push(eventUpdate, m)
}

// NotifyAlive refuses gossip that puts a node name at an address whose
// connection's certificate names another node.
func (d *delegate) NotifyAlive(n *memberlist.Node) error {
	if n.Name == d.f.cfg.Node {
		return nil
	}
	if p := d.f.peerAt(n.Address()); p != nil && p.name != n.Name {
		return fmt.Errorf("fabric: gossip puts node %q at %s, whose certificate names %q", n.Name, p.addr, p.name)
	}
	return nil
}

type eventKind int

const (
	eventJoin eventKind = iota
	eventLeave
	eventUpdate
)

type event struct {
	kind eventKind
	m    Member
}

// eventQueue runs the member callbacks in order on one goroutine, so
// memberlist never waits for them.
type eventQueue struct {
	ctx    context.Context
	cfg    Membership
	mu     sync.Mutex
	q      []event
	signal chan struct{}
}

func newEventQueue(ctx context.Context, cfg Membership) *eventQueue {
	return &eventQueue{ctx: ctx, cfg: cfg, signal: make(chan struct{}, 1)}
}

func (e *eventQueue) push(kind eventKind, m Member) {
	if e.cfg.OnJoin == nil && e.cfg.OnLeave == nil && e.cfg.OnUpdate == nil {
		return
	}
	e.mu.Lock()
	e.q = append(e.q, event{kind, m})
	e.mu.Unlock()
	select {
	case e.signal <- struct{}{}:
	default:
	}
}

func (e *eventQueue) run() {
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-e.signal:
		}
		e.mu.Lock()
		q := e.q
		e.q = nil
		e.mu.Unlock()
		for _, ev := range q {
			if e.ctx.Err() != nil {
				return
			}
			var fn func(Member)
			switch ev.kind {
			case eventJoin:
				fn = e.cfg.OnJoin
			case eventLeave:
				fn = e.cfg.OnLeave
			case eventUpdate:
				fn = e.cfg.OnUpdate
			}
			if fn != nil {
				fn(ev.m)
			}
		}
	}
}

// logBridge turns memberlist's "[LEVEL] memberlist: message" lines into
// slog records at that level.
type logBridge struct {
	ctx context.Context
	log *slog.Logger
}

var logLevels = []struct {
	prefix string
	level  slog.Level
}{
	{"[DEBUG] ", slog.LevelDebug},
	{"[INFO] ", slog.LevelInfo},
	{"[WARN] ", slog.LevelWarn},
	{"[ERR] ", slog.LevelError},
	{"[ERROR] ", slog.LevelError},
}

func (b *logBridge) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for _, l := range logLevels {
		if rest, ok := strings.CutPrefix(line, l.prefix); ok {
			line, level = rest, l.level
			break
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	b.log.Log(context.WithoutCancel(b.ctx), level, line)
	return len(p), nil
}

// HealthScore is memberlist's measure of this node's own health (Lifeguard's
// local health): 0 when the node answers and hears answers in time, up to
// Membership.AwarenessMaxMultiplier-1 while it misses acks, nacks or has to
// refute suspicions of itself. memberlist stretches the node's probe
// interval by HealthScore+1; a consumer may also hold back decisions (such
// as taking over a dead member's work) while it is above 0, since a node
// that is itself starved is the likeliest to be wrong.
func (f *Fabric) HealthScore() int {
	if f.ml == nil {
		return 0
	}
	return f.ml.GetHealthScore()
}
