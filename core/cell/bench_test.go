package cell

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/celluster/celluster/core/ingress"
	"github.com/celluster/celluster/core/testbuild"
	"github.com/celluster/celluster/core/wasm"
)

// TestMain removes the example cells the benchmarks build.
func TestMain(m *testing.M) { testbuild.Main(m) }

// benchRegistry returns a registry on its own engine with the named example
// cells loaded (built for wasip1 by testbuild). Logs are discarded.
func benchRegistry(b *testing.B, limits Limits, cells ...string) *Registry {
	return benchRegistryWith(b, wasm.Config{}, limits, cells...)
}

// benchRegistryWith is benchRegistry on an engine configured by cfg.
func benchRegistryWith(b *testing.B, cfg wasm.Config, limits Limits, cells ...string) *Registry {
	b.Helper()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	cfg.Logger = log
	eng, err := wasm.NewEngine(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	reg := NewRegistry(eng, log, limits)
	b.Cleanup(func() {
		reg.Close(ctx)
		eng.Close(ctx)
	})
	for _, name := range cells {
		if err := reg.Load(ctx, name, testbuild.Cell(b, name), name+".wasm"); err != nil {
			b.Fatal(err)
		}
	}
	return reg
}

// nativeHello is the hello example cell (examples/cells/hello) written as a
// plain net/http handler: the peer a cell is measured against.
func nativeHello(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if name == "" {
		name = "world"
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Cell-Version", "dev")
	_, _ = w.Write([]byte("Hello, " + name + "!\n"))
}

// benchCells routes /native to nativeHello and every other cell name to
// the registry, behind the node's real ingress.
type benchCells struct{ reg *Registry }

func (c benchCells) Handler(name string) http.Handler {
	if name == "native" {
		return http.HandlerFunc(nativeHello)
	}
	return c.reg.Handler(name)
}

// perOp returns the mean timed duration of one iteration in unit.
func perOp(b *testing.B, unit time.Duration) float64 {
	if b.N == 0 {
		return 0
	}
	return float64(b.Elapsed()) / float64(b.N) / float64(unit)
}

// benchClients is how many client goroutines BenchmarkHTTP runs per
// GOMAXPROCS (b.SetParallelism).
const benchClients = 8

// BenchmarkHTTP measures requests per second over real HTTP on 127.0.0.1:
// one server (the node's ingress routing) answers /hello with the hello
// example cell, a Go reactor served by a Registry, and /native with the
// same logic as a plain Go http.HandlerFunc (peer=native, the limit). The
// clients run in the same process on keep-alive connections, reading every
// body in full, benchClients×GOMAXPROCS of them at once; the cell may run
// 64 requests at once and keeps 2 instances warm.
//
// Aim: the cell serves at least 60 % of native's requests per second.
func BenchmarkHTTP(b *testing.B) {
	reg := benchRegistry(b, Limits{Concurrency: 64, Warm: 2}, "hello")
	warmReplicas(b, reg.Lookup("hello"))
	srv := httptest.NewServer(ingress.New(benchCells{reg}, slog.New(slog.DiscardHandler), ingress.Options{}))
	b.Cleanup(srv.Close)
	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: time.Minute}

	get := func(url string) (*http.Response, []byte, error) {
		resp, err := client.Get(url)
		if err != nil {
			return nil, nil, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, body, err
	}
	// Both peers give the same answer.
	for _, path := range []string{"/native", "/hello"} {
		resp, body, err := get(srv.URL + path + "?name=bench")
		if err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode != 200 || string(body) != "Hello, bench!\n" ||
			resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || resp.Header.Get("X-Cell-Version") != "dev" {
			b.Fatalf("GET %s: %d %q %v", path, resp.StatusCode, body, resp.Header)
		}
	}
	// Warm up: open the connections, so the measurement sees steady state.
	var wg sync.WaitGroup
	for range benchClients * runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				for _, path := range []string{"/native", "/hello"} {
					if _, _, err := get(srv.URL + path); err != nil {
						b.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		return
	}

	for _, peer := range []struct{ name, path string }{{"native", "/native"}, {"cell", "/hello"}} {
		b.Run("peer="+peer.name, func(b *testing.B) { loadHTTP(b, client, srv.URL+peer.path+"?name=bench") })
	}
}

// warmReplicas gives the cell one replica per benchmark client: a replica
// serves one request at a time, and the load is what is measured, not the
// reflexes that would clone them.
func warmReplicas(b *testing.B, c *Cell) {
	n := benchClients * runtime.GOMAXPROCS(0)
	if err := c.SetPolicy(Policy{Min: 1, Max: 64, Warm: n}); err != nil {
		b.Fatal(err)
	}
	if _, err := c.SpawnReplicas(context.Background(), n); err != nil {
		b.Fatal(err)
	}
}

// loadHTTP runs GETs of url from benchClients goroutines per GOMAXPROCS and
// reports req/s.
func loadHTTP(b *testing.B, client *http.Client, url string) {
	b.SetParallelism(benchClients)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				b.Errorf("GET %s: %d %v", url, resp.StatusCode, err)
				return
			}
		}
	})
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "req/s")
	}
}

// BenchmarkServe measures one request through Cell.ServeHTTP in process
// (no network, an httptest.ResponseRecorder) for the two ABIs: abi=reactor
// is the Go hello cell, served by a warm instance that is reused;
// abi=command is the Go echo cell, a plain WASI program run CGI-style in a
// fresh instance per request (instantiate, Go runtime start-up, main, CGI
// parsing). The reactor is the fast path the command ABI is compared with.
func BenchmarkServe(b *testing.B) {
	reg := benchRegistry(b, Limits{}, "hello", "echo")
	for _, peer := range []struct{ abi, cell, target, want string }{
		{"reactor", "hello", "/hello?name=bench", "Hello, bench!\n"},
		{"command", "echo", "/echo/x?name=bench", `"path":"/echo/x","query":"name=bench"`},
	} {
		b.Run("abi="+peer.abi, func(b *testing.B) {
			c := reg.Lookup(peer.cell)
			req := httptest.NewRequest("GET", peer.target, nil)
			req.Header.Set("Accept", "*/*")
			req.Header.Set("User-Agent", "celluster-bench")
			serve := func() *httptest.ResponseRecorder {
				w := httptest.NewRecorder()
				c.ServeHTTP(w, req)
				return w
			}
			if w := serve(); w.Code != 200 || !strings.Contains(w.Body.String(), peer.want) {
				b.Fatalf("GET %s: %d %q, want 200 and %q", peer.target, w.Code, w.Body, peer.want)
			}
			b.ReportAllocs()
			for b.Loop() {
				if w := serve(); w.Code != 200 {
					b.Fatalf("GET %s: %d %q", peer.target, w.Code, w.Body)
				}
			}
			b.ReportMetric(perOp(b, time.Microsecond), "µs/req")
		})
	}
}

// serveOnce runs one request through the cell in process and fails the
// benchmark on anything but 200.
func serveOnce(b *testing.B, c *Cell, path string) {
	rec := httptest.NewRecorder()
	c.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	if rec.Code != 200 {
		b.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
	}
}

// BenchmarkReplicaFirstRequest: a load step, as the clone verb answers it —
// the time from asking the cell for one more replica of the Go hello cell to
// that new replica having served its first request (aim ≤ 20 ms). Peer in
// the same run: a request to an already warm replica.
func BenchmarkReplicaFirstRequest(b *testing.B) {
	reg := benchRegistry(b, Limits{Concurrency: 64}, "hello")
	c := reg.Lookup("hello")
	if err := c.SetPolicy(Policy{Min: 1, Max: 64, Warm: 1}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("clone", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.SpawnReplicas(ctx, 1); err != nil {
				b.Fatal(err)
			}
			// The pool hands out the newest idle replica first: this
			// request is the new replica's first.
			serveOnce(b, c, "/hello")
			b.StopTimer()
			if _, err := c.DrainReplicas(ctx, 1); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		b.ReportMetric(perOp(b, time.Millisecond), "ms/replica")
	})
	b.Run("warm", func(b *testing.B) {
		for b.Loop() {
			serveOnce(b, c, "/hello")
		}
		b.ReportMetric(perOp(b, time.Millisecond), "ms/replica")
	})
}

// BenchmarkScaleFromZero: the first request to a Go hello cell decayed to
// zero replicas (compiled module kept): it waits for a replica to start and
// is served (aim ≤ 2 ms from a snapshot). path=snapshot starts the replica
// from the module's pre-initialised snapshot, path=plain as a node with
// snapshots off does (instantiate, data segments, _initialize); the peer
// in the same run, warm, is a request to a cell with a replica ready.
func BenchmarkScaleFromZero(b *testing.B) {
	ctx := context.Background()
	for _, path := range []string{"snapshot", "plain"} {
		reg := benchRegistryWith(b, wasm.Config{NoSnapshots: path == "plain"}, Limits{}, "hello")
		c := reg.Lookup("hello")
		if err := c.SetPolicy(Policy{Min: 1, Max: 8, Warm: 1, DecayIdle: time.Nanosecond}); err != nil {
			b.Fatal(err)
		}
		b.Run("path="+path, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				if live, err := c.DrainReplicas(ctx, 100); err != nil || live != 0 {
					b.Fatalf("decay to zero: %d live, %v", live, err)
				}
				b.StartTimer()
				serveOnce(b, c, "/hello")
			}
			b.ReportMetric(perOp(b, time.Millisecond), "ms/request")
		})
		if path == "snapshot" {
			b.Run("path=warm", func(b *testing.B) {
				for b.Loop() {
					serveOnce(b, c, "/hello")
				}
				b.ReportMetric(perOp(b, time.Millisecond), "ms/request")
			})
		}
	}
}
