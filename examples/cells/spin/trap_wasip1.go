//go:build wasip1

package main

import "unsafe"

// trap loads a byte from address 0xFFFFFFF0, beyond any linear memory
// smaller than 4 GiB, so the WebAssembly load instruction traps with an
// out-of-bounds memory access. Go does not check such a load; the wasm
// engine does.
func trap() {
	var x byte
	p := unsafe.Pointer(&x)
	sink = uint64(*(*byte)(unsafe.Add(p, uintptr(0xFFFFFFF0)-uintptr(p))))
}
