package wasm

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/celluster/celluster/core/testbuild"
	"github.com/celluster/celluster/core/wasm/snapshot"
	"github.com/celluster/celluster/pluginapi/cellabi"
)

// get sends GET /path to r and returns the body.
func get(t testing.TB, r *Reactor, path string) string {
	t.Helper()
	env := cellabi.AppendRequest(nil, &cellabi.Request{Method: "GET", Path: path})
	out, err := r.Handle(context.Background(), 10*time.Second, env)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	resp, err := cellabi.DecodeResponse(out)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 200 {
		t.Fatalf("GET %s: status %d: %s", path, resp.Status, resp.Body)
	}
	return string(resp.Body)
}

func compileCell(t testing.TB, e *Engine, name string) *Module {
	t.Helper()
	m, err := e.Compile(context.Background(), testbuild.Cell(t, name), CompileOptions{MemoryLimit: 128 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Release)
	return m
}

func newReactor(t testing.TB, m *Module, cell string) *Reactor {
	t.Helper()
	r, err := m.NewReactor(context.Background(), InstanceConfig{Cell: cell, InitTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

// TestReplicasStartFromTheInitSnapshot: the first replica of a Go reactor
// runs _initialize and is captured; later replicas start from that
// capture, each with its own state, and keep serving through many
// requests (the guest's garbage collector runs and its memory grows).
func TestReplicasStartFromTheInitSnapshot(t *testing.T) {
	heavy(t)
	e, _ := newEngine(t, Config{})
	m := compileCell(t, e, "counter")
	if m.NoSnapshot != "" {
		t.Fatalf("counter cannot be snapshotted: %s", m.NoSnapshot)
	}
	if m.InitSnapshot("counter") != nil {
		t.Fatal("a snapshot exists before the first replica")
	}
	first := newReactor(t, m, "counter")
	s := m.InitSnapshot("counter")
	if s == nil {
		t.Fatal("no snapshot after the first replica")
	}
	if s.Size()%PageSize != 0 || s.Size() < 32*PageSize {
		t.Fatalf("snapshot of %d bytes", s.Size())
	}
	if got := get(t, first, "/counter"); got != "1\n" {
		t.Fatalf("first replica: %q", got)
	}
	// Two replicas from the snapshot count on their own from 1.
	a, b := newReactor(t, m, "counter"), newReactor(t, m, "counter")
	for i := 1; i <= 3; i++ {
		if got := get(t, a, "/counter"); got != strconv.Itoa(i)+"\n" {
			t.Fatalf("replica a, request %d: %q", i, got)
		}
	}
	if got := get(t, b, "/counter"); got != "1\n" {
		t.Fatalf("replica b shares a's state: %q", got)
	}
	// Many requests: the Go runtime allocates, collects and grows memory
	// in an instance that never ran _initialize itself.
	h := compileCell(t, e, "hello")
	newReactor(t, h, "hello") // the capture
	r := newReactor(t, h, "hello")
	before := r.MemorySize()
	for i := 0; i < 1500; i++ {
		if got := get(t, r, "/hello/"+strings.Repeat("x", i%512)); !strings.HasPrefix(got, "Hello") {
			t.Fatalf("request %d: %q", i, got)
		}
	}
	t.Logf("memory %d → %d pages over 1500 requests", before/PageSize, r.MemorySize()/PageSize)
}

// TestSnapshotOfALiveReplica: a replica captured between requests
// continues, in a new instance, from the count it had.
func TestSnapshotOfALiveReplica(t *testing.T) {
	heavy(t)
	e, _ := newEngine(t, Config{})
	m := compileCell(t, e, "counter")
	r := newReactor(t, m, "counter")
	for i := 0; i < 3; i++ {
		get(t, r, "/counter")
	}
	s, err := r.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	f, err := m.NewReactorFrom(context.Background(), InstanceConfig{Cell: "counter"}, s)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close(context.Background())
	if got := get(t, f, "/counter"); got != "4\n" {
		t.Fatalf("restored replica: %q, want 4", got)
	}
	// The source goes on on its own: copy-on-write, not shared.
	if got := get(t, r, "/counter"); got != "4\n" {
		t.Fatalf("source replica after the fork: %q, want 4", got)
	}
	if got := get(t, f, "/counter"); got != "5\n" {
		t.Fatalf("restored replica: %q, want 5", got)
	}

	// A snapshot is bound to its module.
	h := compileCell(t, e, "hello")
	if _, err := h.NewReactorFrom(context.Background(), InstanceConfig{Cell: "hello"}, s); err == nil ||
		!strings.Contains(err.Error(), "snapshot of module "+m.SHA256[:12]) {
		t.Fatalf("foreign snapshot: err = %v", err)
	}
}

// TestRestoredClockNeverRunsBackwards: a snapshot whose guest clock is
// ahead of this host's (taken on another host, or before a reboot) gives
// an instance whose clock starts past it.
func TestRestoredClockNeverRunsBackwards(t *testing.T) {
	heavy(t)
	e, _ := newEngine(t, Config{})
	m := compileCell(t, e, "counter")
	r := newReactor(t, m, "counter")
	s, err := r.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	ahead := *s
	ahead.nanotime = hostNanotime() + int64(time.Hour)
	f, err := m.NewReactorFrom(context.Background(), InstanceConfig{Cell: "counter"}, &ahead)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close(context.Background())
	if got := f.clock(); got <= ahead.nanotime {
		t.Fatalf("restored clock reads %d, not past the snapshot's %d", got, ahead.nanotime)
	}
	if got := get(t, f, "/counter"); got != "1\n" {
		t.Fatalf("restored replica: %q", got)
	}
	// A snapshot from the past leaves the clock as the host's.
	if off := guestClock(s.nanotime)() - hostNanotime(); off > int64(time.Second) || off < -int64(time.Second) {
		t.Fatalf("clock offset %v for a snapshot from the past", time.Duration(off))
	}
}

// TestNoSnapshotsIsThePlainPath: with snapshots off, replicas initialise
// one by one and no capture is made.
func TestNoSnapshotsIsThePlainPath(t *testing.T) {
	heavy(t)
	e, _ := newEngine(t, Config{NoSnapshots: true})
	m := compileCell(t, e, "counter")
	if m.NoSnapshot == "" {
		t.Fatal("NoSnapshot is empty with snapshots off")
	}
	r := newReactor(t, m, "counter")
	if m.InitSnapshot("counter") != nil {
		t.Fatal("snapshot taken with snapshots off")
	}
	if _, err := r.Snapshot(); err == nil {
		t.Fatal("Snapshot succeeded with snapshots off")
	}
	if got := get(t, newReactor(t, m, "counter"), "/counter"); got != "1\n" {
		t.Fatalf("%q", got)
	}
}

// TestEncodedSnapshotRestores: a live replica's state, encoded and decoded
// (as for a disk or a peer), restores into a replica that continues from
// it; a corrupt, truncated or foreign encoding is refused and says why.
func TestEncodedSnapshotRestores(t *testing.T) {
	heavy(t)
	e, _ := newEngine(t, Config{})
	m := compileCell(t, e, "counter")
	r := newReactor(t, m, "counter")
	for i := 0; i < 3; i++ {
		get(t, r, "/counter")
	}
	s, err := r.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	n, err := m.EncodeSnapshot(&buf, s, snapshot.KindState)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a %d KiB memory encodes to %d KiB", s.Size()>>10, n>>10)
	if n >= int64(s.Size())/2 {
		t.Fatalf("encoded %d bytes of a %d-byte memory", n, s.Size())
	}
	d, kind, err := m.DecodeSnapshot(bytes.NewReader(buf.Bytes()), 0)
	if err != nil || kind != snapshot.KindState {
		t.Fatalf("decode: %v, %v", kind, err)
	}
	if !d.Taken().Equal(s.Taken()) {
		t.Fatalf("taken %v, want %v", d.Taken(), s.Taken())
	}
	f, err := m.NewReactorFrom(context.Background(), InstanceConfig{Cell: "counter"}, d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close(context.Background())
	if got := get(t, f, "/counter"); got != "4\n" {
		t.Fatalf("restored from the encoding: %q, want 4", got)
	}

	enc := buf.Bytes()
	bad := append([]byte(nil), enc...)
	bad[len(bad)/2] ^= 0x40
	if _, _, err := m.DecodeSnapshot(bytes.NewReader(bad), 0); !errors.Is(err, snapshot.ErrCorrupt) {
		t.Fatalf("corrupt: %v", err)
	}
	if _, _, err := m.DecodeSnapshot(bytes.NewReader(enc[:len(enc)-7]), 0); !errors.Is(err, snapshot.ErrTruncated) {
		t.Fatalf("truncated: %v", err)
	}
	if _, _, err := m.DecodeSnapshot(bytes.NewReader(enc), int64(len(enc)-1)); !errors.Is(err, snapshot.ErrTooLarge) {
		t.Fatalf("over the size limit: %v", err)
	}
	h := compileCell(t, e, "hello")
	if _, _, err := h.DecodeSnapshot(bytes.NewReader(enc), 0); !errors.Is(err, snapshot.ErrForeign) {
		t.Fatalf("another module's: %v", err)
	}
	// The same module under another memory limit is another layout.
	m64, err := e.Compile(context.Background(), testbuild.Cell(t, "counter"), CompileOptions{MemoryLimit: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer m64.Release()
	if _, _, err := m64.DecodeSnapshot(bytes.NewReader(enc), 0); !errors.Is(err, snapshot.ErrForeign) {
		t.Fatalf("another memory limit: %v", err)
	}
}

// TestRestoredLimitsHold: a replica started from a snapshot is stopped at
// its time limit like any other (the interrupt globals are not part of the
// snapshot: each instance gets its own), and its memory cannot grow past
// the module's limit.
func TestRestoredLimitsHold(t *testing.T) {
	heavy(t)
	e, _ := newEngine(t, Config{})
	m, err := e.Compile(context.Background(), testbuild.Cell(t, "spin"), CompileOptions{MemoryLimit: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Release()
	newReactor(t, m, "spin") // the capture
	if m.InitSnapshot("spin") == nil {
		t.Fatalf("spin was not snapshotted: %s", m.NoSnapshot)
	}
	r := newReactor(t, m, "spin") // from the snapshot
	env := cellabi.AppendRequest(nil, &cellabi.Request{Method: "GET", Path: "/spin/loop"})
	start := time.Now()
	if _, err := r.Handle(context.Background(), 200*time.Millisecond, env); !errors.Is(err, ErrTimeout) {
		t.Fatalf("a looping request on a restored replica: %v, want ErrTimeout", err)
	}
	t.Logf("stopped after %v", time.Since(start).Round(time.Millisecond))
	r2 := newReactor(t, m, "spin")
	if _, ok := r2.mem.Grow(uint32(64<<20/PageSize) - r2.mem.Size()/PageSize + 1); ok {
		t.Fatal("a restored replica's memory grew past the 64 MiB limit")
	}
	if _, ok := r2.mem.Grow(1); !ok {
		t.Fatal("a restored replica's memory cannot grow within its limit")
	}
}

// heavy skips a test that compiles and runs Go cells many times when the
// race detector is on: it makes each compile several seconds, and these
// tests check memory images, not synchronisation. make test runs them
// again without the detector (its second go test line).
func heavy(t *testing.T) {
	t.Helper()
	if raceDetector {
		t.Skip("compiles Go cells many times; run without -race (make test does)")
	}
}
