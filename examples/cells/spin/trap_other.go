//go:build !wasip1

package main

// trap stands in for the wasm trap in native builds, where loading from a
// wild address would crash the test binary: it panics, which the SDK turns
// into a 500.
func trap() {
	panic("spin: trap (a real trap only in wasm)")
}
