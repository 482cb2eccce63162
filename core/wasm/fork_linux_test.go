//go:build linux

package wasm

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
)

// mapped maps img for a memory of up to limit pages, unmapped at cleanup.
func mapped(t *testing.T, img *image, limit int) *mappedMemory {
	t.Helper()
	m := img.mapMemory(uint64(limit) * PageSize)
	if m == nil {
		t.Fatal("mapping the image failed")
	}
	t.Cleanup(m.Free)
	return m
}

// checkImage checks that every way of reading img gives want.
func checkImage(t *testing.T, img *image, want []byte) {
	t.Helper()
	if img.size != len(want) {
		t.Fatalf("image of %d bytes, want %d", img.size, len(want))
	}
	if !bytes.Equal(img.contents(), want) {
		t.Fatal("contents differ from the forked memory")
	}
	v, release, err := img.view()
	if err != nil {
		t.Fatal(err)
	}
	same := bytes.Equal(v, want)
	release()
	if !same {
		t.Fatal("view differs from the forked memory")
	}
	m := mapped(t, img, 64)
	if !bytes.Equal(m.buf, want) {
		t.Fatal("a memory mapped from the image differs from the forked memory")
	}
	if c := newCopyMemory(img.contents(), 64*PageSize); !bytes.Equal(c.buf, want) {
		t.Fatal("a copy of the image differs from the forked memory")
	}
}

func pageRuns(img *image) [][2]uint32 {
	if img.over == nil {
		return nil
	}
	var rs [][2]uint32
	for _, r := range img.over.runs {
		rs = append(rs, [2]uint32{r.page, r.count})
	}
	return rs
}

// TestForkImageCopiesWhatChanged: a fork of a mapped memory holds the
// root it was mapped from and an overlay of exactly the pages written
// since (the page table says which), past the root too once the memory
// grew; a fork of an instance of that fork has the same root and one
// overlay, never a chain; every reading of the forks gives the memory's
// bytes.
func TestForkImageCopiesWhatChanged(t *testing.T) {
	heavy(t)
	rng := rand.New(rand.NewPCG(1, 2))
	root := make([]byte, 16*PageSize)
	for i := range root {
		root[i] = byte(rng.Uint32())
	}
	img, err := newImage("test", root)
	if err != nil || img.cow.f == nil {
		t.Fatalf("no memfd image: %v", err)
	}
	m := mapped(t, img, 64)
	if !bytes.Equal(m.buf, root) { // reading maps the memfd's pages: not written
		t.Fatal("mapped memory differs from its image")
	}
	if f := forkImage(m, m.buf, "test"); f == nil || f.over != nil || f.cow.f != img.cow.f {
		t.Fatalf("fork of an unwritten memory: %+v", f)
	}

	m.buf[2*PageSize+100] ^= 0xff
	m.buf[5*PageSize+PageSize-1] ^= 0xff
	m.buf[6*PageSize] ^= 0xff
	m.buf[7*PageSize+4096] ^= 0xff
	m.Reallocate(24 * PageSize) // grown: pages 16-23 are zero
	m.buf[20*PageSize+7] = 1
	_ = m.buf[22*PageSize] // read: the zero page, holding zeros
	m.buf[23*PageSize+9] = 1
	m.buf[23*PageSize+9] = 0 // written, but zero again
	f1 := forkImage(m, m.buf, "test")
	if f1 == nil || f1.over == nil {
		t.Fatal("no overlay")
	}
	if got, want := pageRuns(f1), [][2]uint32{{2, 1}, {5, 3}, {20, 1}}; !slices.Equal(got, want) {
		t.Fatalf("overlay runs %v, want %v", got, want)
	}
	if f1.root != len(root) || f1.cow.f != img.cow.f {
		t.Fatal("the fork's root is not its source's")
	}
	want1 := bytes.Clone(m.buf)
	checkImage(t, f1, want1)

	// An instance of the fork, written and grown again, forks over the
	// same root: its overlay has the first overlay's pages and its own.
	m2 := mapped(t, f1, 64)
	m2.buf[3*PageSize] ^= 0xff
	m2.buf[6*PageSize+1] ^= 0xff // in the first overlay: now the instance's own copy
	m2.Reallocate(40 * PageSize)
	m2.buf[30*PageSize] = 7
	m2.buf[31*PageSize+PageSize-1] = 8
	m2.buf[39*PageSize] = 9
	m.buf[3*PageSize] = 0 // the first instance goes on on its own
	f2 := forkImage(m2, m2.buf, "test")
	if f2 == nil || f2.over == nil || f2.cow.f != img.cow.f || f2.root != len(root) {
		t.Fatalf("second fork: %+v", f2)
	}
	if got, want := pageRuns(f2), [][2]uint32{{2, 2}, {5, 3}, {20, 1}, {30, 2}, {39, 1}}; !slices.Equal(got, want) {
		t.Fatalf("overlay runs %v, want %v", got, want)
	}
	want2 := bytes.Clone(m2.buf)
	checkImage(t, f2, want2)
	checkImage(t, f1, want1)

	// Most pages written: a full copy is as cheap, and frees the root.
	m3 := mapped(t, f2, 64)
	for p := range 30 {
		m3.buf[p*PageSize] ^= 0x55
	}
	if f3 := forkImage(m3, m3.buf, "test"); f3 != nil {
		t.Fatalf("fork of a mostly written memory has an overlay of %d pages", f3.over.pages())
	}
	// Not the mapping's memory: no fork.
	if f := forkImage(m3, bytes.Clone(m3.buf), "test"); f != nil {
		t.Fatal("forked a memory that is not the mapping's")
	}
}

// TestRunsOf: runs cover exactly the marked pages until there are too
// many, then the closest merge, down to the limit.
func TestRunsOf(t *testing.T) {
	marks := func(s string) []bool {
		d := make([]bool, len(s))
		for i, c := range s {
			d[i] = c == 'x'
		}
		return d
	}
	for _, tc := range []struct {
		dirty string
		max   int
		want  []run
	}{
		{"....", 4, nil},
		{"xx.x...x", 4, []run{{0, 2, 0}, {3, 1, 2}, {7, 1, 3}}},
		{"xx.x...x", 2, []run{{0, 4, 0}, {7, 1, 4}}},
		{"x..x.x..x", 2, []run{{0, 6, 0}, {8, 1, 6}}},
		{"x.x.x.x", 2, []run{{0, 5, 0}, {6, 1, 5}}},
		{"x.x.x.x", 1, []run{{0, 7, 0}}},
	} {
		runs, n := runsOf(marks(tc.dirty), tc.max)
		if !slices.Equal(runs, tc.want) {
			t.Errorf("runsOf(%s, %d) = %v, want %v", tc.dirty, tc.max, runs, tc.want)
		}
		want := 0
		for _, r := range tc.want {
			want += int(r.count)
		}
		if n != want {
			t.Errorf("runsOf(%s, %d) holds %d pages, want %d", tc.dirty, tc.max, n, want)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		d := make([]bool, 1+rng.IntN(300))
		for i := range d {
			d[i] = rng.IntN(4) == 0
		}
		maxRuns := 1 + rng.IntN(20)
		runs, n := runsOf(d, maxRuns)
		if len(runs) > maxRuns {
			t.Fatalf("%d runs, limit %d", len(runs), maxRuns)
		}
		covered := make([]bool, len(d))
		off := 0
		for i, r := range runs {
			if i > 0 && r.page <= runs[i-1].page+runs[i-1].count {
				t.Fatalf("runs %v overlap, touch or are out of order", runs)
			}
			if int(r.off) != off || r.count == 0 {
				t.Fatalf("run %v at overlay page %d", r, off)
			}
			off += int(r.count)
			for p := r.page; p < r.page+r.count; p++ {
				covered[p] = true
			}
		}
		if off != n {
			t.Fatalf("%d pages counted, %d held", n, off)
		}
		for p := range d {
			if d[p] && !covered[p] {
				t.Fatalf("page %d is marked but not in %v", p, runs)
			}
		}
	}
}

// dropSnapshot closes the memfds of s that its source's image, src, does
// not hold, rather than leave them to the garbage collector (a benchmark
// makes them faster than it runs).
func dropSnapshot(s *Snapshot, src *image) {
	if s.img.over != nil && s.img.over.cow.f != nil {
		_ = s.img.over.cow.f.Close()
	}
	if f := s.img.cow.f; f != nil && f != src.cow.f {
		_ = f.Close()
	}
}

// sameRoot reports whether a and b are over one root memfd.
func sameRoot(a, b *image) bool { return a.cow.f != nil && a.cow.f == b.cow.f }
