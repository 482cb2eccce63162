package plugin

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// traceKeys are the W3C trace context fields the host sends in a call's
// gRPC metadata.
var traceKeys = []string{"traceparent", "tracestate"}

// forwardTrace makes the host calls a plugin makes while serving a host
// call carry that call's trace context, so that the host's trace of a
// decision includes them. The plugin needs no tracing code for it: the
// context its handler was given is enough.
func forwardTrace() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(withTrace(ctx), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(withTrace(ctx), desc, cc, method, opts...)
		}),
	}
}

// withTrace copies the trace fields of ctx's incoming metadata to its
// outgoing metadata.
func withTrace(ctx context.Context) context.Context {
	in, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ctx
	}
	var kv []string
	for _, k := range traceKeys {
		if v := in.Get(k); len(v) > 0 {
			kv = append(kv, k, v[0])
		}
	}
	if kv == nil {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}
