package wasm

import (
	"errors"
	"fmt"
)

// ErrTimeout is returned by a call that ran past its time limit. The instance
// was interrupted mid-execution and must be closed.
var ErrTimeout = errors.New("request time limit exceeded")

// ErrCanceled is returned by a call interrupted because its context ended
// (the client went away or the node is stopping). The instance must be closed.
var ErrCanceled = errors.New("call canceled")

// TrapError reports a guest that trapped, exited or broke the ABI during a
// call. The instance must be closed.
type TrapError struct {
	// Export is the function that was running.
	Export string
	// ExitCode is the WASI exit code when the guest called proc_exit, else -1.
	ExitCode int
	// Err is the underlying wazero or ABI error.
	Err error
}

func (e *TrapError) Error() string {
	if e.ExitCode >= 0 {
		return fmt.Sprintf("guest exited with code %d during %s", e.ExitCode, e.Export)
	}
	return fmt.Sprintf("guest trapped during %s: %v", e.Export, e.Err)
}

func (e *TrapError) Unwrap() error { return e.Err }
