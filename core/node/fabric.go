package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/celluster/celluster/core/admin"
	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/fabric"
	"github.com/celluster/celluster/core/hostapi"
	"github.com/celluster/celluster/core/identity"
	"github.com/celluster/celluster/core/intents"
	"github.com/celluster/celluster/core/mesh"
	"github.com/celluster/celluster/core/wasm"
	pb "github.com/celluster/celluster/pluginapi/v1"
)

// DefaultTrustDomain is the trust domain of a node given none.
const DefaultTrustDomain = "celluster.local"

// Headers on requests forwarded between nodes.
const (
	// ForwardedByHeader names the node that forwarded a request.
	ForwardedByHeader = mesh.ForwardedByHeader
	// ServedByHeader names the node whose cell answered.
	ServedByHeader = mesh.ServedByHeader
	// CallerHeader carries the calling cell's SPIFFE ID to a called cell.
	CallerHeader = cell.CallerHeader
)

// callPolicy is what a cell's intent says about calls and placement.
type callPolicy struct {
	calls     []string // "cell:NAME"
	allowFrom []string // "cell:NAME", "cell:*", "node:NAME", "node:*"
	// prefer and avoid are the intent's placement hints for replicas on
	// peers (prefer node / avoid node).
	prefer, avoid []string
	spread        bool
	spreadNodes   int // N of `spread across N nodes`
}

func (n *Node) callPolicyOf(name string) callPolicy {
	n.imu.Lock()
	defer n.imu.Unlock()
	if st := n.intents[name]; st != nil {
		return st.calls
	}
	return callPolicy{}
}

// startMesh joins the node to the fabric (see package mesh).
func (n *Node) startMesh(ctx context.Context) error {
	m, err := mesh.Start(ctx, mesh.Config{
		Name:        n.cfg.Name,
		TrustDomain: n.cfg.TrustDomain,
		Addr:        n.cfg.FabricAddr,
		Join:        n.cfg.Join,
		JoinAfter:   n.pluginsReady, // plugin processes started: the costliest part of a start
		DataDir:     n.cfg.DataDir,
		Identity: identity.NodeConfig{CADir: n.cfg.CADir, CertFile: n.cfg.CertFile, KeyFile: n.cfg.KeyFile,
			Token: n.cfg.Token, CertTTL: n.cfg.CertTTL},
		NoPrefetch:     n.cfg.NoPrefetch,
		HTTPAddr:       n.httpAddr,
		MetaInterval:   n.cfg.TelemetryInterval,
		RequestTimeout: n.cfg.Limits.RequestTimeout,
		DrainTimeout:   n.cfg.DrainTimeout,
		Registry:       n.reg,
		Journal:        n.journal,
		Host:           meshHost{n},
		Logger:         n.log,
	})
	if err != nil {
		return err
	}
	n.mesh = &nodeMesh{Mesh: m, f: m.Fabric()}
	return nil
}

// nodeMesh is the node's mesh, with its fabric at hand (the metrics read
// its counters).
type nodeMesh struct {
	*mesh.Mesh
	f *fabric.Fabric
}

// storeModule keeps module bytes in the node's module store.
func (n *Node) storeModule(b []byte) (string, error) {
	return mesh.NewStore(filepath.Join(n.cfg.DataDir, "modules")).Put(b)
}

// meshHost is the node as the mesh's Host.
type meshHost struct{ n *Node }

func (h meshHost) Intent(name string) (string, string, bool) {
	it, ok := h.n.Intent(name)
	if !ok || it.Origin == string(intents.FromDefault) || it.Text == "" {
		return "", "", false
	}
	return it.Text, it.Source, true
}

func (h meshHost) ApplyIntent(ctx context.Context, c *cell.Cell, source string, text, mod []byte, from string) {
	h.n.applySource(ctx, c, intents.Source{Origin: intents.FromFile, Name: source, Content: text}, mod, from)
}

func (h meshHost) ForgetIntent(name string) { h.n.forgetIntent(name) }

func (h meshHost) Placement(name string) mesh.Placement {
	pol := h.n.callPolicyOf(name)
	return mesh.Placement{Spread: pol.spread, SpreadNodes: pol.spreadNodes, Prefer: pol.prefer, Avoid: pol.avoid}
}

func (h meshHost) Precompile(ctx context.Context, mod []byte) {
	if cm, err := h.n.eng.Compile(ctx, mod, wasm.CompileOptions{MemoryLimit: h.n.cfg.Limits.Memory, Background: true}); err == nil {
		cm.Release()
	}
}

func (h meshHost) AdoptState(name string, state []byte) error {
	if state == nil {
		return h.n.states.Remove(name)
	}
	return h.n.states.Put(name, state)
}

// Member is one node of the mesh as this node sees it.
type Member = mesh.Member

// Members lists the mesh's nodes, this one included; nil without a fabric.
func (n *Node) Members() []Member {
	if n.mesh == nil {
		return nil
	}
	return n.mesh.Members()
}

// FabricAddr is the fabric's address, or "".
func (n *Node) FabricAddr() string {
	if n.mesh == nil {
		return ""
	}
	return n.mesh.Addr()
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
	return n.FabricAddr(), n.mesh.TrustDomain(), out
}

// routes is what the ingress serves: the node's own cells, or, with a
// fabric, what the mesh routes.
type routes struct{ n *Node }

// Handler implements ingress.Cells.
func (r routes) Handler(name string) http.Handler {
	local := r.n.reg.Handler(name)
	if r.n.mesh != nil {
		return r.n.mesh.Handler(name, local)
	}
	if local == nil {
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		req.Header.Del(CallerHeader) // only the runtime sets it
		local.ServeHTTP(w, req)
	})
}

// callCell is the registry's Caller: cel.call from the cell caller, on
// this node or, through the mesh, on a peer.
func (n *Node) callCell(ctx context.Context, caller, target string, req []byte) ([]byte, error) {
	if n.mesh != nil {
		return n.mesh.Call(ctx, caller, target, req), nil
	}
	name := strings.TrimPrefix(target, "cell:")
	if err := cell.ValidName(name); err != nil {
		return cell.Refusal(http.StatusBadRequest, "cel.call: "+err.Error()), nil
	}
	var pol cell.CallPolicy
	if c := n.reg.Lookup(caller); c != nil {
		pol = c.CallPolicy()
	}
	if err := pol.MayCall(caller, name); err != nil {
		return cell.Refusal(http.StatusForbidden, err.Error()), nil
	}
	c := n.reg.Lookup(name)
	if c == nil {
		return cell.Refusal(http.StatusNotFound, "no cell "+name+" on this node, and it runs without a fabric"), nil
	}
	return c.ServeEnvelope(ctx, req, cell.From{Cell: caller, CellID: "spiffe://" + n.cfg.TrustDomain + "/cell/" + caller}), nil
}

// errNoPeer is returned when a placement names no live peer.
var errNoPeer = mesh.ErrNoPeer

// PlaceOnPeer asks a peer (or, with node "", the best live peer not
// serving the cell) to serve replicas of a local cell.
func (n *Node) PlaceOnPeer(ctx context.Context, cellName, node string, replicas int, reason string) (string, int, error) {
	if n.mesh == nil {
		return "", 0, fmt.Errorf("this node runs without a fabric: %w", errNoPeer)
	}
	return n.mesh.PlaceOnPeer(ctx, cellName, node, replicas, reason)
}

// SetNodeWeights sets how a cell's requests arriving here are shared among
// nodes.
func (n *Node) SetNodeWeights(cellName string, weights map[string]uint32) error {
	if n.mesh == nil {
		return errors.New("this node runs without a fabric: no node to route to")
	}
	return n.mesh.SetNodeWeights(cellName, weights)
}

// placer is the node as the host service's Placer. The fabric starts
// after the plugins, so the check is per call.
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
