package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/fabric/frame"
	"github.com/celluster/celluster/core/journal"
)

// Entry is one cell a node serves, as the fabric learns of it: every node
// knows every cell's module hash and intent, and keeps the module bytes
// (fetched by hash, verified) so that it can take the cell over.
type Entry struct {
	Cell   string `json:"cell"`
	SHA256 string `json:"sha256"`
	// Intent is the intent text in force, and IntentName where it came
	// from (for diagnostics).
	Intent     string `json:"intent,omitempty"`
	IntentName string `json:"intent_name,omitempty"`
	Min        int    `json:"min"`
	// StandInFor names the dead node this copy stands in for, when it is
	// a take-over: of two stand-ins for one cell, one yields.
	StandInFor string `json:"stand_in_for,omitempty"`
	// Spread marks a copy placed to keep the cell spread across nodes:
	// one the fleet may drain again when the cell is on more nodes than
	// it asks (a holder back from a restart after its copy was replaced).
	Spread bool `json:"spread,omitempty"`
	// KeepState says the cell's intent keeps its state: a node that
	// places it restores the state it is given or was pushed.
	KeepState bool `json:"keep_state,omitempty"`
	// Home marks the node's own copy (its module is in the node's cells
	// directory), not one it serves for the fleet: a withdrawal by
	// another home does not end a cell that still has one.
	Home bool `json:"home,omitempty"`
}

// spawnRequest asks a peer to serve a cell.
type spawnRequest struct {
	Entry
	// From is the node to fetch the module from when missing.
	From string `json:"from"`
	// Replicas is how many replicas to start.
	Replicas int `json:"replicas"`
	// Reason is journaled by the peer.
	Reason string `json:"reason"`
	// State asks the peer to fetch the cell's state from From before it
	// starts the cell (a clone with kept state).
	State bool `json:"state,omitempty"`
}

// peerCatalog is the last catalog pulled from a peer, with its version.
type peerCatalog struct {
	version   uint64
	entries   []Entry
	withdrawn []Tombstone
}

// placement keeps what the mesh knows about the fleet's cells.
type placement struct {
	mu sync.Mutex
	// catalogs holds each live peer's last catalog, by node name.
	catalogs map[string]peerCatalog
	// healed maps the cells this node took over from a dead node to that
	// node: when it comes back serving the cell, the copy here is drained.
	healed map[string]string
	// orphans are cells of dead nodes that no live node serves yet.
	orphans map[string]*orphan
	// pending are cells this node is taking over now (gossiped as served,
	// so that no other survivor starts too).
	pending map[string]bool
	// placed are the cells this node serves for the fleet (placed by a
	// peer or taken over), persisted so a restart serves them again.
	placed map[string]placed
	// restoredAt holds, while a restart serves them again, when the
	// restored copies were first placed.
	restoredAt map[string]time.Time
	// spreadAt is when this node last placed a copy of a cell to keep it
	// spread, so it waits for the news before placing another.
	spreadAt map[string]time.Time
	// overSince is since when a cell this node holds a spread copy of has
	// been on more nodes than it asks.
	overSince map[string]time.Time
	// withdrawn holds, until when, the cells a home withdrew: this node
	// places no copy of them meanwhile (another holder that has not heard
	// yet could ask it to).
	withdrawn map[string]withdrawal
	// seen holds when each cell was last listed in a live peer's catalog
	// (or a dead one's, as it died): for seenFor after, a request for it
	// is a transition (a stand-in draining as its home comes back, a
	// take-over not yet in the news) — 503, not 404.
	seen map[string]time.Time
}

// seenFor is how long a cell gone from every catalog this node holds is
// still taken to exist in the fleet.
const seenFor = 30 * time.Second

// noteSeenLocked records that the entries' cells exist in the fleet now.
// m.place.mu is held.
func (m *Mesh) noteSeenLocked(entries []Entry) {
	if m.place.seen == nil {
		m.place.seen = map[string]time.Time{}
	}
	now := time.Now()
	for _, e := range entries {
		if w, ok := m.place.withdrawn[e.Cell]; ok && now.Before(w.until) {
			continue // its home withdrew it: gone for good, 404
		}
		m.place.seen[e.Cell] = now
	}
	for name, at := range m.place.seen {
		if now.Sub(at) > seenFor {
			delete(m.place.seen, name)
		}
	}
}

// withdrawal is a cell's withdrawal by its home.
type withdrawal struct {
	home  string
	until time.Time
}

// placed is a cell this node serves for the fleet (Entry.StandInFor set
// when it stands in for a dead node).
type placed struct {
	Entry
	// PlacedAt is when this node first served the copy (kept across its
	// restarts): a withdrawal after it drops the copy, one before it
	// does not.
	PlacedAt time.Time `json:"placed_at,omitzero"`
}

// catalogDoc is this node's catalog as peers pull it.
func (m *Mesh) catalogDoc() catalogDoc {
	return catalogDoc{Cells: m.catalog(), Withdrawn: m.tombstones()}
}

// catalog lists the cells this node serves, sorted by name.
func (m *Mesh) catalog() []Entry {
	var out []Entry
	for _, in := range m.reg.List() {
		if in.SHA256 == "" {
			continue
		}
		e := Entry{Cell: in.Name, SHA256: in.SHA256, Min: max(in.Policy.Min, 1), KeepState: in.Policy.KeepState}
		if text, source, ok := m.host.Intent(in.Name); ok {
			e.Intent, e.IntentName = text, source
		}
		m.place.mu.Lock()
		p, fleet := m.place.placed[in.Name]
		e.StandInFor, e.Spread, e.Home = p.StandInFor, p.Spread, !fleet
		m.place.mu.Unlock()
		out = append(out, e)
	}
	return out
}

// handlePlacement registers the fabric requests for catalogs, modules and
// spawns.
func (m *Mesh) handlePlacement() {
	m.f.HandleRequest(frame.TypeCatalog, 1024, func(context.Context, string, []byte) ([]byte, error) {
		return json.Marshal(m.catalogDoc())
	})
	m.f.HandleRequest(frame.TypeModule, 1024, func(_ context.Context, _ string, p []byte) ([]byte, error) {
		b, err := m.store.Get(string(p))
		if err != nil {
			return nil, fmt.Errorf("module %.64s: not held by node %s", p, m.cfg.Name)
		}
		return b, nil
	})
	m.f.HandleRequest(frame.TypeSpawn, 1<<20, func(ctx context.Context, peer string, p []byte) ([]byte, error) {
		var req spawnRequest
		if err := json.Unmarshal(p, &req); err != nil {
			return nil, fmt.Errorf("spawn request: %w", err)
		}
		live, err := m.spawnLocal(ctx, req, peer, "")
		if err != nil {
			return nil, err
		}
		return []byte(fmt.Sprint(live)), nil
	})
}

// fetchModule returns the module from the store, or fetches it from a
// live peer that has it — first, if given, from, then the peers whose
// catalogs list it, then any other live peer — never this node, and
// verifies its hash.
func (m *Mesh) fetchModule(ctx context.Context, sha, from string) ([]byte, error) {
	if !validSHA(sha) {
		return nil, fmt.Errorf("module hash %q is not a hex sha256", sha)
	}
	if b, err := m.store.Get(sha); err == nil {
		return b, nil
	}
	var first, rest []string
	m.place.mu.Lock()
	for _, name := range m.alive() {
		if name == m.cfg.Name {
			continue
		}
		has := name == from
		for _, e := range m.place.catalogs[name].entries {
			has = has || e.SHA256 == sha
		}
		if has {
			first = append(first, name)
		} else {
			rest = append(rest, name)
		}
	}
	m.place.mu.Unlock()
	rand.Shuffle(len(first), func(i, j int) { first[i], first[j] = first[j], first[i] })
	if i := slices.Index(first, from); i > 0 {
		first[0], first[i] = first[i], first[0]
	}
	errs := []error{fmt.Errorf("module %s: no live peer has it", sha[:12])}
	for _, name := range append(first, rest...) {
		b, err := m.fetchFrom(ctx, sha, name)
		if err == nil {
			return b, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// fetchFrom fetches a module from one peer and keeps it.
func (m *Mesh) fetchFrom(ctx context.Context, sha, node string) ([]byte, error) {
	addr := m.addrOf(node)
	if addr == "" {
		return nil, fmt.Errorf("module %s: node %s is not a live member", sha[:12], node)
	}
	p, err := m.f.Dial(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("module %s from %s: %w", sha[:12], node, err)
	}
	b, err := p.Request(ctx, frame.TypeModule, []byte(sha))
	if err != nil {
		return nil, fmt.Errorf("module %s from %s: %w", sha[:12], node, err)
	}
	got, err := m.store.Put(b)
	if err != nil {
		return nil, fmt.Errorf("storing module %s: %w", sha[:12], err)
	}
	if got != sha {
		m.store.remove(got)
		return nil, fmt.Errorf("module from %s hashes to %s, not %s: refused", node, got[:12], sha[:12])
	}
	return b, nil
}

// spawnLocal starts serving a cell this node was asked to (or chose to)
// take: the module by hash, the intent as given. standInFor names the dead
// node a take-over stands in for.
func (m *Mesh) spawnLocal(ctx context.Context, req spawnRequest, by, standInFor string) (int, error) {
	if err := cell.ValidName(req.Cell); err != nil {
		return 0, err
	}
	if home, ok := m.withdrawn(req.Cell, by); ok {
		return 0, fmt.Errorf("cell %s was withdrawn by its home, node %s, moments ago: not placed on %s", req.Cell, home, m.cfg.Name)
	}
	if home, ok := m.tombstoned(req.Cell); ok && by != home {
		return 0, fmt.Errorf("cell %s was withdrawn by its home, node %s, and no live node serves it as its home: not placed on %s", req.Cell, home, m.cfg.Name)
	}
	mod, err := m.fetchModule(ctx, req.SHA256, req.From)
	if err != nil {
		return 0, err
	}
	if err := m.reg.Declare(req.Cell); err != nil {
		return 0, err
	}
	c := m.reg.Lookup(req.Cell)
	source := "node " + req.From + " (sha256 " + req.SHA256[:12] + ")"
	if c.Info().SHA256 != req.SHA256 {
		if req.KeepState {
			if req.State && req.From != "" && req.From != m.cfg.Name {
				n, err := m.fetchState(ctx, req.Cell, req.SHA256, req.From)
				if err != nil {
					m.log.Warn("cannot fetch a cell's state; it starts fresh here", "cell", req.Cell, "from", req.From, "err", err)
				} else {
					m.log.Info("fetched a cell's state", "cell", req.Cell, "from", req.From, "bytes", n)
				}
			}
			c.SetKeepState(true)
		}
		if err := c.Load(ctx, mod, source); err != nil {
			return 0, err
		}
	}
	if req.Intent != "" {
		m.host.ApplyIntent(ctx, c, req.IntentName, []byte(req.Intent), mod, source)
	}
	live := c.Info().Replicas
	if req.Replicas > live {
		live, _ = c.SpawnReplicas(ctx, req.Replicas-live)
	}
	m.remember(req.Entry, standInFor)
	if _, err := m.cfg.Journal.Append(journal.Entry{Cell: req.Cell, Verb: "spawn", Args: []string{fmt.Sprint(req.Replicas)},
		Rule: "fabric", Origin: req.Reason + " (asked by " + by + ")", Outcome: journal.Done,
		Message: fmt.Sprintf("serving %s from %s: %d live", req.SHA256[:12], req.From, live)}); err != nil {
		m.log.Error("journal", "err", err)
	}
	m.log.Info("serving a cell placed by the fabric", "cell", req.Cell, "sha256", req.SHA256[:12], "from", req.From, "reason", req.Reason)
	go m.updateMeta(context.WithoutCancel(ctx))
	return live, nil
}

// placementsFile persists the cells this node serves for the fleet.
func (m *Mesh) placementsFile() string {
	return filepath.Join(m.cfg.DataDir, "mesh", "placements.json")
}

// remember records (and persists) a cell this node serves for the fleet.
func (m *Mesh) remember(e Entry, standInFor string) {
	m.place.mu.Lock()
	if m.place.placed == nil {
		m.place.placed = map[string]placed{}
	}
	e.StandInFor = standInFor
	at := time.Now()
	if old, ok := m.place.placed[e.Cell]; ok && old.SHA256 == e.SHA256 && !old.PlacedAt.IsZero() {
		at = old.PlacedAt
	} else if t, ok := m.place.restoredAt[e.Cell]; ok && !t.IsZero() {
		at = t
	}
	delete(m.place.restoredAt, e.Cell)
	m.place.placed[e.Cell] = placed{Entry: e, PlacedAt: at}
	m.savePlacementsLocked()
	m.place.mu.Unlock()
}

// forget drops a cell this node no longer serves for the fleet.
func (m *Mesh) forget(cellName string) {
	m.place.mu.Lock()
	if _, ok := m.place.placed[cellName]; ok {
		delete(m.place.placed, cellName)
		m.savePlacementsLocked()
	}
	m.place.mu.Unlock()
}

func (m *Mesh) savePlacementsLocked() {
	list := make([]placed, 0, len(m.place.placed))
	for _, p := range m.place.placed {
		list = append(list, p)
	}
	slices.SortFunc(list, func(a, b placed) int { return cmpString(a.Cell, b.Cell) })
	if err := writeJSON(m.placementsFile(), list); err != nil {
		m.log.Error("persisting the cells this node serves for the fleet", "path", m.placementsFile(), "err", err)
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// restorePlacements serves again, after a restart, the cells this node
// served for the fleet, from its module store. A stand-in is restored as
// one: drained if its owner is back serving it.
func (m *Mesh) restorePlacements(ctx context.Context) {
	var list []placed
	if ok, err := readJSON(m.placementsFile(), &list); !ok {
		return
	} else if err != nil {
		m.log.Error("reading the cells this node served for the fleet; not restored", "path", m.placementsFile(), "err", err)
		return
	}
	m.place.mu.Lock()
	m.place.restoredAt = map[string]time.Time{}
	for _, p := range list {
		m.place.restoredAt[p.Cell] = p.PlacedAt
	}
	m.place.mu.Unlock()
	for _, p := range list {
		if !m.store.Has(p.SHA256) {
			m.log.Warn("a cell this node served for the fleet has no module here; not restored", "cell", p.Cell)
			continue
		}
		go func() {
			req := spawnRequest{Entry: p.Entry, From: m.cfg.Name, Replicas: p.Min, Reason: "this node served it before it restarted"}
			if _, err := m.spawnLocal(ctx, req, m.cfg.Name, p.StandInFor); err != nil {
				m.log.Error("restoring a cell this node served for the fleet", "cell", p.Cell, "err", err)
				return
			}
			if p.StandInFor != "" {
				m.place.mu.Lock()
				if m.place.healed == nil {
					m.place.healed = map[string]string{}
				}
				m.place.healed[p.Cell] = p.StandInFor
				m.place.mu.Unlock()
			}
		}()
	}
}

// syncLoop keeps the peers' catalogs current: a peer's catalog is pulled
// only when the version in its gossiped metadata differs from the one
// held, so an idle fleet exchanges no catalogs at all.
func (m *Mesh) syncLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		m.syncCatalogs(ctx)
		m.returnHealed(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.syncNow:
		}
	}
}

// syncCatalogs pulls the catalogs that changed and fetches the modules
// this node lacks, so that any survivor can take a dead node's cells over.
func (m *Mesh) syncCatalogs(ctx context.Context) {
	for _, mb := range m.Members() {
		if mb.Self || mb.State != "alive" {
			continue
		}
		m.place.mu.Lock()
		held := m.place.catalogs[mb.Name].version
		m.place.mu.Unlock()
		if mb.version == 0 || mb.version == held {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		p, err := m.f.Dial(rctx, mb.Addr)
		var b []byte
		if err == nil {
			b, err = p.Request(rctx, frame.TypeCatalog, nil)
		}
		cancel()
		var doc catalogDoc
		if err == nil {
			doc, err = decodeCatalog(b)
		}
		cat := doc.Cells
		if err != nil {
			if ctx.Err() == nil {
				m.log.Debug("catalog of a peer", "node", mb.Name, "err", err)
			}
			continue
		}
		m.log.Debug("pulled a peer's catalog", "node", mb.Name, "version", mb.version, "cells", len(cat))
		m.place.mu.Lock()
		if m.place.catalogs == nil {
			m.place.catalogs = map[string]peerCatalog{}
		}
		if old := m.place.catalogs[mb.Name].entries; len(old) > 0 {
			m.noteSeenLocked(old) // a cell it dropped existed until now
		}
		m.place.catalogs[mb.Name] = peerCatalog{version: catalogVersion(b), entries: cat, withdrawn: doc.Withdrawn}
		m.noteSeenLocked(cat)
		m.place.mu.Unlock()
		m.applyTombstones(ctx, mb.Name, doc.Withdrawn)
		if m.cfg.NoPrefetch {
			continue
		}
		for _, e := range cat {
			if m.store.Has(e.SHA256) {
				continue
			}
			fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			b, err := m.fetchFrom(fctx, e.SHA256, mb.Name)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					m.log.Warn("fetching a peer's module", "cell", e.Cell, "node", mb.Name, "err", err)
				}
				continue
			}
			m.host.Precompile(ctx, b)
			m.log.Debug("precompiled a peer's module", "cell", e.Cell, "sha256", e.SHA256[:12])
		}
	}
}

// readJSON decodes the JSON file at path into v; ok is false when there is
// no such file.
func readJSON(path string, v any) (ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	return true, err
}

// writeJSON writes v as indented JSON to path, whole (a temporary file
// renamed over it), creating the directory.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
