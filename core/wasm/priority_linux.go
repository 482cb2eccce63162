package wasm

import "golang.org/x/sys/unix"

// lowerThreadPriority sets the calling OS thread's nice value (Linux
// priorities are per thread). A failure leaves the priority as it was.
func lowerThreadPriority(nice int) {
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), nice)
}
