//go:build !linux

package wasm

// lowerThreadPriority does nothing where threads have no priority of their
// own.
func lowerThreadPriority(int) (tid int, restore func() bool) { return 0, func() bool { return true } }

func raiseThreadPriority(int) {}
