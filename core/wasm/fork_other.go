//go:build !linux

package wasm

// forkImage returns nil: without a page table to read, a fork copies the
// whole memory.
func forkImage(*mappedMemory, []byte, string) *image { return nil }

// overlayImage returns nil: images are whole copies here.
func overlayImage(*image, int, []uint32, []byte, string) *image { return nil }

func canOverlay(*image) bool { return false }
