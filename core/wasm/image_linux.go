//go:build linux

package wasm

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cowFile is a memfd holding an image's root or overlay; nil when there is
// none.
type cowFile struct {
	f *os.File // kept so its finalizer closes the fd; mappings hold their own reference
}

// newImage returns an image of b. It puts b in a memfd when it can (the
// image can then be mapped copy-on-write) and keeps b otherwise.
func newImage(name string, b []byte) (*image, error) {
	if len(b)%PageSize != 0 {
		return nil, fmt.Errorf("wasm: image of %d bytes is not whole pages", len(b))
	}
	f, err := newMemfd(name, func(f *os.File) error {
		_, err := f.Write(b)
		return err
	})
	if err != nil {
		return &image{size: len(b), root: len(b), bytes: b}, nil
	}
	return &image{size: len(b), root: len(b), cow: cowFile{f: f}}, nil
}

// newMemfd returns a memfd named after name holding what write wrote in it,
// sealed: it cannot change under the instances mapping it.
func newMemfd(name string, write func(*os.File) error) (*os.File, error) {
	fd, err := unix.MemfdCreate("cel-"+name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "memfd:cel-"+name)
	if err := write(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	_, _ = unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE|unix.F_SEAL_SEAL)
	return f, nil
}

func (c cowFile) readAt(b []byte, off int64) {
	if c.f != nil && len(b) > 0 {
		_, _ = c.f.ReadAt(b, off)
	}
}

// mapLayers maps the image's root over [base, base+root) and each run of
// its overlay at its place, with MAP_FIXED and the given protection and
// sharing, over a reservation of at least img.size bytes at base.
func (img *image) mapLayers(base unsafe.Pointer, prot, flags int) error {
	if img.root > 0 {
		if _, err := unix.MmapPtr(int(img.cow.f.Fd()), 0, base, uintptr(img.root), prot, flags|unix.MAP_FIXED); err != nil {
			return err
		}
	}
	if img.over == nil {
		return nil
	}
	fd := int(img.over.cow.f.Fd())
	for _, r := range img.over.runs {
		at := unsafe.Add(base, uintptr(r.page)*PageSize)
		if _, err := unix.MmapPtr(fd, int64(r.off)*PageSize, at, uintptr(r.count)*PageSize, prot, flags|unix.MAP_FIXED); err != nil {
			return err
		}
	}
	return nil
}

// mappable reports whether the image's layers all live in memfds.
func (img *image) mappable() bool {
	return img.cow.f != nil && (img.over == nil || img.over.cow.f != nil)
}

// mapMemory reserves max bytes of address space (no memory is committed
// until written) and maps the image's root over its start and its
// overlay's runs at their places, private: a write copies the page. It
// returns nil when mapping fails.
func (img *image) mapMemory(max uint64) *mappedMemory {
	if !img.mappable() || uint64(img.size) > max {
		return nil
	}
	if max > 1<<32 {
		max = 1 << 32
	}
	base, err := unix.MmapPtr(-1, 0, nil, uintptr(max), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil
	}
	if err := img.mapLayers(base, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE); err != nil {
		_ = unix.MunmapPtr(base, uintptr(max))
		return nil
	}
	return &mappedMemory{base: base, max: max, buf: unsafe.Slice((*byte)(base), max)[:img.size], img: img}
}

// mappedMemory is a linear memory in its own mapping, grown in place.
type mappedMemory struct {
	base unsafe.Pointer
	max  uint64
	buf  []byte
	img  *image // what it was mapped from: a fork copies only the pages that differ from its root
}

// Reallocate implements experimental.LinearMemory.
func (m *mappedMemory) Reallocate(size uint64) []byte {
	if size > m.max || m.base == nil {
		return nil
	}
	if size > uint64(len(m.buf)) {
		m.buf = m.buf[:size]
	}
	return m.buf
}

// Free implements experimental.LinearMemory.
func (m *mappedMemory) Free() {
	if m.base != nil {
		_ = unix.MunmapPtr(m.base, uintptr(m.max))
		m.base, m.buf = nil, nil
	}
}

// view returns the image's contents without copying them (read-only
// shared mappings of the memfds, composed as an instance's memory is) and
// a function to release them.
func (img *image) view() ([]byte, func(), error) {
	switch {
	case img.size == 0:
		return nil, func() {}, nil
	case img.over == nil && img.root == img.size && img.bytes != nil:
		return img.bytes, func() {}, nil
	case !img.mappable():
		return img.contents(), func() {}, nil
	case img.over == nil && img.root == img.size:
		b, err := unix.Mmap(int(img.cow.f.Fd()), 0, img.size, unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return nil, nil, err
		}
		return b, func() { _ = unix.Munmap(b) }, nil
	}
	// Pages past the root and outside the overlay read as the zeros of an
	// anonymous reservation.
	base, err := unix.MmapPtr(-1, 0, nil, uintptr(img.size), unix.PROT_READ,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, nil, err
	}
	if err := img.mapLayers(base, unix.PROT_READ, unix.MAP_SHARED); err != nil {
		_ = unix.MunmapPtr(base, uintptr(img.size))
		return nil, nil, err
	}
	return unsafe.Slice((*byte)(base), img.size), func() { _ = unix.MunmapPtr(base, uintptr(img.size)) }, nil
}
