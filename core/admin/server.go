// Package admin serves the node's local admin API (package adminpb) as gRPC
// on a unix socket, readable only by the node's user.
package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/celluster/celluster/core/admin/adminpb"
	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/journal"
	"github.com/celluster/celluster/core/reflex"
	"github.com/celluster/celluster/core/signals"
)

// Status describes a node for the Status call.
type Status struct {
	Version       string
	Started       time.Time
	HTTPAddr      string
	CellsDir      string
	DataDir       string
	GoVersion     string
	WazeroVersion string
	Compilations  int
	Limits        cell.Limits
	MetricsAddr   string
	BPF           BPFStatus
}

// BPFStatus is the eBPF loader's state for Status.
type BPFStatus struct {
	Available                            bool
	Error                                string
	Syscall, BTF                         bool
	ProgramTypes, MapTypes, AttachPoints []string
	PinPath                              string
	Programs                             []BPFProgram
}

// BPFProgram is one loaded program.
type BPFProgram struct {
	Object, Name, Type, Attach string
	ID                         uint32
}

// PluginStatus describes one plugin for ListPlugins.
type PluginStatus struct {
	Name, Kind, Version, State, LastError, Path, SHA256 string
	API                                                 uint32
	PID, Restarts                                       int
	Builtin                                             bool
	Verbs, Signals, Extensions                          []string
}

// Node is what the admin API reports on.
type Node interface {
	Status() Status
	Cells() []cell.Info
	Plugins() []PluginStatus
	Signals() []signals.Reading
	SignalDesc(name string) (signals.Desc, bool)
	Journal(cell string, limit int) []journal.Entry
	Intent(cell string) (Intent, bool)
	Verb(ctx context.Context, verb, cell string, args []string) (journal.Entry, error)
	Nodes() (fabricAddr, trustDomain string, nodes []NodeInfo)
}

// NodeInfo is one member of the fabric.
type NodeInfo struct {
	Name, Address, State, HTTP string
	Cells                      []string
	Load                       int64
	Self                       bool
}

// Intent is the intent a cell runs on, as applied, and its rules' state.
type Intent struct {
	Cell, Origin, Source, Text, Parser string
	Applied                            time.Time
	Min, Max, Warm                     int
	DecayIdle                          time.Duration
	UpgradeArgs                        []string
	Rules                              []reflex.RuleStatus
	// Error is the last rejected intent's diagnostics.
	Error string
	// Warnings are about the intent in force (e.g. a rule on a signal no
	// source emits); it applies regardless.
	Warnings []string
	// KeepState and StateEvery are the intent's `keep state [replicated
	// every D]`: reflex.Program's fields of the same names.
	KeepState  bool
	StateEvery time.Duration
}

// Server is the admin gRPC server.
type Server struct {
	adminpb.UnimplementedAdminServer
	node Node
	grpc *grpc.Server
	path string
}

// Listen opens the unix socket at path (replacing a stale one) with mode 0600.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin: creating socket dir: %w", err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("admin: socket %s is in use by another node", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("admin: removing stale socket: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin: listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("admin: securing socket: %w", err)
	}
	return l, nil
}

// New returns an admin server reporting on node.
func New(node Node) *Server {
	s := &Server{node: node, grpc: grpc.NewServer()}
	adminpb.RegisterAdminServer(s.grpc, s)
	return s
}

// Serve answers calls on l until Stop.
func (s *Server) Serve(l net.Listener) error {
	if ul, ok := l.(*net.UnixListener); ok {
		s.path = ul.Addr().String()
	}
	if err := s.grpc.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("admin: %w", err)
	}
	return nil
}

// Stop ends pending calls and removes the socket.
func (s *Server) Stop() {
	s.grpc.Stop()
	if s.path != "" {
		_ = os.Remove(s.path)
	}
}

// Status implements adminpb.AdminServer.
func (s *Server) Status(context.Context, *adminpb.StatusRequest) (*adminpb.StatusResponse, error) {
	st := s.node.Status()
	resp := &adminpb.StatusResponse{
		Version:       st.Version,
		Started:       timestamppb.New(st.Started),
		HttpAddr:      st.HTTPAddr,
		CellsDir:      st.CellsDir,
		DataDir:       st.DataDir,
		GoVersion:     st.GoVersion,
		WazeroVersion: st.WazeroVersion,
		Compilations:  int64(st.Compilations),
		DefaultLimits: limitsPB(st.Limits),
		MetricsAddr:   st.MetricsAddr,
		Bpf: &adminpb.BPF{
			Available: st.BPF.Available, Error: st.BPF.Error, BpfSyscall: st.BPF.Syscall, Btf: st.BPF.BTF,
			ProgramTypes: st.BPF.ProgramTypes, MapTypes: st.BPF.MapTypes, AttachPoints: st.BPF.AttachPoints,
			PinPath: st.BPF.PinPath,
		},
	}
	for _, p := range st.BPF.Programs {
		resp.Bpf.Programs = append(resp.Bpf.Programs, &adminpb.BPFProgram{Object: p.Object, Name: p.Name, Type: p.Type, Attach: p.Attach, Id: p.ID})
	}
	for _, c := range s.node.Cells() {
		resp.Cells++
		switch c.State {
		case cell.StateServing:
			resp.Serving++
		case cell.StateFailed:
			resp.Failed++
		}
	}
	return resp, nil
}

// ListCells implements adminpb.AdminServer.
func (s *Server) ListCells(context.Context, *adminpb.ListCellsRequest) (*adminpb.ListCellsResponse, error) {
	infos := s.node.Cells()
	resp := &adminpb.ListCellsResponse{Cells: make([]*adminpb.Cell, 0, len(infos))}
	for _, c := range infos {
		pc := &adminpb.Cell{
			Name:      c.Name,
			Sha256:    c.SHA256,
			Abi:       c.ABI,
			State:     string(c.State),
			Error:     c.Error,
			Source:    c.Source,
			Replicas:  int32(c.Replicas),
			InFlight:  c.InFlight,
			Queued:    c.Queued,
			Requests:  c.Requests,
			Errors:    c.Errors,
			P50Ms:     ms(c.P50),
			P99Ms:     ms(c.P99),
			SizeBytes: int64(c.Size),
			Upgrades:  int32(c.Upgrades),
			Updated:   timestamppb.New(c.Updated),
			Limits:    limitsPB(c.Limits),

			MinReplicas: int32(c.Policy.Min),
			MaxReplicas: int32(c.Policy.Max),
			Warm:        int32(c.Policy.Warm),
		}
		for _, v := range c.Versions {
			pc.Versions = append(pc.Versions, &adminpb.Version{Sha256: v.SHA256, Source: v.Source, Weight: v.Weight,
				Replicas: int32(v.Replicas), Requests: v.Requests, Errors: v.Errors, P99Ms: ms(v.P99)})
		}
		if !c.LastUsed.IsZero() {
			pc.LastUsed = timestamppb.New(c.LastUsed)
		}
		sn := c.Snapshot
		pc.Snapshot = &adminpb.Snapshot{InitBytes: int64(sn.Init), NoSnapshot: sn.NoSnapshot, Kept: sn.Kept,
			StateId: sn.ID, StateBytes: int64(sn.State), StateHow: sn.How, Note: sn.Note}
		if !sn.Taken.IsZero() {
			pc.Snapshot.StateTaken = timestamppb.New(sn.Taken)
		}
		resp.Cells = append(resp.Cells, pc)
	}
	return resp, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func limitsPB(l cell.Limits) *adminpb.Limits {
	return &adminpb.Limits{
		RequestTimeout: durationpb.New(l.RequestTimeout),
		MemoryBytes:    l.Memory,
		Concurrency:    int32(l.Concurrency),
		QueueLength:    int32(l.QueueLength),
		QueueTimeout:   durationpb.New(l.QueueTimeout),
		MaxBodyBytes:   l.MaxBody,
		Warm:           int32(l.Warm),
	}
}

// ListPlugins implements adminpb.AdminServer.
func (s *Server) ListPlugins(context.Context, *adminpb.ListPluginsRequest) (*adminpb.ListPluginsResponse, error) {
	ps := s.node.Plugins()
	resp := &adminpb.ListPluginsResponse{Plugins: make([]*adminpb.Plugin, 0, len(ps))}
	for _, p := range ps {
		resp.Plugins = append(resp.Plugins, &adminpb.Plugin{
			Name: p.Name, Kind: p.Kind, Version: p.Version, Api: p.API, State: p.State,
			Pid: int64(p.PID), Restarts: int32(p.Restarts), LastError: p.LastError,
			Path: p.Path, Sha256: p.SHA256, Builtin: p.Builtin,
			Verbs: p.Verbs, Signals: p.Signals, Extensions: p.Extensions,
		})
	}
	return resp, nil
}

// ListSignals implements adminpb.AdminServer.
func (s *Server) ListSignals(context.Context, *adminpb.ListSignalsRequest) (*adminpb.ListSignalsResponse, error) {
	rs := s.node.Signals()
	resp := &adminpb.ListSignalsResponse{Signals: make([]*adminpb.Signal, 0, len(rs))}
	for _, r := range rs {
		sig := &adminpb.Signal{Name: r.Name, Labels: r.Labels, Value: r.Value, Source: r.Source, Time: timestamppb.New(r.Time)}
		if d, ok := s.node.SignalDesc(r.Name); ok {
			sig.Unit = d.Unit
		}
		resp.Signals = append(resp.Signals, sig)
	}
	return resp, nil
}

// Journal implements adminpb.AdminServer.
func (s *Server) Journal(_ context.Context, req *adminpb.JournalRequest) (*adminpb.JournalResponse, error) {
	es := s.node.Journal(req.GetCell(), int(req.GetLimit()))
	resp := &adminpb.JournalResponse{Entries: make([]*adminpb.JournalEntry, 0, len(es))}
	for _, e := range es {
		resp.Entries = append(resp.Entries, EntryPB(e))
	}
	return resp, nil
}

// streamBatchBytes bounds the encoded entries of one StreamJournal message,
// well under gRPC's default 4 MiB receive limit.
const streamBatchBytes = 1 << 20

// StreamJournal implements adminpb.AdminServer: the entries Journal would
// return, in messages of at most streamBatchBytes of entries (or a single
// larger entry).
func (s *Server) StreamJournal(req *adminpb.JournalRequest, stream grpc.ServerStreamingServer[adminpb.JournalResponse]) error {
	es := s.node.Journal(req.GetCell(), int(req.GetLimit()))
	batch := &adminpb.JournalResponse{}
	size := 0
	flush := func() error {
		if len(batch.Entries) == 0 {
			return nil
		}
		if err := stream.Send(batch); err != nil {
			return fmt.Errorf("sending %d journal entries: %w", len(batch.Entries), err)
		}
		batch, size = &adminpb.JournalResponse{}, 0
		return nil
	}
	for _, e := range es {
		pe := EntryPB(e)
		n := proto.Size(pe) + 8 // the field's tag and length
		if size > 0 && size+n > streamBatchBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		batch.Entries = append(batch.Entries, pe)
		size += n
	}
	return flush()
}

// EntryPB converts a journal entry for the admin API.
func EntryPB(e journal.Entry) *adminpb.JournalEntry {
	out := &adminpb.JournalEntry{
		Seq: e.Seq, Time: timestamppb.New(e.Time), Cell: e.Cell, Verb: e.Verb, Args: e.Args,
		Rule: e.Rule, Origin: e.Origin, Condition: e.Condition, Manual: e.Manual,
		Outcome: e.Outcome, Message: e.Message, Duration: durationpb.New(e.Duration), Plugin: e.Plugin,
		Explanation: journal.Explain(e), TraceId: e.TraceID,
	}
	for _, v := range e.Values {
		out.Values = append(out.Values, &adminpb.SignalValue{Signal: v.Signal, Labels: v.Labels, Value: v.Value, Time: timestamppb.New(v.Time)})
	}
	return out
}

// Intent implements adminpb.AdminServer.
func (s *Server) Intent(_ context.Context, req *adminpb.IntentRequest) (*adminpb.IntentResponse, error) {
	in, ok := s.node.Intent(req.GetCell())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no intent known for cell %q (is the cell loaded? see celctl cells)", req.GetCell())
	}
	resp := &adminpb.IntentResponse{
		Cell: in.Cell, Origin: in.Origin, Source: in.Source, Text: in.Text, Parser: in.Parser,
		MinReplicas: int32(in.Min), MaxReplicas: int32(in.Max), Warm: int32(in.Warm),
		DecayAfterIdle: durationpb.New(in.DecayIdle), UpgradeArgs: in.UpgradeArgs, Error: in.Error,
		Warnings: in.Warnings, KeepState: in.KeepState, StateEvery: durationpb.New(in.StateEvery),
	}
	if !in.Applied.IsZero() {
		resp.Applied = timestamppb.New(in.Applied)
	}
	for _, r := range in.Rules {
		pr := &adminpb.Rule{Name: r.Rule.Name, Text: r.Rule.String(), Origin: r.Rule.Origin, Holding: r.Holding, LastValue: r.LastValue}
		for _, t := range []struct {
			at  time.Time
			dst **timestamppb.Timestamp
		}{{r.Since, &pr.Since}, {r.LastFired, &pr.LastFired}, {r.QuietUntil, &pr.QuietUntil}, {r.LastSeen, &pr.LastSeen}} {
			if !t.at.IsZero() {
				*t.dst = timestamppb.New(t.at)
			}
		}
		resp.Rules = append(resp.Rules, pr)
	}
	return resp, nil
}

// Verb implements adminpb.AdminServer.
func (s *Server) Verb(ctx context.Context, req *adminpb.VerbRequest) (*adminpb.JournalEntry, error) {
	if req.GetVerb() == "" || req.GetCell() == "" {
		return nil, status.Error(codes.InvalidArgument, "a verb and a cell are required")
	}
	e, err := s.node.Verb(ctx, req.GetVerb(), req.GetCell(), req.GetArgs())
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return EntryPB(e), nil
}

// ListNodes implements adminpb.AdminServer.
func (s *Server) ListNodes(context.Context, *adminpb.ListNodesRequest) (*adminpb.ListNodesResponse, error) {
	addr, td, nodes := s.node.Nodes()
	resp := &adminpb.ListNodesResponse{FabricAddr: addr, TrustDomain: td}
	for _, n := range nodes {
		resp.Nodes = append(resp.Nodes, &adminpb.Node{Name: n.Name, Address: n.Address, State: n.State, Cells: n.Cells, Load: n.Load, Http: n.HTTP, Self: n.Self})
	}
	return resp, nil
}
