package wasm

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/celluster/celluster/core/testbuild"
	"github.com/celluster/celluster/pluginapi/cellabi"
)

// TestMain removes the example cells the benchmarks build.
func TestMain(m *testing.M) { testbuild.Main(m) }

// Benchmarks measure the engine, not logging.
var benchLog = slog.New(slog.DiscardHandler)

// benchMemoryLimit is the node's default per-instance memory limit
// (cell.DefaultLimits, which this package cannot import), so modules are
// compiled as a node compiles them.
const benchMemoryLimit = 128 << 20

// benchTimeout is the time limit of every benchmarked call: armed like a
// real request's, never reached.
const benchTimeout = time.Minute

func benchEngine(b *testing.B, cfg Config) *Engine {
	b.Helper()
	cfg.Logger = benchLog
	e, err := NewEngine(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close(context.Background()) })
	return e
}

func benchCompile(b *testing.B, e *Engine, src []byte) *Module {
	b.Helper()
	m, err := e.Compile(context.Background(), src, CompileOptions{MemoryLimit: benchMemoryLimit})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(m.Release)
	return m
}

// benchReactor is a reactor module benchmarked against its peer.
type benchReactor struct {
	name string // the sub-benchmark value: module=<name>
	cell string // the cell it serves (its path prefix)
	mod  *Module
	body string // its answer to GET /<cell>
}

// benchReactors compiles the Go hello cell and, as the minimal peer,
// testdata/tiny.wasm: a hand-written reactor whose handler returns a
// precomputed response, so its cost is the host's and wazero's alone.
func benchReactors(b *testing.B, e *Engine) []benchReactor {
	b.Helper()
	return []benchReactor{
		{name: "go-hello", cell: "hello", mod: benchCompile(b, e, testbuild.Cell(b, "hello")), body: "Hello, world!\n"},
		{name: "tiny", cell: "tiny", mod: benchCompile(b, e, testdata(b, "tiny.wasm")), body: "ok"},
	}
}

// perOp returns the mean timed duration of one iteration in unit.
func perOp(b *testing.B, unit time.Duration) float64 {
	if b.N == 0 {
		return 0
	}
	return float64(b.Elapsed()) / float64(b.N) / float64(unit)
}

// BenchmarkCompile measures loading the Go hello cell (about 2.9 MB of
// wasm) into a fresh Engine, as a node does for a module it has not yet
// compiled: instrumenting it and compiling it to machine code with no
// compilation cache (cache=none, a first start or a new module) against the
// same with a disk cache that already holds the module (cache=disk, a
// restart). Creating and closing the Engine is not timed.
//
// Aim: a disk-cache hit is many times cheaper than a cold compile.
//
// A cold iteration takes about a second: run it with -benchtime=5x, as
// make bench does.
func BenchmarkCompile(b *testing.B) {
	ctx := context.Background()
	src := testbuild.Cell(b, "hello")
	cacheDir := b.TempDir()
	{ // Fill the disk cache, untimed.
		e, err := NewEngine(ctx, Config{CacheDir: cacheDir, Logger: benchLog})
		if err != nil {
			b.Fatal(err)
		}
		m, err := e.Compile(ctx, src, CompileOptions{MemoryLimit: benchMemoryLimit})
		if err != nil {
			b.Fatal(err)
		}
		m.Release()
		e.Close(ctx)
	}
	for _, peer := range []struct{ name, dir string }{{"none", ""}, {"disk", cacheDir}} {
		b.Run("cache="+peer.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				e, err := NewEngine(ctx, Config{CacheDir: peer.dir, Logger: benchLog})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				m, err := e.Compile(ctx, src, CompileOptions{MemoryLimit: benchMemoryLimit})
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				if m.ABI != ABIReactor {
					b.Fatalf("hello compiled as a %s", m.ABI)
				}
				m.Release()
				e.Close(ctx)
				b.StartTimer()
			}
			b.ReportMetric(perOp(b, time.Millisecond), "ms/compile")
		})
	}
}

// BenchmarkSpawn measures starting one replica of a reactor, ready for its
// first request, and closing it: path=snapshot starts it from the module's
// pre-initialised snapshot (memory mapped copy-on-write, globals set, no
// data segments, no _initialize), path=plain as a node with snapshots off
// does (instantiate, apply the data segments, run _initialize). The first
// replica, which takes the snapshot, is started before the timer.
//
// Aim: a Go reactor from its snapshot in at most 1 ms.
func BenchmarkSpawn(b *testing.B) {
	ctx := context.Background()
	for _, path := range []string{"snapshot", "plain"} {
		e := benchEngine(b, Config{NoSnapshots: path == "plain"})
		for _, m := range benchReactors(b, e) {
			b.Run("module="+m.name+"/path="+path, func(b *testing.B) {
				cfg := InstanceConfig{Cell: m.cell, Logger: benchLog, InitTimeout: benchTimeout}
				first, err := m.mod.NewReactor(ctx, cfg)
				if err != nil {
					b.Fatal(err)
				}
				defer first.Close(ctx)
				b.ReportAllocs()
				for b.Loop() {
					r, err := m.mod.NewReactor(ctx, cfg)
					if err != nil {
						b.Fatal(err)
					}
					if err := r.Close(ctx); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(perOp(b, time.Microsecond), "µs/spawn")
			})
		}
	}
}

// BenchmarkReplicaMemory measures the memory each idle replica of the Go
// hello cell adds to the node: the process's Private_Dirty (written
// pages no other mapping shares; /proc/self/smaps_rollup) after starting
// 200 replicas beside the first and sending each one request, divided by
// 200. path=snapshot starts them from the pre-initialised snapshot, whose
// untouched pages stay shared; path=plain initialises each one. Each
// iteration starts and closes the 200 replicas; only the figure is of
// interest (KiB/replica): run it with -benchtime=1x, as make bench does.
//
// Aim: at most 1 MiB per replica from a snapshot.
func BenchmarkReplicaMemory(b *testing.B) {
	ctx := context.Background()
	const replicas = 200
	for _, path := range []string{"snapshot", "plain"} {
		e := benchEngine(b, Config{NoSnapshots: path == "plain"})
		m := benchCompile(b, e, testbuild.Cell(b, "hello"))
		b.Run("module=go-hello/path="+path, func(b *testing.B) {
			cfg := InstanceConfig{Cell: "hello", Logger: benchLog, InitTimeout: benchTimeout}
			first, err := m.NewReactor(ctx, cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer first.Close(ctx)
			env := cellabi.AppendRequest(nil, &cellabi.Request{Method: "GET", Path: "/hello"})
			var perReplica float64
			for b.Loop() {
				debug.FreeOSMemory() // the heap's free pages are not counted
				before := privateDirty(b)
				rs := make([]*Reactor, 0, replicas)
				for range replicas {
					r, err := m.NewReactor(ctx, cfg)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := r.Handle(ctx, benchTimeout, env); err != nil {
						b.Fatal(err)
					}
					rs = append(rs, r)
				}
				debug.FreeOSMemory()
				perReplica = float64(privateDirty(b)-before) / replicas / 1024
				for _, r := range rs {
					r.Close(ctx)
				}
			}
			b.ReportMetric(perReplica, "KiB/replica")
		})
	}
}

// privateDirty is the process's Private_Dirty in bytes.
func privateDirty(tb testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		tb.Skipf("reading /proc/self/smaps_rollup (needs Linux 4.14+ with /proc mounted): %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Private_Dirty:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatal("no Private_Dirty in /proc/self/smaps_rollup")
	return 0
}

// benchCall runs one request envelope through r and decodes the answer, as
// core/cell does for every request: the request context can be canceled
// (an HTTP request's always can) and the call has a time limit.
type benchCall struct {
	r   *Reactor
	ctx context.Context
	req cellabi.Request
	env []byte
}

func (c *benchCall) do(b *testing.B) cellabi.Response {
	c.env = cellabi.AppendRequest(c.env[:0], &c.req)
	out, err := c.r.Handle(c.ctx, benchTimeout, c.env)
	if err != nil {
		b.Fatal(err)
	}
	resp, err := cellabi.DecodeResponse(out)
	if err != nil {
		b.Fatal(err)
	}
	return resp
}

func newBenchCall(b *testing.B, m *Module, cell, target string) *benchCall {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	r, err := m.NewReactor(ctx, InstanceConfig{Cell: cell, Logger: benchLog, InitTimeout: benchTimeout})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close(context.Background()) })
	path, query, _ := strings.Cut(target, "?")
	return &benchCall{r: r, ctx: ctx, req: cellabi.Request{
		Method: "GET", Path: path, Query: query,
		Headers: []cellabi.Header{{Name: "Accept", Value: "*/*"}, {Name: "User-Agent", Value: "celluster-bench"}},
	}}
}

// BenchmarkReactorRoundTrip measures one request through a warm reactor
// instance, host side included: encoding the request envelope, Handle
// (arming the time limit and the cancellation, cel_alloc, copying the
// request in, cel_handle, copying the response out) and decoding the
// response envelope. module=go-hello is the Go hello cell answering
// GET /hello through the SDK; module=tiny is the minimal peer, whose
// handler returns a constant: the host's and wazero's share of the cost.
//
// Aim: at most 3 µs per request for the Go cell.
func BenchmarkReactorRoundTrip(b *testing.B) {
	e := benchEngine(b, Config{})
	for _, m := range benchReactors(b, e) {
		b.Run("module="+m.name, func(b *testing.B) {
			c := newBenchCall(b, m.mod, m.cell, "/"+m.cell)
			if resp := c.do(b); resp.Status != 200 || string(resp.Body) != m.body {
				b.Fatalf("GET /%s answered %d %q, want 200 %q", m.cell, resp.Status, resp.Body, m.body)
			}
			b.ReportAllocs()
			for b.Loop() {
				if resp := c.do(b); resp.Status != 200 {
					b.Fatalf("GET /%s answered %d", m.cell, resp.Status)
				}
			}
			b.ReportMetric(perOp(b, time.Microsecond), "µs/req")
		})
	}
}

// BenchmarkCPUBound measures what each way of enforcing time limits costs
// a guest that computes: the Go spin cell's GET /spin/work?n=1000000, a
// xorshift64 loop of a million rounds, through Handle on an Engine of each
// InterruptMode. interrupt=none is uninstrumented code that cannot be
// stopped (the limit); interrupt=epoch is what nodes run (a global checked
// at function entries and loop headers, plus a periodic yield to Go);
// interrupt=close-on-context-done is wazero's own mechanism, which epoch
// replaces. ns/iter is the time per loop round.
//
// Aim: epoch within 10 % of none.
func BenchmarkCPUBound(b *testing.B) {
	const rounds = 1_000_000
	src := testbuild.Cell(b, "spin")
	want := strconv.FormatUint(xorshift64(rounds), 10) + "\n"
	for _, mode := range []InterruptMode{InterruptNone, InterruptEpoch, InterruptContext} {
		b.Run("interrupt="+mode.String(), func(b *testing.B) {
			e := benchEngine(b, Config{Interrupt: mode})
			c := newBenchCall(b, benchCompile(b, e, src), "spin", "/spin/work?n="+strconv.Itoa(rounds))
			if resp := c.do(b); resp.Status != 200 || string(resp.Body) != want {
				b.Fatalf("GET /spin/work answered %d %q, want 200 %q", resp.Status, resp.Body, want)
			}
			for b.Loop() {
				if resp := c.do(b); resp.Status != 200 {
					b.Fatalf("GET /spin/work answered %d", resp.Status)
				}
			}
			b.ReportMetric(perOp(b, time.Nanosecond)/rounds, "ns/iter")
		})
	}
}

// xorshift64 is the spin cell's work(n), to check its answer.
func xorshift64(n int) uint64 {
	x := uint64(88172645463325252)
	for range n {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}
