package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/fabric"
	"github.com/celluster/celluster/core/fabric/frame"
	"github.com/celluster/celluster/core/tracing"
	"github.com/celluster/celluster/pluginapi/cellabi"
)

// transitionWait bounds how long a request for a cell that exists in the
// fleet but has no live replica right now (a take-over under way) waits
// before it is answered 503 with Retry-After.
const transitionWait = 2 * time.Second

// maxForwardBody bounds a forwarded request's body.
const maxForwardBody = 8 << 20

// Handler is what the ingress serves for a cell: local is this node's
// copy (nil if none). By the cell's node weights when `reroute` set them;
// else the local copy, unless it is saturated and a peer has room; else a
// remote replica chosen by two random choices on the gossiped load. A cell
// the fleet has but no live node serves right now is waited for (bounded)
// and then answered 503 with Retry-After, never 404. Nil: no node of the
// fleet knows the cell.
func (m *Mesh) Handler(name string, local http.Handler) http.Handler {
	if peer, ok := m.pickByWeight(name); ok {
		if peer == nil {
			return localHandler(local) // this node's share
		}
		return m.forwarder(name, peer)
	}
	if local != nil {
		c := m.reg.Lookup(name)
		if c == nil || c.Queued() == 0 {
			return localHandler(local)
		}
		// Saturated: a peer with the cell and less load takes the request.
		if peer := m.pickReplica(name, c.Queued()+c.InFlight(), nil); peer != nil {
			return m.forwarder(name, peer)
		}
		return localHandler(local)
	}
	if _, gone := m.withdrawn(name, ""); gone && !m.homeServes(name) {
		// Its home withdrew it moments ago and serves it no more: the
		// peers' news may still list copies being drained; 404 now rather
		// than a forward to one.
		return nil
	}
	if peer := m.pickReplica(name, -1, nil); peer != nil {
		return m.forwarder(name, peer)
	}
	if !m.inFleet(name) {
		return nil
	}
	return m.forwarder(name, nil)
}

func localHandler(h http.Handler) http.Handler {
	if h == nil {
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		req.Header.Del(cell.CallerHeader) // only the runtime sets it
		h.ServeHTTP(w, req)
	})
}

// inFleet reports whether the cell exists in the fleet: served or being
// taken over by a live node, an orphan of a dead one, or listed by a peer
// within seenFor (its last copy moving: a stand-in drained for a home this
// node does not see back yet).
func (m *Mesh) inFleet(name string) bool {
	if m.reg.Lookup(name) != nil || len(m.holders(name, true)) > 0 {
		return true
	}
	m.place.mu.Lock()
	defer m.place.mu.Unlock()
	if _, ok := m.place.orphans[name]; ok {
		return true
	}
	return time.Since(m.place.seen[name]) <= seenFor
}

// pickReplica chooses a live peer serving the cell, not in skip, with a
// load below limit (no limit when negative): the less loaded of two picked
// at random (ties broken at random), so a forwarding node spreads its
// requests over the replicas. Nil when there is none.
func (m *Mesh) pickReplica(name string, limit int64, skip []string) *Member {
	var cands []Member
	for _, mb := range m.Members() {
		if mb.Self || mb.State != "alive" || !slices.Contains(mb.Cells, name) || slices.Contains(skip, mb.Name) ||
			(limit >= 0 && mb.Load >= limit) {
			continue
		}
		cands = append(cands, mb)
	}
	return twoChoices(cands)
}

// twoChoices picks the less loaded of two members drawn at random (the
// only one, or nil); equal loads leave the random draw.
func twoChoices(cands []Member) *Member {
	switch len(cands) {
	case 0:
		return nil
	case 1:
		return &cands[0]
	}
	i := rand.IntN(len(cands))
	j := rand.IntN(len(cands) - 1)
	if j >= i {
		j++
	}
	if cands[j].Load < cands[i].Load {
		i = j
	}
	return &cands[i]
}

// SetNodeWeights sets how a cell's requests arriving here are shared among
// nodes (this one by its name): a weighted round robin over the named live
// nodes that serve the cell. All-zero weights clear them.
func (m *Mesh) SetNodeWeights(cellName string, weights map[string]uint32) error {
	members := map[string]bool{}
	for _, mb := range m.Members() {
		members[mb.Name] = true
	}
	var total uint32
	for node, w := range weights {
		if !members[node] {
			return fmt.Errorf("no node %q in the fabric", node)
		}
		total += w
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.weights == nil {
		m.weights = map[string]map[string]uint32{}
	}
	if total == 0 {
		delete(m.weights, cellName)
		return nil
	}
	m.weights[cellName] = weights
	m.log.Info("node route weights set", "cell", cellName, "weights", weights)
	return nil
}

// pickByWeight chooses a node for a request by the cell's node weights:
// ok is false without weights; a nil member means this node.
func (m *Mesh) pickByWeight(name string) (*Member, bool) {
	m.mu.Lock()
	ws := m.weights[name]
	m.mu.Unlock()
	if len(ws) == 0 {
		return nil, false
	}
	type cand struct {
		mb Member
		w  uint64
	}
	var cands []cand
	var total uint64
	for _, mb := range m.Members() {
		w := ws[mb.Name]
		if w == 0 || mb.State != "alive" {
			continue
		}
		if mb.Self {
			if m.reg.Lookup(name) == nil {
				continue
			}
		} else if !slices.Contains(mb.Cells, name) {
			continue
		}
		cands = append(cands, cand{mb, uint64(w)})
		total += uint64(w)
	}
	if total == 0 {
		return nil, false
	}
	k := (m.rr.Add(1) * 1_000_003) % total
	for _, c := range cands {
		if k < c.w {
			if c.mb.Self {
				return nil, true
			}
			mb := c.mb
			return &mb, true
		}
		k -= c.w
	}
	return nil, false
}

// idempotent reports whether a request may be sent again after a failure
// that may have reached the cell.
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions:
		return true
	}
	return false
}

// errNotServed is a peer's answer for a cell it does not serve (the
// request never reached a cell: any request may go elsewhere).
const errNotServed = "is not served on node"

// errUnreached: the request could not be sent (no connection to the peer).
var errUnreached = errors.New("unreachable")

// notServed reports whether a request failed before it reached a cell.
func notServed(err error) bool {
	var re *fabric.RemoteError
	return errors.Is(err, errUnreached) || (errors.As(err, &re) && strings.Contains(re.Message, errNotServed))
}

// forwarder serves a request with a peer's replica of the cell (peer, or
// one picked when nil). A request that fails on the way is sent to
// another replica when it never reached a cell or is idempotent; with no
// replica left it waits (bounded) for one, then answers 503 with
// Retry-After.
func (m *Mesh) forwarder(name string, peer *Member) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxForwardBody))
		if err != nil {
			http.Error(w, "request body too large to forward", http.StatusRequestEntityTooLarge)
			return
		}
		r.Header.Del(cell.CallerHeader) // only the runtime sets it
		// With the v1.1 metadata: the cell sees the client this node saw.
		req := cell.EnvelopeRequest(r, body)
		req.Headers = append(req.Headers, cellabi.Header{Name: ForwardedByHeader, Value: m.cfg.Name})
		env := cellabi.AppendRequest(nil, &req)
		out, servedBy, err := m.send(r.Context(), name, "", env, peer, idempotent(r.Method))
		if err != nil {
			if r.Context().Err() != nil {
				return
			}
			var unavailable *unavailableError
			if errors.As(err, &unavailable) {
				w.Header().Set("Retry-After", "1")
				http.Error(w, "cell "+name+" is moving between nodes; retry", http.StatusServiceUnavailable)
				return
			}
			m.log.Warn("forwarding failed", "cell", name, "err", err)
			http.Error(w, "cell "+name+": the node serving it did not answer", http.StatusBadGateway)
			return
		}
		resp, err := cellabi.DecodeResponse(out)
		if err != nil {
			m.log.Warn("a peer answered a malformed response", "cell", name, "node", servedBy, "err", err)
			http.Error(w, "cell "+name+": malformed answer from node "+servedBy, http.StatusBadGateway)
			return
		}
		for _, h := range resp.Headers {
			w.Header().Add(h.Name, h.Value)
		}
		if servedBy != m.cfg.Name {
			w.Header().Set(ServedByHeader, servedBy)
		}
		w.WriteHeader(resp.Status)
		_, _ = w.Write(resp.Body)
	})
}

// unavailableError: the cell exists in the fleet but no replica could be
// reached within transitionWait.
type unavailableError struct{ cell string }

func (e *unavailableError) Error() string {
	return "cell " + e.cell + ": no live replica within " + transitionWait.String()
}

// send delivers a request envelope for a cell (from caller, "" for a
// request from outside) to a replica: peer if given, else one picked; on a
// failure that allows it (never reached a cell, or retry is true) to
// another; when none is live, it waits for the fleet to bring one up (a
// take-over) at most transitionWait. A copy that appears on this node
// serves it here. It returns the response envelope and the node that
// answered.
func (m *Mesh) send(ctx context.Context, name, caller string, env []byte, peer *Member, retry bool) ([]byte, string, error) {
	var tried []string
	var lastErr error
	deadline := time.Now().Add(transitionWait)
	for attempt := 0; ; attempt++ {
		if peer == nil {
			if c := m.reg.Lookup(name); c != nil && c.Info().SHA256 != "" {
				return m.serveLocal(ctx, c, caller, "", env), m.cfg.Name, nil
			}
			peer = m.pickReplica(name, -1, tried)
		}
		if peer == nil {
			if time.Now().After(deadline) || !m.inFleet(name) || attempt > 200 {
				if lastErr != nil && !m.inFleet(name) {
					return nil, "", lastErr
				}
				return nil, "", &unavailableError{name}
			}
			select {
			case <-ctx.Done():
				return nil, "", ctx.Err()
			case <-time.After(25 * time.Millisecond):
			}
			continue
		}
		out, err := m.requestCell(ctx, *peer, name, caller, env)
		if err == nil {
			return out, peer.Name, nil
		}
		lastErr = err
		if ctx.Err() != nil || !(retry || notServed(err)) {
			return nil, "", err
		}
		m.log.Info("a replica failed a request; trying another", "cell", name, "node", peer.Name, "err", err)
		tried = append(tried, peer.Name)
		peer = nil
	}
}

// requestCell sends a cell request frame to a peer and returns its
// response envelope, bounded by the request time limit.
func (m *Mesh) requestCell(ctx context.Context, peer Member, cellName, caller string, env []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout+5*time.Second)
	defer cancel()
	if tracing.Enabled() {
		var span trace.Span
		ctx, span = tracing.Start(ctx, "fabric "+peer.Name, trace.SpanKindClient,
			attribute.String("celluster.cell", cellName), attribute.String("celluster.node", peer.Name))
		defer span.End()
		env = tracing.InjectEnvelope(ctx, env)
	}
	p, err := m.f.Dial(ctx, peer.Addr)
	if err != nil {
		return nil, fmt.Errorf("cell %s lives on node %s, which is %w: %w", cellName, peer.Name, errUnreached, err)
	}
	out, err := p.Request(ctx, frame.TypeRequest, appendRequestFrame(nil, cellName, caller, env))
	if err != nil {
		trace.SpanFromContext(ctx).SetStatus(codes.Error, err.Error())
		return nil, fmt.Errorf("forwarding to node %s: %w", peer.Name, err)
	}
	return out, nil
}

// serveLocal serves an envelope with a local cell, from a caller cell
// (if any) through node via ("" for this node).
func (m *Mesh) serveLocal(ctx context.Context, c *cell.Cell, caller, via string, env []byte) []byte {
	f := cell.From{Node: via}
	if caller != "" {
		f.Cell, f.CellID = caller, m.cellID(caller)
	}
	return c.ServeEnvelope(ctx, env, f)
}

// cellID is a cell's SPIFFE ID in this trust domain.
func (m *Mesh) cellID(name string) string { return "spiffe://" + m.td.Name() + "/cell/" + name }

// serveRequest answers a cell request frame from a peer: a forwarded
// request, or a cell-to-cell call (the caller in the frame, the peer as
// the fabric verified it). A cell being taken over here is waited for.
func (m *Mesh) serveRequest(ctx context.Context, peer string, payload []byte) ([]byte, error) {
	name, caller, env, err := decodeRequestFrame(payload)
	if err != nil {
		m.log.Warn("a peer sent a malformed cell request", "node", peer, "err", err)
		return nil, err
	}
	c := m.waitLocal(ctx, name)
	if c == nil {
		return nil, errors.New("cell " + name + " " + errNotServed + " " + m.cfg.Name)
	}
	return m.serveLocal(ctx, c, caller, peer, env), nil
}

// waitLocal returns the local cell, waiting (bounded) while this node
// takes it over.
func (m *Mesh) waitLocal(ctx context.Context, name string) *cell.Cell {
	deadline := time.Now().Add(transitionWait)
	for {
		if c := m.reg.Lookup(name); c != nil {
			return c
		}
		m.place.mu.Lock()
		pending := m.place.pending[name]
		m.place.mu.Unlock()
		if !pending || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Call carries out cel.call from cell caller to target ("cell:NAME"), on
// this node or a peer serving the target. The caller's grant is checked
// here, the target's `allow from` where the target runs.
func (m *Mesh) Call(ctx context.Context, caller, target string, env []byte) []byte {
	name := strings.TrimPrefix(target, "cell:")
	if err := cell.ValidName(name); err != nil {
		return cell.Refusal(http.StatusBadRequest, "cel.call: "+err.Error())
	}
	var pol cell.CallPolicy
	if c := m.reg.Lookup(caller); c != nil {
		pol = c.CallPolicy()
	}
	if err := pol.MayCall(caller, name); err != nil {
		return cell.Refusal(http.StatusForbidden, err.Error())
	}
	if c := m.reg.Lookup(name); c != nil {
		return m.serveLocal(ctx, c, caller, "", env)
	}
	if !m.inFleet(name) {
		return cell.Refusal(http.StatusNotFound, "no node of the fabric serves cell "+name)
	}
	out, _, err := m.send(ctx, name, caller, env, nil, false)
	if err != nil {
		var unavailable *unavailableError
		if errors.As(err, &unavailable) {
			return cell.Refusal(http.StatusServiceUnavailable, "cell "+name+" is moving between nodes; retry")
		}
		return cell.Refusal(http.StatusBadGateway, "cel.call to cell "+name+": "+err.Error())
	}
	return out
}
