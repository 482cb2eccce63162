package wasm

import (
	"bytes"
	"context"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/celluster/celluster/core/wasm/snapshot"
)

// memoryOf returns a copy of r's linear memory.
func memoryOf(t testing.TB, r *Reactor) []byte {
	t.Helper()
	b, ok := r.mem.Read(0, r.mem.Size())
	if !ok {
		t.Fatal("reading instance memory")
	}
	return bytes.Clone(b)
}

// fork snapshots r and starts an instance from the snapshot, checking
// that it starts with r's memory.
func fork(t testing.TB, m *Module, r *Reactor) (*Snapshot, *Reactor) {
	t.Helper()
	want := memoryOf(t, r)
	s, err := r.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	f, err := m.NewReactorFrom(context.Background(), InstanceConfig{Cell: "counter"}, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close(context.Background()) })
	if !bytes.Equal(memoryOf(t, f), want) {
		t.Fatal("the fork's memory differs from its source's")
	}
	return s, f
}

// describe says what a snapshot's image is made of.
func describe(s *Snapshot) string {
	return strconv.Itoa(s.img.size/PageSize) + " pages: root " + strconv.Itoa(s.img.root/PageSize) +
		", overlay " + strconv.Itoa(s.img.over.pages())
}

// withFullCopy runs f with every Snapshot copying the whole memory.
func withFullCopy(t *testing.T, full bool) {
	forceFullCopy = full
	t.Cleanup(func() { forceFullCopy = false })
}

// TestForkGenerations: a Go counter forked, the fork forked, and so on
// five generations deep; each fork continues from its source's count, and
// every replica, source or fork, keeps counting on its own. Past the first
// generation a fork copies only what changed: its image is the first
// fork's root and one overlay.
func TestForkGenerations(t *testing.T) {
	heavy(t)
	for _, full := range []bool{false, true} {
		t.Run("full-copy="+strconv.FormatBool(full), func(t *testing.T) {
			withFullCopy(t, full)
			e, _ := newEngine(t, Config{})
			m := compileCell(t, e, "counter")
			reps := []*Reactor{newReactor(t, m, "counter")}
			counts := []int{0}
			step := func(i int) {
				t.Helper()
				counts[i]++
				if got := get(t, reps[i], "/counter"); got != strconv.Itoa(counts[i])+"\n" {
					t.Fatalf("replica %d: %q, want %d", i, got, counts[i])
				}
			}
			for range 3 {
				step(0)
			}
			var snaps []*Snapshot
			for g := 1; g <= 5; g++ {
				s, f := fork(t, m, reps[g-1])
				t.Logf("generation %d: %s", g, describe(s))
				snaps = append(snaps, s)
				reps, counts = append(reps, f), append(counts, counts[g-1])
				for i := range reps {
					for range 1 + i%3 {
						step(i)
					}
				}
			}
			if full || runtime.GOOS != "linux" {
				for _, s := range snaps {
					if s.img.over != nil {
						t.Fatalf("full copy made an overlay: %s", describe(s))
					}
				}
				return
			}
			overlays := 0
			for _, s := range snaps {
				if s.img.over != nil {
					overlays++
					if !sameRoot(s.img, snaps[0].img) && !sameRoot(s.img, m.data) {
						t.Fatalf("overlay snapshot over another root: %s", describe(s))
					}
				}
			}
			if overlays < 3 {
				t.Fatalf("%d of %d forks copied only what changed", overlays, len(snaps))
			}
		})
	}
}

// TestForkGrownMemory: an instance whose memory grew past its image's
// root (requests, then the host growing it and writing to the new pages)
// forks into one with the grown contents, which serves on, as does the
// decoded encoding of that fork.
func TestForkGrownMemory(t *testing.T) {
	heavy(t)
	e, _ := newEngine(t, Config{})
	h := compileCell(t, e, "hello")
	newReactor(t, h, "hello") // the capture
	r := newReactor(t, h, "hello")
	s0, r1 := fork(t, h, r)
	t.Logf("first fork: %s", describe(s0))
	for i := range 150 {
		if got := get(t, r1, "/hello/"+strings.Repeat("y", i%300)); !strings.HasPrefix(got, "Hello") {
			t.Fatalf("request %d: %q", i, got)
		}
	}
	old := r1.MemorySize() / PageSize
	if _, ok := r1.mem.Grow(32); !ok {
		t.Fatal("growing memory failed")
	}
	marks := map[uint32]string{}
	for _, p := range []uint32{old + 1, old + 2, old + 17, old + 31} {
		marks[p*PageSize+123] = "grown page " + strconv.Itoa(int(p))
	}
	for at, s := range marks {
		if !r1.mem.WriteString(at, s) {
			t.Fatal("writing memory failed")
		}
	}
	s1, r2 := fork(t, h, r1)
	t.Logf("second fork: %s", describe(s1))
	if s1.Size() != int(r1.MemorySize()) || s1.img.size <= s1.img.root {
		t.Fatalf("snapshot of %d bytes with a %d-byte root, memory %d", s1.img.size, s1.img.root, r1.MemorySize())
	}
	if runtime.GOOS == "linux" {
		if s1.img.over == nil {
			t.Fatal("no overlay")
		}
		last := s1.img.over.runs[len(s1.img.over.runs)-1]
		if int(last.page+last.count) <= s1.img.root/PageSize {
			t.Fatalf("no overlay run past the root: %v", s1.img.over.runs)
		}
	}
	check := func(f *Reactor) {
		t.Helper()
		for at, s := range marks {
			if b, ok := f.mem.Read(at, uint32(len(s))); !ok || string(b) != s {
				t.Fatalf("at %#x: %q, want %q", at, b, s)
			}
		}
		for i := range 150 {
			if got := get(t, f, "/hello/"+strings.Repeat("z", i)); !strings.HasPrefix(got, "Hello") {
				t.Fatalf("request %d: %q", i, got)
			}
		}
	}
	check(r2)

	var buf bytes.Buffer
	if _, err := h.EncodeSnapshot(&buf, s1, snapshot.KindState); err != nil {
		t.Fatal(err)
	}
	d, _, err := h.DecodeSnapshot(&buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.img.contents(), s1.img.contents()) {
		t.Fatal("the decoded snapshot's memory differs")
	}
	f, err := h.NewReactorFrom(context.Background(), InstanceConfig{Cell: "hello"}, d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close(context.Background())
	check(f)
}

// TestEncodedForkRestores: a fork's snapshot of a fork (root and overlay)
// encoded and decoded restores into a replica that counts on from it.
func TestEncodedForkRestores(t *testing.T) {
	heavy(t)
	e, _ := newEngine(t, Config{})
	m := compileCell(t, e, "counter")
	r := newReactor(t, m, "counter")
	get(t, r, "/counter")
	_, f1 := fork(t, m, r)
	get(t, f1, "/counter")
	s, f2 := fork(t, m, f1)
	if runtime.GOOS == "linux" && s.img.over == nil {
		t.Fatalf("no overlay: %s", describe(s))
	}
	var buf bytes.Buffer
	if _, err := m.EncodeSnapshot(&buf, s, snapshot.KindState); err != nil {
		t.Fatal(err)
	}
	d, _, err := m.DecodeSnapshot(&buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.img.contents(), s.img.contents()) {
		t.Fatal("the decoded snapshot's memory differs")
	}
	g, err := m.NewReactorFrom(context.Background(), InstanceConfig{Cell: "counter"}, d)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close(context.Background())
	for _, want := range []string{"3\n", "4\n"} {
		if got := get(t, g, "/counter"); got != want {
			t.Fatalf("restored from the encoding: %q, want %q", got, want)
		}
	}
	if got := get(t, f2, "/counter"); got != "3\n" {
		t.Fatalf("the fork: %q, want 3", got)
	}
}
