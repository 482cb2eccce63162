// Package hostapi is the host service the core serves to each plugin
// (service Host of pluginapi/v1): the mechanism plugins' policy drives —
// cells and their replicas, signals, and notes for the journal.
package hostapi

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/signals"
	pb "github.com/celluster/celluster/pluginapi/v1"
)

// Server implements pluginapiv1.HostServer for one plugin.
type Server struct {
	pb.UnimplementedHostServer
	plugin string
	reg    *cell.Registry
	sig    *signals.Store
	notes  Notes
	bpf    BPF
	place  Placer
	log    *slog.Logger
}

// Placer places a cell's replicas on peer nodes and routes between them
// (the node's fabric).
type Placer interface {
	PlaceOnPeer(ctx context.Context, cell, node string, replicas int, reason string) (string, int, error)
	SetNodeWeights(cell string, weights map[string]uint32) error
	// Nodes lists the fabric's members (none without a fabric).
	Nodes() []*pb.NodeState
	// Placement returns a cell's placement hints from its intent.
	Placement(cell string) (spread bool, prefer, avoid []string)
}

// isVersion reports whether a route target names a version: 8 to 64 hex
// digits. Anything else names a node.
func isVersion(target string) bool {
	if len(target) < 8 || len(target) > 64 {
		return false
	}
	for _, r := range target {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return true
}

// Notes records a plugin's notes about a cell in the decision journal.
type Notes interface {
	Note(ctx context.Context, plugin, cell, note string) error
}

// New returns the host service as seen by the named plugin; what it emits
// is attributed to it. notes may be nil: notes then go to the log. bpf and
// place may be nil: BPF and placement calls then fail with
// FailedPrecondition.
func New(plugin string, reg *cell.Registry, sig *signals.Store, notes Notes, bpf BPF, place Placer, log *slog.Logger) *Server {
	return &Server{plugin: plugin, reg: reg, sig: sig, notes: notes, bpf: bpf, place: place, log: log.With("plugin", plugin)}
}

// PlaceReplicas implements pb.HostServer.
func (s *Server) PlaceReplicas(ctx context.Context, req *pb.PlaceReplicasRequest) (*pb.PlaceReplicasResponse, error) {
	if s.place == nil {
		return nil, status.Error(codes.FailedPrecondition, "this node runs without a fabric: no peers to place replicas on")
	}
	if _, err := s.cell(req.GetCell()); err != nil {
		return nil, err
	}
	node, n, err := s.place.PlaceOnPeer(ctx, req.GetCell(), req.GetNode(), int(max(req.GetCount(), 1)), req.GetReason())
	if err != nil {
		return nil, status.Error(codes.Aborted, err.Error())
	}
	s.log.Info("placed replicas on a peer", "cell", req.GetCell(), "node", node, "live", n)
	return &pb.PlaceReplicasResponse{Node: node, Replicas: uint32(max(n, 0))}, nil
}

var _ pb.HostServer = (*Server)(nil)

// ListCells implements pb.HostServer.
func (s *Server) ListCells(context.Context, *pb.ListCellsRequest) (*pb.ListCellsResponse, error) {
	infos := s.reg.List()
	resp := &pb.ListCellsResponse{Cells: make([]*pb.CellState, 0, len(infos))}
	for _, c := range infos {
		cs := &pb.CellState{
			Name: c.Name, Sha256: c.SHA256, Abi: c.ABI, State: string(c.State),
			Replicas: uint32(c.Replicas), Requests: c.Requests, Errors: c.Errors,
			InFlight: c.InFlight, Error: c.Error,
			Warm: uint32(c.Policy.Warm), MinReplicas: uint32(c.Policy.Min), MaxReplicas: uint32(c.Policy.Max),
			IdleSeconds: c.Idle.Seconds(),
		}
		if s.place != nil {
			cs.SpreadAcrossNodes, cs.PreferNodes, cs.AvoidNodes = s.place.Placement(c.Name)
		}
		for _, v := range c.Versions {
			cs.Versions = append(cs.Versions, &pb.VersionState{
				Sha256: v.SHA256, Weight: v.Weight, Requests: v.Requests, Errors: v.Errors,
				P99Seconds: v.P99.Seconds(), Replicas: uint32(v.Replicas), Source: v.Source,
			})
		}
		resp.Cells = append(resp.Cells, cs)
	}
	return resp, nil
}

// ReadSignals implements pb.HostServer.
func (s *Server) ReadSignals(_ context.Context, req *pb.ReadSignalsRequest) (*pb.ReadSignalsResponse, error) {
	rs := s.sig.Latest(req.GetNames()...)
	resp := &pb.ReadSignalsResponse{Readings: make([]*pb.SignalReading, 0, len(rs))}
	for _, r := range rs {
		resp.Readings = append(resp.Readings, &pb.SignalReading{
			Signal: r.Name, Value: r.Value, Labels: r.Labels, TimeUnixNano: r.Time.UnixNano(), Source: r.Source,
		})
	}
	return resp, nil
}

func (s *Server) cell(name string) (*cell.Cell, error) {
	c := s.reg.Lookup(name)
	if c == nil {
		return nil, status.Errorf(codes.NotFound, "no cell named %q on this node", name)
	}
	return c, nil
}

// replicaError maps a scaling failure to a status. Never Unavailable: plugins
// read that as the host being gone.
func replicaError(err error) error {
	if errors.Is(err, cell.ErrNoReplicas) {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return status.Error(codes.Aborted, err.Error())
}

// SpawnReplicas implements pb.HostServer.
func (s *Server) SpawnReplicas(ctx context.Context, req *pb.SpawnReplicasRequest) (*pb.ReplicasResponse, error) {
	c, err := s.cell(req.GetCell())
	if err != nil {
		return nil, err
	}
	n, err := c.SpawnReplicas(ctx, int(req.GetCount()))
	if err != nil {
		return nil, replicaError(err)
	}
	s.log.Info("spawned replicas", "cell", req.GetCell(), "count", req.GetCount(), "live", n)
	return &pb.ReplicasResponse{Replicas: uint32(n)}, nil
}

// DrainReplicas implements pb.HostServer.
func (s *Server) DrainReplicas(ctx context.Context, req *pb.DrainReplicasRequest) (*pb.ReplicasResponse, error) {
	c, err := s.cell(req.GetCell())
	if err != nil {
		return nil, err
	}
	n, err := c.DrainReplicas(ctx, int(req.GetCount()))
	if err != nil {
		return nil, replicaError(err)
	}
	s.log.Info("drained replicas", "cell", req.GetCell(), "count", req.GetCount(), "live", n)
	return &pb.ReplicasResponse{Replicas: uint32(n)}, nil
}

// SetRouteWeights implements pb.HostServer: targets are versions (sha256
// or a unique prefix of at least 8 hex digits); node targets arrive with the
// fabric.
func (s *Server) SetRouteWeights(_ context.Context, req *pb.SetRouteWeightsRequest) (*pb.SetRouteWeightsResponse, error) {
	c, err := s.cell(req.GetCell())
	if err != nil {
		return nil, err
	}
	ws := make(map[string]uint32, len(req.GetWeights()))
	nodes := map[string]uint32{}
	for _, w := range req.GetWeights() {
		if isVersion(w.GetTarget()) {
			ws[w.GetTarget()] = w.GetWeight()
		} else {
			nodes[w.GetTarget()] = w.GetWeight()
		}
	}
	if len(nodes) > 0 {
		if s.place == nil {
			return nil, status.Error(codes.FailedPrecondition, "node targets need the fabric; this node runs without one")
		}
		if err := s.place.SetNodeWeights(req.GetCell(), nodes); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		if len(ws) == 0 {
			return &pb.SetRouteWeightsResponse{}, nil
		}
	}
	if err := c.SetWeights(ws); err != nil {
		if errors.Is(err, cell.ErrUnknownVersion) {
			return nil, status.Error(codes.NotFound, err.Error())
		}
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &pb.SetRouteWeightsResponse{}, nil
}

// RetireVersion implements pb.HostServer.
func (s *Server) RetireVersion(_ context.Context, req *pb.RetireVersionRequest) (*pb.RetireVersionResponse, error) {
	c, err := s.cell(req.GetCell())
	if err != nil {
		return nil, err
	}
	if err := c.RetireVersion(req.GetSha256()); err != nil {
		if errors.Is(err, cell.ErrUnknownVersion) {
			return nil, status.Error(codes.NotFound, err.Error())
		}
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return &pb.RetireVersionResponse{}, nil
}

// EmitSignal implements pb.HostServer.
func (s *Server) EmitSignal(_ context.Context, req *pb.EmitSignalRequest) (*pb.EmitSignalResponse, error) {
	for _, smp := range req.GetSamples() {
		if smp.GetSignal() == "" {
			return nil, status.Error(codes.InvalidArgument, "sample without a signal name")
		}
	}
	s.sig.Put(Readings(s.plugin, req.GetSamples())...)
	return &pb.EmitSignalResponse{}, nil
}

// Readings converts samples from a plugin into signal readings attributed
// to source; a sample without a time is stamped when stored.
func Readings(source string, samples []*pb.Sample) []signals.Reading {
	rs := make([]signals.Reading, 0, len(samples))
	for _, smp := range samples {
		r := signals.Reading{Name: smp.GetSignal(), Labels: smp.GetLabels(), Value: smp.GetValue(), Source: source}
		if ns := smp.GetTimeUnixNano(); ns != 0 {
			r.Time = time.Unix(0, ns)
		}
		rs = append(rs, r)
	}
	return rs
}

// AddJournalNote implements pb.HostServer.
func (s *Server) AddJournalNote(ctx context.Context, req *pb.AddJournalNoteRequest) (*pb.AddJournalNoteResponse, error) {
	if s.notes == nil {
		s.log.Info("journal note", "cell", req.GetCell(), "note", req.GetNote())
		return &pb.AddJournalNoteResponse{}, nil
	}
	if err := s.notes.Note(ctx, s.plugin, req.GetCell(), req.GetNote()); err != nil {
		return nil, status.Errorf(codes.Internal, "journal: %v", err)
	}
	return &pb.AddJournalNoteResponse{}, nil
}

// ListNodes implements pb.HostServer.
func (s *Server) ListNodes(context.Context, *pb.ListNodesRequest) (*pb.ListNodesResponse, error) {
	if s.place == nil {
		return &pb.ListNodesResponse{}, nil
	}
	return &pb.ListNodesResponse{Nodes: s.place.Nodes()}, nil
}
