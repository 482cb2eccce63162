package wasm

import (
	"context"
	"log/slog"
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

// BenchmarkSpawn measures starting and closing one reactor instance:
// instantiating the compiled module and running its _initialize export
// (for the Go hello cell, the Go runtime's start-up) — what a cell pays for
// every instance its pool adds beyond the warm ones and for every instance
// replaced after a trap or a timeout. The peer, module=tiny, has no
// _initialize and one page of memory: the floor set by wazero's
// instantiation and our bookkeeping.
func BenchmarkSpawn(b *testing.B) {
	ctx := context.Background()
	e := benchEngine(b, Config{})
	for _, m := range benchReactors(b, e) {
		b.Run("module="+m.name, func(b *testing.B) {
			cfg := InstanceConfig{Cell: m.cell, Logger: benchLog, InitTimeout: benchTimeout}
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
