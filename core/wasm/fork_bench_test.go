package wasm

import (
	"context"
	"runtime"
	"slices"
	"testing"
	"time"
)

// BenchmarkFork measures forking a live replica, as a clone of a cell
// that keeps state does: Snapshot of an instance holding 64 MiB of memory,
// of which 1 MiB (16 scattered wasm pages) was written since it started
// from its image, then starting an instance from that snapshot and closing
// it. path=overlay copies the pages that changed (found in the page table)
// into an overlay over the source's image; path=full-copy copies the whole
// memory into a new image, as every snapshot did before. The module is
// testdata/tiny.wasm, its memory grown and filled from the host. p50-µs is
// the median fork.
//
// Aim: path=overlay at most 2 ms p50.
func BenchmarkFork(b *testing.B) {
	const (
		memPages   = 1024 // 64 MiB
		dirtyPages = 16   // 1 MiB
	)
	ctx := context.Background()
	cfg := InstanceConfig{Cell: "tiny", Logger: benchLog}
	e := benchEngine(b, Config{})
	m := benchCompile(b, e, testdata(b, "tiny.wasm"))
	if m.NoSnapshot != "" {
		b.Fatalf("tiny cannot be snapshotted: %s", m.NoSnapshot)
	}
	r0, err := m.NewReactor(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer r0.Close(ctx)
	if _, ok := r0.mem.Grow(memPages - r0.mem.Size()/PageSize); !ok {
		b.Fatal("growing memory failed")
	}
	page := make([]byte, PageSize)
	fill := func(r *Reactor, p, seed int) {
		for i := range page {
			page[i] = byte(i*7 + p*13 + seed)
		}
		if !r.mem.Write(uint32(p*PageSize), page) {
			b.Fatal("writing memory failed")
		}
	}
	for p := range memPages {
		fill(r0, p, 1)
	}
	base, err := r0.Snapshot() // the image the forked replica started from
	if err != nil {
		b.Fatal(err)
	}
	r, err := m.NewReactorFrom(ctx, cfg, base)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close(ctx)
	for i := range dirtyPages {
		fill(r, 5+i*(memPages/dirtyPages), 2)
	}

	for _, path := range []string{"overlay", "full-copy"} {
		b.Run("path="+path, func(b *testing.B) {
			withFullCopy := path == "full-copy"
			forceFullCopy = withFullCopy
			defer func() { forceFullCopy = false }()
			overlayPages := dirtyPages
			if withFullCopy || runtime.GOOS != "linux" {
				overlayPages = 0 // no overlay: a new root
			}
			var times []time.Duration
			for b.Loop() {
				start := time.Now()
				s, err := r.Snapshot()
				if err != nil {
					b.Fatal(err)
				}
				f, err := m.NewReactorFrom(ctx, cfg, s)
				if err != nil {
					b.Fatal(err)
				}
				if err := f.Close(ctx); err != nil {
					b.Fatal(err)
				}
				times = append(times, time.Since(start))
				b.StopTimer()
				if s.Size() != memPages*PageSize {
					b.Fatalf("snapshot of %d bytes", s.Size())
				}
				if got := s.img.over.pages(); got != overlayPages {
					b.Fatalf("overlay of %d pages, want %d", got, overlayPages)
				}
				dropSnapshot(s, base.img)
				b.StartTimer()
			}
			slices.Sort(times)
			b.ReportMetric(perOp(b, time.Microsecond), "µs/fork")
			b.ReportMetric(float64(times[len(times)/2])/float64(time.Microsecond), "p50-µs")
		})
	}
}
