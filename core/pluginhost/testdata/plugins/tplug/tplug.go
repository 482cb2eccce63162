// Package tplug is a minimal plugin-side harness for the pluginhost tests,
// written directly against go-plugin and the pluginapi v1 servers (so the
// tests do not depend on sdk/plugin).
package tplug

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/celluster/celluster/pluginapi"
	pb "github.com/celluster/celluster/pluginapi/v1"
)

// Plugin is what a test plugin main hands to Main.
type Plugin struct {
	Info *pb.PluginInfo
	// Versions are the protocol versions served (default [1]).
	Versions []int
	// Cookie overrides the magic cookie value (to test a wrong one).
	Cookie string
	// Hang never completes the handshake.
	Hang bool

	Telemetry pb.TelemetryServer
	Intent    pb.IntentParserServer
	Verb      pb.VerbServer
}

var (
	mu       sync.Mutex
	host     pb.HostClient
	settings map[string]string
	// Log writes hclog JSON lines to the real stderr (the host parses them).
	Log = hclog.New(&hclog.LoggerOptions{Output: os.Stderr, JSONFormat: true, Level: hclog.Debug})
)

// Host returns the host client dialed at Configure.
func Host() pb.HostClient {
	mu.Lock()
	defer mu.Unlock()
	return host
}

// Setting returns a Configure setting, or def.
func Setting(key, def string) string {
	mu.Lock()
	defer mu.Unlock()
	if v, ok := settings[key]; ok {
		return v
	}
	return def
}

// IntSetting is Setting parsed as an int.
func IntSetting(key string, def int) int {
	n, err := strconv.Atoi(Setting(key, strconv.Itoa(def)))
	if err != nil {
		return def
	}
	return n
}

// Main runs the plugin: `describe` prints the PluginInfo (protojson,
// proto names) and exits 0; anything else serves it over go-plugin. If
// TPLUG_MARKER_DIR is set, every run leaves a file there named
// <binary>.<mode>.<pid>.
func Main(p *Plugin) {
	args := os.Args[1:]
	describe := len(args) > 0 && args[len(args)-1] == "describe"
	mode := "serve"
	if describe {
		mode = "describe"
	}
	if dir := os.Getenv("TPLUG_MARKER_DIR"); dir != "" {
		name := fmt.Sprintf("%s.%s.%d", filepath.Base(os.Args[0]), mode, os.Getpid())
		_ = os.WriteFile(filepath.Join(dir, name), nil, 0o644)
	}
	if describe {
		info := p.Info
		if os.Getenv("TPLUG_DESCRIBE_API") != "" {
			n, _ := strconv.Atoi(os.Getenv("TPLUG_DESCRIBE_API"))
			info = &pb.PluginInfo{Kind: info.Kind, Name: info.Name, Version: info.Version, ApiVersions: []uint32{uint32(n)}, Description: info.Description}
		}
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(info)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(string(b))
		os.Exit(0)
	}
	if p.Hang {
		Log.Info("hanging instead of completing the handshake")
		select {}
	}
	versions := p.Versions
	if len(versions) == 0 {
		versions = []int{pluginapi.ProtocolVersion}
	}
	cookie := p.Cookie
	if cookie == "" {
		cookie = pluginapi.MagicCookieValue
	}
	set := plugin.PluginSet{
		pluginapi.ServicePlugin: &shim{register: func(s *grpc.Server, b *plugin.GRPCBroker) {
			pb.RegisterPluginServer(s, &base{info: p.Info, broker: b})
		}},
	}
	switch {
	case p.Telemetry != nil:
		set[pluginapi.ServiceTelemetry] = &shim{register: func(s *grpc.Server, _ *plugin.GRPCBroker) { pb.RegisterTelemetryServer(s, p.Telemetry) }}
	case p.Intent != nil:
		set[pluginapi.ServiceIntent] = &shim{register: func(s *grpc.Server, _ *plugin.GRPCBroker) { pb.RegisterIntentParserServer(s, p.Intent) }}
	case p.Verb != nil:
		set[pluginapi.ServiceVerb] = &shim{register: func(s *grpc.Server, _ *plugin.GRPCBroker) { pb.RegisterVerbServer(s, p.Verb) }}
	}
	vset := map[int]plugin.PluginSet{}
	for _, v := range versions {
		vset[v] = set
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion:  uint(versions[0]),
			MagicCookieKey:   pluginapi.MagicCookieKey,
			MagicCookieValue: cookie,
		},
		VersionedPlugins: vset,
		GRPCServer:       plugin.DefaultGRPCServer,
		Logger:           Log,
	})
}

type shim struct {
	plugin.NetRPCUnsupportedPlugin
	register func(*grpc.Server, *plugin.GRPCBroker)
}

func (s *shim) GRPCServer(b *plugin.GRPCBroker, g *grpc.Server) error {
	s.register(g, b)
	return nil
}

func (s *shim) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("tplug: plugin side only")
}

type base struct {
	pb.UnimplementedPluginServer
	info   *pb.PluginInfo
	broker *plugin.GRPCBroker
}

func (b *base) Info(context.Context, *pb.InfoRequest) (*pb.PluginInfo, error) { return b.info, nil }

func (b *base) Configure(_ context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	conn, err := b.broker.Dial(req.GetHostBrokerId())
	if err != nil {
		return nil, fmt.Errorf("dialing the host service: %w", err)
	}
	mu.Lock()
	host = pb.NewHostClient(conn)
	settings = req.GetSettings()
	mu.Unlock()
	Log.Info("configured", "node", req.GetNode(), "api", req.GetApiVersion())
	// A plain write to stderr after Serve goes over go-plugin's stdio stream.
	fmt.Fprintf(os.Stderr, "%s: configured for node %s\n", b.info.GetName(), req.GetNode())
	return &pb.ConfigureResponse{}, nil
}

// Info builds a PluginInfo speaking API version 1.
func Info(kind, name string) *pb.PluginInfo {
	return &pb.PluginInfo{Kind: kind, Name: name, Version: "0.0.1-test", ApiVersions: []uint32{pluginapi.ProtocolVersion}, Description: "pluginhost test plugin " + name}
}
