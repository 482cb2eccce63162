package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/celluster/celluster/core/fabric/frame"
	"github.com/celluster/celluster/core/journal"
)

// orphan is a cell of a dead node that no live node serves yet.
type orphan struct {
	entry Entry
	dead  string
	since time.Time
	// busy while this node tries to take it over; next is when it may
	// try again, after tries failed attempts.
	busy  bool
	next  time.Time
	tries int
}

// takeoverStep is how long the survivor ranked k for a cell (by rendezvous
// hashing over the live nodes) waits, k steps, before it takes the cell
// over itself: the winner (rank 0) acts at once; the next only when the
// cell is still not served (the winner failed, or died) by then.
const takeoverStep = 3 * time.Second

// orphanGiveUp is how long survivors keep trying to restore a dead node's
// cell before they report it lost (no live node has its module).
const orphanGiveUp = 2 * time.Minute

// lost runs when memberlist confirms a node dead (or gone): the cells only
// it served become orphans, and every survivor evaluates them.
func (m *Mesh) lost(dead string) {
	m.place.mu.Lock()
	lost := m.place.catalogs[dead].entries
	delete(m.place.catalogs, dead)
	m.noteSeenLocked(lost)
	if m.place.orphans == nil {
		m.place.orphans = map[string]*orphan{}
	}
	for _, e := range lost {
		if _, ok := m.place.orphans[e.Cell]; !ok {
			m.place.orphans[e.Cell] = &orphan{entry: e, dead: dead, since: time.Now()}
		}
	}
	m.place.mu.Unlock()
	m.kick()
}

// Rendezvous ranks candidates for key by the hash of (key, node), highest
// first: every node computes the same order from the same membership, so
// exactly one acts first and nobody coordinates.
func Rendezvous(key string, candidates []string) []string {
	type scored struct {
		name string
		h    uint64
	}
	s := make([]scored, 0, len(candidates))
	for _, c := range candidates {
		h := fnv.New64a()
		h.Write([]byte(key))
		h.Write([]byte{0})
		h.Write([]byte(c))
		s = append(s, scored{c, h.Sum64()})
	}
	sort.Slice(s, func(i, j int) bool {
		if s[i].h != s[j].h {
			return s[i].h > s[j].h
		}
		return s[i].name < s[j].name
	})
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = x.name
	}
	return out
}

// healLoop evaluates the orphans on every membership change and, while
// there are any, a few times a second; and keeps spread cells spread.
func (m *Mesh) healLoop(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	spread := time.NewTicker(time.Second)
	defer spread.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.healNow:
		case <-spread.C:
			m.keepSpread(ctx)
			continue
		}
		if m.healOrphans(ctx) {
			t.Reset(250 * time.Millisecond) // an idle node does not wake for nothing
		}
	}
}

// healOrphans takes over the orphans this node is next in line for. It
// reports whether there were any.
func (m *Mesh) healOrphans(ctx context.Context) bool {
	m.place.mu.Lock()
	var list []*orphan
	for _, o := range m.place.orphans {
		list = append(list, o)
	}
	m.place.mu.Unlock()
	if len(list) == 0 {
		return false
	}
	alive := m.alive()
	now := time.Now()
	for _, o := range list {
		m.place.mu.Lock()
		busy, next := o.busy, o.next
		m.place.mu.Unlock()
		if busy {
			continue
		}
		if m.served(o.entry.Cell) {
			m.place.mu.Lock()
			if m.place.orphans[o.entry.Cell] == o {
				delete(m.place.orphans, o.entry.Cell)
			}
			m.place.mu.Unlock()
			continue
		}
		if home, ok := m.tombstoned(o.entry.Cell); ok {
			m.place.mu.Lock()
			if m.place.orphans[o.entry.Cell] == o {
				delete(m.place.orphans, o.entry.Cell)
			}
			m.place.mu.Unlock()
			m.log.Info("not taking over a dead node's copy of a cell its home withdrew", "cell", o.entry.Cell, "dead", o.dead, "home", home)
			continue
		}
		if now.Sub(o.since) > orphanGiveUp {
			m.place.mu.Lock()
			if m.place.orphans[o.entry.Cell] == o {
				delete(m.place.orphans, o.entry.Cell)
			}
			m.place.mu.Unlock()
			m.log.Error("a dead node's cell is lost: no survivor could restore it", "cell", o.entry.Cell, "dead", o.dead,
				"sha256", o.entry.SHA256[:min(12, len(o.entry.SHA256))], "for", orphanGiveUp)
			continue
		}
		rank := slices.Index(Rendezvous(o.entry.Cell, alive), m.cfg.Name)
		if rank < 0 || now.Before(o.since.Add(time.Duration(rank)*takeoverStep)) || now.Before(next) {
			continue
		}
		m.place.mu.Lock()
		o.busy = true
		if m.place.pending == nil {
			m.place.pending = map[string]bool{}
		}
		m.place.pending[o.entry.Cell] = true
		m.place.mu.Unlock()
		go m.takeover(ctx, o, rank, alive)
	}
	return true
}

// takeover serves an orphan here, its module from this node's store or
// any live peer that has it. A failure is retried with backoff; meanwhile
// the next survivor in line may act.
func (m *Mesh) takeover(ctx context.Context, o *orphan, rank int, alive []string) {
	e := o.entry
	e.Spread = false                            // a stand-in, whatever the dead node's copy was
	go m.updateMeta(context.WithoutCancel(ctx)) // gossip the cell as taken
	req := spawnRequest{Entry: e, Replicas: e.Min,
		Reason: fmt.Sprintf("node %s died; this node was %s in line among %s", o.dead, ordinal(rank), strings.Join(alive, ", "))}
	if rank == 0 {
		m.log.Info("taking over a dead node's cell", "cell", e.Cell, "dead", o.dead)
	} else {
		m.log.Warn("taking over a dead node's cell: the nodes before this one in line did not", "cell", e.Cell, "dead", o.dead, "rank", rank)
	}
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := m.spawnLocal(fctx, req, m.cfg.Name, o.dead)
	cancel()
	m.place.mu.Lock()
	delete(m.place.pending, e.Cell)
	o.busy = false
	if err == nil {
		if m.place.healed == nil {
			m.place.healed = map[string]string{}
		}
		m.place.healed[e.Cell] = o.dead
		if m.place.orphans[e.Cell] == o {
			delete(m.place.orphans, e.Cell)
		}
	} else {
		o.tries++
		o.next = time.Now().Add(min(100*time.Millisecond<<min(o.tries, 5), 3*time.Second))
	}
	m.place.mu.Unlock()
	if err != nil {
		m.log.Error("taking over a dead node's cell failed; retrying", "cell", e.Cell, "dead", o.dead, "tries", o.tries, "err", err)
		go m.updateMeta(context.WithoutCancel(ctx))
	}
}

func ordinal(rank int) string {
	if rank == 0 {
		return "first"
	}
	return fmt.Sprintf("number %d", rank+1)
}

// served reports whether a live node serves cell or is taking it over
// (this node included).
func (m *Mesh) served(cellName string) bool {
	if c := m.reg.Lookup(cellName); c != nil && c.Info().SHA256 != "" {
		return true
	}
	return len(m.holders(cellName, false)) > 0
}

// holders lists the live peers (and this node, if self) that serve a cell
// or take it over, by their gossiped metadata and catalogs.
func (m *Mesh) holders(cellName string, self bool) []string {
	var out []string
	ms := m.Members()
	m.place.mu.Lock()
	defer m.place.mu.Unlock()
	for _, mb := range ms {
		if mb.State != "alive" {
			continue
		}
		if mb.Self {
			if self && (m.place.pending[cellName] || m.localServes(cellName)) {
				out = append(out, mb.Name)
			}
			continue
		}
		has := slices.Contains(mb.Cells, cellName)
		for _, e := range m.place.catalogs[mb.Name].entries {
			has = has || e.Cell == cellName
		}
		if has {
			out = append(out, mb.Name)
		}
	}
	return out
}

func (m *Mesh) localServes(cellName string) bool {
	c := m.reg.Lookup(cellName)
	return c != nil && c.Info().SHA256 != ""
}

// returnHealed drains the cells this node stands in for once another copy
// makes this one redundant: the node it stood in for is back and serves
// the cell again (a healed partition, a false death, a restart) — that
// copy is the cell's home — or another live node stands in for it too
// (two survivors that each saw the other dead, under load or a
// partition), where every node keeps the copy of the stand-in ranked
// first by rendezvous hashing over the stand-ins, so that exactly one
// stays.
func (m *Mesh) returnHealed(ctx context.Context) {
	alive := m.alive()
	type drain struct{ cell, why string }
	var back []drain
	m.place.mu.Lock()
	for cellName, owner := range m.place.healed {
		standIns := []string{m.cfg.Name}
		home := false
		for _, peer := range alive {
			for _, e := range m.place.catalogs[peer].entries {
				switch {
				case e.Cell != cellName || peer == m.cfg.Name:
				case peer == owner && e.StandInFor == "":
					home = true
				case e.StandInFor != "":
					standIns = append(standIns, peer)
				}
			}
		}
		switch {
		case home:
			back = append(back, drain{cellName, "node " + owner + ", which this copy stood in for, is back and serves it"})
		case len(standIns) > 1 && Rendezvous(cellName, standIns)[0] != m.cfg.Name:
			back = append(back, drain{cellName, "node " + Rendezvous(cellName, standIns)[0] + " stands in for it too and is first in line"})
		default:
			continue
		}
		delete(m.place.healed, cellName)
	}
	m.place.mu.Unlock()
	for _, d := range back {
		dctx, cancel := context.WithTimeout(ctx, m.cfg.DrainTimeout)
		removed := m.reg.Remove(dctx, d.cell)
		cancel()
		m.forget(d.cell)
		if removed {
			m.host.ForgetIntent(d.cell)
			if _, err := m.cfg.Journal.Append(journal.Entry{Cell: d.cell, Verb: "decay", Args: []string{"all"}, Rule: "fabric",
				Origin: d.why, Outcome: journal.Done,
				Message: "stand-in drained and removed: one copy again"}); err != nil {
				m.log.Error("journal", "err", err)
			}
			m.log.Info("drained a redundant stand-in copy", "cell", d.cell, "why", d.why)
		}
	}
}

// keepSpread keeps each local cell whose intent says `spread across nodes`
// on at least as many live nodes as its minimum replicas: among the nodes
// serving it, the rendezvous winner places a copy on another node.
func (m *Mesh) keepSpread(ctx context.Context) {
	for _, e := range m.catalog() {
		pl := m.host.Placement(e.Cell)
		want := pl.SpreadNodes
		if want == 0 && pl.Spread {
			want = e.Min
		}
		if want < 2 {
			continue
		}
		holders := m.holders(e.Cell, true)
		want = min(want, len(m.alive()))
		m.trimSpread(ctx, e, holders, want)
		if len(holders) >= want {
			continue
		}
		if r := Rendezvous(e.Cell, holders); len(r) == 0 || r[0] != m.cfg.Name {
			continue
		}
		if _, gone := m.tombstoned(e.Cell); gone {
			continue // a copy its home withdrew: it goes, it does not spread
		}
		m.place.mu.Lock()
		last := m.place.spreadAt[e.Cell]
		m.place.mu.Unlock()
		if time.Since(last) < 3*time.Second {
			continue // the last copy placed is not in the news yet
		}
		// Every missing copy at once, each on another node: after a double
		// death the spread is back in one round, not one copy per round.
		reason := fmt.Sprintf("spread across nodes: on %d of the %d nodes it asks", len(holders), want)
		var placed []string
		for range want - len(holders) {
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			node, _, err := m.placeOnPeer(pctx, e.Cell, "", e.Min, reason, placed, true)
			cancel()
			if err != nil {
				m.log.Warn("keeping a cell spread across nodes", "cell", e.Cell, "err", err)
				break
			}
			placed = append(placed, node)
		}
		if len(placed) == 0 {
			continue
		}
		m.place.mu.Lock()
		if m.place.spreadAt == nil {
			m.place.spreadAt = map[string]time.Time{}
		}
		m.place.spreadAt[e.Cell] = time.Now()
		m.place.mu.Unlock()
		m.log.Info("placed copies to keep a cell spread across nodes", "cell", e.Cell, "nodes", placed, "holders", holders)
	}
}

// overFor is how long a cell must stay on more nodes than it asks before
// a spread copy is drained: the views of the holders settle first.
const overFor = 10 * time.Second

// trimSpread drains this node's copy of a spread cell when the cell has
// been on more nodes than it asks (want) for overFor and this copy is
// among the extra ones: of the holders whose copy was placed for spread,
// the last ones by rendezvous go, as many as there are extra. The home's
// copy, stand-ins and copies cloned on purpose are never drained here.
func (m *Mesh) trimSpread(ctx context.Context, e Entry, holders []string, want int) {
	m.place.mu.Lock()
	mine := m.place.placed[e.Cell].Spread
	extra := len(holders) - want
	if !mine || extra <= 0 {
		delete(m.place.overSince, e.Cell)
		m.place.mu.Unlock()
		return
	}
	if m.place.overSince == nil {
		m.place.overSince = map[string]time.Time{}
	}
	since, ok := m.place.overSince[e.Cell]
	if !ok {
		m.place.overSince[e.Cell] = time.Now()
	}
	var spread []string
	for _, h := range holders {
		if h == m.cfg.Name {
			spread = append(spread, h)
			continue
		}
		for _, pe := range m.place.catalogs[h].entries {
			if pe.Cell == e.Cell && pe.Spread {
				spread = append(spread, h)
			}
		}
	}
	m.place.mu.Unlock()
	if !ok || time.Since(since) < overFor {
		return
	}
	ranked := Rendezvous(e.Cell, spread)
	if i := slices.Index(ranked, m.cfg.Name); i < len(ranked)-extra {
		return
	}
	m.place.mu.Lock()
	delete(m.place.overSince, e.Cell)
	m.place.mu.Unlock()
	dctx, cancel := context.WithTimeout(ctx, m.cfg.DrainTimeout)
	removed := m.reg.Remove(dctx, e.Cell)
	cancel()
	m.forget(e.Cell)
	if !removed {
		return
	}
	m.host.ForgetIntent(e.Cell)
	why := fmt.Sprintf("spread across %d nodes: on %d (%s), this copy one too many", want, len(holders), strings.Join(holders, ", "))
	if _, err := m.cfg.Journal.Append(journal.Entry{Cell: e.Cell, Verb: "decay", Args: []string{"all"}, Rule: "fabric",
		Origin: why, Outcome: journal.Done, Message: "spread copy drained and removed"}); err != nil {
		m.log.Error("journal", "err", err)
	}
	m.log.Info("drained a spread copy the cell no longer needs", "cell", e.Cell, "why", why)
	go m.updateMeta(context.WithoutCancel(ctx))
}

// ErrNoPeer is returned when a placement finds no live peer to use.
var ErrNoPeer = errors.New("no live peer")

// PlaceOnPeer asks a peer (or, with node "", the best live peer not
// serving the cell: the intent's preferred nodes first, then the least
// loaded) to serve replicas of a local cell; the peer fetches the module
// by hash if it lacks it. It returns the node and its live replicas.
func (m *Mesh) PlaceOnPeer(ctx context.Context, cellName, node string, replicas int, reason string) (string, int, error) {
	return m.placeOnPeer(ctx, cellName, node, replicas, reason, nil, false)
}

// placeOnPeer is PlaceOnPeer choosing none of also (nodes just placed on,
// not in the news yet), the copy marked as placed for spread if spread.
func (m *Mesh) placeOnPeer(ctx context.Context, cellName, node string, replicas int, reason string, also []string, spread bool) (string, int, error) {
	var entry *Entry
	for _, e := range m.catalog() {
		if e.Cell == cellName {
			entry = &e
		}
	}
	if entry == nil {
		return "", 0, fmt.Errorf("no cell %s on this node", cellName)
	}
	entry.StandInFor = "" // the peer's copy is placed, not a stand-in
	entry.Spread = spread
	if node == "" {
		pl := m.host.Placement(cellName)
		members := m.Members()
		h := m.holders(cellName, false)
		for i := range members {
			if slices.Contains(h, members[i].Name) && !slices.Contains(members[i].Cells, cellName) {
				members[i].Cells = append(members[i].Cells, cellName)
			}
		}
		best := ChoosePeer(members, cellName, pl.Prefer, append(slices.Clone(pl.Avoid), also...))
		if best == nil {
			return "", 0, fmt.Errorf("every live peer already serves %s: %w", cellName, ErrNoPeer)
		}
		node = best.Name
	}
	addr := m.addrOf(node)
	if addr == "" {
		return "", 0, fmt.Errorf("node %s: %w", node, ErrNoPeer)
	}
	p, err := m.f.Dial(ctx, addr)
	if err != nil {
		return node, 0, err
	}
	b, _ := json.Marshal(spawnRequest{Entry: *entry, From: m.cfg.Name, Replicas: max(replicas, 1), Reason: reason, State: entry.KeepState})
	out, err := p.Request(ctx, frame.TypeSpawn, b)
	if err != nil {
		return node, 0, err
	}
	var live int
	_, _ = fmt.Sscan(string(out), &live)
	return node, live, nil
}

// ChoosePeer picks the node for a replica of a cell: a live peer not
// serving it yet and not avoided, the preferred nodes first, then the
// least loaded; nil when there is none.
func ChoosePeer(members []Member, cellName string, prefer, avoid []string) *Member {
	var best *Member
	for _, mb := range members {
		if mb.Self || mb.State != "alive" || slices.Contains(mb.Cells, cellName) || slices.Contains(avoid, mb.Name) {
			continue
		}
		bp, mp := best != nil && slices.Contains(prefer, best.Name), slices.Contains(prefer, mb.Name)
		if best == nil || (mp && !bp) || (mp == bp && mb.Load < best.Load) {
			best = &mb
		}
	}
	return best
}
