//go:build !linux

package wasm

// bootOffset is zero where the boot clock is not read: the guest clock
// counts from process start.
const bootOffset = 0
