package tracing

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/celluster/celluster/pluginapi/cellabi"
)

type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

//go:noinline
func noHooks(ctx context.Context, env []byte) (context.Context, []byte) { return ctx, env }

// hooks runs what one traced request through the node adds: the ingress
// and cell spans (Start twice), the extraction of a remote parent, and
// the injection of the trace into a cel.call's envelope.
func hooks(ctx context.Context, env []byte) (context.Context, []byte) {
	ctx = Extract(ctx, Headers{H: &[]cellabi.Header{}})
	ctx, s1 := Start(ctx, "GET /hello", trace.SpanKindServer, attribute.String("celluster.cell", "hello"))
	ctx, s2 := Start(ctx, "cell hello", trace.SpanKindInternal)
	env = InjectEnvelope(ctx, env)
	s2.End()
	s1.End()
	return ctx, env
}

// BenchmarkHooks measures the tracing hooks of one request alone, against
// the same call without them (hooks=none: the "no tracing code" peer):
// with tracing off (the node's default), on with no trace sampled, and on
// with every trace sampled (spans batched to an exporter that drops
// them). Beside BenchmarkHTTPTracing in core/cell (a whole request), it
// says what the hooks themselves cost.
func BenchmarkHooks(b *testing.B) {
	env := cellabi.AppendRequest(nil, &cellabi.Request{Method: "GET", Path: "/hello",
		Headers: []cellabi.Header{{Name: "Accept", Value: "*/*"}}})
	ctx := context.Background()
	b.Run("hooks=none", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			noHooks(ctx, env)
		}
	})
	b.Run("hooks=off", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			hooks(ctx, env)
		}
	})
	for _, c := range []struct {
		name   string
		sample float64
	}{{"hooks=on,sample=0", 0}, {"hooks=on,sample=1", 1}} {
		b.Run(c.name, func(b *testing.B) {
			stop := SetupExporter(discard{}, Config{Sample: c.sample})
			defer stop(context.Background())
			b.ReportAllocs()
			for b.Loop() {
				hooks(ctx, env)
			}
		})
	}
}
