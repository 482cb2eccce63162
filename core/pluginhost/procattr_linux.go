package pluginhost

import "syscall"

// sysProcAttr makes the kernel SIGKILL a plugin process when the node dies,
// so plugins never outlive it even if it is killed without running Close.
// (Linux delivers the signal when the OS thread that forked the child exits;
// the Go runtime only retires threads of goroutines that exit while
// LockOSThread'ed, which the launching goroutines never are.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
