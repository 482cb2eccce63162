package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/celluster/celluster/core/testbuild"
)

// tmpfs mounts a tmpfs of size (e.g. "8m") at a new directory and returns
// it; it is unmounted when the test ends, after the nodes it holds stop.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	requireRoot(t)
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file into dir until the file system is full.
func fill(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			return
		}
	}
}

// TestDataDirFullOrReadOnly: under a running node, the compile cache turns
// read-only, then the whole data directory (cache, journal, module store)
// fills up. Modules dropped then still serve (uncached), the reason shows
// in `celctl cells` and the log, and the cells that served keep serving.
func TestDataDirFullOrReadOnly(t *testing.T) {
	// Room for counter's compiled code, prepared module and snapshot
	// (about 10 MiB): the cache must fail because it is read-only, not
	// because the disk is already full; fill makes it full later.
	data := tmpfs(t, "48m")
	n := startNode(t, data)
	n.drop("counter", testbuild.Cell(t, "counter"))
	n.waitStatus("/counter", 200)

	// A read-only compile cache (a bind mount over it).
	cache := filepath.Join(data, "cache")
	for _, args := range [][]string{{"--bind", cache, cache}, {"-o", "remount,bind,ro", cache}} {
		if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
			t.Fatalf("mount %v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() { _ = exec.Command("umount", cache).Run() })
	n.drop("hello", testbuild.Cell(t, "hello"))
	if r := n.waitStatus("/hello", 200); r.body != "Hello, world!\n" {
		t.Fatalf("hello with a read-only cache answered %q", r.body)
	}
	h := n.listCells()["hello"]
	if h.State != "serving" || !strings.Contains(h.Error, "compile cache unavailable, serving uncached") || !strings.Contains(h.Error, "read-only file system") {
		t.Fatalf("hello with a read-only cache: %+v, want serving with the cache's error", h)
	}
	if !strings.Contains(n.Logs(), "compile cache write failed") {
		t.Fatal("no log line for the failed cache write")
	}

	// A full data directory.
	fill(t, data)
	n.drop("echo", testbuild.Cell(t, "echo"))
	n.waitStatus("/echo", 200)
	if e := n.listCells()["echo"]; e.State != "serving" || !strings.Contains(e.Error, "compile cache unavailable") {
		t.Fatalf("echo on a full data dir: %+v", e)
	}
	eventually(t, "the module store's failure in the log", func() bool {
		return strings.Contains(n.Logs(), "no space left on device")
	})
	// A verb still runs; its journal entry cannot be written.
	out, err := n.celctl("verb", "clone", "hello")
	t.Logf("celctl verb clone hello on a full data dir: %v\n%s", err, out)
	for _, p := range []string{"/hello", "/counter", "/echo"} {
		if r := n.get(p); r.status != 200 {
			t.Fatalf("%s on a full data dir answered %d", p, r.status)
		}
	}
	if strings.Contains(n.Logs(), "panic") {
		t.Fatal("the node logged a panic")
	}
}
