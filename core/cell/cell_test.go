package cell

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/celluster/celluster/core/wasm"
)

func module(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newTestRegistry returns a registry and an HTTP server routing /<cell> to it.
func newTestRegistry(t testing.TB, limits Limits) (*Registry, *httptest.Server) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, err := wasm.NewEngine(context.Background(), wasm.Config{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	reg := NewRegistry(eng, log, limits)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		h := reg.Handler(name)
		if h == nil {
			http.NotFound(w, r)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.Close()
		reg.Close(context.Background())
		eng.Close(context.Background())
	})
	return reg, srv
}

func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestUpgradeUnderConcurrentLoad(t *testing.T) {
	reg, srv := newTestRegistry(t, Limits{Concurrency: 8})
	ctx := context.Background()
	if err := reg.Load(ctx, "app", module(t, "v1.wasm"), "v1.wasm"); err != nil {
		t.Fatal(err)
	}
	var (
		stop             atomic.Bool
		wg               sync.WaitGroup
		v1, v2, failures atomic.Int64
		firstFailure     atomic.Value
	)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50000 && !stop.Load(); i++ {
				resp, err := http.Get(srv.URL + "/app")
				if err != nil {
					failures.Add(1)
					firstFailure.CompareAndSwap(nil, err.Error())
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == 200 && string(b) == "v1":
					v1.Add(1)
				case resp.StatusCode == 200 && string(b) == "v2":
					v2.Add(1)
				default:
					failures.Add(1)
					firstFailure.CompareAndSwap(nil, resp.Status+" "+string(b))
				}
			}
		}()
	}
	for v1.Load() < 200 {
		time.Sleep(time.Millisecond)
	}
	// Upgrade back and forth while under load.
	for i := 0; i < 4; i++ {
		name := []string{"v2.wasm", "v1.wasm"}[i%2]
		if err := reg.Load(ctx, "app", module(t, name), name); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := reg.Load(ctx, "app", module(t, "v2.wasm"), "v2.wasm"); err != nil {
		t.Fatal(err)
	}
	seen := v2.Load()
	for v2.Load() < seen+200 {
		time.Sleep(time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d requests failed across upgrades; first: %v", n, firstFailure.Load())
	}
	in := reg.Lookup("app").Info()
	if in.Upgrades != 5 || in.Errors != 0 || in.State != StateServing {
		t.Fatalf("info after upgrades: %+v", in)
	}
	if code, body := get(t, srv.URL+"/app"); code != 200 || body != "v2" {
		t.Fatalf("after the last upgrade: %d %q", code, body)
	}
}

func TestTimeLimitAnswers504AndReplacesInstance(t *testing.T) {
	reg, srv := newTestRegistry(t, Limits{RequestTimeout: 100 * time.Millisecond, Warm: 2})
	if err := reg.Load(context.Background(), "loop", module(t, "loop.wasm"), "loop.wasm"); err != nil {
		t.Fatal(err)
	}
	c := reg.Lookup("loop")
	if n := c.Info().Replicas; n != 2 {
		t.Fatalf("warm instances = %d, want 2", n)
	}
	code, body := get(t, srv.URL+"/loop")
	if code != 504 || body != "celluster: cell loop request exceeded its time limit\n" {
		t.Fatalf("looping request: %d %q", code, body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Info().Replicas < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("discarded instance not replaced: %d live", c.Info().Replicas)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if in := c.Info(); in.Errors != 1 || in.Requests != 1 {
		t.Fatalf("stats: %+v", in)
	}
}

func TestConcurrencyLimitQueuesThenRefuses(t *testing.T) {
	// The looping request holds the only slot for 10s; a queued one waits 1s.
	reg, srv := newTestRegistry(t, Limits{RequestTimeout: 10 * time.Second, Concurrency: 1, QueueLength: 1, QueueTimeout: time.Second})
	if err := reg.Load(context.Background(), "loop", module(t, "loop.wasm"), "loop.wasm"); err != nil {
		t.Fatal(err)
	}
	c := reg.Lookup("loop")
	first := make(chan int, 1)
	go func() { code, _ := get(t, srv.URL+"/loop"); first <- code }()
	for c.Info().InFlight != 1 {
		time.Sleep(time.Millisecond)
	}
	// One may queue; it waits QueueTimeout, then 503.
	code, body := get(t, srv.URL+"/loop")
	if code != 503 || !strings.Contains(body, "queue wait timed out") {
		t.Fatalf("queued request: %d %q", code, body)
	}
	// Fill the queue, then one more is refused at once.
	queued := make(chan int, 1)
	go func() { code, _ := get(t, srv.URL+"/loop"); queued <- code }()
	for c.Info().Queued != 1 {
		time.Sleep(time.Millisecond)
	}
	code, body = get(t, srv.URL+"/loop")
	if code != 503 || !strings.Contains(body, "queue full") {
		t.Fatalf("request beyond the queue: %d %q", code, body)
	}
	if code := <-queued; code != 503 {
		t.Fatalf("queued request answered %d", code)
	}
	if code := <-first; code != 504 {
		t.Fatalf("looping request answered %d", code)
	}
}

func TestCommandCell(t *testing.T) {
	reg, srv := newTestRegistry(t, Limits{})
	if err := reg.Load(context.Background(), "cmd", module(t, "cmd.wasm"), "cmd.wasm"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(srv.URL + "/cmd/x")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 202 || string(b) != "cmd" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("command cell: %d %q %v", resp.StatusCode, b, resp.Header)
	}
	if in := reg.Lookup("cmd").Info(); in.ABI != "command" || in.Requests != 1 {
		t.Fatalf("info: %+v", in)
	}
}

func TestRejectedModuleKeepsOldVersion(t *testing.T) {
	reg, srv := newTestRegistry(t, Limits{})
	ctx := context.Background()
	if err := reg.Load(ctx, "app", module(t, "v1.wasm"), "v1.wasm"); err != nil {
		t.Fatal(err)
	}
	err := reg.Load(ctx, "app", []byte("\x00asm\x01\x00\x00\x00\x0a\x05"), "/cells/app.wasm")
	if err == nil || !strings.Contains(err.Error(), "/cells/app.wasm") {
		t.Fatalf("bad module error = %v, want it to name the file", err)
	}
	in := reg.Lookup("app").Info()
	if in.State != StateServing || in.Error == "" {
		t.Fatalf("after a rejected upgrade: %+v", in)
	}
	if code, body := get(t, srv.URL+"/app"); code != 200 || body != "v1" {
		t.Fatalf("old version: %d %q", code, body)
	}
	if err := reg.Load(ctx, "app", module(t, "v2.wasm"), "v2.wasm"); err != nil {
		t.Fatal(err)
	}
	if in := reg.Lookup("app").Info(); in.Error != "" {
		t.Fatalf("error not cleared by a good module: %+v", in)
	}
	if err := reg.Load(ctx, "bad", []byte("junk"), "bad.wasm"); err == nil {
		t.Fatal("junk loaded")
	}
	// A cell that never loaded answers 503 with a generic reason; the
	// details (which name the file) are in Info for the operator.
	if code, body := get(t, srv.URL+"/bad"); code != 503 || body != "celluster: cell bad is not serving\n" {
		t.Fatalf("failed cell: %d %q", code, body)
	}
	if in := reg.Lookup("bad").Info(); in.State != StateFailed || !strings.Contains(in.Error, "bad.wasm") {
		t.Fatalf("failed cell info: %+v", in)
	}
	if err := reg.Load(ctx, "Bad Name", module(t, "v1.wasm"), "x"); err == nil {
		t.Fatal("invalid cell name accepted")
	}
}

func TestRemoveWaitsForRequestsInFlight(t *testing.T) {
	reg, srv := newTestRegistry(t, Limits{RequestTimeout: 300 * time.Millisecond})
	if err := reg.Load(context.Background(), "loop", module(t, "loop.wasm"), "loop.wasm"); err != nil {
		t.Fatal(err)
	}
	c := reg.Lookup("loop")
	done := make(chan int, 1)
	go func() { code, _ := get(t, srv.URL+"/loop"); done <- code }()
	for c.Info().InFlight != 1 {
		time.Sleep(time.Millisecond)
	}
	if !reg.Remove(context.Background(), "loop") {
		t.Fatal("Remove found no cell")
	}
	// Remove returned only after the in-flight request was answered.
	select {
	case code := <-done:
		if code != 504 {
			t.Fatalf("in-flight request answered %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("in-flight request not answered after Remove returned")
	}
	if code, _ := get(t, srv.URL+"/loop"); code != 404 {
		t.Fatalf("removed cell answered %d", code)
	}
}

func TestSpawnAndDrainReplicas(t *testing.T) {
	reg, _ := newTestRegistry(t, Limits{Concurrency: 4})
	ctx := context.Background()
	if err := reg.Load(ctx, "app", module(t, "v1.wasm"), "v1.wasm"); err != nil {
		t.Fatal(err)
	}
	c := reg.Lookup("app")
	if n, err := c.SpawnReplicas(ctx, 2); err != nil || n != 3 {
		t.Fatalf("SpawnReplicas(2) = %d, %v; want 3 live", n, err)
	}
	if n, err := c.SpawnReplicas(ctx, 10); err != nil || n != 4 {
		t.Fatalf("SpawnReplicas(10) = %d, %v; want the concurrency bound 4", n, err)
	}
	if n, err := c.DrainReplicas(ctx, 2); err != nil || n != 2 {
		t.Fatalf("DrainReplicas(2) = %d, %v; want 2", n, err)
	}
	if n, _ := c.DrainReplicas(ctx, 10); n != 1 {
		t.Fatalf("DrainReplicas(10) = %d; want the floor of 1", n)
	}
	if c.Info().Replicas != 1 {
		t.Fatalf("info replicas = %d", c.Info().Replicas)
	}
	if err := reg.Load(ctx, "cmd", module(t, "cmd.wasm"), "cmd.wasm"); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Lookup("cmd").SpawnReplicas(ctx, 1); !errors.Is(err, ErrNoReplicas) {
		t.Fatalf("spawning a command cell: %v", err)
	}
}

func TestTakeWindow(t *testing.T) {
	reg, srv := newTestRegistry(t, Limits{RequestTimeout: 100 * time.Millisecond})
	ctx := context.Background()
	if err := reg.Load(ctx, "app", module(t, "v1.wasm"), "v1.wasm"); err != nil {
		t.Fatal(err)
	}
	if err := reg.Load(ctx, "loop", module(t, "loop.wasm"), "loop.wasm"); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if code, _ := get(t, srv.URL+"/app"); code != 200 {
			t.Fatal(code)
		}
	}
	w := reg.Lookup("app").TakeWindow()
	if w.Requests != 5 || w.Errors != 0 || w.P50 <= 0 || w.P50 > w.P90 || w.P90 > w.P99 {
		t.Fatalf("first window: %+v", w)
	}
	if w := reg.Lookup("app").TakeWindow(); w.Requests != 0 || w.P99 != 0 {
		t.Fatalf("empty window: %+v", w)
	}
	get(t, srv.URL+"/loop") // 504 at the 100ms limit
	w = reg.Lookup("loop").TakeWindow()
	if w.Requests != 1 || w.Errors != 1 || w.P99 < 100*time.Millisecond {
		t.Fatalf("timed-out window: %+v", w)
	}
	if in := reg.Lookup("app").Info(); in.Requests != 5 {
		t.Fatalf("windows disturbed the totals: %+v", in)
	}
}

// TestErrorBodiesAreGeneric: a guest that breaks the ABI answers 500 with a
// fixed reason; the guest's error (export names, offsets) is only logged.
func TestErrorBodiesAreGeneric(t *testing.T) {
	reg, srv := newTestRegistry(t, Limits{})
	src, err := os.ReadFile(filepath.Join("..", "wasm", "testdata", "badptr.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Load(context.Background(), "badptr", src, "/secret/host/path/badptr.wasm"); err != nil {
		t.Fatal(err)
	}
	code, body := get(t, srv.URL+"/badptr")
	if code != 500 || body != "celluster: cell badptr failed while handling the request\n" {
		t.Fatalf("broken guest answered %d %q", code, body)
	}
}

// TestRequirementRefusesModule: a module without the pinned sha256, or of
// another ABI than required, is refused and the serving version serves on.
func TestRequirementRefusesModule(t *testing.T) {
	reg, srv := newTestRegistry(t, Limits{})
	ctx := context.Background()
	v1 := module(t, "v1.wasm")
	if err := reg.Load(ctx, "app", v1, "v1.wasm"); err != nil {
		t.Fatal(err)
	}
	c := reg.Lookup("app")
	pin := c.Info().SHA256
	c.Require(Requirement{SHA256: pin, SHA256At: "app.intent:2:8"})
	err := c.Load(ctx, module(t, "v2.wasm"), "/cells/app.wasm")
	if err == nil || !strings.Contains(err.Error(), "does not match the pin "+pin+" in app.intent:2:8") {
		t.Fatalf("module off its pin: %v", err)
	}
	if _, _, err := c.Stage(ctx, module(t, "v2.wasm"), "/cells/app.wasm"); err == nil {
		t.Fatal("module off its pin staged")
	}
	c.Require(Requirement{ABI: "command", ABIAt: "app.intent:3:1"})
	err = c.Load(ctx, module(t, "v2.wasm"), "/cells/app.wasm")
	if err == nil || !strings.Contains(err.Error(), "a reactor module, but app.intent:3:1 says abi command") {
		t.Fatalf("module of the wrong ABI: %v", err)
	}
	if code, body := get(t, srv.URL+"/app"); code != 200 || body != "v1" {
		t.Fatalf("after refusals: %d %q, want v1 serving", code, body)
	}
	if in := c.Info(); in.State != StateServing || !strings.Contains(in.Error, "says abi command") || len(in.Versions) != 1 {
		t.Fatalf("info after refusals: %+v", in)
	}
	c.Require(Requirement{SHA256: pin})
	if err := c.Load(ctx, v1, "v1.wasm"); err != nil {
		t.Fatalf("the pinned module: %v", err)
	}
}
