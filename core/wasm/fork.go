package wasm

import (
	"bytes"
	"context"

	"github.com/tetratelabs/wazero/experimental"
)

// Forking a live instance — Reactor.Snapshot — copies only the wasm pages
// that differ from the root of the image the instance's memory was mapped
// from (see image): the pages of that image's overlay and those the
// instance wrote, which the kernel's page table tells (fork_linux.go). The
// snapshot's image is then the same root and a new overlay of those pages.
// Where that cannot be done — the memory is not mapped from an image (a
// copy on the Go heap), the page table cannot be read, or most pages
// changed anyway — the whole memory is copied into a new root.

// forceFullCopy makes every Snapshot copy the whole memory, for the
// benchmark's peer and the tests.
var forceFullCopy bool

// heldMemory records the linear memory the allocator made for an
// instance, so that Reactor.Snapshot can reach it. newInstance puts one in
// the instance's context; instantiateFrom's allocator fills it.
type heldMemory struct{ mem experimental.LinearMemory }

type heldMemoryKey struct{}

func holdMemory(ctx context.Context) context.Context {
	return context.WithValue(ctx, heldMemoryKey{}, new(heldMemory))
}

func heldMemoryOf(ctx context.Context) *heldMemory {
	h, _ := ctx.Value(heldMemoryKey{}).(*heldMemory)
	return h
}

// record keeps mem, when h is not nil, and returns it.
func (h *heldMemory) record(mem experimental.LinearMemory) experimental.LinearMemory {
	if h != nil {
		h.mem = mem
	}
	return mem
}

// memoryImage returns an image of the instance's memory, whose bytes are
// mem (the instance's own, which go on changing after it returns).
func (r *Reactor) memoryImage(mem []byte) (*image, error) {
	name := r.m.SHA256[:12]
	if h := heldMemoryOf(r.ctx); h != nil && !forceFullCopy {
		if mm, ok := h.mem.(*mappedMemory); ok {
			if img := forkImage(mm, mem, name); img != nil {
				return img, nil
			}
		}
	}
	img, err := newImage(name, mem)
	if err == nil && img.bytes != nil {
		img.bytes = bytes.Clone(mem) // not kept in a memfd: keep a copy, not the live memory
	}
	return img, err
}
