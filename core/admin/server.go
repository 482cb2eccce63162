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
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/celluster/celluster/core/admin/adminpb"
	"github.com/celluster/celluster/core/cell"
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
		}
		if !c.LastUsed.IsZero() {
			pc.LastUsed = timestamppb.New(c.LastUsed)
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
