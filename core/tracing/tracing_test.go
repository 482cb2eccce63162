package tracing

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/celluster/celluster/pluginapi/cellabi"
)

func TestOffDoesNothing(t *testing.T) {
	if Enabled() {
		t.Fatal("tracing on before Setup")
	}
	stop, err := Setup(context.Background(), Config{})
	if err != nil || Enabled() {
		t.Fatalf("Setup without an endpoint: %v, enabled %v", err, Enabled())
	}
	defer stop(context.Background())
	ctx, span := Start(context.Background(), "x", trace.SpanKindInternal)
	if span.IsRecording() || span.SpanContext().IsValid() || ctx != context.Background() {
		t.Fatal("Start made a span with tracing off")
	}
	env := cellabi.AppendRequest(nil, &cellabi.Request{Method: "GET", Path: "/a"})
	if got := InjectEnvelope(ctx, env); &got[0] != &env[0] {
		t.Fatal("InjectEnvelope rewrote an envelope with tracing off")
	}
	if TraceID(ctx) != "" {
		t.Fatal("a trace id with tracing off")
	}
}

func TestBadEndpoints(t *testing.T) {
	for _, ep := range []string{"ftp://x:1", "grpc://", "http://[::1"} {
		if _, err := Setup(context.Background(), Config{Endpoint: ep, Sample: 1}); err == nil || !strings.Contains(err.Error(), "tracing:") {
			t.Errorf("endpoint %q: err = %v", ep, err)
		}
	}
	if _, err := Setup(context.Background(), Config{Endpoint: "127.0.0.1:4317", Sample: 2}); err == nil {
		t.Error("sample ratio 2 accepted")
	}
}

// TestEnvelopeCarriesTheTrace: a span's context injected into a request
// envelope is extracted on the other side as the parent of the next span.
func TestEnvelopeCarriesTheTrace(t *testing.T) {
	rec := &keep{tracetest.NewInMemoryExporter()}
	stop := SetupExporter(rec, Config{Sample: 1, Node: "test"})
	defer stop(context.Background())
	ctx, span := Start(context.Background(), "caller", trace.SpanKindClient)
	env := InjectEnvelope(ctx, cellabi.AppendRequest(nil, &cellabi.Request{Method: "GET", Path: "/b",
		Headers: []cellabi.Header{{Name: "Traceparent", Value: "stale"}}}))
	span.End()
	req, err := cellabi.DecodeRequest(env)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, h := range req.Headers {
		if strings.EqualFold(h.Name, "traceparent") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d traceparent headers after injection, want 1 (the stale one replaced): %v", n, req.Headers)
	}
	rctx := Extract(context.Background(), Headers{H: &req.Headers})
	_, child := Start(rctx, "callee", trace.SpanKindServer)
	child.End()
	if child.SpanContext().TraceID() != span.SpanContext().TraceID() {
		t.Fatal("the callee's span is in another trace")
	}
	stop(context.Background())
	var parent trace.SpanID
	for _, s := range rec.GetSpans() {
		if s.Name == "callee" {
			parent = s.Parent.SpanID()
		}
	}
	if parent != span.SpanContext().SpanID() {
		t.Fatalf("callee's parent %s, want %s", parent, span.SpanContext().SpanID())
	}
}

// keep is an in-memory exporter whose spans outlive Shutdown (which
// flushes the batch into it).
type keep struct{ *tracetest.InMemoryExporter }

func (keep) Shutdown(context.Context) error { return nil }
