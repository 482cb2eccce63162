//go:build linux

package wasm

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cowFile is the memfd holding an image; nil when there is none.
type cowFile struct {
	f *os.File // kept so its finalizer closes the fd; mappings hold their own reference
}

// newImage returns an image of b. It puts b in a memfd when it can (the
// image can then be mapped copy-on-write) and keeps b otherwise.
func newImage(name string, b []byte) (*image, error) {
	if len(b)%PageSize != 0 {
		return nil, fmt.Errorf("wasm: image of %d bytes is not whole pages", len(b))
	}
	fd, err := unix.MemfdCreate("cel-"+name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return &image{size: len(b), bytes: b}, nil
	}
	f := os.NewFile(uintptr(fd), "memfd:cel-"+name)
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		return &image{size: len(b), bytes: b}, nil
	}
	// Sealed, the image cannot change under the instances mapping it.
	_, _ = unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE|unix.F_SEAL_SEAL)
	return &image{size: len(b), cow: cowFile{f: f}}, nil
}

func (c cowFile) readAt(b []byte) {
	if c.f != nil {
		_, _ = c.f.ReadAt(b, 0)
	}
}

// mapMemory reserves max bytes of address space (no memory is committed
// until written) and maps the first size bytes of the memfd over its start,
// private: a write copies the page. It returns nil when mapping fails.
func (c cowFile) mapMemory(size int, max uint64) *mappedMemory {
	if c.f == nil || uint64(size) > max {
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
	if size > 0 {
		if _, err := unix.MmapPtr(int(c.f.Fd()), 0, base, uintptr(size), unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_FIXED); err != nil {
			_ = unix.MunmapPtr(base, uintptr(max))
			return nil
		}
	}
	return &mappedMemory{base: base, max: max, buf: unsafe.Slice((*byte)(base), max)[:size]}
}

// mappedMemory is a linear memory in its own mapping, grown in place.
type mappedMemory struct {
	base unsafe.Pointer
	max  uint64
	buf  []byte
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

// view returns the image's contents without copying them (a read-only
// shared mapping of the memfd) and a function to release them.
func (img *image) view() ([]byte, func(), error) {
	if img.bytes != nil || img.size == 0 {
		return img.bytes, func() {}, nil
	}
	b, err := unix.Mmap(int(img.cow.f.Fd()), 0, img.size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return b, func() { _ = unix.Munmap(b) }, nil
}
