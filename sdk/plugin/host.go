package plugin

import (
	"context"
	"errors"
	"fmt"
	"google.golang.org/protobuf/types/known/durationpb"
	"time"

	pb "github.com/celluster/celluster/pluginapi/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

// hostConn is one connection to the host service, made by Configure. Its
// life ends when the plugin's Server closes, when a later Configure
// replaces it, or when the connection is found gone; every call made on
// it ends then too.
type hostConn struct {
	conn   *grpc.ClientConn
	client pb.HostClient
	life   context.Context
	end    context.CancelCauseFunc
}

func newHostConn(parent context.Context, conn *grpc.ClientConn) *hostConn {
	life, end := context.WithCancelCause(parent)
	h := &hostConn{conn: conn, client: pb.NewHostClient(conn), life: life, end: end}
	go h.watch()
	// Whatever ends the life closes the connection.
	context.AfterFunc(life, func() { _ = conn.Close() })
	return h
}

// watch ends h's life when its connection shuts down.
func (h *hostConn) watch() {
	for {
		st := h.conn.GetState()
		if st == connectivity.Shutdown {
			h.end(ErrHostGone)
			return
		}
		if !h.conn.WaitForStateChange(h.life, st) {
			return
		}
	}
}

// close ends h's life, failing calls in flight with ErrHostGone.
func (h *hostConn) close() { h.end(ErrHostGone) }

// deadlineSlack is how far ahead of the caller's deadline a
// DeadlineExceeded from the host still counts as the caller's.
const deadlineSlack = 100 * time.Millisecond

func hostGone(method string, cause error) error {
	if cause == nil || errors.Is(cause, ErrHostGone) {
		return fmt.Errorf("host.%s: %w", method, ErrHostGone)
	}
	return fmt.Errorf("host.%s: %w (%v)", method, ErrHostGone, cause)
}

// call runs one RPC of the host service with ctx joined with h's life.
func (h *hostConn) call(ctx context.Context, method string, rpc func(ctx context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("host.%s: %w", method, err)
	}
	if h.life.Err() != nil {
		return hostGone(method, nil)
	}
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(h.life, func() { cancel(ErrHostGone) })
	defer stop()

	err := rpc(cctx)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("host.%s: %w", method, ctx.Err())
	}
	if h.life.Err() != nil {
		return hostGone(method, nil)
	}
	if status.Code(err) == codes.DeadlineExceeded {
		// The host's copy of the caller's deadline can expire a moment
		// before the caller's own.
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < deadlineSlack {
			return fmt.Errorf("host.%s: %w", method, context.DeadlineExceeded)
		}
	}
	if status.Code(err) == codes.Unavailable {
		// The transport failed. If the connection is not (or no longer)
		// ready, the host is gone for good: the plugin's host never comes
		// back on the same broker id.
		if h.conn.GetState() != connectivity.Ready {
			h.end(ErrHostGone)
		}
		return hostGone(method, err)
	}
	return fmt.Errorf("host.%s: %w", method, err)
}

// hostProxy is the Host the SDK hands to plugins: it forwards to the
// Server's current host connection, so it stays valid across Configure
// calls and can be handed out before the first.
type hostProxy struct{ s *Server }

func (p hostProxy) conn(method string) (*hostConn, error) {
	if p.s.life.Err() != nil {
		return nil, hostGone(method, nil)
	}
	p.s.mu.Lock()
	h := p.s.host
	p.s.mu.Unlock()
	if h == nil {
		return nil, fmt.Errorf("host.%s: %w", method, ErrNoHost)
	}
	return h, nil
}

func (p hostProxy) ListCells(ctx context.Context) ([]CellState, error) {
	h, err := p.conn("ListCells")
	if err != nil {
		return nil, err
	}
	var out []CellState
	err = h.call(ctx, "ListCells", func(ctx context.Context) error {
		resp, err := h.client.ListCells(ctx, &pb.ListCellsRequest{})
		out = convertSlice(resp.GetCells(), cellStateFromPB)
		return err
	})
	return out, err
}

func (p hostProxy) ReadSignals(ctx context.Context, names ...string) ([]Reading, error) {
	h, err := p.conn("ReadSignals")
	if err != nil {
		return nil, err
	}
	var out []Reading
	err = h.call(ctx, "ReadSignals", func(ctx context.Context) error {
		resp, err := h.client.ReadSignals(ctx, &pb.ReadSignalsRequest{Names: cloneStrings(names)})
		out = convertSlice(resp.GetReadings(), readingFromPB)
		return err
	})
	return out, err
}

func (p hostProxy) replicas(ctx context.Context, method, cell string, count int,
	rpc func(ctx context.Context, client pb.HostClient, cell string, count uint32) (*pb.ReplicasResponse, error),
) (int, error) {
	c := &conv{}
	n := c.u32("count", count)
	if c.err != nil {
		return 0, fmt.Errorf("host.%s: %w", method, c.err)
	}
	h, err := p.conn(method)
	if err != nil {
		return 0, err
	}
	var replicas int
	err = h.call(ctx, method, func(ctx context.Context) error {
		resp, err := rpc(ctx, h.client, cell, n)
		replicas = int(resp.GetReplicas())
		return err
	})
	return replicas, err
}

func (p hostProxy) SpawnReplicas(ctx context.Context, cell string, count int) (int, error) {
	return p.replicas(ctx, "SpawnReplicas", cell, count,
		func(ctx context.Context, client pb.HostClient, cell string, count uint32) (*pb.ReplicasResponse, error) {
			return client.SpawnReplicas(ctx, &pb.SpawnReplicasRequest{Cell: cell, Count: count})
		})
}

func (p hostProxy) DrainReplicas(ctx context.Context, cell string, count int) (int, error) {
	return p.replicas(ctx, "DrainReplicas", cell, count,
		func(ctx context.Context, client pb.HostClient, cell string, count uint32) (*pb.ReplicasResponse, error) {
			return client.DrainReplicas(ctx, &pb.DrainReplicasRequest{Cell: cell, Count: count})
		})
}

func (p hostProxy) SetRouteWeights(ctx context.Context, cell string, weights []RouteWeight) error {
	h, err := p.conn("SetRouteWeights")
	if err != nil {
		return err
	}
	req := &pb.SetRouteWeightsRequest{Cell: cell, Weights: convertSlice(weights, routeWeightToPB)}
	return h.call(ctx, "SetRouteWeights", func(ctx context.Context) error {
		_, err := h.client.SetRouteWeights(ctx, req)
		return err
	})
}

func (p hostProxy) EmitSignal(ctx context.Context, samples ...Sample) error {
	h, err := p.conn("EmitSignal")
	if err != nil {
		return err
	}
	req := &pb.EmitSignalRequest{Samples: samplesToPB(samples, time.Now())}
	return h.call(ctx, "EmitSignal", func(ctx context.Context) error {
		_, err := h.client.EmitSignal(ctx, req)
		return err
	})
}

func (p hostProxy) AddJournalNote(ctx context.Context, cell, note string) error {
	h, err := p.conn("AddJournalNote")
	if err != nil {
		return err
	}
	return h.call(ctx, "AddJournalNote", func(ctx context.Context) error {
		_, err := h.client.AddJournalNote(ctx, &pb.AddJournalNoteRequest{Cell: cell, Note: note})
		return err
	})
}

func (p hostProxy) RetireVersion(ctx context.Context, cell, sha256 string) error {
	h, err := p.conn("RetireVersion")
	if err != nil {
		return err
	}
	return h.call(ctx, "RetireVersion", func(ctx context.Context) error {
		_, err := h.client.RetireVersion(ctx, &pb.RetireVersionRequest{Cell: cell, Sha256: sha256})
		return err
	})
}

func (p hostProxy) LoadBPF(ctx context.Context, name string, object []byte, constants map[string]uint64) (BPFObject, error) {
	h, err := p.conn("LoadBPF")
	if err != nil {
		return BPFObject{}, err
	}
	var out BPFObject
	err = h.call(ctx, "LoadBPF", func(ctx context.Context) error {
		resp, err := h.client.LoadBPF(ctx, &pb.LoadBPFRequest{Name: name, Object: object, Constants: constants})
		if err != nil {
			return err
		}
		out = BPFObject{ID: resp.GetObjectId(), Maps: resp.GetMaps()}
		for _, pr := range resp.GetPrograms() {
			out.Programs = append(out.Programs, BPFProgram{Name: pr.GetName(), Type: pr.GetType(), Attach: pr.GetAttach(), ID: pr.GetId()})
		}
		return nil
	})
	return out, err
}

func (p hostProxy) ReadBPFMap(ctx context.Context, objectID, mapName string) ([]BPFMapEntry, error) {
	h, err := p.conn("ReadBPFMap")
	if err != nil {
		return nil, err
	}
	var out []BPFMapEntry
	err = h.call(ctx, "ReadBPFMap", func(ctx context.Context) error {
		resp, err := h.client.ReadBPFMap(ctx, &pb.ReadBPFMapRequest{ObjectId: objectID, Map: mapName})
		if err != nil {
			return err
		}
		out = make([]BPFMapEntry, 0, len(resp.GetEntries()))
		for _, e := range resp.GetEntries() {
			out = append(out, BPFMapEntry{Key: e.GetKey(), Values: e.GetValues()})
		}
		return nil
	})
	return out, err
}

func (p hostProxy) UnloadBPF(ctx context.Context, objectID string) error {
	h, err := p.conn("UnloadBPF")
	if err != nil {
		return err
	}
	return h.call(ctx, "UnloadBPF", func(ctx context.Context) error {
		_, err := h.client.UnloadBPF(ctx, &pb.UnloadBPFRequest{ObjectId: objectID})
		return err
	})
}

func (p hostProxy) WaitBPFEvents(ctx context.Context, objectID, mapName string, timeout time.Duration) ([][]byte, error) {
	h, err := p.conn("WaitBPFEvents")
	if err != nil {
		return nil, err
	}
	var out [][]byte
	err = h.call(ctx, "WaitBPFEvents", func(ctx context.Context) error {
		resp, err := h.client.WaitBPFEvents(ctx, &pb.WaitBPFEventsRequest{ObjectId: objectID, Map: mapName, Timeout: durationpb.New(timeout)})
		out = resp.GetRecords()
		return err
	})
	return out, err
}

func (p hostProxy) PlaceReplicas(ctx context.Context, cell, node string, count int, reason string) (string, int, error) {
	h, err := p.conn("PlaceReplicas")
	if err != nil {
		return "", 0, err
	}
	if count < 0 {
		return "", 0, fmt.Errorf("PlaceReplicas: negative count %d", count)
	}
	var resp *pb.PlaceReplicasResponse
	err = h.call(ctx, "PlaceReplicas", func(ctx context.Context) error {
		var err error
		resp, err = h.client.PlaceReplicas(ctx, &pb.PlaceReplicasRequest{Cell: cell, Node: node, Count: uint32(count), Reason: reason})
		return err
	})
	return resp.GetNode(), int(resp.GetReplicas()), err
}

func (p hostProxy) ListNodes(ctx context.Context) ([]NodeState, error) {
	h, err := p.conn("ListNodes")
	if err != nil {
		return nil, err
	}
	var out []NodeState
	err = h.call(ctx, "ListNodes", func(ctx context.Context) error {
		resp, err := h.client.ListNodes(ctx, &pb.ListNodesRequest{})
		for _, n := range resp.GetNodes() {
			out = append(out, NodeState{Name: n.GetName(), State: n.GetState(), Load: n.GetLoad(), Cells: n.GetCells(), Self: n.GetSelf()})
		}
		return err
	})
	return out, err
}

// samplesToPB converts samples, stamping those with a zero Time with now.
func samplesToPB(samples []Sample, now time.Time) []*pb.Sample {
	return convertSlice(samples, func(s Sample) *pb.Sample {
		if s.Time.IsZero() {
			s.Time = now
		}
		return sampleToPB(s)
	})
}

// NewHostServer serves a Go-native [Host] as the gRPC service Host: what a
// plugin's host calls arrive on. Plugins do not need it; sdk/plugin/plugintest
// uses it to serve its RecordingHost, and an in-process host may too.
// Errors the Host returns reach the plugin as gRPC statuses: status
// errors unchanged, context errors as Canceled or DeadlineExceeded, others
// as Unknown.
func NewHostServer(h Host) pb.HostServer { return &hostServer{h: h} }

type hostServer struct {
	pb.UnimplementedHostServer
	h Host
}

func (s *hostServer) ListCells(ctx context.Context, _ *pb.ListCellsRequest) (*pb.ListCellsResponse, error) {
	cells, err := s.h.ListCells(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	c := &conv{}
	resp := &pb.ListCellsResponse{Cells: convertSlice(cells, func(s CellState) *pb.CellState { return cellStateToPB(c, s) })}
	if c.err != nil {
		return nil, status.Error(codes.Internal, c.err.Error())
	}
	return resp, nil
}

func (s *hostServer) ReadSignals(ctx context.Context, req *pb.ReadSignalsRequest) (*pb.ReadSignalsResponse, error) {
	readings, err := s.h.ReadSignals(ctx, req.GetNames()...)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.ReadSignalsResponse{Readings: convertSlice(readings, readingToPB)}, nil
}

func (s *hostServer) SpawnReplicas(ctx context.Context, req *pb.SpawnReplicasRequest) (*pb.ReplicasResponse, error) {
	return replicasResponse(s.h.SpawnReplicas(ctx, req.GetCell(), int(req.GetCount())))
}

func (s *hostServer) DrainReplicas(ctx context.Context, req *pb.DrainReplicasRequest) (*pb.ReplicasResponse, error) {
	return replicasResponse(s.h.DrainReplicas(ctx, req.GetCell(), int(req.GetCount())))
}

func replicasResponse(n int, err error) (*pb.ReplicasResponse, error) {
	if err != nil {
		return nil, toStatus(err)
	}
	c := &conv{}
	resp := &pb.ReplicasResponse{Replicas: c.u32("replicas", n)}
	if c.err != nil {
		return nil, status.Error(codes.Internal, c.err.Error())
	}
	return resp, nil
}

func (s *hostServer) SetRouteWeights(ctx context.Context, req *pb.SetRouteWeightsRequest) (*pb.SetRouteWeightsResponse, error) {
	if err := s.h.SetRouteWeights(ctx, req.GetCell(), convertSlice(req.GetWeights(), routeWeightFromPB)); err != nil {
		return nil, toStatus(err)
	}
	return &pb.SetRouteWeightsResponse{}, nil
}

func (s *hostServer) EmitSignal(ctx context.Context, req *pb.EmitSignalRequest) (*pb.EmitSignalResponse, error) {
	if err := s.h.EmitSignal(ctx, convertSlice(req.GetSamples(), sampleFromPB)...); err != nil {
		return nil, toStatus(err)
	}
	return &pb.EmitSignalResponse{}, nil
}

func (s *hostServer) AddJournalNote(ctx context.Context, req *pb.AddJournalNoteRequest) (*pb.AddJournalNoteResponse, error) {
	if err := s.h.AddJournalNote(ctx, req.GetCell(), req.GetNote()); err != nil {
		return nil, toStatus(err)
	}
	return &pb.AddJournalNoteResponse{}, nil
}

func (s *hostServer) RetireVersion(ctx context.Context, req *pb.RetireVersionRequest) (*pb.RetireVersionResponse, error) {
	if err := s.h.RetireVersion(ctx, req.GetCell(), req.GetSha256()); err != nil {
		return nil, toStatus(err)
	}
	return &pb.RetireVersionResponse{}, nil
}

func (s *hostServer) LoadBPF(ctx context.Context, req *pb.LoadBPFRequest) (*pb.LoadBPFResponse, error) {
	obj, err := s.h.LoadBPF(ctx, req.GetName(), req.GetObject(), req.GetConstants())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &pb.LoadBPFResponse{ObjectId: obj.ID, Maps: obj.Maps}
	for _, p := range obj.Programs {
		resp.Programs = append(resp.Programs, &pb.BPFProgram{Name: p.Name, Type: p.Type, Attach: p.Attach, Id: p.ID})
	}
	return resp, nil
}

func (s *hostServer) ReadBPFMap(ctx context.Context, req *pb.ReadBPFMapRequest) (*pb.ReadBPFMapResponse, error) {
	es, err := s.h.ReadBPFMap(ctx, req.GetObjectId(), req.GetMap())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &pb.ReadBPFMapResponse{Entries: make([]*pb.BPFMapEntry, 0, len(es))}
	for _, e := range es {
		resp.Entries = append(resp.Entries, &pb.BPFMapEntry{Key: e.Key, Values: e.Values})
	}
	return resp, nil
}

func (s *hostServer) UnloadBPF(ctx context.Context, req *pb.UnloadBPFRequest) (*pb.UnloadBPFResponse, error) {
	if err := s.h.UnloadBPF(ctx, req.GetObjectId()); err != nil {
		return nil, toStatus(err)
	}
	return &pb.UnloadBPFResponse{}, nil
}

func (s *hostServer) WaitBPFEvents(ctx context.Context, req *pb.WaitBPFEventsRequest) (*pb.WaitBPFEventsResponse, error) {
	recs, err := s.h.WaitBPFEvents(ctx, req.GetObjectId(), req.GetMap(), req.GetTimeout().AsDuration())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.WaitBPFEventsResponse{Records: recs}, nil
}

func (s *hostServer) PlaceReplicas(ctx context.Context, req *pb.PlaceReplicasRequest) (*pb.PlaceReplicasResponse, error) {
	node, n, err := s.h.PlaceReplicas(ctx, req.GetCell(), req.GetNode(), int(req.GetCount()), req.GetReason())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.PlaceReplicasResponse{Node: node, Replicas: uint32(max(n, 0))}, nil
}

func (s *hostServer) ListNodes(ctx context.Context, _ *pb.ListNodesRequest) (*pb.ListNodesResponse, error) {
	nodes, err := s.h.ListNodes(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &pb.ListNodesResponse{}
	for _, n := range nodes {
		resp.Nodes = append(resp.Nodes, &pb.NodeState{Name: n.Name, State: n.State, Load: n.Load, Cells: n.Cells, Self: n.Self})
	}
	return resp, nil
}

// toStatus turns an error into a gRPC status error: status errors (also
// wrapped ones) keep their code, context errors and the SDK's own errors
// get theirs, anything else is Unknown.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if s, ok := status.FromError(err); ok {
		return s.Err()
	}
	code := codes.Unknown
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, ErrNoHost):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrHostGone):
		code = codes.Aborted
	}
	return status.Error(code, err.Error())
}
