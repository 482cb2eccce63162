package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/celluster/celluster/pluginapi"
	pb "github.com/celluster/celluster/pluginapi/v1"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestKindOf(t *testing.T) {
	for _, c := range []struct {
		impl    any
		kind    string
		wantErr string
	}{
		{&source{}, pluginapi.KindTelemetry, ""},
		{parserFunc(nil), pluginapi.KindIntent, ""},
		{verbFunc(nil), pluginapi.KindVerb, ""},
		{42, "", "implements none"},
		{nil, "", "implements none"},
		{struct {
			*source
			verbFunc
		}{}, "", "implements several plugin kinds (dev.celluster.telemetry.v1, dev.celluster.verb.v1)"},
	} {
		kind, err := KindOf(c.impl)
		if kind != c.kind || (err == nil) != (c.wantErr == "") || (err != nil && !strings.Contains(err.Error(), c.wantErr)) {
			t.Errorf("KindOf(%T) = %q, %v; want %q, %q", c.impl, kind, err, c.kind, c.wantErr)
		}
	}
	if _, err := NewServer(Info{}, verbFunc(nil)); err == nil || !strings.Contains(err.Error(), "Name") {
		t.Errorf("NewServer with no name: %v", err)
	}
}

func TestDescribe(t *testing.T) {
	var b bytes.Buffer
	info := Info{Name: "n", Version: "1.2", Description: "d", Capabilities: []string{"signal:x.y"}}
	if err := Describe(&b, info, &source{}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(b.String(), "}\n") || strings.Count(b.String(), "\n") != 1 {
		t.Errorf("not one line of JSON: %q", b.String())
	}
	var got map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"kind": pluginapi.KindTelemetry, "name": "n", "version": "1.2", "description": "d",
		"api_versions": []any{float64(pluginapi.ProtocolVersion)}, "capabilities": []any{"signal:x.y"},
	}
	if !jsonEqual(got, want) {
		t.Errorf("describe = %v, want %v", got, want)
	}
	if err := Describe(&b, info, 42); err == nil {
		t.Errorf("Describe of a non-plugin: no error")
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// source is a telemetry source whose Stream runs fn.
type source struct {
	signals []Signal
	stream  func(ctx context.Context, interval time.Duration, send func([]Sample) error) error
}

func (s *source) Signals(context.Context) ([]Signal, error) { return s.signals, nil }
func (s *source) Stream(ctx context.Context, interval time.Duration, send func([]Sample) error) error {
	return s.stream(ctx, interval, send)
}

type fakeStream struct {
	grpc.ServerStream
	ctx     context.Context
	mu      sync.Mutex
	batches []*pb.SampleBatch
}

func (f *fakeStream) Context() context.Context { return f.ctx }
func (f *fakeStream) Send(b *pb.SampleBatch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batches = append(f.batches, b)
	return nil
}

func TestTelemetryServer(t *testing.T) {
	var gotInterval time.Duration
	var lateSend func([]Sample) error
	src := &source{stream: func(ctx context.Context, interval time.Duration, send func([]Sample) error) error {
		gotInterval = interval
		lateSend = send
		if err := send(nil); err != nil {
			return err
		}
		if err := send([]Sample{{Signal: "a.b", Value: 1}, {Signal: "a.b", Value: 2, Time: t0}}); err != nil {
			return err
		}
		return errors.New("sensor broke")
	}}
	ts := &telemetryServer{impl: src}
	st := &fakeStream{ctx: context.Background()}
	err := ts.Stream(&pb.StreamRequest{}, st)
	if status.Code(err) != codes.Unknown || !strings.Contains(err.Error(), "sensor broke") {
		t.Errorf("Stream = %v, want the source's error", err)
	}
	if gotInterval != DefaultInterval {
		t.Errorf("interval %v, want the default %v", gotInterval, DefaultInterval)
	}
	if len(st.batches) != 1 || len(st.batches[0].GetSamples()) != 2 {
		t.Fatalf("batches %v; want one of two samples (the empty one skipped)", st.batches)
	}
	if s := st.batches[0].GetSamples(); s[0].GetTimeUnixNano() == 0 || s[1].GetTimeUnixNano() != t0.UnixNano() {
		t.Errorf("sample times %d, %d", s[0].GetTimeUnixNano(), s[1].GetTimeUnixNano())
	}
	if err := lateSend([]Sample{{Signal: "a.b"}}); err == nil {
		t.Errorf("send after Stream returned: no error")
	}

	// A canceled stream ends with nil, whatever the source returns.
	ctx, cancel := context.WithCancel(context.Background())
	src.stream = func(ctx context.Context, interval time.Duration, send func([]Sample) error) error {
		gotInterval = interval
		cancel()
		return send([]Sample{{Signal: "a.b"}})
	}
	st = &fakeStream{ctx: ctx}
	if err := ts.Stream(&pb.StreamRequest{Interval: durationpb.New(time.Minute)}, st); err != nil {
		t.Errorf("canceled Stream = %v, want nil", err)
	}
	if gotInterval != time.Minute || len(st.batches) != 0 {
		t.Errorf("interval %v, batches %v", gotInterval, st.batches)
	}

	src.signals = []Signal{{Name: "a.b", Kind: 12}}
	if _, err := ts.Signals(context.Background(), &pb.SignalsRequest{}); status.Code(err) != codes.Internal {
		t.Errorf("Signals with a bad kind = %v, want Internal", err)
	}
}

// parserFunc is an intent parser that accepts ".x".
type parserFunc func(ctx context.Context, filename, mediaType string, content []byte) (*IntentSpec, []Diagnostic, error)

func (f parserFunc) Accepts() ([]string, []string) { return []string{".x"}, nil }
func (f parserFunc) Parse(ctx context.Context, filename, mediaType string, content []byte) (*IntentSpec, []Diagnostic, error) {
	return f(ctx, filename, mediaType, content)
}

func TestIntentServer(t *testing.T) {
	var spec *IntentSpec
	var diags []Diagnostic
	var perr error
	is := &intentServer{impl: parserFunc(func(ctx context.Context, filename, mediaType string, content []byte) (*IntentSpec, []Diagnostic, error) {
		return spec, diags, perr
	})}
	req := &pb.ParseRequest{Filename: "a.x", Content: []byte("cell a")}

	spec, diags = &IntentSpec{Cell: "a"}, []Diagnostic{{Line: 1, Column: 1, Severity: Warning, Message: "w"}, {File: "other", Severity: Warning, Message: "w2"}}
	resp, err := is.Parse(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetSpec().GetCell() != "a" || resp.GetDiagnostics()[0].GetFile() != "a.x" || resp.GetDiagnostics()[1].GetFile() != "other" {
		t.Errorf("Parse = %v", resp)
	}

	spec, diags = &IntentSpec{Cell: "a", ABI: "wasi"}, nil
	if _, err := is.Parse(context.Background(), req); status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "wasi") {
		t.Errorf("Parse of a bad spec = %v, want Internal", err)
	}
	spec, diags = nil, []Diagnostic{{Severity: 9}}
	if _, err := is.Parse(context.Background(), req); status.Code(err) != codes.Internal {
		t.Errorf("Parse of a bad diagnostic = %v, want Internal", err)
	}
	spec, diags, perr = nil, nil, context.DeadlineExceeded
	if _, err := is.Parse(context.Background(), req); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("Parse failing = %v, want DeadlineExceeded", err)
	}
	acc, _ := is.Accepts(context.Background(), &pb.AcceptsRequest{})
	if len(acc.GetExtensions()) != 1 || acc.GetMediaTypes() != nil {
		t.Errorf("Accepts = %v", acc)
	}
}

func TestVerbServer(t *testing.T) {
	srv, err := NewServer(Info{Name: "v"}, verbFunc(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var res VerbResult
	var xerr error
	var got VerbRequest
	var hostErr error
	vs := &verbServer{host: srv.Host(), impl: verbFunc(func(ctx context.Context, host Host, req VerbRequest) (VerbResult, error) {
		got = req
		_, hostErr = host.ListCells(ctx)
		return res, xerr
	})}
	ctx := context.Background()

	if _, err := vs.Execute(ctx, &pb.VerbRequest{Verb: "nope"}); status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("undeclared verb = %v, want Unimplemented", err)
	}
	res = VerbResult{Outcome: Noop, Message: "already there"}
	resp, err := vs.Execute(ctx, &pb.VerbRequest{Verb: "v", Cell: "c", Args: []string{"1"}, Trigger: &pb.Trigger{Rule: "r"}})
	if err != nil || resp.GetOutcome() != pb.Outcome_OUTCOME_NOOP || resp.GetMessage() != "already there" {
		t.Errorf("Execute = %v, %v", resp, err)
	}
	if got.Cell != "c" || got.Trigger.Rule != "r" || len(got.Args) != 1 {
		t.Errorf("plugin got %+v", got)
	}
	if !errors.Is(hostErr, ErrNoHost) {
		t.Errorf("host call before Configure = %v, want ErrNoHost", hostErr)
	}
	res = VerbResult{Message: "forgot the outcome"}
	if _, err := vs.Execute(ctx, &pb.VerbRequest{Verb: "v"}); status.Code(err) != codes.Internal {
		t.Errorf("no outcome = %v, want Internal", err)
	}
	res = VerbResult{Outcome: 17}
	if _, err := vs.Execute(ctx, &pb.VerbRequest{Verb: "v"}); status.Code(err) != codes.Internal {
		t.Errorf("bad outcome = %v, want Internal", err)
	}
	res, xerr = VerbResult{}, status.Error(codes.PermissionDenied, "no")
	if _, err := vs.Execute(ctx, &pb.VerbRequest{Verb: "v"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("failing verb = %v, want its status", err)
	}
	verbs, _ := vs.Verbs(ctx, &pb.VerbsRequest{})
	if len(verbs.GetVerbs()) != 1 {
		t.Errorf("Verbs = %v", verbs)
	}
}

type configured struct {
	verbFunc
	cfg     Config
	hostErr error
	err     error
}

func (c *configured) Configure(ctx context.Context, cfg Config, host Host) error {
	c.cfg = cfg
	_, c.hostErr = host.ListCells(ctx)
	return c.err
}

func TestPluginServer(t *testing.T) {
	impl := &configured{}
	srv, err := NewServer(Info{Name: "p", Version: "1"}, impl)
	if err != nil {
		t.Fatal(err)
	}
	ps := &pluginServer{s: srv}
	info, err := ps.Info(context.Background(), &pb.InfoRequest{})
	if err != nil || info.GetKind() != pluginapi.KindVerb || info.GetName() != "p" {
		t.Errorf("Info = %v, %v", info, err)
	}
	// Broker id 0: no host service.
	_, err = ps.Configure(context.Background(), &pb.ConfigureRequest{Node: "n1", Settings: map[string]string{"k": "v"}, ApiVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	if impl.cfg.Node != "n1" || impl.cfg.Settings["k"] != "v" || impl.cfg.APIVersion != 1 {
		t.Errorf("plugin got %+v", impl.cfg)
	}
	if !errors.Is(impl.hostErr, ErrNoHost) {
		t.Errorf("host without a broker id: %v, want ErrNoHost", impl.hostErr)
	}
	impl.err = errors.New("setting k is bad")
	_, err = ps.Configure(context.Background(), &pb.ConfigureRequest{})
	if err == nil || !strings.Contains(err.Error(), "setting k is bad") {
		t.Errorf("failing Configure = %v", err)
	}
	srv.Close()
	if _, err := ps.Configure(context.Background(), &pb.ConfigureRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("Configure after Close = %v, want Unavailable", err)
	}
	// The client side of the shims is not implemented.
	for name, p := range srv.PluginSet() {
		gp := p.(interface {
			GRPCClient(context.Context, *goplugin.GRPCBroker, *grpc.ClientConn) (any, error)
		})
		if _, err := gp.GRPCClient(context.Background(), nil, nil); err == nil || !strings.Contains(err.Error(), "not implemented on the plugin side") {
			t.Errorf("%s: GRPCClient = %v", name, err)
		}
	}
	if len(srv.PluginSet()) != 2 || srv.PluginSet()[pluginapi.ServiceVerb] == nil || srv.PluginSet()[pluginapi.ServicePlugin] == nil {
		t.Errorf("plugin set %v", srv.PluginSet())
	}
}

func TestLogger(t *testing.T) {
	var b bytes.Buffer
	l := newLogger(&b, slog.LevelDebug)
	l.Debug("hello", "n", 1)
	l.Warn("careful", slog.Group("g", "time", "x"))
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("lines %q", lines)
	}
	var e map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &e); err != nil {
		t.Fatal(err)
	}
	if e["@level"] != "debug" || e["@message"] != "hello" || e["n"] != float64(1) {
		t.Errorf("entry %v", e)
	}
	if _, err := time.Parse("2006-01-02T15:04:05.000000Z07:00", e["@timestamp"].(string)); err != nil {
		t.Errorf("timestamp not in hclog's format: %v", err)
	}
	if !strings.Contains(lines[1], `"@level":"warn"`) || !strings.Contains(lines[1], `"g":{"time":"x"}`) {
		t.Errorf("entry %s", lines[1])
	}
}
