package tracing

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/trace"

	"github.com/celluster/celluster/pluginapi/cellabi"
)

// Headers carries trace context in a cell ABI envelope's headers (a
// propagation.TextMapCarrier; names compare case-insensitively).
type Headers struct{ H *[]cellabi.Header }

// Get returns the first value of key.
func (h Headers) Get(key string) string {
	for _, f := range *h.H {
		if strings.EqualFold(f.Name, key) {
			return f.Value
		}
	}
	return ""
}

// Set replaces every field named key with one holding value.
func (h Headers) Set(key, value string) {
	hs := (*h.H)[:0:0]
	for _, f := range *h.H {
		if !strings.EqualFold(f.Name, key) {
			hs = append(hs, f)
		}
	}
	*h.H = append(hs, cellabi.Header{Name: key, Value: value})
}

// Keys lists the header names.
func (h Headers) Keys() []string {
	keys := make([]string, len(*h.H))
	for i, f := range *h.H {
		keys[i] = f.Name
	}
	return keys
}

// InjectEnvelope returns the request envelope env with ctx's trace
// context in its headers, replacing any it had; env itself when tracing is
// off, ctx has no span, or env does not decode.
func InjectEnvelope(ctx context.Context, env []byte) []byte {
	if !enabled.Load() || !trace.SpanContextFromContext(ctx).IsValid() {
		return env
	}
	req, err := cellabi.DecodeRequest(env)
	if err != nil {
		return env
	}
	prop.Inject(ctx, Headers{&req.Headers})
	return cellabi.AppendRequest(nil, &req)
}
