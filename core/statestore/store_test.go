package statestore

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/testbuild"
	"github.com/celluster/celluster/core/wasm"
	"github.com/celluster/celluster/core/wasm/snapshot"
	"github.com/celluster/celluster/pluginapi/cellabi"
	"golang.org/x/sys/unix"
)

// sharedCache is the compile cache the tests' engines share.
var sharedCache string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "statestore-test-cache-")
	if err != nil {
		panic(err)
	}
	sharedCache = dir
	testbuild.Main(m, func() { os.RemoveAll(dir) })
}

var _ cell.StateStore = (*Store)(nil)

// counterState returns the compiled counter module and a snapshot of a
// replica that answered n requests.
func counterState(t *testing.T, n int) (*wasm.Engine, *wasm.Module, *wasm.Snapshot) {
	t.Helper()
	ctx := context.Background()
	// One compile cache for the package's tests: each test has an engine
	// of its own, and the race detector makes a cold compile slow.
	e, err := wasm.NewEngine(ctx, wasm.Config{Logger: slog.New(slog.DiscardHandler), CacheDir: sharedCache})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(ctx) })
	m, err := e.Compile(ctx, testbuild.Cell(t, "counter"), wasm.CompileOptions{MemoryLimit: 128 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Release)
	r, err := m.NewReactor(ctx, wasm.InstanceConfig{Cell: "counter"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	for i := 0; i < n; i++ {
		countOn(t, r)
	}
	s, err := r.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return e, m, s
}

func countOn(t *testing.T, r *wasm.Reactor) string {
	t.Helper()
	out, err := r.Handle(context.Background(), 10*time.Second, cellabi.AppendRequest(nil, &cellabi.Request{Method: "GET", Path: "/counter"}))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cellabi.DecodeResponse(out)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(resp.Body))
}

func TestSaveAndLoad(t *testing.T) {
	_, m, s := counterState(t, 4)
	st, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := st.LoadState("counter", m); got != nil || err != nil {
		t.Fatalf("nothing saved: %v, %v", got, err)
	}
	if err := st.SaveState("counter", s, m); err != nil {
		t.Fatal(err)
	}
	got, err := st.LoadState("counter", m)
	if err != nil {
		t.Fatal(err)
	}
	r, err := m.NewReactorFrom(context.Background(), wasm.InstanceConfig{Cell: "counter"}, got)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	if c := countOn(t, r); c != "5" {
		t.Fatalf("restored count %s, want 5", c)
	}
	// No temporary file is left behind.
	ents, _ := os.ReadDir(filepath.Dir(st.Path("counter")))
	if len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want 1", len(ents))
	}
}

// TestRefusals: what is not a usable saved state is refused with an error
// naming the file and saying why.
func TestRefusals(t *testing.T) {
	e, m, s := counterState(t, 2)
	dir := t.TempDir()
	st, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SaveState("counter", s, m); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(st.Path("counter"))
	if err != nil {
		t.Fatal(err)
	}
	write := func(b []byte) {
		t.Helper()
		if err := os.WriteFile(st.Path("counter"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(what string, kind error, says string) {
		t.Helper()
		_, err := st.LoadState("counter", m)
		if err == nil || (kind != nil && !errors.Is(err, kind)) || !strings.Contains(err.Error(), st.Path("counter")) || !strings.Contains(err.Error(), says) {
			t.Fatalf("%s: err = %v; want %v naming the file and saying %q", what, err, kind, says)
		}
	}
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/3] ^= 1
	write(flipped)
	expect("corrupt", snapshot.ErrCorrupt, "")
	write(good[:len(good)/2])
	expect("truncated", snapshot.ErrTruncated, "")
	write([]byte("not a snapshot at all, just text\n"))
	expect("foreign format", nil, "")

	// Another module's state under this cell's name.
	h, err := e.Compile(context.Background(), testbuild.Cell(t, "hello"), wasm.CompileOptions{MemoryLimit: 128 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	write(good)
	if _, err := st.LoadState("counter", h); !errors.Is(err, snapshot.ErrForeign) {
		t.Fatalf("another module: %v", err)
	}

	// A symlink, a FIFO, a directory.
	os.Remove(st.Path("counter"))
	other := filepath.Join(t.TempDir(), "elsewhere")
	os.WriteFile(other, good, 0o600)
	if err := os.Symlink(other, st.Path("counter")); err != nil {
		t.Fatal(err)
	}
	expect("symlink", nil, "symlink")
	os.Remove(st.Path("counter"))
	if err := syscall.Mkfifo(st.Path("counter"), 0o600); err != nil {
		t.Fatal(err)
	}
	expect("fifo", nil, "FIFO")
	os.Remove(st.Path("counter"))

	// Larger than the module could produce.
	f, err := os.Create(st.Path("counter"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(m.MaxSnapshotBytes() + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	expect("huge", snapshot.ErrTooLarge, "more than a state of this module can take")
}

// TestFullDiskKeepsThePrevious: a save that runs out of space (a real
// full file system: a small tmpfs) fails with an error that says where,
// and the state saved before stays whole and loads.
func TestFullDiskKeepsThePrevious(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=128k"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mounting a tmpfs: %v", err)
		}
		t.Skipf("mounting a tmpfs needs CAP_SYS_ADMIN: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, 0) })
	_, m, s := counterState(t, 3)
	st, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SaveState("counter", s, m); err != nil {
		t.Fatal(err)
	}
	// Fill what is left.
	fill, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := fill.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	fill.Close()
	err = st.SaveState("counter", s, m)
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), st.Path("counter")) {
		t.Fatalf("save on a full disk: %v", err)
	}
	got, err := st.LoadState("counter", m)
	if err != nil {
		t.Fatalf("the state saved before: %v", err)
	}
	r, err := m.NewReactorFrom(context.Background(), wasm.InstanceConfig{Cell: "counter"}, got)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	if c := countOn(t, r); c != "4" {
		t.Fatalf("count %s, want 4", c)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Fatalf("a temporary file was left: %d entries", len(ents))
	}
}
