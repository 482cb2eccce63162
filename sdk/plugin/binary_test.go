package plugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/celluster/celluster/pluginapi"
	pb "github.com/celluster/celluster/pluginapi/v1"
	"github.com/celluster/celluster/sdk/plugin"
	"github.com/celluster/celluster/sdk/plugin/plugintest"
	hclog "github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// buildEcho builds testdata/echoplugin into a temporary directory.
func buildEcho(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a plugin binary")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "echoplugin")
	out, err := exec.Command(goBin, "build", "-o", bin, "./testdata/echoplugin").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// withoutCookie is the environment without the handshake cookie.
func withoutCookie() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, pluginapi.MagicCookieKey+"=") {
			env = append(env, kv)
		}
	}
	return env
}

var echoInfo = &pb.PluginInfo{
	Kind:         pluginapi.KindVerb,
	Name:         "echo",
	Version:      "0.1.0",
	ApiVersions:  []uint32{pluginapi.ProtocolVersion},
	Capabilities: []string{"verb:echo"},
	Description:  "echoes its arguments",
}

func TestEchoPlugin(t *testing.T) {
	bin := buildEcho(t)

	t.Run("describe", func(t *testing.T) {
		cmd := exec.Command(bin, "describe")
		cmd.Env = withoutCookie()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s describe: %v\n%s", bin, err, stderr.Bytes())
		}
		var got pb.PluginInfo
		if err := protojson.Unmarshal(out, &got); err != nil {
			t.Fatalf("describe printed %q: %v", out, err)
		}
		if !proto.Equal(&got, echoInfo) {
			t.Errorf("describe = %v, want %v", &got, echoInfo)
		}
		var raw map[string]any
		if err := json.Unmarshal(out, &raw); err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{"kind", "name", "version", "api_versions", "capabilities", "description"} {
			if _, ok := raw[key]; !ok {
				t.Errorf("describe JSON lacks %q: %s", key, out)
			}
		}
	})

	t.Run("no cookie", func(t *testing.T) {
		cmd := exec.Command(bin)
		cmd.Env = withoutCookie()
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Fatalf("run without the cookie: %v; want a non-zero exit", err)
		}
		if !strings.Contains(stderr.String(), "This binary is a plugin") {
			t.Errorf("stderr %q lacks go-plugin's explanation", stderr.String())
		}
		if stdout.Len() != 0 {
			t.Errorf("stdout %q, want nothing", stdout.String())
		}
	})

	for _, mux := range []bool{false, true} {
		for _, mtls := range []bool{false, true} {
			t.Run(fmt.Sprintf("serve/multiplex=%v/mtls=%v", mux, mtls), func(t *testing.T) { serveEcho(t, bin, mux, mtls) })
		}
	}
}

// clientEnd is what the host side dispenses: the connection and broker.
type clientEnd struct {
	broker *goplugin.GRPCBroker
	conn   *grpc.ClientConn
}

// clientShim is a host-side go-plugin plugin, as the core has.
type clientShim struct {
	goplugin.NetRPCUnsupportedPlugin
}

func (clientShim) GRPCServer(*goplugin.GRPCBroker, *grpc.Server) error {
	return errors.New("host side only")
}

func (clientShim) GRPCClient(_ context.Context, b *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &clientEnd{broker: b, conn: c}, nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serveEcho runs the plugin binary as the core does: go-plugin's client
// with the handshake, the versioned plugin set, the host service served on
// the broker and its id passed in Configure.
func serveEcho(t *testing.T, bin string, mux, mtls bool) {
	logs := &syncBuffer{}
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig: plugin.Handshake(),
		VersionedPlugins: map[int]goplugin.PluginSet{
			pluginapi.ProtocolVersion: {
				pluginapi.ServicePlugin: clientShim{},
				pluginapi.ServiceVerb:   clientShim{},
			},
		},
		Cmd:                 exec.Command(bin),
		AllowedProtocols:    []goplugin.Protocol{goplugin.ProtocolGRPC},
		GRPCBrokerMultiplex: mux,
		AutoMTLS:            mtls,
		Logger:              hclog.New(&hclog.LoggerOptions{Name: "host", Output: logs, Level: hclog.Debug}),
	})
	defer client.Kill()
	rpc, err := client.Client()
	if err != nil {
		t.Fatalf("starting the plugin: %v", err)
	}
	if v := client.NegotiatedVersion(); v != pluginapi.ProtocolVersion {
		t.Errorf("negotiated version %d", v)
	}
	raw, err := rpc.Dispense(pluginapi.ServicePlugin)
	if err != nil {
		t.Fatal(err)
	}
	end := raw.(*clientEnd)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	pc := pb.NewPluginClient(end.conn)
	info, err := pc.Info(ctx, &pb.InfoRequest{})
	if err != nil || !proto.Equal(info, echoInfo) {
		t.Errorf("Info = %v, %v; want %v", info, err, echoInfo)
	}

	host := &plugintest.RecordingHost{}
	id := end.broker.NextId()
	go end.broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(opts...)
		pb.RegisterHostServer(s, plugin.NewHostServer(host))
		return s
	})
	_, err = pc.Configure(ctx, &pb.ConfigureRequest{
		Settings:     map[string]string{"prefix": "> "},
		Node:         "n1",
		HostBrokerId: id,
		ApiVersion:   pluginapi.ProtocolVersion,
	})
	if err != nil {
		t.Fatalf("Configure: %v", err)
	}

	vc := pb.NewVerbClient(end.conn)
	verbs, err := vc.Verbs(ctx, &pb.VerbsRequest{})
	if err != nil || !reflect.DeepEqual(verbs.GetVerbs(), []string{"echo"}) {
		t.Errorf("Verbs = %v, %v", verbs, err)
	}
	resp, err := vc.Execute(ctx, &pb.VerbRequest{Verb: "echo", Cell: "hello", Args: []string{"a", "b"}, Trigger: &pb.Trigger{Manual: true}})
	if err != nil || resp.GetOutcome() != pb.Outcome_OUTCOME_DONE || resp.GetMessage() != "> a b" {
		t.Errorf("Execute = %v, %v", resp, err)
	}
	want := []plugintest.HostCall{{Method: "AddJournalNote", Cell: "hello", Note: "> a b"}}
	if got := host.Calls(); !reflect.DeepEqual(got, want) {
		t.Errorf("host calls %+v, want %+v", got, want)
	}

	// The plugin's log line reaches the host's logger with its level.
	logged := func() bool {
		// hclog prints the fields of a parsed line in map order.
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "[INFO]  host.echoplugin: configured:") && strings.Contains(l, "node=n1") && strings.Contains(l, `prefix="> "`) {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(5 * time.Second); !logged(); {
		if time.Now().After(deadline) {
			t.Errorf("the host did not log the plugin's line; host log:\n%s", logs.String())
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	client.Kill()
	if !client.Exited() {
		t.Errorf("the plugin has not exited after Kill")
	}
}
