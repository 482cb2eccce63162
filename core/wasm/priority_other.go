//go:build !linux

package wasm

// lowerThreadPriority does nothing where threads have no priority of their
// own.
func lowerThreadPriority(int) (restore func() bool) { return func() bool { return true } }
