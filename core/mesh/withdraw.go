package mesh

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/fabric/frame"
	"github.com/celluster/celluster/core/journal"
)

// withdrawnFor is how long a node refuses to place a cell its home
// withdrew.
const withdrawnFor = 30 * time.Second

// Tombstones: a home remembers each cell it withdrew and lists it in its
// catalog, so that a node it could not reach at the time drops its copy
// when it next pulls that catalog (after a partition heals, a pause or
// a restart). They are kept under <data>/mesh/withdrawn.json for
// tombstoneFor, at most maxTombstones of them (the oldest go first), and
// a tombstone ends when the home serves the cell again.
const (
	tombstoneFor  = 24 * time.Hour
	maxTombstones = 1024
)

// Tombstone is a cell its home withdrew, listed in the home's catalog.
type Tombstone struct {
	Cell string `json:"cell"`
	// At is when the home withdrew it (Unix milliseconds): a copy placed
	// after it is not the one withdrawn and stays.
	At int64 `json:"at"`
}

// catalogDoc is a node's catalog on the wire: the cells it serves and
// the cells it withdrew.
type catalogDoc struct {
	Cells     []Entry     `json:"cells"`
	Withdrawn []Tombstone `json:"withdrawn,omitempty"`
}

// decodeCatalog parses a peer's catalog: a catalogDoc, or the plain list
// of entries earlier nodes send.
func decodeCatalog(b []byte) (catalogDoc, error) {
	var doc catalogDoc
	if len(b) > 0 && b[0] == '[' {
		err := json.Unmarshal(b, &doc.Cells)
		return doc, err
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return catalogDoc{}, err
	}
	for _, t := range doc.Withdrawn {
		if err := cell.ValidName(t.Cell); err != nil {
			return catalogDoc{}, fmt.Errorf("withdrawn cell: %w", err)
		}
	}
	return doc, nil
}

// tombstones are the cells this node withdrew as their home.
type tombstones struct {
	mu     sync.Mutex
	loaded bool
	at     map[string]time.Time
}

func (m *Mesh) tombstonesFile() string {
	return filepath.Join(m.cfg.DataDir, "mesh", "withdrawn.json")
}

// loadTombstonesLocked reads the persisted tombstones once. m.tomb.mu is
// held.
func (m *Mesh) loadTombstonesLocked() {
	if m.tomb.loaded {
		return
	}
	m.tomb.loaded = true
	m.tomb.at = map[string]time.Time{}
	var list []Tombstone
	if ok, err := readJSON(m.tombstonesFile(), &list); !ok {
		return
	} else if err != nil {
		m.log.Error("reading the cells this node withdrew; a peer that missed a withdrawal keeps its copy", "path", m.tombstonesFile(), "err", err)
		return
	}
	for _, t := range list {
		if cell.ValidName(t.Cell) == nil {
			m.tomb.at[t.Cell] = time.UnixMilli(t.At)
		}
	}
}

// listTombstonesLocked returns the live tombstones, oldest first, after
// dropping those expired, those of cells this node serves again and the
// oldest beyond maxTombstones (persisting any change). m.tomb.mu is held.
func (m *Mesh) listTombstonesLocked() []Tombstone {
	m.loadTombstonesLocked()
	changed := false
	now := time.Now()
	for name, at := range m.tomb.at {
		if now.Sub(at) > tombstoneFor || m.reg.Lookup(name) != nil {
			delete(m.tomb.at, name)
			changed = true
		}
	}
	list := make([]Tombstone, 0, len(m.tomb.at))
	for name, at := range m.tomb.at {
		list = append(list, Tombstone{Cell: name, At: at.UnixMilli()})
	}
	slices.SortFunc(list, func(a, b Tombstone) int {
		if a.At != b.At {
			return int(a.At - b.At)
		}
		return cmpString(a.Cell, b.Cell)
	})
	if over := len(list) - maxTombstones; over > 0 {
		for _, t := range list[:over] {
			delete(m.tomb.at, t.Cell)
		}
		list = list[over:]
		changed = true
	}
	if changed {
		m.saveTombstonesLocked(list)
	}
	return list
}

func (m *Mesh) saveTombstonesLocked(list []Tombstone) {
	if err := writeJSON(m.tombstonesFile(), list); err != nil {
		m.log.Error("persisting the cells this node withdrew", "path", m.tombstonesFile(), "err", err)
	}
}

// tombstones lists the cells this node withdrew, for its catalog.
func (m *Mesh) tombstones() []Tombstone {
	m.tomb.mu.Lock()
	defer m.tomb.mu.Unlock()
	return m.listTombstonesLocked()
}

// addTombstone records that this node withdrew cellName now.
func (m *Mesh) addTombstone(cellName string) {
	m.tomb.mu.Lock()
	defer m.tomb.mu.Unlock()
	m.loadTombstonesLocked()
	m.tomb.at[cellName] = time.Now()
	m.saveTombstonesLocked(m.listTombstonesLocked())
}

// tombstoned reports whether cellName is withdrawn for good: its home
// (named) lists a tombstone for it — this node or a live peer — and no
// live node serves it as its home.
func (m *Mesh) tombstoned(cellName string) (string, bool) {
	home := ""
	m.tomb.mu.Lock()
	m.loadTombstonesLocked()
	if at, ok := m.tomb.at[cellName]; ok && time.Since(at) <= tombstoneFor {
		home = m.cfg.Name
	}
	m.tomb.mu.Unlock()
	if c := m.reg.Lookup(cellName); c != nil && !m.isPlacedHere(cellName) && c.Info().SHA256 != "" {
		return "", false // this node is a home of it
	}
	if m.homeServes(cellName) {
		return "", false
	}
	if home != "" {
		return home, true
	}
	alive := m.aliveSet()
	m.place.mu.Lock()
	defer m.place.mu.Unlock()
	for node, pc := range m.place.catalogs {
		if alive[node] && slices.ContainsFunc(pc.withdrawn, func(t Tombstone) bool { return t.Cell == cellName }) {
			return node, true
		}
	}
	return "", false
}

// aliveSet is the live peers' names.
func (m *Mesh) aliveSet() map[string]bool {
	alive := map[string]bool{}
	for _, mb := range m.Members() {
		if mb.State == "alive" && !mb.Self {
			alive[mb.Name] = true
		}
	}
	return alive
}

// homeServes reports whether a live peer's catalog lists cellName as its
// own copy (a home serves it).
func (m *Mesh) homeServes(cellName string) bool {
	alive := m.aliveSet()
	m.place.mu.Lock()
	defer m.place.mu.Unlock()
	for node, pc := range m.place.catalogs {
		if alive[node] && slices.ContainsFunc(pc.entries, func(e Entry) bool { return e.Cell == cellName && e.Home }) {
			return true
		}
	}
	return false
}

func (m *Mesh) isPlacedHere(cellName string) bool {
	_, ok := m.placedHere(cellName)
	return ok
}

// Withdraw tells the live peers that this node, cellName's home, no longer
// serves it (its module was removed here): each drops the copy it serves
// for the fleet — placed to keep the cell spread or cloned, or standing in
// — and places none for withdrawnFor. A peer that cannot be reached now
// drops its copy when it next pulls this node's catalog, which lists the
// withdrawal (a tombstone).
func (m *Mesh) Withdraw(ctx context.Context, cellName string) {
	m.markWithdrawn(cellName, m.cfg.Name) // a holder that has not heard yet may ask this node for a copy
	m.addTombstone(cellName)
	go m.updateMeta(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	for _, mb := range m.Members() {
		if mb.Self || mb.State != "alive" {
			continue
		}
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			p, err := m.f.Dial(rctx, mb.Addr)
			if err == nil {
				_, err = p.Request(rctx, frame.TypeWithdraw, []byte(cellName))
			}
			if err != nil && ctx.Err() == nil {
				m.log.Warn("telling a peer a cell is withdrawn; it drops its copy when it next pulls this node's catalog", "cell", cellName, "node", mb.Name, "err", err)
			}
		})
	}
	wg.Wait()
}

// answerWithdraw drops the copy of a cell this node serves for the fleet,
// when its home (peer) withdrew it.
func (m *Mesh) answerWithdraw(ctx context.Context, peer string, payload []byte) ([]byte, error) {
	name := string(payload)
	if err := cell.ValidName(name); err != nil {
		return nil, err
	}
	if m.dropWithdrawn(ctx, name, peer, "node "+peer+", the cell's home, withdrew it") {
		return []byte("1"), nil
	}
	return []byte("0"), nil
}

// applyTombstones drops the copies this node serves for the fleet of the
// cells home's catalog lists as withdrawn, when they were placed before
// the withdrawal: this node missed the withdrawal itself.
func (m *Mesh) applyTombstones(ctx context.Context, home string, list []Tombstone) {
	for _, t := range list {
		p, ok := m.placedHere(t.Cell)
		if !ok || p.PlacedAt.After(time.UnixMilli(t.At)) {
			continue
		}
		ago := time.Since(time.UnixMilli(t.At)).Round(time.Second)
		m.dropWithdrawn(ctx, t.Cell, home, fmt.Sprintf("node %s, the cell's home, withdrew it %v ago (in its catalog; this node missed the withdrawal)", home, ago))
	}
}

// dropWithdrawn drops this node's fleet copy of name, withdrawn by home,
// journaling origin; false when it holds none.
func (m *Mesh) dropWithdrawn(ctx context.Context, name, home, origin string) bool {
	m.markWithdrawn(name, home)
	m.place.mu.Lock()
	_, ours := m.place.placed[name]
	delete(m.place.orphans, name)
	delete(m.place.healed, name)
	delete(m.place.seen, name) // gone for good: 404 from now on
	m.place.mu.Unlock()
	if ours || m.reg.Lookup(name) == nil {
		// A state copy the home pushed here goes with the cell.
		if err := m.host.AdoptState(name, nil); err != nil {
			m.log.Warn("cannot drop a withdrawn cell's state copy", "cell", name, "err", err)
		}
	}
	if !ours {
		return false // none here, or this node's own: not the fleet's to drop
	}
	dctx, cancel := context.WithTimeout(ctx, m.cfg.DrainTimeout)
	removed := m.reg.Remove(dctx, name)
	cancel()
	m.forget(name)
	if !removed {
		return false
	}
	m.host.ForgetIntent(name)
	if _, err := m.cfg.Journal.Append(journal.Entry{Cell: name, Verb: "decay", Args: []string{"all"}, Rule: "fabric",
		Origin: origin, Outcome: journal.Done,
		Message: "copy served for the fleet drained and removed"}); err != nil {
		m.log.Error("journal", "err", err)
	}
	m.log.Info("dropped a copy its home withdrew", "cell", name, "home", home)
	go m.updateMeta(context.WithoutCancel(ctx))
	return true
}

func (m *Mesh) markWithdrawn(cellName, home string) {
	m.place.mu.Lock()
	defer m.place.mu.Unlock()
	if m.place.withdrawn == nil {
		m.place.withdrawn = map[string]withdrawal{}
	}
	m.place.withdrawn[cellName] = withdrawal{home: home, until: time.Now().Add(withdrawnFor)}
}

// withdrawn reports whether a home withdrew cellName moments ago, and
// which; a placement the home itself asks for (it serves the cell again)
// ends the withdrawal.
func (m *Mesh) withdrawn(cellName, by string) (string, bool) {
	m.place.mu.Lock()
	defer m.place.mu.Unlock()
	w, ok := m.place.withdrawn[cellName]
	if !ok || time.Now().After(w.until) || by == w.home {
		delete(m.place.withdrawn, cellName)
		return "", false
	}
	return w.home, true
}
