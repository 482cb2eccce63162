package wasm

import "golang.org/x/sys/unix"

// lowerThreadPriority sets the calling OS thread's nice value (Linux
// priorities are per thread) and returns a function that puts the old one
// back, reporting whether it could (raising a priority again needs
// CAP_SYS_NICE). A failure to lower leaves the priority as it was.
func lowerThreadPriority(nice int) (tid int, restore func() bool) {
	tid = unix.Gettid()
	old, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		return 0, func() bool { return false }
	}
	_ = unix.Setpriority(unix.PRIO_PROCESS, tid, nice)
	// The raw getpriority returns 20 - nice.
	return tid, func() bool { return unix.Setpriority(unix.PRIO_PROCESS, tid, 20-old) == nil }
}

// raiseThreadPriority puts thread tid of this process back at nice 0, so
// that a background compile a request now waits for runs at the
// request's priority. It needs CAP_SYS_NICE; without it the compile goes
// on at its lower priority.
func raiseThreadPriority(tid int) {
	if tid > 0 {
		_ = unix.Setpriority(unix.PRIO_PROCESS, tid, 0)
	}
}
