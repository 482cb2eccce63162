package plugintest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/celluster/celluster/pluginapi"
	pb "github.com/celluster/celluster/pluginapi/v1"
	"github.com/celluster/celluster/sdk/plugin"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// callTimeout bounds each unary call the suites make.
const callTimeout = 10 * time.Second

// Option adjusts how a suite runs a plugin.
type Option func(*options)

type options struct {
	host     *RecordingHost
	settings map[string]string
	node     string
}

// WithHost makes the suite serve h as the plugin's host, so that the
// test can set its cells and readings and inspect the calls it received
// after the suite. Without it the suite uses an empty RecordingHost.
func WithHost(h *RecordingHost) Option { return func(o *options) { o.host = h } }

// WithSettings sets the settings the plugin is configured with.
func WithSettings(settings map[string]string) Option {
	return func(o *options) { o.settings = settings }
}

func buildOptions(opts []Option) *options {
	o := &options{node: "plugintest"}
	for _, f := range opts {
		f(o)
	}
	if o.host == nil {
		o.host = &RecordingHost{}
	}
	return o
}

// harness is a plugin served in process through go-plugin's real gRPC
// server and broker, and the host side's client of it.
type harness struct {
	t      *testing.T
	broker *goplugin.GRPCBroker
	conn   *grpc.ClientConn
	plugin pb.PluginClient
}

// clientEnd is what the suite's go-plugin plugins dispense on the client
// side: the raw connection and broker, which the suite wraps in the
// generated pluginapiv1 clients, as the core does.
type clientEnd struct {
	broker *goplugin.GRPCBroker
	conn   *grpc.ClientConn
}

// shim serves with the SDK's own server plugin and dispenses a clientEnd.
type shim struct {
	goplugin.NetRPCUnsupportedPlugin
	server goplugin.GRPCPlugin
}

func (s *shim) GRPCServer(b *goplugin.GRPCBroker, g *grpc.Server) error {
	return s.server.GRPCServer(b, g)
}

func (s *shim) GRPCClient(_ context.Context, b *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &clientEnd{broker: b, conn: c}, nil
}

// start serves impl and checks its Info. It stops the test on failures
// that leave nothing else to check.
func start(t *testing.T, info plugin.Info, impl any, wantKind string) *harness {
	t.Helper()
	srv, err := plugin.NewServer(info, impl)
	if err != nil {
		t.Fatalf("plugin.NewServer: %v", err)
	}
	if srv.Kind() != wantKind {
		t.Fatalf("the implementation is a %s plugin, want %s", srv.Kind(), wantKind)
	}
	set := make(map[string]goplugin.Plugin)
	for name, p := range srv.PluginSet() {
		gp, ok := p.(goplugin.GRPCPlugin)
		if !ok {
			t.Fatalf("plugin set entry %q is not a gRPC plugin", name)
		}
		set[name] = &shim{server: gp}
	}
	gc, gs := goplugin.TestPluginGRPCConn(t, true, set)
	t.Cleanup(func() {
		// Closing the client shuts the server down, as a host does; stop
		// it by force only if that fails.
		_ = gc.Close()
		select {
		case <-gs.DoneCh:
		case <-time.After(5 * time.Second):
			gs.Stop()
		}
		srv.Close()
	})
	raw, err := gc.Dispense(pluginapi.ServicePlugin)
	if err != nil {
		t.Fatalf("dispensing %q: %v", pluginapi.ServicePlugin, err)
	}
	if _, err := gc.Dispense(pluginapi.KindService[wantKind]); err != nil {
		t.Fatalf("dispensing %q: %v", pluginapi.KindService[wantKind], err)
	}
	end := raw.(*clientEnd)
	h := &harness{t: t, broker: end.broker, conn: end.conn, plugin: pb.NewPluginClient(end.conn)}
	h.checkInfo(info, wantKind)
	return h
}

func (h *harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	h.t.Cleanup(cancel)
	return ctx
}

func (h *harness) checkInfo(info plugin.Info, wantKind string) {
	t := h.t
	t.Helper()
	got, err := h.plugin.Info(h.ctx(), &pb.InfoRequest{})
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	if got.GetKind() != wantKind {
		t.Errorf("Info: kind %q, want %q", got.GetKind(), wantKind)
	}
	if got.GetName() == "" {
		t.Errorf("Info: empty name")
	} else if got.GetName() != info.Name {
		t.Errorf("Info: name %q, want %q", got.GetName(), info.Name)
	}
	if got.GetVersion() == "" {
		t.Errorf("Info: empty version")
	}
	if !slices.Contains(got.GetApiVersions(), pluginapi.ProtocolVersion) {
		t.Errorf("Info: api_versions %v lack protocol version %d", got.GetApiVersions(), pluginapi.ProtocolVersion)
	}
}

// configure serves host over the broker, as the core does, and configures
// the plugin with its broker id.
func (h *harness) configure(o *options) {
	t := h.t
	t.Helper()
	id := h.broker.NextId()
	go h.broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(opts...)
		pb.RegisterHostServer(s, plugin.NewHostServer(o.host))
		return s
	})
	_, err := h.plugin.Configure(h.ctx(), &pb.ConfigureRequest{
		Settings:     o.settings,
		Node:         o.node,
		HostBrokerId: id,
		ApiVersion:   pluginapi.ProtocolVersion,
	})
	if err != nil {
		t.Fatalf("Configure: %v", err)
	}
}
