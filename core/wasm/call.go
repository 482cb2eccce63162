package wasm

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

// interrupter arms the instrumented interrupt global of one instance for the
// duration of one call.
type interrupter struct {
	mode   InterruptMode
	g      api.MutableGlobal // InterruptEpoch only
	cd     api.MutableGlobal // the countdown, zeroed to make the guest check g now
	mu     sync.Mutex
	seq    uint64
	reason error
}

// run calls fn with the instance armed to stop after timeout (zero: no limit)
// or when ctx ends. fn must make its calls with the context it is given,
// which carries gctx's values. When fn fails because the guest was
// interrupted, run returns ErrTimeout or ErrCanceled.
func (in *interrupter) run(ctx, gctx context.Context, timeout time.Duration, fn func(context.Context) error) error {
	switch in.mode {
	case InterruptNone:
		return fn(gctx)
	case InterruptContext:
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if timeout > 0 {
			cctx, cancel = context.WithTimeout(ctx, timeout)
		}
		err := fn(context.WithValue(cctx, guestKey{}, guestFrom(gctx)))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ErrCanceled
			}
			if errors.Is(cctx.Err(), context.DeadlineExceeded) {
				return ErrTimeout
			}
		}
		return err
	}
	in.mu.Lock()
	in.seq++
	seq := in.seq
	in.reason = nil
	in.g.Set(0)
	in.mu.Unlock()

	fire := func(reason error) {
		in.mu.Lock()
		if in.seq == seq && in.reason == nil {
			in.reason = reason
			in.g.Set(1)
			in.cd.Set(0)
		}
		in.mu.Unlock()
	}
	var t *time.Timer
	if timeout > 0 {
		t = time.AfterFunc(timeout, func() { fire(ErrTimeout) })
	}
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { fire(ErrCanceled) })
	}
	err := fn(gctx)
	if t != nil {
		t.Stop()
	}
	if stop != nil {
		stop()
	}
	in.mu.Lock()
	in.seq++ // disarm: a timer that fires late finds a stale seq
	reason := in.reason
	in.mu.Unlock()
	if err != nil && reason != nil {
		return reason
	}
	return err
}

// trapError wraps an error returned by wazero for a call into export.
func trapError(export string, err error) error {
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		return &TrapError{Export: export, ExitCode: int(exit.ExitCode()), Err: err}
	}
	return &TrapError{Export: export, ExitCode: -1, Err: err}
}
