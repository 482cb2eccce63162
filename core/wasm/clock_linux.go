//go:build linux

package wasm

import "golang.org/x/sys/unix"

// bootOffset is CLOCK_MONOTONIC at processStart.
var bootOffset = func() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return ts.Nano()
}()
