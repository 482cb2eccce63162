package mesh

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/fabric"
	"github.com/celluster/celluster/core/fabric/frame"
	"github.com/celluster/celluster/core/identity"
	"github.com/celluster/celluster/core/journal"
)

// Headers on requests forwarded between nodes.
const (
	// ForwardedByHeader names the node that forwarded a request.
	ForwardedByHeader = "X-Celluster-Forwarded-By"
	// ServedByHeader names the node whose cell answered.
	ServedByHeader = "X-Celluster-Served-By"
)

// Host is what the mesh needs of the node it runs in: the intents of its
// cells (a placed cell travels with its intent) and ahead-of-need compiles.
type Host interface {
	// Intent returns the intent text in force for a cell and its source,
	// ok false when the cell runs on defaults.
	Intent(cell string) (text, source string, ok bool)
	// ApplyIntent applies an intent text to a cell whose module is mod.
	ApplyIntent(ctx context.Context, c *cell.Cell, source string, text, mod []byte, from string)
	// ForgetIntent drops a removed cell's intent and rules.
	ForgetIntent(cell string)
	// Placement returns a cell's placement hints from its intent.
	Placement(cell string) Placement
	// Precompile compiles a module ahead of need (kept in the engine's
	// caches), so a take-over or a clone onto this node starts at once.
	Precompile(ctx context.Context, mod []byte)
	// AdoptState keeps an encoded state of a cell (from a peer), for the
	// cell's next load here to restore; nil drops what is kept.
	AdoptState(cell string, state []byte) error
}

// Placement is what a cell's intent says about where it runs.
type Placement struct {
	// Spread puts the cell's replicas on distinct nodes; SpreadNodes (N of
	// `spread across N nodes`) is how many nodes the fleet keeps it on at
	// least (0: as many as its minimum replicas).
	Spread      bool
	SpreadNodes int
	// Prefer and Avoid name nodes to use first and never.
	Prefer, Avoid []string
}

// Config configures a node's mesh.
type Config struct {
	// Name is the node's name; TrustDomain its SPIFFE trust domain.
	Name, TrustDomain string
	// Addr is the fabric's UDP address; Join the seeds.
	Addr string
	Join []string
	// JoinAfter, if set, holds the join back until it is closed (at most
	// joinHold): a node joins once the costly part of its own start-up
	// (its plugin processes) is done, so that its first probes are not
	// answered late by a node busy starting.
	JoinAfter <-chan struct{}
	// DataDir holds the module store (modules/), the placements this node
	// serves for the fleet (mesh/) and the identity.
	DataDir string
	// Identity says where the node's certificate comes from; Name,
	// TrustDomain, DataDir, Seeds and Logger are filled in.
	Identity identity.NodeConfig
	// NoPrefetch stops the node keeping (and compiling) its peers' modules
	// ahead of need.
	NoPrefetch bool
	// HTTPAddr is gossiped so tools can reach the node's ingress.
	HTTPAddr string
	// MetaInterval is how often the gossiped metadata is refreshed (1s).
	MetaInterval time.Duration
	// RequestTimeout bounds a cell request sent to a peer (plus 5s).
	RequestTimeout time.Duration
	// DrainTimeout bounds draining a stand-in.
	DrainTimeout time.Duration
	// Membership tunes failure detection (zero: the fabric's defaults).
	Membership fabric.Membership

	Registry *cell.Registry
	Journal  *journal.Journal
	Host     Host
	Logger   *slog.Logger
}

// Mesh is a node's side of the fabric: identity, membership, the catalog
// of the fleet's cells, module shipping, placement, healing and
// forwarding.
type Mesh struct {
	repl  replication // states pushed to peers
	tomb  tombstones  // cells this node withdrew
	cfg   Config
	log   *slog.Logger
	td    spiffeid.TrustDomain
	id    *identity.Node
	f     *fabric.Fabric
	store *Store
	reg   *cell.Registry
	host  Host

	mu        sync.Mutex
	lastMeta  []byte
	weights   map[string]map[string]uint32 // cell -> node -> weight
	metaCache map[string]cachedMeta
	rr        atomic.Uint64

	place   placement
	syncNow chan struct{}
	healNow chan struct{}
}

// nodeMeta is what a node gossips about itself (at most 512 bytes): its
// ingress, its load, the version of its catalog (peers pull the catalog
// only when it changes) and the names of its cells (as many as fit).
type nodeMeta struct {
	HTTP    string   `json:"h,omitempty"`
	Load    int64    `json:"l"`
	Version uint64   `json:"v,omitempty"`
	Cells   []string `json:"c,omitempty"`
}

// parsedMeta decodes a member's metadata, once per change: requests
// routed to peers read it.
func (m *Mesh) parsedMeta(node string, b []byte) nodeMeta {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.metaCache[node]; ok && bytes.Equal(c.raw, b) {
		return c.md
	}
	var md nodeMeta
	_ = json.Unmarshal(b, &md)
	if m.metaCache == nil {
		m.metaCache = map[string]cachedMeta{}
	}
	m.metaCache[node] = cachedMeta{raw: bytes.Clone(b), md: md}
	return md
}

type cachedMeta struct {
	raw []byte
	md  nodeMeta
}

// Start sets up the node's identity, joins the fabric and starts the
// mesh's loops, which run until ctx ends.
func Start(ctx context.Context, cfg Config) (*Mesh, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MetaInterval <= 0 {
		cfg.MetaInterval = time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("fabric: trust domain %q: %w", cfg.TrustDomain, err)
	}
	m := &Mesh{cfg: cfg, log: cfg.Logger, td: td, store: NewStore(filepath.Join(cfg.DataDir, "modules")),
		reg: cfg.Registry, host: cfg.Host, syncNow: make(chan struct{}, 1), healNow: make(chan struct{}, 1)}
	ic := cfg.Identity
	ic.Name, ic.TrustDomain, ic.DataDir, ic.Seeds, ic.Logger = cfg.Name, td, cfg.DataDir, cfg.Join, cfg.Logger
	if m.id, err = identity.LoadNode(ctx, ic, fabric.RequestJoin); err != nil {
		return nil, err
	}
	mcfg := cfg.Membership
	mcfg.Meta = m.meta
	mcfg.OnJoin = func(mb fabric.Member) {
		m.log.Info("node joined", "node", mb.Name, "addr", mb.Addr)
		m.kick()
	}
	mcfg.OnUpdate = func(fabric.Member) { m.kick() }
	mcfg.OnLeave = func(mb fabric.Member) {
		m.log.Warn("node left or failed", "node", mb.Name, "addr", mb.Addr)
		m.lost(mb.Name)
	}
	creds, bundle := m.id.Credentials(), m.id.Bundle()
	f, err := fabric.Listen(ctx, fabric.Config{
		Addr:      cfg.Addr,
		Node:      cfg.Name,
		TLSServer: func() *tls.Config { return identity.ServerConfig(creds, bundle, td, nil) },
		TLSClient: func() *tls.Config { return identity.ClientConfig(creds, bundle, td, nil) },
		VerifyPeer: func(cs tls.ConnectionState) (string, error) {
			return identity.PeerNode(cs, td)
		},
		JoinTLS:    m.id.JoinTLS,
		Join:       m.id.AnswerJoin,
		Logger:     m.log.With("component", "fabric"),
		Membership: mcfg,
	})
	if err != nil {
		return nil, err
	}
	m.f = f
	f.HandleRequest(frame.TypeRequest, frame.DefaultMax, m.serveRequest)
	f.HandleRequest(frame.TypeRenew, 1024, m.answerRenew)
	f.HandleRequest(frame.TypeWithdraw, 1024, m.answerWithdraw)
	m.handlePlacement()
	m.handleState()
	m.restorePlacements(ctx)
	go m.id.Renew(ctx, m.fetchRenewal)
	if len(cfg.Join) > 0 {
		go m.join(ctx)
	}
	go m.publishMeta(ctx)
	go m.syncLoop(ctx)
	go m.healLoop(ctx)
	go m.replicateLoop(ctx)
	return m, nil
}

// Close leaves the fabric (peers see a departure, not a failure) and
// closes it.
func (m *Mesh) Close(ctx context.Context) error {
	err := m.f.Leave(ctx)
	return errors.Join(err, m.f.Close())
}

// Fabric is the mesh's fabric (for its counters).
func (m *Mesh) Fabric() *fabric.Fabric { return m.f }

// Store is the node's module store.
func (m *Mesh) Store() *Store { return m.store }

// Addr is the fabric's address.
func (m *Mesh) Addr() string { return m.f.Addr().String() }

// TrustDomain is the fabric's trust domain.
func (m *Mesh) TrustDomain() string { return m.td.String() }

// kick asks for a catalog sync and a heal pass soon.
func (m *Mesh) kick() {
	select {
	case m.syncNow <- struct{}{}:
	default:
	}
	select {
	case m.healNow <- struct{}{}:
	default:
	}
}

// fetchRenewal asks live peers for a renewed certificate until one
// answers with one try accepts.
func (m *Mesh) fetchRenewal(ctx context.Context, try func([]byte, string) error) error {
	var lastErr error = errors.New("no live peer holds the CA")
	for _, mb := range m.f.Members() {
		if mb.Name == m.cfg.Name || mb.State != fabric.StateAlive {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		p, err := m.f.Dial(rctx, mb.Addr)
		var out []byte
		if err == nil {
			out, err = p.Request(rctx, frame.TypeRenew, nil)
		}
		cancel()
		if err == nil {
			err = try(out, mb.Name)
		}
		if err == nil {
			return nil
		}
		lastErr = err
	}
	return lastErr
}

// answerRenew issues a fresh certificate to a peer for the key of the one
// it holds now: the fabric verified the peer's identity at the handshake.
func (m *Mesh) answerRenew(_ context.Context, peer string, _ []byte) ([]byte, error) {
	c, ok := m.f.PeerCertificate(peer)
	if !ok {
		return nil, errors.New("no live connection with node " + peer)
	}
	return m.id.AnswerRenew(peer, c.PublicKey)
}

// joinHold bounds how long Config.JoinAfter holds the join back.
const joinHold = 15 * time.Second

// join keeps trying the seeds until one answers.
func (m *Mesh) join(ctx context.Context) {
	if m.cfg.JoinAfter != nil {
		select {
		case <-m.cfg.JoinAfter:
		case <-time.After(joinHold):
			m.log.Warn("joining the fabric before this node's start-up finished", "waited", joinHold)
		case <-ctx.Done():
			return
		}
	}
	for backoff := 200 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := m.f.Join(jctx, m.cfg.Join)
		cancel()
		if err == nil {
			m.log.Info("joined the fabric", "seeds", m.cfg.Join, "members", len(m.f.Members()))
			go m.rejoin(ctx)
			return
		}
		m.log.Warn("joining the fabric failed; retrying", "seeds", m.cfg.Join, "err", err, "in", backoff)
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
func (m *Mesh) rejoin(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(rejoinEvery):
		}
		var dead []string
		for _, mb := range m.f.Members() {
			if mb.State == fabric.StateDead && mb.Name != m.cfg.Name {
				dead = append(dead, mb.Addr)
			}
		}
		if len(dead) == 0 {
			continue
		}
		jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := m.f.Join(jctx, append(slices.Clone(m.cfg.Join), dead...)); err == nil {
			m.log.Debug("rejoin", "tried", dead)
		}
		cancel()
	}
}

// catalogVersion is a digest of a catalog: equal catalogs, equal versions.
// It hashes the catalog as sent, so a puller computes it from the bytes
// it received.
func catalogVersion(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64() | 1 // never 0, which means "no catalog"
}

// meta is this node's gossiped metadata.
func (m *Mesh) meta() []byte {
	md := nodeMeta{HTTP: m.cfg.HTTPAddr}
	for _, in := range m.reg.List() {
		md.Load += in.InFlight + in.Queued
	}
	doc := m.catalogDoc()
	cb, _ := json.Marshal(doc)
	md.Version = catalogVersion(cb)
	for _, e := range doc.Cells {
		md.Cells = append(md.Cells, e.Cell)
	}
	m.place.mu.Lock()
	for c := range m.place.pending {
		if !slices.Contains(md.Cells, c) {
			md.Cells = append(md.Cells, c)
		}
	}
	m.place.mu.Unlock()
	sort.Strings(md.Cells)
	b, _ := json.Marshal(md)
	for len(b) > fabric.MaxMetaSize && len(md.Cells) > 0 {
		md.Cells = md.Cells[:len(md.Cells)-1] // the rest are in the catalog
		b, _ = json.Marshal(md)
	}
	return b
}

// publishMeta gossips the metadata when it changes.
func (m *Mesh) publishMeta(ctx context.Context) {
	t := time.NewTicker(m.cfg.MetaInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.updateMeta(ctx)
		}
	}
}

// Announce gossips this node's metadata (the catalog's version, with it)
// now if it changed — a cell was loaded, upgraded, removed or given a new
// intent here — rather than at the next MetaInterval tick, so that peers
// pull the new catalog at once.
func (m *Mesh) Announce() {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m.updateMeta(ctx)
	}()
}

// updateMeta gossips the metadata if it changed.
func (m *Mesh) updateMeta(ctx context.Context) {
	b := m.meta()
	m.mu.Lock()
	changed := !bytes.Equal(b, m.lastMeta)
	m.lastMeta = b
	m.mu.Unlock()
	if changed {
		if err := m.f.UpdateMeta(ctx); err != nil && ctx.Err() == nil {
			m.log.Debug("gossiping node metadata", "err", err)
		}
	}
}

// Member is one node of the mesh as this node sees it.
type Member struct {
	Name, Addr, State, HTTP string
	Cells                   []string
	Load                    int64
	Self                    bool
	version                 uint64
}

// Members lists the mesh's nodes, this one included.
func (m *Mesh) Members() []Member {
	var out []Member
	for _, mb := range m.f.Members() {
		md := m.parsedMeta(mb.Name, mb.Meta)
		out = append(out, Member{Name: mb.Name, Addr: mb.Addr, State: mb.State.String(), HTTP: md.HTTP,
			Cells: md.Cells, Load: md.Load, Self: mb.Name == m.cfg.Name, version: md.Version})
	}
	return out
}

// alive lists the names of the members known alive, this node included,
// sorted.
func (m *Mesh) alive() []string {
	var out []string
	for _, mb := range m.f.Members() {
		if mb.State == fabric.StateAlive {
			out = append(out, mb.Name)
		}
	}
	return out
}

func (m *Mesh) addrOf(node string) string {
	for _, mb := range m.f.Members() {
		if mb.Name == node && mb.State == fabric.StateAlive {
			return mb.Addr
		}
	}
	return ""
}
