package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"sync"

	"github.com/celluster/celluster/pluginapi"
	pb "github.com/celluster/celluster/pluginapi/v1"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
)

// Serve runs a plugin; call it from main. impl must implement exactly one
// of [TelemetrySource], [IntentParser] and [VerbPlugin] (and may implement
// [Configurer]); otherwise, or if info has no Name, Serve exits through
// log.Fatal.
//
// Run as `<binary> describe`, Serve prints the plugin's info as JSON (the
// PluginInfo message of package celluster.pluginapi.v1, with proto field
// names) to standard output and exits 0 without serving.
//
// Otherwise Serve hands the process to go-plugin: it checks the handshake
// cookie (a binary started by hand prints go-plugin's explanation and
// exits 1), prints the handshake line on standard output and serves the
// plugin over gRPC until the host shuts it down; then Serve returns.
// Nothing may write to standard output once Serve has started.
func Serve(info Info, impl any) {
	srv, err := NewServer(info, impl)
	if err != nil {
		log.Fatal(err)
	}
	if len(os.Args) > 1 && os.Args[1] == "describe" {
		if err := srv.Describe(os.Stdout); err != nil {
			log.Fatal(err)
		}
		os.Exit(0)
	}
	defer srv.Close()
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: Handshake(),
		VersionedPlugins: map[int]goplugin.PluginSet{
			pluginapi.ProtocolVersion: srv.PluginSet(),
		},
		GRPCServer: goplugin.DefaultGRPCServer,
	})
}

// Handshake is the go-plugin handshake a Celluster plugin and its host
// share: the cookie of package pluginapi and its newest protocol version.
func Handshake() goplugin.HandshakeConfig {
	return goplugin.HandshakeConfig{
		ProtocolVersion:  pluginapi.ProtocolVersion,
		MagicCookieKey:   pluginapi.MagicCookieKey,
		MagicCookieValue: pluginapi.MagicCookieValue,
	}
}

// Describe writes what `<binary> describe` prints for a plugin: its
// PluginInfo as one line of JSON. It is for binaries that take the describe
// command in another place than os.Args[1] (`celcore plugin NAME
// describe`); others get it from [Serve].
func Describe(w io.Writer, info Info, impl any) error {
	srv, err := NewServer(info, impl)
	if err != nil {
		return err
	}
	defer srv.Close()
	return srv.Describe(w)
}

// KindOf returns the plugin kind impl implements (pluginapi.KindTelemetry,
// KindIntent or KindVerb), or an error if it implements none or several.
func KindOf(impl any) (string, error) {
	var kinds []string
	if _, ok := impl.(TelemetrySource); ok {
		kinds = append(kinds, pluginapi.KindTelemetry)
	}
	if _, ok := impl.(IntentParser); ok {
		kinds = append(kinds, pluginapi.KindIntent)
	}
	if _, ok := impl.(VerbPlugin); ok {
		kinds = append(kinds, pluginapi.KindVerb)
	}
	switch len(kinds) {
	case 1:
		return kinds[0], nil
	case 0:
		return "", fmt.Errorf("celluster plugin: %T implements none of plugin.TelemetrySource, plugin.IntentParser and plugin.VerbPlugin", impl)
	default:
		return "", fmt.Errorf("celluster plugin: %T implements several plugin kinds (%s); a plugin must have exactly one", impl, strings.Join(kinds, ", "))
	}
}

// Server is a plugin ready to be served: the go-plugin plugin set that
// [Serve] serves, with the state behind it (the host connection). Plugin
// authors need only Serve; test harnesses such as sdk/plugin/plugintest, and
// hosts running a plugin in process, use a Server directly.
type Server struct {
	info Info
	kind string
	impl any

	life context.Context
	stop context.CancelFunc

	mu   sync.Mutex
	host *hostConn
}

// NewServer checks info and impl (see [Serve]) and returns their Server.
func NewServer(info Info, impl any) (*Server, error) {
	if info.Name == "" {
		return nil, errors.New("celluster plugin: Info.Name is empty")
	}
	kind, err := KindOf(impl)
	if err != nil {
		return nil, err
	}
	life, stop := context.WithCancel(context.Background())
	return &Server{info: info, kind: kind, impl: impl, life: life, stop: stop}, nil
}

// Kind returns the plugin's kind, e.g. pluginapi.KindTelemetry.
func (s *Server) Kind() string { return s.kind }

// Host returns the handle on the host the plugin's calls get. It fails
// with ErrNoHost until the host service has been configured.
func (s *Server) Host() Host { return hostProxy{s} }

// Describe writes the plugin's info as one line of JSON (protojson of
// pluginapiv1.PluginInfo with proto field names).
func (s *Server) Describe(w io.Writer) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(infoToPB(s.info, s.kind))
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// PluginSet returns the go-plugin plugin set to serve: the base service
// under pluginapi.ServicePlugin and the kind's service under its name
// (pluginapi.KindService). The plugins only serve; their GRPCClient
// methods fail, since the host side has its own client code.
func (s *Server) PluginSet() goplugin.PluginSet {
	return goplugin.PluginSet{
		pluginapi.ServicePlugin:       &pluginShim{s: s},
		pluginapi.KindService[s.kind]: &kindShim{s: s},
	}
}

// Close ends the plugin's life: host calls in flight and later fail with
// ErrHostGone and the host connection is closed. Serve calls it when the
// host has shut the plugin down.
func (s *Server) Close() {
	s.stop()
	s.mu.Lock()
	h := s.host
	s.host = nil
	s.mu.Unlock()
	if h != nil {
		h.close()
	}
}

// setHost makes h the host connection, closing the one it replaces.
func (s *Server) setHost(h *hostConn) {
	s.mu.Lock()
	old := s.host
	s.host = h
	s.mu.Unlock()
	if old != nil {
		old.close()
	}
}

var errClientSide = errors.New("celluster plugin: not implemented on the plugin side")

// pluginShim is the go-plugin plugin of the base service Plugin.
type pluginShim struct {
	goplugin.NetRPCUnsupportedPlugin
	s *Server
}

func (p *pluginShim) GRPCServer(broker *goplugin.GRPCBroker, g *grpc.Server) error {
	pb.RegisterPluginServer(g, &pluginServer{s: p.s, broker: broker})
	return nil
}

func (p *pluginShim) GRPCClient(context.Context, *goplugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errClientSide
}

// kindShim is the go-plugin plugin of the kind's service.
type kindShim struct {
	goplugin.NetRPCUnsupportedPlugin
	s *Server
}

func (p *kindShim) GRPCServer(_ *goplugin.GRPCBroker, g *grpc.Server) error {
	switch impl := p.s.impl.(type) {
	case TelemetrySource:
		pb.RegisterTelemetryServer(g, &telemetryServer{impl: impl})
	case IntentParser:
		pb.RegisterIntentParserServer(g, &intentServer{impl: impl})
	case VerbPlugin:
		pb.RegisterVerbServer(g, &verbServer{impl: impl, host: p.s.Host()})
	}
	return nil
}

func (p *kindShim) GRPCClient(context.Context, *goplugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errClientSide
}
