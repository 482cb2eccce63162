package wasm

import (
	"github.com/tetratelabs/wazero/experimental"
)

// An image is the contents of a linear memory that instances start from:
// a module's data laid out in memory, or a snapshot's memory. On Linux it
// lives in a memfd, and each instance maps it copy-on-write, so pages an
// instance never writes stay shared between all of them; elsewhere (or when
// mapping fails) each instance gets a copy.
//
// An image is a root (the first root bytes) and, for a snapshot forked
// from an instance that was itself mapped from an image, an overlay: the
// pages that differ from the root, in a memfd of their own. The image may
// be larger than its root (the memory grew): a page past the root that is
// not in the overlay is zero. There are only ever these two layers: a fork
// of an instance started from an image with an overlay gets a new overlay
// over the same root, holding every page that differs from that root.
type image struct {
	size  int
	root  int     // bytes of the root: size, unless the image has an overlay
	bytes []byte  // the root's contents; nil when they live only in the memfd
	cow   cowFile // the root's memfd
	over  *overlay
}

// An overlay is the pages of an image that differ from its root.
type overlay struct {
	cow  cowFile // the pages, run after run
	runs []run   // sorted by page, disjoint
}

// A run is contiguous wasm pages of an overlay: count pages from page
// page of the memory, stored from page off of the overlay's memfd.
type run struct {
	page, count, off uint32
}

// pages is the number of pages the overlay holds.
func (o *overlay) pages() int {
	if o == nil {
		return 0
	}
	n := 0
	for _, r := range o.runs {
		n += int(r.count)
	}
	return n
}

// memory returns a linear memory starting with the image's contents, for
// an instance whose memory may grow to max bytes.
func (img *image) memory(limit uint64) experimental.LinearMemory {
	if m := img.mapMemory(limit); m != nil {
		return m
	}
	return newCopyMemory(img.contents(), limit)
}

// contents returns the image's bytes, reading them from the memfds if need
// be.
func (img *image) contents() []byte {
	if img.bytes != nil && img.over == nil && img.root == img.size {
		return img.bytes
	}
	b := make([]byte, img.size)
	img.compose(b)
	return b
}

// compose writes the image's contents into b, which is img.size zero bytes.
func (img *image) compose(b []byte) {
	if img.bytes != nil {
		copy(b, img.bytes[:img.root])
	} else {
		img.cow.readAt(b[:img.root], 0)
	}
	if img.over == nil {
		return
	}
	for _, r := range img.over.runs {
		img.over.cow.readAt(b[int(r.page)*PageSize:int(r.page+r.count)*PageSize], int64(r.off)*PageSize)
	}
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
