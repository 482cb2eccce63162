package mesh

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/fabric/frame"
	"github.com/celluster/celluster/core/journal"
	"github.com/celluster/celluster/core/wasm/snapshot"
)

// Kept state across nodes. A cell whose intent says `keep state` takes its
// state along when it is placed on a peer: the peer asks the placing node
// for it (TypeState) before it loads the module, and its first replicas
// continue from it. With `keep state replicated every D`, the node serving
// the cell (its home, or a stand-in) also pushes the state every D
// (TypeStatePush) to the survivor rendezvous hashing would choose should
// the node die — the same ranking take-overs use — which keeps the newest
// copy; when it takes the cell over it restores that copy, and the
// journal says how old it is. A state is encoded by package snapshot
// against the module's data and verified by the receiver when it is
// restored; a refused one means a fresh start, journaled with the reason.
// States travel only between members of the fabric, which are nodes of
// the same trust domain.

// stateRequest asks a node for a cell's state.
type stateRequest struct {
	Cell   string `json:"cell"`
	SHA256 string `json:"sha256"`
}

// stateRecheck is how often the replication loop looks for cells that
// newly ask for replication when no push is due sooner: an idle node (no
// cell replicated) wakes once a second for it, not ten times.
const stateRecheck = time.Second

// replication remembers what was pushed for each cell.
type replication struct {
	mu   sync.Mutex
	last map[string]pushed
}

type pushed struct {
	at   time.Time
	to   string
	err  string
	size int
}

// handleState registers the fabric requests for states.
func (m *Mesh) handleState() {
	m.f.HandleRequest(frame.TypeState, 1024, func(ctx context.Context, peer string, p []byte) ([]byte, error) {
		var req stateRequest
		if err := json.Unmarshal(p, &req); err != nil {
			return nil, fmt.Errorf("state request: %w", err)
		}
		if err := cell.ValidName(req.Cell); err != nil {
			return nil, err
		}
		return m.encodeState(req.Cell, req.SHA256)
	})
	m.f.HandleRequest(frame.TypeStatePush, m.maxState(), m.answerStatePush)
}

// maxState bounds an encoded state on the wire: the fabric's frame limit.
func (m *Mesh) maxState() int { return frame.DefaultMax }

// encodeState returns the state of a local cell, encoded.
func (m *Mesh) encodeState(cellName, sha string) ([]byte, error) {
	c := m.reg.Lookup(cellName)
	if c == nil {
		return nil, fmt.Errorf("no cell %s on node %s", cellName, m.cfg.Name)
	}
	s, mod, err := c.ExportState(sha)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, err := mod.EncodeSnapshot(&buf, s, snapshot.KindState); err != nil {
		return nil, fmt.Errorf("cell %s: encoding its state: %w", cellName, err)
	}
	if buf.Len() > m.maxState() {
		return nil, fmt.Errorf("cell %s: its state encodes to %d bytes, more than the fabric's %d-byte frames", cellName, buf.Len(), m.maxState())
	}
	return buf.Bytes(), nil
}

// fetchState asks node from for a cell's state and hands it to the host
// for the cell's next load. Errors are the caller's to report.
func (m *Mesh) fetchState(ctx context.Context, cellName, sha, from string) (int, error) {
	addr := m.addrOf(from)
	if addr == "" || from == m.cfg.Name {
		return 0, fmt.Errorf("node %s: %w", from, ErrNoPeer)
	}
	p, err := m.f.Dial(ctx, addr)
	if err != nil {
		return 0, err
	}
	req, _ := json.Marshal(stateRequest{Cell: cellName, SHA256: sha})
	b, err := p.Request(ctx, frame.TypeState, req)
	if err != nil {
		return 0, fmt.Errorf("state of %s from node %s: %w", cellName, from, err)
	}
	if err := m.host.AdoptState(cellName, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// answerStatePush keeps a peer's pushed state for the cell: if the peer
// dies and this node takes the cell over, it continues from it.
func (m *Mesh) answerStatePush(_ context.Context, peer string, p []byte) ([]byte, error) {
	hdr, state, err := parseStatePush(p)
	if err != nil {
		return nil, err
	}
	if c := m.reg.Lookup(hdr.Cell); c != nil && c.Info().SHA256 != "" {
		if _, ours := m.placedHere(hdr.Cell); !ours {
			// This node serves the cell itself (its home): its own state
			// is the one to keep.
			return nil, fmt.Errorf("node %s serves cell %s itself; it keeps its own state", m.cfg.Name, hdr.Cell)
		}
	}
	if err := m.host.AdoptState(hdr.Cell, state); err != nil {
		return nil, err
	}
	m.log.Debug("kept a peer's state copy", "cell", hdr.Cell, "from", peer, "bytes", len(state))
	m.place.mu.Lock()
	pc, known := m.place.catalogs[peer]
	listed := slices.ContainsFunc(pc.entries, func(e Entry) bool { return e.Cell == hdr.Cell })
	if known && !listed {
		// The peer serves a cell its catalog as held here does not list
		// (its news not pulled yet): pull it now, so that the cell is
		// taken over should the peer die.
		pc.version = 0
		m.place.catalogs[peer] = pc
	}
	m.place.mu.Unlock()
	if !listed {
		m.kick()
	}
	return []byte("1"), nil
}

// parseStatePush splits a state push into its header and the encoded
// state (which the snapshot decoder verifies when it is restored).
func parseStatePush(p []byte) (stateRequest, []byte, error) {
	var hdr stateRequest
	if len(p) < 4 {
		return hdr, nil, errors.New("state push: no header")
	}
	n := binary.BigEndian.Uint32(p)
	if uint64(n) > uint64(len(p)-4) || n > 4096 {
		return hdr, nil, fmt.Errorf("state push: header of %d bytes in a %d-byte payload", n, len(p))
	}
	if err := json.Unmarshal(p[4:4+n], &hdr); err != nil {
		return hdr, nil, fmt.Errorf("state push: header: %w", err)
	}
	if err := cell.ValidName(hdr.Cell); err != nil {
		return hdr, nil, fmt.Errorf("state push: %w", err)
	}
	if !validSHA(hdr.SHA256) {
		return hdr, nil, fmt.Errorf("state push: module hash %q is not a hex sha256", hdr.SHA256)
	}
	return hdr, p[4+n:], nil
}

// placedHere reports whether this node serves cellName for the fleet (a
// placed copy or a stand-in) and the entry.
func (m *Mesh) placedHere(cellName string) (placed, bool) {
	m.place.mu.Lock()
	defer m.place.mu.Unlock()
	p, ok := m.place.placed[cellName]
	return p, ok
}

// replicateLoop pushes the state of every cell that asks for it (`keep
// state replicated every D`) and that this node serves as home or
// stand-in, every D, to the survivor next in line for it.
func (m *Mesh) replicateLoop(ctx context.Context) {
	t := time.NewTimer(stateRecheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(m.replicateDue(ctx))
	}
}

// replicateDue pushes every state that is due and returns how long until
// the next one is (at most stateRecheck).
func (m *Mesh) replicateDue(ctx context.Context) time.Duration {
	next := stateRecheck
	for _, c := range m.reg.Cells() {
		pol := c.Policy()
		if !pol.KeepState || pol.StateEvery <= 0 {
			continue
		}
		if p, ok := m.placedHere(c.Name()); ok && p.StandInFor == "" {
			continue // a placed copy: its home replicates
		}
		m.repl.mu.Lock()
		last := m.repl.last[c.Name()]
		m.repl.mu.Unlock()
		wait := pol.StateEvery - time.Since(last.at)
		if wait <= 0 {
			m.replicate(ctx, c, last)
			wait = pol.StateEvery
		}
		next = min(next, wait)
	}
	return max(next, 10*time.Millisecond)
}

// replicate pushes c's state to the survivor next in line for it.
func (m *Mesh) replicate(ctx context.Context, c *cell.Cell, last pushed) {
	name := c.Name()
	var others []string
	for _, n := range m.alive() {
		if n != m.cfg.Name {
			others = append(others, n)
		}
	}
	rec := pushed{at: time.Now(), to: last.to}
	defer func() {
		m.repl.mu.Lock()
		if m.repl.last == nil {
			m.repl.last = map[string]pushed{}
		}
		m.repl.last[name] = rec
		m.repl.mu.Unlock()
	}()
	if len(others) == 0 {
		return
	}
	to := Rendezvous(name, others)[0]
	st, err := m.encodeState(name, "")
	if err != nil {
		rec.err = err.Error()
		if last.err != rec.err {
			m.log.Warn("cannot replicate a cell's state", "cell", name, "err", err)
		}
		return
	}
	hdr, _ := json.Marshal(stateRequest{Cell: name, SHA256: c.Info().SHA256})
	payload := binary.BigEndian.AppendUint32(nil, uint32(len(hdr)))
	payload = append(append(payload, hdr...), st...)
	addr := m.addrOf(to)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p, err := m.f.Dial(pctx, addr)
	if err == nil {
		_, err = p.Request(pctx, frame.TypeStatePush, payload)
	}
	if err != nil {
		rec.err = err.Error()
		if last.err != rec.err {
			m.log.Warn("cannot replicate a cell's state", "cell", name, "to", to, "err", err)
		}
		return
	}
	rec.to, rec.size, rec.err = to, len(st), ""
	if to != last.to {
		m.log.Info("replicating a cell's state", "cell", name, "to", to, "bytes", len(st))
		if _, err := m.cfg.Journal.Append(journal.Entry{Cell: name, Verb: "state", Args: []string{"replicate", to}, Rule: journal.RuleNote,
			Outcome: journal.Note, Message: fmt.Sprintf("state replicated to node %s, next in line should this node die (%d bytes)", to, len(st))}); err != nil {
			m.log.Error("journal", "err", err)
		}
	}
}
