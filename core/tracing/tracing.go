// Package tracing exports OpenTelemetry traces of a node over OTLP and
// carries trace context where the node's work goes: an HTTP request
// through ingress into a cell, each cel.call the cell makes, across the
// fabric to the node serving the callee and back (W3C traceparent in the
// request envelope's headers), and a reflex decision from the signal that
// fired a rule through dispatch and the verb to its outcome (its trace id
// written into the journal entry).
//
// Tracing is off unless Setup is given an endpoint. Off, every function
// here returns at its first test of one atomic flag: no span, no
// allocation, no envelope rewrite (BenchmarkHTTPTracing in core/cell
// measures it). On, spans are sampled by trace id at the configured
// ratio, parent-based: a request that arrives sampled stays sampled on
// every node it crosses.
package tracing

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Name is the instrumentation scope of the node's spans.
const Name = "github.com/celluster/celluster"

var (
	enabled atomic.Bool
	prop    = propagation.TraceContext{}
)

// Enabled reports whether traces are being exported.
func Enabled() bool { return enabled.Load() }

// Config says where traces go.
type Config struct {
	// Endpoint is the OTLP receiver: "grpc://host:4317" or
	// "http://host:4318" (a scheme-less "host:port" is gRPC). Empty turns
	// tracing off.
	Endpoint string
	// Sample is the share of new traces sampled, 0 to 1 (traces that
	// arrive sampled stay sampled).
	Sample float64
	// Node names the node (the service.instance.id resource attribute).
	Node string
	// Version is celcore's version (service.version).
	Version string
}

// Setup starts exporting traces as cfg says and returns a function that
// flushes and stops the export. With no endpoint it does nothing.
func Setup(ctx context.Context, cfg Config) (shutdown func(context.Context) error, err error) {
	if cfg.Endpoint == "" {
		return func(context.Context) error { return nil }, nil
	}
	if cfg.Sample < 0 || cfg.Sample > 1 || cfg.Sample != cfg.Sample {
		return nil, fmt.Errorf("tracing: sample ratio %v is not between 0 and 1", cfg.Sample)
	}
	exp, err := exporter(ctx, cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	return SetupExporter(exp, cfg), nil
}

// SetupExporter is Setup with the exporter given (cfg.Endpoint is not
// used): for tests and benchmarks that export elsewhere than OTLP.
func SetupExporter(exp sdktrace.SpanExporter, cfg Config) (shutdown func(context.Context) error) {
	res := resource.NewSchemaless(
		semconv.ServiceName("celcore"),
		semconv.ServiceVersion(cfg.Version),
		semconv.ServiceInstanceID(cfg.Node),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(500*time.Millisecond)),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.Sample))),
	)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(prop)
	enabled.Store(true)
	return func(ctx context.Context) error {
		enabled.Store(false)
		return tp.Shutdown(ctx)
	}
}

// exporter builds the OTLP exporter for an endpoint URL.
func exporter(ctx context.Context, endpoint string) (*otlptrace.Exporter, error) {
	if !strings.Contains(endpoint, "://") {
		endpoint = "grpc://" + endpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("tracing: OTLP endpoint %q is not grpc://HOST:PORT or http(s)://HOST:PORT[/path]", endpoint)
	}
	switch u.Scheme {
	case "grpc":
		return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(u.Host), otlptracegrpc.WithInsecure())
	case "grpcs":
		return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(u.Host))
	case "http", "https":
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(u.Host)}
		if u.Path != "" && u.Path != "/" {
			opts = append(opts, otlptracehttp.WithURLPath(u.Path))
		}
		if u.Scheme == "http" {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		return otlptracehttp.New(ctx, opts...)
	}
	return nil, fmt.Errorf("tracing: OTLP endpoint scheme %q: want grpc, grpcs, http or https", u.Scheme)
}

// Start starts a span named name as a child of ctx's span, when tracing
// is on; off, it returns ctx and ctx's (non-recording) span.
func Start(ctx context.Context, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if !enabled.Load() {
		return ctx, trace.SpanFromContext(ctx)
	}
	return otel.Tracer(Name).Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// Extract returns ctx with the remote span context carried by the given
// headers (W3C traceparent and tracestate), when tracing is on and ctx has
// no span of its own.
func Extract(ctx context.Context, carrier propagation.TextMapCarrier) context.Context {
	if !enabled.Load() || trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	return prop.Extract(ctx, carrier)
}

// Inject writes ctx's span context into carrier, when tracing is on.
func Inject(ctx context.Context, carrier propagation.TextMapCarrier) {
	if enabled.Load() {
		prop.Inject(ctx, carrier)
	}
}

// TraceID returns the id of ctx's trace when it is sampled, else "".
func TraceID(ctx context.Context) string {
	if !enabled.Load() {
		return ""
	}
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() || !sc.IsSampled() {
		return ""
	}
	return sc.TraceID().String()
}
