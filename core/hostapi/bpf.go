package hostapi

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/celluster/celluster/pluginapi/v1"
)

// BPF is the node's eBPF loader as the host service needs it: objects are
// owned by the plugin that loaded them, and only it may read or unload
// them.
type BPF interface {
	// Load loads and attaches object for owner under name, replacing an
	// object it loaded under that name before.
	Load(ctx context.Context, owner, name string, object []byte, constants map[string]uint64) (BPFObject, error)
	// ReadMap returns every entry of one map of owner's object.
	ReadMap(owner, objectID, mapName string) ([]BPFEntry, error)
	// Unload detaches and closes owner's object.
	Unload(owner, objectID string) error
	// WaitEvents waits, until ctx ends, for records in a ring buffer map
	// of owner's object and returns those available.
	WaitEvents(ctx context.Context, owner, objectID, mapName string) ([][]byte, error)
}

// MaxEventWait caps how long one WaitBPFEvents call waits.
const MaxEventWait = 10 * time.Second

// BPFObject describes a loaded object.
type BPFObject struct {
	ID       string
	Maps     []string
	Programs []BPFProgram
}

// BPFProgram describes one attached program.
type BPFProgram struct {
	Name, Type, Attach string
	ID                 uint32
}

// BPFEntry is one map entry: raw key and value bytes, one value per CPU
// for per-CPU maps.
type BPFEntry struct {
	Key    []byte
	Values [][]byte
}

// Errors a BPF implementation returns, mapped to gRPC codes.
var (
	// ErrBPFUnavailable: the node cannot load BPF (no privilege, no BTF).
	ErrBPFUnavailable = errors.New("eBPF is not available on this node")
	// ErrBPFNotAllowed: the object has a program the node does not allow.
	ErrBPFNotAllowed = errors.New("BPF program not allowed")
	// ErrBPFNotFound: no such object or map of this plugin.
	ErrBPFNotFound = errors.New("no such BPF object or map")
)

func bpfStatus(err error) error {
	switch {
	case errors.Is(err, ErrBPFNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrBPFUnavailable), errors.Is(err, ErrBPFNotAllowed):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.InvalidArgument, err.Error())
}

// LoadBPF implements pb.HostServer.
func (s *Server) LoadBPF(ctx context.Context, req *pb.LoadBPFRequest) (*pb.LoadBPFResponse, error) {
	if s.bpf == nil {
		return nil, bpfStatus(ErrBPFUnavailable)
	}
	if req.GetName() == "" || len(req.GetObject()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "LoadBPF needs a name and an object")
	}
	obj, err := s.bpf.Load(ctx, s.plugin, req.GetName(), req.GetObject(), req.GetConstants())
	if err != nil {
		s.log.Warn("BPF object refused", "object", req.GetName(), "err", err)
		return nil, bpfStatus(err)
	}
	resp := &pb.LoadBPFResponse{ObjectId: obj.ID, Maps: obj.Maps}
	for _, p := range obj.Programs {
		resp.Programs = append(resp.Programs, &pb.BPFProgram{Name: p.Name, Type: p.Type, Attach: p.Attach, Id: p.ID})
	}
	s.log.Info("BPF object loaded", "object", req.GetName(), "id", obj.ID, "programs", len(obj.Programs))
	return resp, nil
}

// ReadBPFMap implements pb.HostServer.
func (s *Server) ReadBPFMap(_ context.Context, req *pb.ReadBPFMapRequest) (*pb.ReadBPFMapResponse, error) {
	if s.bpf == nil {
		return nil, bpfStatus(ErrBPFUnavailable)
	}
	es, err := s.bpf.ReadMap(s.plugin, req.GetObjectId(), req.GetMap())
	if err != nil {
		return nil, bpfStatus(err)
	}
	resp := &pb.ReadBPFMapResponse{Entries: make([]*pb.BPFMapEntry, 0, len(es))}
	for _, e := range es {
		resp.Entries = append(resp.Entries, &pb.BPFMapEntry{Key: e.Key, Values: e.Values})
	}
	return resp, nil
}

// UnloadBPF implements pb.HostServer.
func (s *Server) UnloadBPF(_ context.Context, req *pb.UnloadBPFRequest) (*pb.UnloadBPFResponse, error) {
	if s.bpf == nil {
		return nil, bpfStatus(ErrBPFUnavailable)
	}
	if err := s.bpf.Unload(s.plugin, req.GetObjectId()); err != nil {
		return nil, bpfStatus(err)
	}
	return &pb.UnloadBPFResponse{}, nil
}

// WaitBPFEvents implements pb.HostServer.
func (s *Server) WaitBPFEvents(ctx context.Context, req *pb.WaitBPFEventsRequest) (*pb.WaitBPFEventsResponse, error) {
	if s.bpf == nil {
		return nil, bpfStatus(ErrBPFUnavailable)
	}
	wait := min(max(req.GetTimeout().AsDuration(), 0), MaxEventWait)
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	recs, err := s.bpf.WaitEvents(wctx, s.plugin, req.GetObjectId(), req.GetMap())
	if err != nil {
		return nil, bpfStatus(err)
	}
	if max := int(req.GetMax()); max > 0 && len(recs) > max {
		recs = recs[:max]
	}
	return &pb.WaitBPFEventsResponse{Records: recs}, nil
}
