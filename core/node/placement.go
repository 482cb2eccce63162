package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/fabric"
	"github.com/celluster/celluster/core/fabric/frame"
	"github.com/celluster/celluster/core/hostapi"
	"github.com/celluster/celluster/core/intents"
	"github.com/celluster/celluster/core/journal"
	"github.com/celluster/celluster/core/wasm"
	pb "github.com/celluster/celluster/pluginapi/v1"
)

// catalogEntry is one cell a node serves, as the fabric learns of it:
// every node knows every cell's module hash and intent, and keeps the
// module bytes (fetched by hash, verified) so that it can take the cell
// over.
type catalogEntry struct {
	Cell   string `json:"cell"`
	SHA256 string `json:"sha256"`
	// Intent is the intent text in force, and IntentName where it came
	// from (for diagnostics).
	Intent     string `json:"intent,omitempty"`
	IntentName string `json:"intent_name,omitempty"`
	Min        int    `json:"min"`
}

// spawnRequest asks a peer to serve a cell.
type spawnRequest struct {
	catalogEntry
	// From is the node to fetch the module from when missing.
	From string `json:"from"`
	// Replicas is how many replicas to start.
	Replicas int `json:"replicas"`
	// Reason is journaled by the peer.
	Reason string `json:"reason"`
}

// placement keeps what the mesh knows about cells.
type placement struct {
	mu sync.Mutex
	// catalogs holds each peer's last catalog, by node name.
	catalogs map[string][]catalogEntry
	// healed maps the cells this node took over from a dead node to that
	// node: when it comes back (a partition healed) serving the cell, the
	// copy here is drained, so no state stays duplicated.
	healed map[string]string
}

// moduleDir is the node's content store: modules by sha256.
func (n *Node) moduleDir() string { return filepath.Join(n.cfg.DataDir, "modules") }

// storeModule keeps module bytes under their sha256.
func (n *Node) storeModule(b []byte) (string, error) {
	sum := sha256.Sum256(b)
	sha := hex.EncodeToString(sum[:])
	path := filepath.Join(n.moduleDir(), sha+".wasm")
	if _, err := os.Stat(path); err == nil {
		return sha, nil
	}
	if err := os.MkdirAll(n.moduleDir(), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(n.moduleDir(), ".module-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return sha, os.Rename(tmp.Name(), path)
}

// loadModule reads a stored module and checks its hash.
func (n *Node) loadModule(sha string) ([]byte, error) {
	if len(sha) != 64 || strings.Trim(sha, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("module hash %q is not a hex sha256", sha)
	}
	b, err := os.ReadFile(filepath.Join(n.moduleDir(), sha+".wasm"))
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != sha {
		return nil, fmt.Errorf("stored module %s does not match its hash", sha[:12])
	}
	return b, nil
}

// catalog lists the cells this node serves.
func (m *mesh) catalog() []catalogEntry {
	n := m.n
	var out []catalogEntry
	for _, in := range n.reg.List() {
		if in.SHA256 == "" {
			continue
		}
		e := catalogEntry{Cell: in.Name, SHA256: in.SHA256, Min: max(in.Policy.Min, 1)}
		if it, ok := n.Intent(in.Name); ok && it.Origin != string(intents.FromDefault) {
			e.Intent, e.IntentName = it.Text, it.Source
		}
		out = append(out, e)
	}
	return out
}

// handlePlacement registers the fabric requests for catalogs, modules and
// spawns.
func (m *mesh) handlePlacement() {
	m.f.HandleStream(frame.TypeCatalog, func(ctx context.Context, peer string, s *fabric.Stream) {
		if _, _, err := frame.Read(s, 1024); err != nil {
			return
		}
		b, _ := json.Marshal(m.catalog())
		_ = frame.Write(s, frame.TypeResponse, b)
	})
	m.f.HandleStream(frame.TypeModule, func(ctx context.Context, peer string, s *fabric.Stream) {
		_, p, err := frame.Read(s, 1024)
		if err != nil {
			return
		}
		b, err := m.n.loadModule(string(p))
		if err != nil {
			_ = frame.Write(s, frame.TypeError, []byte(fmt.Sprintf("module %s: %v", p, err)))
			return
		}
		_ = frame.Write(s, frame.TypeResponse, b)
	})
	m.f.HandleStream(frame.TypeSpawn, func(ctx context.Context, peer string, s *fabric.Stream) {
		_, p, err := frame.Read(s, 1<<20)
		if err != nil {
			return
		}
		var req spawnRequest
		if err := json.Unmarshal(p, &req); err != nil {
			_ = frame.Write(s, frame.TypeError, []byte("spawn request: "+err.Error()))
			return
		}
		live, err := m.spawnLocal(ctx, req, peer)
		if err != nil {
			_ = frame.Write(s, frame.TypeError, []byte(err.Error()))
			return
		}
		_ = frame.Write(s, frame.TypeResponse, []byte(fmt.Sprint(live)))
	})
}

// fetchModule returns the module from the store, or fetches it from a peer
// and verifies its hash.
func (m *mesh) fetchModule(ctx context.Context, sha, from string) ([]byte, error) {
	if b, err := m.n.loadModule(sha); err == nil {
		return b, nil
	}
	addr := m.addrOf(from)
	if addr == "" {
		return nil, fmt.Errorf("module %s: node %s is not a live member", sha[:12], from)
	}
	p, err := m.f.Dial(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("module %s from %s: %w", sha[:12], from, err)
	}
	b, err := p.Request(ctx, frame.TypeModule, []byte(sha))
	if err != nil {
		return nil, fmt.Errorf("module %s from %s: %w", sha[:12], from, err)
	}
	got, err := m.n.storeModule(b)
	if err != nil {
		return nil, fmt.Errorf("storing module %s: %w", sha[:12], err)
	}
	if got != sha {
		_ = os.Remove(filepath.Join(m.n.moduleDir(), got+".wasm"))
		return nil, fmt.Errorf("module from %s hashes to %s, not %s: refused", from, got[:12], sha[:12])
	}
	return b, nil
}

func (m *mesh) addrOf(node string) string {
	for _, mb := range m.f.Members() {
		if mb.Name == node && mb.State == fabric.StateAlive {
			return mb.Addr
		}
	}
	return ""
}

// spawnLocal starts serving a cell this node was asked to (or chose to)
// take: the module by hash, the intent as given.
func (m *mesh) spawnLocal(ctx context.Context, req spawnRequest, by string) (int, error) {
	n := m.n
	if err := cell.ValidName(req.Cell); err != nil {
		return 0, err
	}
	mod, err := m.fetchModule(ctx, req.SHA256, req.From)
	if err != nil {
		return 0, err
	}
	if err := n.reg.Declare(req.Cell); err != nil {
		return 0, err
	}
	c := n.reg.Lookup(req.Cell)
	source := "node " + req.From + " (sha256 " + req.SHA256[:12] + ")"
	if c.Info().SHA256 != req.SHA256 {
		if err := c.Load(ctx, mod, source); err != nil {
			return 0, err
		}
	}
	if req.Intent != "" {
		n.applySource(ctx, c, intents.Source{Origin: intents.FromFile, Name: req.IntentName, Content: []byte(req.Intent)}, mod, source)
	}
	live := c.Info().Replicas
	if req.Replicas > live {
		live, _ = c.SpawnReplicas(ctx, req.Replicas-live)
	}
	if _, err := n.journal.Append(journal.Entry{Cell: req.Cell, Verb: "spawn", Args: []string{fmt.Sprint(req.Replicas)},
		Rule: "fabric", Origin: req.Reason + " (asked by " + by + ")", Outcome: journal.Done,
		Message: fmt.Sprintf("serving %s from %s: %d live", req.SHA256[:12], req.From, live)}); err != nil {
		n.log.Error("journal", "err", err)
	}
	n.log.Info("serving a cell placed by the fabric", "cell", req.Cell, "sha256", req.SHA256[:12], "from", req.From, "reason", req.Reason)
	return live, nil
}

// syncCatalogs pulls every live peer's catalog and fetches the modules this
// node lacks, so that any survivor can take a dead node's cells over.
func (m *mesh) syncCatalogs(ctx context.Context) {
	for _, mb := range m.f.Members() {
		if mb.Name == m.n.cfg.Name || mb.State != fabric.StateAlive {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		p, err := m.f.Dial(rctx, mb.Addr)
		var b []byte
		if err == nil {
			b, err = p.Request(rctx, frame.TypeCatalog, nil)
		}
		cancel()
		var cat []catalogEntry
		if err == nil {
			err = json.Unmarshal(b, &cat)
		}
		if err != nil {
			if ctx.Err() == nil {
				m.n.log.Debug("catalog of a peer", "node", mb.Name, "err", err)
			}
			continue
		}
		m.place.mu.Lock()
		if m.place.catalogs == nil {
			m.place.catalogs = map[string][]catalogEntry{}
		}
		m.place.catalogs[mb.Name] = cat
		m.place.mu.Unlock()
		for _, e := range cat {
			if m.n.cfg.NoPrefetch {
				break
			}
			if _, err := m.n.loadModule(e.SHA256); err == nil {
				continue
			}
			fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			b, err := m.fetchModule(fctx, e.SHA256, mb.Name)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					m.n.log.Warn("fetching a peer's module", "cell", e.Cell, "node", mb.Name, "err", err)
				}
				continue
			}
			// Compile it now (kept in the engine's cache and on disk), so
			// taking the cell over or a clone onto this node starts at once.
			if mod, err := m.n.eng.Compile(ctx, b, wasm.CompileOptions{MemoryLimit: m.n.cfg.Limits.Memory}); err == nil {
				mod.Release()
				m.n.log.Debug("precompiled a peer's module", "cell", e.Cell, "sha256", e.SHA256[:12])
			}
		}
	}
}

// returnHealed drains the cells this node took over from a node that is
// back and serves them again (a healed partition): the returning node's
// copy is the cell's home, this one was a stand-in.
func (m *mesh) returnHealed(ctx context.Context) {
	m.place.mu.Lock()
	var back []string
	for cellName, owner := range m.place.healed {
		if m.addrOf(owner) == "" {
			continue
		}
		for _, e := range m.place.catalogs[owner] {
			if e.Cell == cellName {
				back = append(back, cellName)
				delete(m.place.healed, cellName)
			}
		}
	}
	m.place.mu.Unlock()
	for _, cellName := range back {
		dctx, cancel := context.WithTimeout(ctx, m.n.cfg.DrainTimeout)
		removed := m.n.reg.Remove(dctx, cellName)
		cancel()
		if removed {
			m.n.forgetIntent(cellName)
			if _, err := m.n.journal.Append(journal.Entry{Cell: cellName, Verb: "decay", Args: []string{"all"}, Rule: "fabric",
				Origin: "the node this cell was taken over from is back and serves it", Outcome: journal.Done,
				Message: "stand-in drained and removed: one copy again"}); err != nil {
				m.n.log.Error("journal", "err", err)
			}
			m.n.log.Info("a partition healed: drained the stand-in copy", "cell", cellName)
		}
	}
}

// syncLoop keeps the catalogs current.
func (m *mesh) syncLoop(ctx context.Context) {
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

// rendezvous picks, among candidates, the node with the highest hash of
// (key, node): every node computes the same winner from the same
// membership, so exactly one acts and nobody coordinates.
func rendezvous(key string, candidates []string) string {
	var best string
	var bestH uint64
	for _, c := range candidates {
		h := fnv.New64a()
		h.Write([]byte(key))
		h.Write([]byte{0})
		h.Write([]byte(c))
		if v := h.Sum64(); best == "" || v > bestH || (v == bestH && c < best) {
			best, bestH = c, v
		}
	}
	return best
}

// heal runs when a node is declared dead: for each cell the dead node
// served that no live node serves any more, the rendezvous winner among
// the live nodes takes it over from its stored module and intent.
func (m *mesh) heal(ctx context.Context, dead string) {
	m.place.mu.Lock()
	lost := m.place.catalogs[dead]
	delete(m.place.catalogs, dead)
	m.place.mu.Unlock()
	if len(lost) == 0 {
		return
	}
	var alive []string
	for _, mb := range m.f.Members() {
		if mb.State == fabric.StateAlive {
			alive = append(alive, mb.Name)
		}
	}
	sort.Strings(alive)
	for _, e := range lost {
		if m.servedElsewhere(e.Cell, dead) {
			continue
		}
		winner := rendezvous(e.Cell, alive)
		if winner != m.n.cfg.Name {
			m.n.log.Info("a dead node's cell is taken over by another node", "cell", e.Cell, "dead", dead, "by", winner)
			continue
		}
		req := spawnRequest{catalogEntry: e, From: m.n.cfg.Name, Replicas: e.Min,
			Reason: "node " + dead + " died; this node won the rendezvous among " + strings.Join(alive, ", ")}
		if _, err := m.spawnLocal(ctx, req, m.n.cfg.Name); err != nil {
			m.n.log.Error("taking over a dead node's cell", "cell", e.Cell, "dead", dead, "err", err)
			continue
		}
		m.place.mu.Lock()
		if m.place.healed == nil {
			m.place.healed = map[string]string{}
		}
		m.place.healed[e.Cell] = dead
		m.place.mu.Unlock()
	}
}

// servedElsewhere reports whether a live node other than dead serves cell
// (this node included).
func (m *mesh) servedElsewhere(cellName, dead string) bool {
	if c := m.n.reg.Lookup(cellName); c != nil && c.Info().SHA256 != "" {
		return true
	}
	m.place.mu.Lock()
	defer m.place.mu.Unlock()
	for node, cat := range m.place.catalogs {
		if node == dead || m.addrOf(node) == "" {
			continue
		}
		for _, e := range cat {
			if e.Cell == cellName {
				return true
			}
		}
	}
	return false
}

// errNoPeer is returned when a placement names no live peer.
var errNoPeer = errors.New("no live peer")

// PlaceOnPeer asks a peer (or, with node "", the least loaded live peer
// not serving the cell) to serve replicas of a local cell; the peer
// fetches the module by hash if it lacks it.
func (n *Node) PlaceOnPeer(ctx context.Context, cellName, node string, replicas int, reason string) (string, int, error) {
	if n.mesh == nil {
		return "", 0, fmt.Errorf("this node runs without a fabric: %w", errNoPeer)
	}
	m := n.mesh
	var entry *catalogEntry
	for _, e := range m.catalog() {
		if e.Cell == cellName {
			entry = &e
		}
	}
	if entry == nil {
		return "", 0, fmt.Errorf("no cell %s on this node", cellName)
	}
	if node == "" {
		// The intent's preferred nodes first, never an avoided one; else
		// the least loaded live node not serving the cell yet (so clones
		// spread across nodes).
		best := choosePeer(n.Members(), cellName, n.callPolicyOf(cellName))
		if best == nil {
			return "", 0, fmt.Errorf("every live peer already serves %s: %w", cellName, errNoPeer)
		}
		node = best.Name
	}
	addr := m.addrOf(node)
	if addr == "" {
		return "", 0, fmt.Errorf("node %s: %w", node, errNoPeer)
	}
	p, err := m.f.Dial(ctx, addr)
	if err != nil {
		return node, 0, err
	}
	b, _ := json.Marshal(spawnRequest{catalogEntry: *entry, From: n.cfg.Name, Replicas: max(replicas, 1), Reason: reason})
	out, err := p.Request(ctx, frame.TypeSpawn, b)
	if err != nil {
		return node, 0, err
	}
	var live int
	_, _ = fmt.Sscan(string(out), &live)
	return node, live, nil
}

// placer is the node as the host service's Placer, or nil without a
// fabric. The fabric starts after the plugins, so the check is per call.
func (n *Node) placer() hostapi.Placer { return meshPlacer{n} }

type meshPlacer struct{ n *Node }

func (p meshPlacer) Nodes() []*pb.NodeState {
	var out []*pb.NodeState
	for _, m := range p.n.Members() {
		out = append(out, &pb.NodeState{Name: m.Name, State: m.State, Load: m.Load, Cells: m.Cells, Self: m.Self})
	}
	return out
}

func (p meshPlacer) Placement(cellName string) (bool, []string, []string) {
	pol := p.n.callPolicyOf(cellName)
	return pol.spread, pol.prefer, pol.avoid
}

func (p meshPlacer) SetNodeWeights(cellName string, weights map[string]uint32) error {
	return p.n.SetNodeWeights(cellName, weights)
}

func (p meshPlacer) PlaceOnPeer(ctx context.Context, cellName, node string, replicas int, reason string) (string, int, error) {
	return p.n.PlaceOnPeer(ctx, cellName, node, replicas, reason)
}

// choosePeer picks the node for a replica of a cell: a live peer not
// serving it yet and not avoided by the intent, the intent's preferred
// nodes first, then the least loaded; nil when there is none.
func choosePeer(members []Member, cellName string, pol callPolicy) *Member {
	var best *Member
	for _, mb := range members {
		if mb.Self || mb.State != "alive" || slices.Contains(mb.Cells, cellName) || slices.Contains(pol.avoid, mb.Name) {
			continue
		}
		bp, mp := best != nil && slices.Contains(pol.prefer, best.Name), slices.Contains(pol.prefer, mb.Name)
		if best == nil || (mp && !bp) || (mp == bp && mb.Load < best.Load) {
			best = &mb
		}
	}
	return best
}
