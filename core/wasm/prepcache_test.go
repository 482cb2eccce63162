package wasm

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/celluster/celluster/core/testbuild"
)

// TestRestartIsWarm: a second engine on the same cache directory neither
// instruments the module again nor runs _initialize for the cell's first
// replica, which continues from the cached snapshot; a damaged cache file
// is ignored with a warning naming it, and rebuilt.
func TestRestartIsWarm(t *testing.T) {
	heavy(t)
	dir := t.TempDir()
	src := testbuild.Cell(t, "counter")
	e1, _ := newEngine(t, Config{CacheDir: dir})
	m1, err := e1.Compile(context.Background(), src, CompileOptions{MemoryLimit: 128 << 20})
	if err != nil {
		t.Fatal(err)
	}
	r := newReactor(t, m1, "counter")
	if got := get(t, r, "/counter"); got != "1\n" {
		t.Fatalf("%q", got)
	}
	initFile := e1.initPath(m1.key, "counter")
	eventually(t, "the snapshot to be cached", func() bool { _, err := os.Stat(initFile); return err == nil })
	m1.Release()
	e1.Close(context.Background())

	e2, logs := newEngine(t, Config{CacheDir: dir})
	m2 := compileCell(t, e2, "counter")
	if !strings.Contains(logs.String(), "prepared module from the cache") {
		t.Fatalf("the restarted engine prepared the module again:\n%s", logs)
	}
	r2 := newReactor(t, m2, "counter")
	if !strings.Contains(logs.String(), "pre-initialised snapshot from the cache") {
		t.Fatalf("the first replica initialised instead of starting from the cached snapshot:\n%s", logs)
	}
	if got := get(t, r2, "/counter"); got != "1\n" {
		t.Fatalf("first replica after the restart: %q, want 1 (a fresh start, from the snapshot)", got)
	}

	// Damaged cache files: flipped bytes in both.
	for _, f := range []string{e2.prepPath(m2.key), initFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m2.Release()
	e2.Close(context.Background())
	e3, logs3 := newEngine(t, Config{CacheDir: dir})
	m3 := compileCell(t, e3, "counter")
	r3 := newReactor(t, m3, "counter")
	if got := get(t, r3, "/counter"); got != "1\n" {
		t.Fatalf("after a damaged cache: %q", got)
	}
	l := logs3.String()
	if !strings.Contains(l, "ignoring a cached prepared module") || !strings.Contains(l, filepath.Base(e3.prepPath(m3.key))) ||
		!strings.Contains(l, "ignoring a cached snapshot") {
		t.Fatalf("damaged cache files not reported:\n%s", l)
	}
	// A symlink in place of the snapshot is not followed.
	os.Remove(initFile)
	if err := os.Symlink("/etc/hostname", initFile); err != nil {
		t.Fatal(err)
	}
	if s := m3.loadInit("counter"); s != nil {
		t.Fatal("a symlinked snapshot was loaded")
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func FuzzDecodePrepared(f *testing.F) {
	f.Add(encodePrepared(&preparedSample))
	f.Add([]byte(prepMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodePrepared(b)
		if err != nil {
			return
		}
		if again, err := decodePrepared(encodePrepared(p)); err != nil || len(again.Module) != len(p.Module) {
			t.Fatalf("re-encoding a decoded prepared module: %v", err)
		}
	})
}

var preparedSample = instrumentPreparedSample()
