package wasm

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/celluster/celluster/pluginapi/cellabi"
)

// maxLogLine bounds one guest log message; longer ones are truncated.
const maxLogLine = 4 << 10

// guestKey carries the calling guest's identity in the context of every call
// into an instance, so host functions know whom they serve.
type guestKey struct{}

// guest identifies the cell an instance belongs to.
type guest struct {
	cell string
	log  *slog.Logger
	// call carries cel.call out; nil when the cell may not call.
	call CallFunc
	// pending is the last cel.call's response envelope, until the guest
	// copies it with cel.call_result. An instance serves one request at a
	// time, so one slot is enough.
	pending []byte
	// req is the context of the request the instance is serving (its
	// deadline, cancellation and trace), for the cel.calls it makes.
	req context.Context
	// signal publishes the cell's own signals; nil refuses them.
	signal SignalFunc
}

// SignalFunc publishes one reading of a cell's own signal (cel.signal) and
// returns one of the Signal* codes, which the guest gets back.
type SignalFunc func(name string, value float64) int32

// The results of cel.signal.
const (
	// SignalOK: published.
	SignalOK int32 = 0
	// SignalNotGranted: the cell's intent has no `grant signal`.
	SignalNotGranted int32 = 1
	// SignalBadName: not a signal name (lower case letters, digits, '.'
	// and '_', starting with a letter, at most 64 bytes), or one the node
	// publishes itself for every cell (latency.p99, rps, ...).
	SignalBadName int32 = 2
	// SignalRateLimited: over the cell's rate; this reading is dropped.
	SignalRateLimited int32 = 3
	// SignalTooMany: the cell already publishes as many signal names as
	// it may; a new name is refused.
	SignalTooMany int32 = 4
)

// maxSignalName bounds a cel.signal name.
const maxSignalName = 64

// CallFunc carries out a cell-to-cell call: target names the cell
// ("cell:NAME" or "NAME"), request and the returned response are cell ABI
// envelopes (pluginapi/cellabi). A refusal is a response (e.g. 403) whose
// body says why; an error becomes a 502 response.
type CallFunc func(ctx context.Context, target string, request []byte) ([]byte, error)

// maxCallTarget bounds a cel.call target name.
const maxCallTarget = 256

func guestFrom(ctx context.Context) *guest {
	if g, ok := ctx.Value(guestKey{}).(*guest); ok {
		return g
	}
	return &guest{cell: "?", log: slog.Default()}
}

var i32 = api.ValueTypeI32

// instantiateHost registers the `cel` host module. Hot-path functions use
// GoModuleFunc (no reflection); every guest pointer is bounds-checked.
func instantiateHost(ctx context.Context, rt wazero.Runtime, log *slog.Logger) error {
	_, err := rt.NewHostModuleBuilder("cel").
		NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(hostLog), []api.ValueType{i32, i32, i32}, nil).
		WithParameterNames("level", "ptr", "len").
		Export("log").
		NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(hostNow), nil, []api.ValueType{api.ValueTypeI64}).
		Export("now").
		NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(hostCall), []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}).
		WithParameterNames("target_ptr", "target_len", "req_ptr", "req_len").
		Export("call").
		NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(hostCallResult), []api.ValueType{i32}, nil).
		WithParameterNames("ptr").
		Export("call_result").
		NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(hostSignal), []api.ValueType{i32, i32, api.ValueTypeF64}, []api.ValueType{i32}).
		WithParameterNames("name_ptr", "name_len", "value").
		Export("signal").
		Instantiate(ctx)
	if err != nil {
		return fmt.Errorf("wasm: instantiating host module cel: %w", err)
	}
	return nil
}

// hostLog implements cel.log(level i32, ptr i32, len i32).
func hostLog(ctx context.Context, mod api.Module, stack []uint64) {
	level, ptr, n := api.DecodeI32(stack[0]), api.DecodeU32(stack[1]), api.DecodeU32(stack[2])
	g := guestFrom(ctx)
	truncated := false
	if n > maxLogLine {
		n, truncated = maxLogLine, true
	}
	msg, ok := mod.Memory().Read(ptr, n)
	if !ok {
		g.log.Warn("cel.log: message out of bounds", "cell", g.cell, "ptr", ptr, "len", n)
		return
	}
	lvl := slog.LevelInfo
	switch {
	case level <= 0:
		lvl = slog.LevelDebug
	case level == 2:
		lvl = slog.LevelWarn
	case level >= 3:
		lvl = slog.LevelError
	}
	attrs := []any{"cell", g.cell}
	if truncated {
		attrs = append(attrs, "truncated", true)
	}
	g.log.Log(ctx, lvl, string(msg), attrs...)
}

// hostNow implements cel.now() -> i64, wall-clock Unix nanoseconds.
func hostNow(_ context.Context, _ api.Module, stack []uint64) {
	stack[0] = uint64(time.Now().UnixNano())
}

// hostCall implements cel.call(target_ptr, target_len, req_ptr, req_len)
// -> i32: it makes the call and returns the length of the response
// envelope, which the guest then copies into a buffer of that size with
// cel.call_result. The response is always an envelope: refusals and
// failures come back as error statuses with a message.
func hostCall(ctx context.Context, mod api.Module, stack []uint64) {
	tptr, tlen := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	rptr, rlen := api.DecodeU32(stack[2]), api.DecodeU32(stack[3])
	g := guestFrom(ctx)
	answer := func(status int, msg string) {
		g.pending = cellabi.AppendResponse(nil, &cellabi.Response{Status: status,
			Headers: []cellabi.Header{{Name: "Content-Type", Value: "text/plain; charset=utf-8"}}, Body: []byte(msg + "\n")})
		stack[0] = api.EncodeU32(uint32(len(g.pending)))
	}
	if tlen > maxCallTarget {
		answer(400, fmt.Sprintf("cel.call: target name of %d bytes (at most %d)", tlen, maxCallTarget))
		return
	}
	target, ok1 := mod.Memory().Read(tptr, tlen)
	req, ok2 := mod.Memory().Read(rptr, rlen)
	if !ok1 || !ok2 {
		answer(400, "cel.call: target or request out of bounds")
		return
	}
	if g.call == nil {
		answer(403, fmt.Sprintf("cell %s may not call other cells: its intent grants no call (add e.g. `grant call cell:%s`)", g.cell, target))
		return
	}
	cctx := ctx
	if g.req != nil {
		cctx = g.req
	}
	resp, err := g.call(cctx, string(target), append([]byte(nil), req...))
	if err != nil {
		answer(502, fmt.Sprintf("cel.call %s: %v", target, err))
		return
	}
	g.pending = resp
	stack[0] = api.EncodeU32(uint32(len(resp)))
}

// hostCallResult implements cel.call_result(ptr): it copies the pending
// response into the guest's buffer at ptr (of the length cel.call returned).
func hostCallResult(ctx context.Context, mod api.Module, stack []uint64) {
	g := guestFrom(ctx)
	ptr := api.DecodeU32(stack[0])
	if !mod.Memory().Write(ptr, g.pending) {
		g.log.Warn("cel.call_result: buffer out of bounds", "cell", g.cell, "ptr", ptr, "len", len(g.pending))
	}
	g.pending = nil
}

// hostSignal implements cel.signal(name_ptr, name_len, value f64) -> i32:
// the cell publishes a reading of its own signal; the result is one of the
// Signal* codes.
func hostSignal(ctx context.Context, mod api.Module, stack []uint64) {
	ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	value := api.DecodeF64(stack[2])
	g := guestFrom(ctx)
	if n > maxSignalName {
		stack[0] = api.EncodeI32(SignalBadName)
		return
	}
	name, ok := mod.Memory().Read(ptr, n)
	if !ok {
		g.log.Warn("cel.signal: name out of bounds", "cell", g.cell, "ptr", ptr, "len", n)
		stack[0] = api.EncodeI32(SignalBadName)
		return
	}
	if g.signal == nil {
		stack[0] = api.EncodeI32(SignalNotGranted)
		return
	}
	stack[0] = api.EncodeI32(g.signal(string(name), value))
}
