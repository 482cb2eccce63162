package wasm

import "golang.org/x/sys/unix"

// lowerThreadPriority sets the calling OS thread's nice value (Linux
// priorities are per thread) and returns a function that puts the old one
// back, reporting whether it could (raising a priority again needs
// CAP_SYS_NICE). A failure to lower leaves the priority as it was.
func lowerThreadPriority(nice int) (restore func() bool) {
	tid := unix.Gettid()
	old, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		return func() bool { return false }
	}
	_ = unix.Setpriority(unix.PRIO_PROCESS, tid, nice)
	// The raw getpriority returns 20 - nice.
	return func() bool { return unix.Setpriority(unix.PRIO_PROCESS, tid, 20-old) == nil }
}
