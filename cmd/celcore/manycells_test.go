package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/celluster/celluster/core/testbuild"
)

// TestManyCellsMemoryReturned drops many copies of a Go cell, removes them
// all, and checks that `celctl cells -o json` answers throughout and that
// the memory their instances took is returned to the system: an idle node
// allocates nothing, so without a collection after the removals the
// garbage would stay resident.
func TestManyCellsMemoryReturned(t *testing.T) {
	const cells = 60
	n := startMeasuredNode(t)
	hello := testbuild.Cell(t, "hello")
	n.drop("hello", hello)
	n.waitStatus("/hello", 200)
	pid := n.cmd.Process.Pid
	base := rssKiB(t, pid)
	for i := range cells {
		tmp := filepath.Join(n.cellsDir, fmt.Sprintf(".c%d.tmp", i))
		if err := os.WriteFile(tmp, hello, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(n.cellsDir, fmt.Sprintf("c%d.wasm", i))); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	eventually(t, "every cell to serve", func() bool {
		list := n.listCells()
		serving := 0
		for _, c := range list {
			if c.State == "serving" {
				serving++
			}
		}
		return serving == cells+1
	})
	t.Logf("%d cells serving after %s", cells, time.Since(start).Round(time.Millisecond))
	peak := rssKiB(t, pid)
	for i := range cells {
		if err := os.Remove(filepath.Join(n.cellsDir, fmt.Sprintf("c%d.wasm", i))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "every copy to go", func() bool { return len(n.listCells()) == 1 })
	var after int
	deadline := time.Now().Add(30 * time.Second)
	for {
		after = rssKiB(t, pid)
		if after-base < (peak-base)/4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("RSS %d KiB with hello alone, %d KiB with %d more cells, still %d KiB 30s after they were removed", base, peak, cells, after)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("RSS: %d KiB with hello alone, %d KiB with %d more cells, %d KiB after they were removed", base, peak, cells, after)
	if r := n.get("/hello"); r.status != 200 {
		t.Fatalf("hello answered %d", r.status)
	}
}

// TestManyTinyCells drops 200 small cells at once: `celctl cells -o json`
// keeps answering while they load, each cell costs well under a MiB of
// resident memory (1 MiB of latency histograms alone before), and removing
// them returns what they took.
func TestManyTinyCells(t *testing.T) {
	const cells = 200
	n := startMeasuredNode(t)
	tiny, err := os.ReadFile(filepath.Join("..", "..", "core", "wasm", "testdata", "tiny.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	n.listCells() // builds celctl before the clock matters
	pid := n.cmd.Process.Pid
	base := rssKiB(t, pid)
	for i := range cells {
		tmp := filepath.Join(n.cellsDir, fmt.Sprintf(".t%d.tmp", i))
		if err := os.WriteFile(tmp, tiny, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(n.cellsDir, fmt.Sprintf("t%d.wasm", i))); err != nil {
			t.Fatal(err)
		}
	}
	calls := 0
	eventually(t, "every cell to serve", func() bool {
		calls++
		serving := 0
		for _, c := range n.listCells() { // fails the test if celctl fails
			if c.State == "serving" {
				serving++
			}
		}
		return serving == cells
	})
	// Let each cell's telemetry run a few ticks.
	time.Sleep(3 * time.Second)
	peak := rssKiB(t, pid)
	perCell := (peak - base) / cells
	t.Logf("%d cells: celctl cells answered %d times while they loaded; RSS %d KiB before, %d KiB after (%d KiB a cell)", cells, calls, base, peak, perCell)
	if perCell > 512 {
		t.Fatalf("%d KiB resident per tiny cell", perCell)
	}
	for i := range cells {
		if err := os.Remove(filepath.Join(n.cellsDir, fmt.Sprintf("t%d.wasm", i))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "every cell to go", func() bool { return len(n.listCells()) == 0 })
}
