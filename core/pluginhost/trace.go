package pluginhost

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/celluster/celluster/core/tracing"
)

// Trace context crosses the plugin boundary in gRPC metadata (W3C
// traceparent and tracestate): the host puts it on its calls to a plugin,
// the SDK copies it from a plugin's incoming call onto the host calls the
// plugin makes while serving it, and the host service starts a span of
// its own under it. With tracing off nothing is added.

// mdCarrier adapts gRPC metadata to a propagation.TextMapCarrier.
type mdCarrier metadata.MD

func (c mdCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c mdCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c mdCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// outgoingTrace puts ctx's trace context on an outgoing call's metadata.
func outgoingTrace(ctx context.Context) context.Context {
	if !tracing.Enabled() || !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	tracing.Inject(ctx, mdCarrier(md))
	return metadata.NewOutgoingContext(ctx, md)
}

// traceDialOptions are the host's dial options for plugins.
func traceDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(outgoingTrace(ctx), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(outgoingTrace(ctx), desc, cc, method, opts...)
		}),
	}
}

// traceHostCalls starts a span for each call a plugin makes to the host
// service that carries trace context.
func traceHostCalls(plugin string) grpc.ServerOption {
	return grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !tracing.Enabled() {
			return handler(ctx, req)
		}
		md, ok := metadata.FromIncomingContext(ctx)
		if !ok || len(md.Get("traceparent")) == 0 {
			return handler(ctx, req)
		}
		ctx = tracing.Extract(ctx, mdCarrier(md))
		ctx, span := tracing.Start(ctx, "host "+info.FullMethod, trace.SpanKindServer, attribute.String("celluster.plugin", plugin))
		defer span.End()
		return handler(ctx, req)
	})
}
