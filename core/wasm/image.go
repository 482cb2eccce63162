package wasm

import (
	"github.com/tetratelabs/wazero/experimental"
)

// An image is the contents of a linear memory that instances start from:
// a module's data laid out in memory, or a snapshot's memory. On Linux it
// lives in a memfd, and each instance maps it copy-on-write, so pages an
// instance never writes stay shared between all of them; elsewhere (or when
// mapping fails) each instance gets a copy.
type image struct {
	size  int
	bytes []byte // the contents; nil when they live only in the memfd
	cow   cowFile
}

// memory returns a linear memory starting with the image's contents, for
// an instance whose memory may grow to max bytes.
func (img *image) memory(limit uint64) experimental.LinearMemory {
	if m := img.cow.mapMemory(img.size, limit); m != nil {
		return m
	}
	return newCopyMemory(img.contents(), limit)
}

// contents returns the image's bytes, reading them from the memfd if need be.
func (img *image) contents() []byte {
	if img.bytes != nil {
		return img.bytes
	}
	b := make([]byte, img.size)
	img.cow.readAt(b)
	return b
}

// copyMemory is a linear memory on the Go heap.
type copyMemory struct {
	buf []byte
	max uint64
}

func newCopyMemory(init []byte, limit uint64) *copyMemory {
	buf := make([]byte, len(init), max(uint64(len(init)), min(limit, uint64(len(init))+64*PageSize)))
	copy(buf, init)
	return &copyMemory{buf: buf, max: limit}
}

// Reallocate implements experimental.LinearMemory.
func (m *copyMemory) Reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:max(size, uint64(len(m.buf)))]
		return m.buf
	}
	nb := make([]byte, size, min(m.max, max(size, 2*uint64(cap(m.buf)))))
	copy(nb, m.buf)
	m.buf = nb
	return m.buf
}

// Free implements experimental.LinearMemory.
func (m *copyMemory) Free() { m.buf = nil }
