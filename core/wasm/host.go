package wasm

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
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
}

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
