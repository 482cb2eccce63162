package node

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/celluster/celluster/core/admin"
	"github.com/celluster/celluster/core/fabric"
	"github.com/celluster/celluster/core/fabric/frame"
	"github.com/celluster/celluster/core/identity"
	"github.com/celluster/celluster/pluginapi/cellabi"
)

// DefaultTrustDomain is the trust domain of a node given none.
const DefaultTrustDomain = "celluster.local"

// Headers on requests forwarded between nodes.
const (
	// ForwardedByHeader names the node that forwarded a request; a request
	// carrying it is never forwarded again.
	ForwardedByHeader = "X-Celluster-Forwarded-By"
	// ServedByHeader names the node whose cell answered.
	ServedByHeader = "X-Celluster-Served-By"
)

// nodeCertTTL is the lifetime of the certificates a node issues itself.
const nodeCertTTL = time.Hour

// mesh is the node's side of the fabric: identity, membership and
// forwarding.
type mesh struct {
	n      *Node
	td     spiffeid.TrustDomain
	ca     *identity.CA // nil when the node holds no CA key
	bundle *x509bundle.Bundle
	creds  *identity.Credentials
	f      *fabric.Fabric

	mu       sync.Mutex
	lastMeta []byte

	place   placement
	syncNow chan struct{}

	weights map[string]map[string]uint32 // cell -> node -> weight (under mu)
	rr      atomic.Uint64
}

// nodeMeta is what a node gossips about itself (at most 512 bytes).
type nodeMeta struct {
	HTTP  string   `json:"h,omitempty"`
	Load  int64    `json:"l"`
	Cells []string `json:"c,omitempty"`
}

// startMesh sets up the node's identity and joins the fabric. Without
// --ca, --cert or --token the node makes a private CA in its data directory
// on first start.
func (n *Node) startMesh(ctx context.Context) error {
	td, err := spiffeid.TrustDomainFromString(n.cfg.TrustDomain)
	if err != nil {
		return fmt.Errorf("fabric: trust domain %q: %w", n.cfg.TrustDomain, err)
	}
	m := &mesh{n: n, td: td, syncNow: make(chan struct{}, 1)}
	if err := m.identity(); err != nil {
		return err
	}
	f, err := fabric.Listen(ctx, fabric.Config{
		Addr:      n.cfg.FabricAddr,
		Node:      n.cfg.Name,
		TLSServer: func() *tls.Config { return identity.ServerConfig(m.creds, m.bundle, td, nil) },
		TLSClient: func() *tls.Config { return identity.ClientConfig(m.creds, m.bundle, td, nil) },
		VerifyPeer: func(cs tls.ConnectionState) (string, error) {
			return identity.PeerNode(cs, td)
		},
		JoinTLS: m.joinTLS,
		Join:    m.answerJoin,
		Logger:  n.log.With("component", "fabric"),
		Membership: fabric.Membership{
			Meta: m.meta,
			OnJoin: func(mb fabric.Member) {
				n.log.Info("node joined", "node", mb.Name, "addr", mb.Addr)
				m.kickSync()
			},
			OnUpdate: func(fabric.Member) { m.kickSync() },
			OnLeave: func(mb fabric.Member) {
				n.log.Warn("node left or failed", "node", mb.Name, "addr", mb.Addr)
				go m.heal(ctx, mb.Name)
			},
		},
	})
	if err != nil {
		return err
	}
	m.f = f
	f.HandleStream(frame.TypeRequest, m.serveForwarded)
	f.HandleStream(frame.TypeRenew, m.answerRenew)
	m.handlePlacement()
	n.mesh = m
	go m.renew(ctx)
	if len(n.cfg.Join) > 0 {
		go m.join(ctx)
	}
	go m.publishMeta(ctx)
	go m.syncLoop(ctx)
	return nil
}

// kickSync asks for a catalog sync soon.
func (m *mesh) kickSync() {
	select {
	case m.syncNow <- struct{}{}:
	default:
	}
}

// identity loads or creates the CA and the node's credentials.
func (m *mesh) identity() error {
	n := m.n
	caDir := n.cfg.CADir
	if caDir == "" {
		caDir = filepath.Join(n.cfg.DataDir, "ca")
	}
	if n.cfg.CertFile == "" && n.cfg.KeyFile == "" {
		joined := filepath.Join(n.cfg.DataDir, "identity", "node.crt")
		if _, err := os.Stat(joined); err == nil {
			// Joined before with a token: the certificate it got.
			n.cfg.CertFile, n.cfg.KeyFile = joined, filepath.Join(n.cfg.DataDir, "identity", "node.key")
			caDir = filepath.Join(n.cfg.DataDir, "identity")
		} else if n.cfg.Token != "" {
			if err := m.joinWithToken(); err != nil {
				return err
			}
			n.cfg.CertFile, n.cfg.KeyFile = joined, filepath.Join(n.cfg.DataDir, "identity", "node.key")
			caDir = filepath.Join(n.cfg.DataDir, "identity")
		}
	}
	if n.cfg.CertFile != "" || n.cfg.KeyFile != "" {
		key, err := identity.ReadKey(n.cfg.KeyFile)
		if err != nil {
			return fmt.Errorf("fabric: --key: %w", err)
		}
		chain, err := identity.ReadChain(n.cfg.CertFile)
		if err != nil {
			return fmt.Errorf("fabric: --cert: %w", err)
		}
		cas, err := identity.ReadChain(filepath.Join(caDir, identity.CACertFile))
		if err != nil {
			return fmt.Errorf("fabric: the trust domain's CA certificate: %w", err)
		}
		m.bundle = x509bundle.FromX509Authorities(m.td, cas)
		m.creds = identity.NewCredentials(key, chain)
		return nil
	}
	ca, err := identity.LoadCA(caDir, identity.CAOptions{})
	if errors.Is(err, os.ErrNotExist) && n.cfg.CADir == "" {
		ca, err = identity.InitCA(caDir, m.td, identity.CAOptions{})
		if err == nil {
			n.log.Info("created a private CA for a single node", "dir", caDir, "trust_domain", m.td.String())
		}
	}
	if err != nil {
		return fmt.Errorf("fabric: CA in %s: %w", caDir, err)
	}
	if ca.TrustDomain() != m.td {
		return fmt.Errorf("fabric: the CA in %s is for trust domain %s, not %s (--trust-domain)", caDir, ca.TrustDomain(), m.td)
	}
	m.ca, m.bundle = ca, ca.Bundle()
	keyPath := filepath.Join(n.cfg.DataDir, "identity", "node.key")
	key, err := identity.ReadKey(keyPath)
	if errors.Is(err, os.ErrNotExist) {
		if key, err = identity.NewKey(); err == nil {
			if err = os.MkdirAll(filepath.Dir(keyPath), 0o700); err == nil {
				err = identity.WriteKey(keyPath, key)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("fabric: node key %s: %w", keyPath, err)
	}
	chain, err := ca.IssueNode(n.cfg.Name, key.Public(), m.certTTL())
	if err != nil {
		return fmt.Errorf("fabric: issuing this node's certificate: %w", err)
	}
	m.creds = identity.NewCredentials(key, chain)
	return nil
}

// certTTL is the lifetime of the node certificates this node issues.
func (m *mesh) certTTL() time.Duration {
	if m.n.cfg.CertTTL > 0 {
		return m.n.cfg.CertTTL
	}
	return nodeCertTTL
}

// renew replaces the node certificate once two thirds of its lifetime
// have passed, without dropping a connection: a node holding the CA key
// issues it itself, any other asks a peer that holds it, over the fabric.
func (m *mesh) renew(ctx context.Context) {
	for {
		// Check twenty times a lifetime (at most every minute).
		every := time.Minute
		if leaf := m.creds.Leaf(); leaf != nil {
			every = min(max(leaf.NotAfter.Sub(leaf.NotBefore)/20, 100*time.Millisecond), time.Minute)
		}
		select {
		case <-ctx.Done():
			return
		case now := <-time.After(every):
			if !renewalDue(m.creds.Leaf(), now) {
				continue
			}
			chain, err := m.renewedChain(ctx)
			if err == nil {
				err = m.creds.Renew(chain)
			}
			if err == nil && m.ca == nil && m.n.cfg.CertFile != "" {
				err = identity.WriteChain(m.n.cfg.CertFile, chain)
			}
			if err != nil {
				m.n.log.Error("renewing the node certificate", "err", err, "expires", m.creds.NotAfter())
				continue
			}
			m.n.log.Info("node certificate renewed", "expires", m.creds.NotAfter())
		}
	}
}

// renewalDue reports whether two thirds of a certificate's life have
// passed, counted from its issue (NotBefore is backdated by
// identity.Backdate for clock skew).
func renewalDue(leaf *x509.Certificate, now time.Time) bool {
	if leaf == nil {
		return true
	}
	issued := leaf.NotBefore.Add(identity.Backdate)
	return !now.Before(issued.Add(2 * leaf.NotAfter.Sub(issued) / 3))
}

// renewedChain issues or fetches a new certificate for the node's key.
func (m *mesh) renewedChain(ctx context.Context) ([]*x509.Certificate, error) {
	if m.ca != nil {
		return m.ca.IssueNode(m.n.cfg.Name, m.creds.Key().Public(), m.certTTL())
	}
	var lastErr error = errors.New("no live peer holds the CA")
	for _, mb := range m.f.Members() {
		if mb.Name == m.n.cfg.Name || mb.State != fabric.StateAlive {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		p, err := m.f.Dial(rctx, mb.Addr)
		var out []byte
		if err == nil {
			out, err = p.Request(rctx, frame.TypeRenew, nil)
		}
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		chain, err := parseChainPEM(out)
		if err != nil {
			lastErr = err
			continue
		}
		if !chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(m.creds.Key().Public()) {
			lastErr = fmt.Errorf("node %s renewed a certificate for another key", mb.Name)
			continue
		}
		return chain, nil
	}
	return nil, lastErr
}

// peerKey is the public key of the certificate a peer holds now.
func (m *mesh) peerKey(peer string) (crypto.PublicKey, error) {
	c, ok := m.f.PeerCertificate(peer)
	if !ok {
		return nil, fmt.Errorf("no live connection with node %s", peer)
	}
	return c.PublicKey, nil
}

// parseChainPEM parses PEM certificates.
func parseChainPEM(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate in the answer")
	}
	return out, nil
}

// answerRenew issues a fresh certificate to a peer for the key of the one
// it holds now: the fabric verified the peer's identity at the handshake.
func (m *mesh) answerRenew(ctx context.Context, peer string, s *fabric.Stream) {
	if _, _, err := frame.Read(s, 1024); err != nil {
		return
	}
	if m.ca == nil {
		_ = frame.Write(s, frame.TypeError, []byte("this node holds no CA key"))
		return
	}
	pub, err := m.peerKey(peer)
	if err != nil {
		_ = frame.Write(s, frame.TypeError, []byte(err.Error()))
		return
	}
	chain, err := m.ca.IssueNode(peer, pub, m.certTTL())
	if err != nil {
		_ = frame.Write(s, frame.TypeError, []byte(err.Error()))
		return
	}
	var b []byte
	for _, c := range chain {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	m.n.log.Info("renewed a peer's certificate", "node", peer)
	_ = frame.Write(s, frame.TypeResponse, b)
}

// join keeps trying the seeds until one answers.
func (m *mesh) join(ctx context.Context) {
	for backoff := 200 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := m.f.Join(jctx, m.n.cfg.Join)
		cancel()
		if err == nil {
			m.n.log.Info("joined the fabric", "seeds", m.n.cfg.Join, "members", len(m.f.Members()))
			go m.rejoin(ctx)
			return
		}
		m.n.log.Warn("joining the fabric failed; retrying", "seeds", m.n.cfg.Join, "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// rejoinEvery is how often a node tries to reach the seeds and the members
// it holds dead: memberlist stops gossiping to dead nodes after a while, so
// without it two sides of a healed partition would stay apart.
const rejoinEvery = 2 * time.Second

// rejoin keeps knocking on the seeds and dead members until ctx ends, so a
// partition heals by itself once packets flow again.
func (m *mesh) rejoin(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(rejoinEvery):
		}
		var dead []string
		for _, mb := range m.f.Members() {
			if mb.State == fabric.StateDead && mb.Name != m.n.cfg.Name {
				dead = append(dead, mb.Addr)
			}
		}
		if len(dead) == 0 {
			continue
		}
		jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := m.f.Join(jctx, append(slices.Clone(m.n.cfg.Join), dead...)); err == nil {
			m.n.log.Debug("rejoin", "tried", dead)
		}
		cancel()
	}
}

// meta is this node's gossiped metadata.
func (m *mesh) meta() []byte {
	md := nodeMeta{HTTP: m.n.httpAddr}
	for _, in := range m.n.reg.List() {
		md.Load += in.InFlight + in.Queued
		if in.SHA256 != "" {
			md.Cells = append(md.Cells, in.Name)
		}
	}
	b, _ := json.Marshal(md)
	for len(b) > fabric.MaxMetaSize && len(md.Cells) > 0 {
		md.Cells = md.Cells[:len(md.Cells)-1] // the rest are found on demand
		b, _ = json.Marshal(md)
	}
	return b
}

// publishMeta gossips the metadata when it changes.
func (m *mesh) publishMeta(ctx context.Context) {
	t := time.NewTicker(m.n.cfg.TelemetryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			b := m.meta()
			m.mu.Lock()
			changed := !bytes.Equal(b, m.lastMeta)
			m.lastMeta = b
			m.mu.Unlock()
			if changed {
				if err := m.f.UpdateMeta(ctx); err != nil && ctx.Err() == nil {
					m.n.log.Debug("gossiping node metadata", "err", err)
				}
			}
		}
	}
}

// Member is one node of the mesh as this node sees it.
type Member struct {
	Name, Addr, State, HTTP string
	Cells                   []string
	Load                    int64
	Self                    bool
}

// Members lists the mesh's nodes, this one included; nil without a fabric.
func (n *Node) Members() []Member {
	if n.mesh == nil {
		return nil
	}
	var out []Member
	for _, mb := range n.mesh.f.Members() {
		var md nodeMeta
		_ = json.Unmarshal(mb.Meta, &md)
		out = append(out, Member{Name: mb.Name, Addr: mb.Addr, State: mb.State.String(), HTTP: md.HTTP,
			Cells: md.Cells, Load: md.Load, Self: mb.Name == n.cfg.Name})
	}
	return out
}

// FabricAddr is the fabric's address, or "".
func (n *Node) FabricAddr() string {
	if n.mesh == nil {
		return ""
	}
	return n.mesh.f.Addr().String()
}

// routes is what the ingress serves: the node's own cells, a peer that
// has the cell when this node does not (or its replicas are saturated), by
// the lowest load, or by the cell's node route weights when `reroute` set
// them.
type routes struct{ n *Node }

// Handler implements ingress.Cells.
func (r routes) Handler(name string) http.Handler {
	n := r.n
	local := n.reg.Handler(name)
	if n.mesh != nil {
		if peer, ok := n.mesh.pickByWeight(name); ok {
			if peer == nil {
				return localHandler(local) // this node's share
			}
			p := *peer
			return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { n.mesh.forward(w, req, name, p) })
		}
	}
	if local != nil {
		c := n.reg.Lookup(name)
		if n.mesh == nil || c == nil || c.Queued() == 0 {
			return localHandler(local)
		}
		// Saturated: a peer with the cell and less load takes the request.
		if peer := n.mesh.leastLoaded(name, c.Queued()+c.InFlight()); peer != nil {
			p := *peer
			return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { n.mesh.forward(w, req, name, p) })
		}
		return localHandler(local)
	}
	if n.mesh == nil {
		return nil
	}
	peer := n.mesh.leastLoaded(name, -1)
	if peer == nil {
		return nil
	}
	p := *peer
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { n.mesh.forward(w, req, name, p) })
}

func localHandler(h http.Handler) http.Handler {
	if h == nil {
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		req.Header.Del(CallerHeader) // only cel.call sets it
		h.ServeHTTP(w, req)
	})
}

// leastLoaded is the live peer serving the cell with the lowest load, below
// limit (no limit when negative), or nil.
func (m *mesh) leastLoaded(name string, limit int64) *Member {
	var best *Member
	for _, mb := range m.n.Members() {
		if mb.Self || mb.State != "alive" || !slices.Contains(mb.Cells, name) || (limit >= 0 && mb.Load >= limit) {
			continue
		}
		if best == nil || mb.Load < best.Load {
			best = &mb
		}
	}
	return best
}

// SetNodeWeights sets how a cell's requests arriving here are shared among
// nodes (this one by its name): a weighted round robin over the named live
// nodes that serve the cell. All-zero weights clear them.
func (n *Node) SetNodeWeights(cellName string, weights map[string]uint32) error {
	if n.mesh == nil {
		return errors.New("this node runs without a fabric: no node to route to")
	}
	members := map[string]bool{}
	for _, mb := range n.Members() {
		members[mb.Name] = true
	}
	var total uint32
	for node, w := range weights {
		if !members[node] {
			return fmt.Errorf("no node %q in the fabric", node)
		}
		total += w
	}
	n.mesh.mu.Lock()
	defer n.mesh.mu.Unlock()
	if n.mesh.weights == nil {
		n.mesh.weights = map[string]map[string]uint32{}
	}
	if total == 0 {
		delete(n.mesh.weights, cellName)
		return nil
	}
	n.mesh.weights[cellName] = weights
	n.log.Info("node route weights set", "cell", cellName, "weights", weights)
	return nil
}

// pickByWeight chooses a node for a request by the cell's node weights:
// ok is false without weights; a nil member means this node.
func (m *mesh) pickByWeight(name string) (*Member, bool) {
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
	for _, mb := range m.n.Members() {
		w := ws[mb.Name]
		if w == 0 || mb.State != "alive" {
			continue
		}
		if mb.Self {
			if m.n.reg.Handler(name) == nil {
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

// maxForwardBody bounds a forwarded request's body.
const maxForwardBody = 8 << 20

// forward sends a request over the fabric to a peer hosting the cell.
func (m *mesh) forward(w http.ResponseWriter, r *http.Request, cellName string, peer Member) {
	if r.Header.Get(ForwardedByHeader) != "" {
		http.Error(w, "cell "+cellName+" is not on this node (and a forwarded request is not forwarded again)", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxForwardBody))
	if err != nil {
		http.Error(w, "reading the request body: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	req := cellabi.Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Body: body}
	r.Header.Del(CallerHeader) // only cel.call sets it
	for k, vs := range r.Header {
		for _, v := range vs {
			req.Headers = append(req.Headers, cellabi.Header{Name: k, Value: v})
		}
	}
	req.Headers = append(req.Headers, cellabi.Header{Name: ForwardedByHeader, Value: m.n.cfg.Name})
	out, err := m.requestCell(r.Context(), peer, cellName, cellabi.AppendRequest(nil, &req))
	if err != nil {
		m.n.log.Warn("forwarding failed", "cell", cellName, "peer", peer.Name, "err", err)
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	resp, err := cellabi.DecodeResponse(out)
	if err != nil {
		http.Error(w, fmt.Sprintf("node %s answered a malformed response: %v", peer.Name, err), http.StatusBadGateway)
		return
	}
	for _, h := range resp.Headers {
		w.Header().Add(h.Name, h.Value)
	}
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}

// requestCell sends a request envelope for a cell to the peer serving it
// (a forwarded request or a cell-to-cell call) and returns its response
// envelope, bounded by the request time limit.
func (m *mesh) requestCell(ctx context.Context, peer Member, cellName string, env []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, m.n.cfg.Limits.RequestTimeout+5*time.Second)
	defer cancel()
	p, err := m.f.Dial(ctx, peer.Addr)
	if err != nil {
		return nil, fmt.Errorf("cell %s lives on node %s, which is unreachable: %w", cellName, peer.Name, err)
	}
	out, err := p.Request(ctx, frame.TypeRequest, append([]byte(cellName+"\x00"), env...))
	if err != nil {
		return nil, fmt.Errorf("forwarding to node %s: %w", peer.Name, err)
	}
	return out, nil
}

// serveForwarded answers a request a peer forwarded to one of our cells.
func (m *mesh) serveForwarded(ctx context.Context, peer string, s *fabric.Stream) {
	typ, payload, err := frame.Read(s, frame.DefaultMax)
	if err != nil || typ != frame.TypeRequest {
		_ = frame.Write(s, frame.TypeError, []byte(fmt.Sprintf("want a request frame: %v", err)))
		return
	}
	name, env, ok := strings.Cut(string(payload), "\x00")
	if !ok {
		_ = frame.Write(s, frame.TypeError, []byte("forwarded request without a cell name"))
		return
	}
	if m.n.reg.Handler(name) == nil {
		_ = frame.Write(s, frame.TypeError, []byte("no cell "+name+" on node "+m.n.cfg.Name))
		return
	}
	var out []byte
	if caller := m.n.callerOf([]byte(env)); caller != "" {
		// A cell-to-cell call: the target's `allow from` decides.
		out = m.n.serveCall(ctx, name, []byte(env), caller, peer)
	} else {
		var err error
		if out, err = m.n.serveEnvelope(ctx, name, []byte(env)); err != nil {
			_ = frame.Write(s, frame.TypeError, []byte("forwarded request: "+err.Error()))
			return
		}
	}
	if err := frame.Write(s, frame.TypeResponse, out); err != nil {
		m.n.log.Debug("answering a forwarded request", "peer", peer, "err", err)
	}
}

// Nodes implements admin.Node.
func (n *Node) Nodes() (string, string, []admin.NodeInfo) {
	if n.mesh == nil {
		return "", "", nil
	}
	var out []admin.NodeInfo
	for _, mb := range n.Members() {
		out = append(out, admin.NodeInfo{Name: mb.Name, Address: mb.Addr, State: mb.State, HTTP: mb.HTTP, Cells: mb.Cells, Load: mb.Load, Self: mb.Self})
	}
	return n.FabricAddr(), n.mesh.td.String(), out
}
