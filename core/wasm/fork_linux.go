//go:build linux

package wasm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"slices"
	"sync"
	"unsafe"
)

// Bits of a /proc/<pid>/pagemap entry (Documentation/admin-guide/mm/pagemap.rst).
const (
	pmPresent = 1 << 63 // the page is in memory
	pmSwapped = 1 << 62 // the page is in swap
	pmFile    = 1 << 61 // a page of a file (or shared anonymous) mapping
)

// A page an instance wrote is a private, anonymous copy: present or
// swapped, and not a file's page. A page it never wrote is absent, or the
// memfd's own page (pmFile) — or, past the image's root, the zero page an
// untouched page of the anonymous reservation reads as, which counts as
// written here (forkImage then finds it holds zeros).
func written(e uint64) bool { return e&(pmPresent|pmSwapped) != 0 && e&pmFile == 0 }

// pagemapEntries is how many entries one pread of the pagemap reads at
// most: 128 MiB of memory in 4 KiB pages.
const pagemapEntries = 32 << 10

var (
	pagemapMu   sync.Mutex
	pagemapFile *os.File // opened at the first fork, kept open
	pagemapBufs = sync.Pool{New: func() any { b := make([]byte, 8*pagemapEntries); return &b }}
)

// pagemap returns /proc/self/pagemap, opening it the first time (or after
// a failure to).
func pagemap() (*os.File, error) {
	pagemapMu.Lock()
	defer pagemapMu.Unlock()
	if pagemapFile == nil {
		f, err := os.Open("/proc/self/pagemap")
		if err != nil {
			return nil, err
		}
		pagemapFile = f
	}
	return pagemapFile, nil
}

// writtenPages marks in dirty the wasm pages of the len(dirty) from base
// with at least one OS page the process wrote.
func writtenPages(base unsafe.Pointer, dirty []bool) error {
	f, err := pagemap()
	if err != nil {
		return err
	}
	ps := os.Getpagesize()
	if ps > PageSize || PageSize%ps != 0 {
		return errors.New("wasm: OS pages do not divide wasm pages")
	}
	per := PageSize / ps
	bp := pagemapBufs.Get().(*[]byte)
	defer pagemapBufs.Put(bp)
	chunk := pagemapEntries / per // wasm pages per pread
	for p := 0; p < len(dirty); p += chunk {
		k := min(chunk, len(dirty)-p)
		b := (*bp)[:8*k*per]
		off := int64(uintptr(base)+uintptr(p)*PageSize) / int64(ps) * 8
		if _, err := f.ReadAt(b, off); err != nil {
			return err
		}
		for i := range k {
			for j := range per {
				if written(binary.NativeEndian.Uint64(b[8*(i*per+j):])) {
					dirty[p+i] = true
					break
				}
			}
		}
	}
	return nil
}

// maxOverlayRuns bounds an overlay's runs, hence the mappings each
// instance started from it has (the kernel limits a process's mappings,
// vm.max_map_count, 65530 by default): beyond it, the closest runs are
// merged, copying the unchanged pages between them.
const maxOverlayRuns = 32

var zeroPage [PageSize]byte

// forkImage returns an image of m's memory, mem (the instance's view of
// it, whose length is its current size), made of the root of the image m
// was mapped from and an overlay of the pages that differ from it; nil
// when that cannot be done or a full copy is better (most pages differ).
func forkImage(m *mappedMemory, mem []byte, name string) *image {
	src := m.img
	switch {
	case src == nil || !src.mappable() || m.base == nil:
		return nil
	case len(mem)%PageSize != 0 || len(mem) < src.size || uint64(len(mem)) > m.max:
		return nil
	case len(mem) > 0 && unsafe.Pointer(unsafe.SliceData(mem)) != m.base:
		return nil // not this mapping's memory
	}
	n := len(mem) / PageSize
	dirty := make([]bool, n)
	if err := writtenPages(m.base, dirty); err != nil {
		return nil
	}
	if src.over != nil {
		for _, r := range src.over.runs {
			for p := r.page; p < r.page+r.count; p++ {
				dirty[p] = true
			}
		}
	}
	// Past the root, an image's pages are zero: a page there that holds
	// zeros (the zero page an untouched page reads as, or one the guest
	// cleared) need not be copied.
	for p := src.root / PageSize; p < n; p++ {
		if dirty[p] && bytes.Equal(mem[p*PageSize:(p+1)*PageSize], zeroPage[:]) {
			dirty[p] = false
		}
	}
	runs, pages := runsOf(dirty, maxOverlayRuns)
	if 2*pages > n {
		return nil
	}
	img := &image{size: len(mem), root: src.root, cow: src.cow}
	if pages == 0 {
		return img
	}
	f, err := newMemfd(name+"-fork", func(f *os.File) error {
		for _, r := range runs {
			if _, err := f.Write(mem[int(r.page)*PageSize : int(r.page+r.count)*PageSize]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil
	}
	img.over = &overlay{cow: cowFile{f: f}, runs: runs}
	return img
}

// runsOf returns the runs of pages marked in dirty, merged down to at most
// maxRuns, with their offsets in an overlay holding them one after the
// other, and the pages they hold.
func runsOf(dirty []bool, maxRuns int) ([]run, int) {
	var runs []run
	for p := 0; p < len(dirty); {
		if !dirty[p] {
			p++
			continue
		}
		q := p
		for q < len(dirty) && dirty[q] {
			q++
		}
		runs = append(runs, run{page: uint32(p), count: uint32(q - p)})
		p = q
	}
	if len(runs) > maxRuns {
		runs = mergeRuns(runs, maxRuns)
	}
	n := 0
	for i := range runs {
		runs[i].off = uint32(n)
		n += int(runs[i].count)
	}
	return runs, n
}

// mergeRuns merges the runs separated by the smallest gaps until maxRuns
// (at least 1) are left.
func mergeRuns(runs []run, maxRuns int) []run {
	maxRuns = max(maxRuns, 1)
	gaps := make([]uint32, len(runs)-1) // gaps[i] is between runs i and i+1
	for i := range gaps {
		gaps[i] = runs[i+1].page - (runs[i].page + runs[i].count)
	}
	sorted := slices.Clone(gaps)
	slices.Sort(sorted)
	need := len(runs) - maxRuns
	limit := sorted[need-1] // merge every gap below it, and enough of those equal to it
	equal := 0
	for _, g := range sorted[:need] {
		if g == limit {
			equal++
		}
	}
	out := make([]run, 1, maxRuns)
	out[0] = runs[0]
	for i := 1; i < len(runs); i++ {
		if g := gaps[i-1]; g < limit || (g == limit && equal > 0) {
			if g == limit {
				equal--
			}
			last := &out[len(out)-1]
			last.count = runs[i].page + runs[i].count - last.page
			continue
		}
		out = append(out, runs[i])
	}
	return out
}

// overlayImage returns an image of size bytes made of root and, over it,
// the pages listed in dirty (increasing) whose contents are data, back to
// back: a decoded snapshot laid over the module's data without building
// the whole memory. It returns nil when root cannot be mapped or the pages
// would take more than maxOverlayRuns runs.
func overlayImage(root *image, size int, dirty []uint32, data []byte, name string) *image {
	if root == nil || !root.mappable() || root.over != nil || size < root.size || size%PageSize != 0 {
		return nil
	}
	var runs []run
	for i, p := range dirty {
		if int(p) >= size/PageSize || (i > 0 && p <= dirty[i-1]) {
			return nil
		}
		if n := len(runs); n > 0 && runs[n-1].page+runs[n-1].count == p {
			runs[n-1].count++
			continue
		}
		if len(runs) == maxOverlayRuns {
			return nil
		}
		runs = append(runs, run{page: p, count: 1, off: uint32(i)})
	}
	img := &image{size: size, root: root.root, cow: root.cow}
	if len(runs) == 0 {
		return img
	}
	f, err := newMemfd(name+"-state", func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
	if err != nil {
		return nil
	}
	img.over = &overlay{cow: cowFile{f: f}, runs: runs}
	return img
}

// canOverlay reports whether overlayImage can lay pages over root.
func canOverlay(root *image) bool {
	return root != nil && root.mappable() && root.over == nil && root.root == root.size
}
