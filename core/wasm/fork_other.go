//go:build !linux

package wasm

// forkImage returns nil: without a page table to read, a fork copies the
// whole memory.
func forkImage(*mappedMemory, []byte, string) *image { return nil }
