package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/celluster/celluster/core/testbuild"
)

func TestServesExampleCells(t *testing.T) {
	n := startNode(t, "")
	for _, name := range []string{"hello", "counter", "echo", "spin"} {
		n.drop(name, testbuild.Cell(t, name))
	}

	r := n.waitStatus("/hello", 200)
	if r.body != "Hello, world!\n" {
		t.Fatalf("GET /hello = %q", r.body)
	}
	if r := n.get("/hello/sub/path?name=Ada"); r.status != 200 || r.body != "Hello, Ada!\n" {
		t.Fatalf("GET /hello/sub/path?name=Ada = %d %q", r.status, r.body)
	}

	// State in linear memory survives between requests of a reactor.
	n.waitStatus("/counter", 200)
	for want := 2; want <= 4; want++ {
		if r := n.get("/counter"); r.body != fmt.Sprintf("%d\n", want) {
			t.Fatalf("counter request %d answered %q", want, r.body)
		}
	}

	// A plain WASI program, run CGI-style.
	n.waitStatus("/echo", 200)
	r, err := n.do("POST", "/echo/a/b?x=1&y=two", "payload")
	if err != nil {
		t.Fatal(err)
	}
	var echo struct {
		Method, Path, Query, Body string
		Headers                   map[string]string
	}
	if err := json.Unmarshal([]byte(r.body), &echo); err != nil {
		t.Fatalf("echo answered %d %q: %v", r.status, r.body, err)
	}
	if echo.Method != "POST" || echo.Path != "/echo/a/b" || echo.Query != "x=1&y=two" || echo.Body != "payload" {
		t.Fatalf("echo = %+v", echo)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("echo Content-Type = %q", ct)
	}
	if r := n.get("/echo?status=201"); r.status != 201 {
		t.Fatalf("echo with Status header answered %d, want 201", r.status)
	}

	if r := n.get("/nosuchcell"); r.status != 404 || !strings.Contains(r.body, `no cell named "nosuchcell"`) {
		t.Fatalf("unknown cell answered %d %q", r.status, r.body)
	}

	// spin is never requested: wait for it to load.
	eventually(t, "spin to serve", func() bool { return n.listCells()["spin"].State == "serving" })
	cells := n.listCells()
	for name, abi := range map[string]string{"hello": "reactor", "counter": "reactor", "spin": "reactor", "echo": "command"} {
		c, ok := cells[name]
		if !ok {
			t.Fatalf("celctl cells lacks %s: %+v", name, cells)
		}
		if c.ABI != abi || c.State != "serving" || len(c.SHA256) != 64 || c.Error != "" {
			t.Fatalf("cell %s = %+v", name, c)
		}
	}
	if c := cells["counter"]; c.Requests != 4 || c.Replicas < 1 || c.P99 <= 0 || c.P50 > c.P99 {
		t.Fatalf("counter stats = %+v, want 4 requests, a live replica and p50 <= p99 > 0", c)
	}
	if c := cells["hello"]; c.Requests < 2 || c.Errors != 0 {
		t.Fatalf("hello stats = %+v", c)
	}

	out, err := n.celctl("status", "-o", "json")
	if err != nil {
		t.Fatalf("celctl status: %v\n%s", err, out)
	}
	var st struct {
		HTTP    string `json:"http"`
		Cells   int    `json:"cells"`
		Serving int    `json:"serving"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.HTTP != n.http || st.Cells != 4 || st.Serving != 4 {
		t.Fatalf("celctl status -o json = %s (%v)", out, err)
	}
	// A relative --admin path works from the directory it is relative to.
	rel := exec.Command(testbuild.Binary(t, "./cmd/celctl", false), "--admin", "admin.sock", "status")
	rel.Dir = n.data
	if out, err := rel.CombinedOutput(); err != nil || !strings.Contains(string(out), n.http) {
		t.Fatalf("celctl with a relative --admin: %v\n%s", err, out)
	}
	table, err := n.celctl("cells")
	if err != nil || !strings.Contains(table, "NAME") || !strings.Contains(table, "counter") {
		t.Fatalf("celctl cells table:\n%s (%v)", table, err)
	}
}

// TestUpgradeUnderLoad replaces a serving module while clients hammer it:
// every request must succeed, and traffic must move to the new version.
func TestUpgradeUnderLoad(t *testing.T) {
	n := startNode(t, "")
	n.drop("hello", testbuild.Cell(t, "hello", "-X main.version=v1"))
	if r := n.waitStatus("/hello", 200); r.header.Get("X-Cell-Version") != "v1" {
		t.Fatalf("first version answered X-Cell-Version %q", r.header.Get("X-Cell-Version"))
	}
	v2 := testbuild.Cell(t, "hello", "-X main.version=v2")

	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		total    atomic.Int64
		sawV2    atomic.Int64
		failMu   sync.Mutex
		failures []string
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100000 && !stop.Load(); i++ {
				r, err := n.do("GET", "/hello?name=load", "")
				total.Add(1)
				if err != nil || r.status != 200 || r.body != "Hello, load!\n" {
					failMu.Lock()
					failures = append(failures, fmt.Sprintf("%v %d %q", err, r.status, r.body))
					failMu.Unlock()
					continue
				}
				if r.header.Get("X-Cell-Version") == "v2" {
					sawV2.Add(1)
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // let load build up on v1
	n.drop("hello", v2)
	// The upgrade verb shifts traffic in steps (10%, 50%, 100%), watching
	// the new version at each, then retires v1.
	eventually(t, "the upgrade to finish", func() bool {
		c := n.listCells()["hello"]
		return c.Upgrades == 1 && sawV2.Load() >= 200
	})
	stop.Store(true)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed during the upgrade, first: %s", len(failures), total.Load(), failures[0])
	}
	c := n.listCells()["hello"]
	if c.Upgrades != 1 || c.Errors != 0 {
		t.Fatalf("after upgrade: %+v", c)
	}
	t.Logf("%d requests, none failed, across the upgrade", total.Load())
}

func TestRemoveDrainsCell(t *testing.T) {
	n := startNode(t, "")
	n.drop("hello", testbuild.Cell(t, "hello"))
	n.drop("counter", testbuild.Cell(t, "counter"))
	n.waitStatus("/hello", 200)
	n.waitStatus("/counter", 200)
	n.remove("hello")
	r := n.waitStatus("/hello", 404)
	if !strings.Contains(r.body, "no cell named") {
		t.Fatalf("removed cell answered %q", r.body)
	}
	if _, ok := n.listCells()["hello"]; ok {
		t.Fatal("removed cell still listed")
	}
	if r := n.get("/counter"); r.status != 200 {
		t.Fatalf("other cell answered %d after a removal", r.status)
	}
}

// TestRejectsBadModules drops modules that cannot serve; each is rejected
// with its name and the reason, and an older version keeps serving.
func TestRejectsBadModules(t *testing.T) {
	n := startNode(t, "")
	good := testbuild.Cell(t, "hello")
	n.drop("hello", good)
	n.waitStatus("/hello", 200)

	noExports, err := os.ReadFile(filepath.Join("..", "..", "core", "wasm", "testdata", "noexports.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		data []byte
		want string
	}{
		{[]byte("this is not wasm"), "not a usable WebAssembly module"},
		{good[:len(good)/2], "not a usable WebAssembly module"}, // a half-written file
		{noExports, "exports neither cel_alloc/cel_handle"},
	}
	for _, c := range cases {
		n.drop("hello", c.data)
		eventually(t, "hello to show the error "+c.want, func() bool {
			return strings.Contains(n.listCells()["hello"].Error, c.want)
		})
		h := n.listCells()["hello"]
		if h.State != "serving" || !strings.Contains(h.Error, "hello.wasm") {
			t.Fatalf("after a bad replacement: %+v, want serving with an error naming the file", h)
		}
		if r := n.get("/hello"); r.status != 200 || r.body != "Hello, world!\n" {
			t.Fatalf("old version stopped serving: %d %q", r.status, r.body)
		}
		// A new cell that is bad from the start is listed as failed.
		n.drop("broken", c.data)
		eventually(t, "broken to fail", func() bool {
			b := n.listCells()["broken"]
			return b.State == "failed" && strings.Contains(b.Error, c.want)
		})
		// The client gets a generic reason; the details are in celctl cells.
		if r := n.get("/broken"); r.status != 503 || r.body != "celluster: cell broken is not serving\n" {
			t.Fatalf("failed cell answered %d %q", r.status, r.body)
		}
	}
	// Fixing the file clears the error.
	n.drop("broken", testbuild.Cell(t, "counter"))
	n.waitStatus("/broken", 200)
	if b := n.listCells()["broken"]; b.State != "serving" || b.Error != "" {
		t.Fatalf("fixed cell: %+v", b)
	}
	if strings.Contains(n.Logs(), "panic") {
		t.Fatalf("node logged a panic:\n%s", n.Logs())
	}
}

// TestLimits: a looping request is stopped (504), a trapping or
// memory-hungry cell answers 500, a cell over its concurrency answers 503 —
// and every other cell keeps serving.
func TestLimits(t *testing.T) {
	n := startNode(t, "", "--limit-time", "500ms", "--limit-memory", "32MiB",
		"--limit-concurrency", "1", "--limit-queue", "-1")
	n.drop("spin", testbuild.Cell(t, "spin"))
	n.drop("hello", testbuild.Cell(t, "hello"))
	n.waitStatus("/hello", 200)
	n.waitStatus("/spin/work?n=10", 200)

	r := n.get("/spin")
	if r.status != 504 || !strings.Contains(r.body, "time limit") {
		t.Fatalf("looping request answered %d %q, want 504", r.status, r.body)
	}
	if r := n.get("/spin/work?n=1000"); r.status != 200 {
		t.Fatalf("spin after a timeout answered %d %q: instance not replaced", r.status, r.body)
	}
	if r := n.get("/spin/panic"); r.status != 500 {
		t.Fatalf("trapping request answered %d %q, want 500", r.status, r.body)
	}
	if r := n.get("/spin/grow?mb=64"); r.status != 500 {
		t.Fatalf("request over the memory limit answered %d %q, want 500", r.status, r.body)
	}
	if r := n.get("/spin/work?n=1000"); r.status != 200 {
		t.Fatalf("spin after a trap answered %d %q", r.status, r.body)
	}

	if r := n.get("/hello"); r.status != 200 {
		t.Fatalf("other cell answered %d during limit enforcement", r.status)
	}
	c := n.listCells()["spin"]
	if c.Errors != 3 || c.State != "serving" {
		t.Fatalf("spin after limits: %+v", c)
	}
	logs := n.Logs()
	for _, want := range []string{"request stopped at its time limit", "cell failed; instance replaced"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q", want)
		}
	}
}

// TestConcurrencyLimit: with one slot and no queue, a request arriving while
// another runs is answered 503 at once; with a queue, it waits its turn.
func TestConcurrencyLimit(t *testing.T) {
	n := startNode(t, "", "--limit-time", "1m", "--limit-concurrency", "1", "--limit-queue", "-1")
	n.drop("spin", testbuild.Cell(t, "spin"))
	n.drop("hello", testbuild.Cell(t, "hello"))
	n.waitStatus("/spin/work?n=1", 200)
	n.waitStatus("/hello", 200)

	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", n.base+"/spin/loop", nil)
		_, err := client.Do(req)
		first <- err
	}()
	eventually(t, "the looping request to be in flight", func() bool { return n.listCells()["spin"].InFlight == 1 })
	r := n.get("/spin/work?n=1")
	if r.status != 503 || !strings.Contains(r.body, "concurrency limit") || r.header.Get("Retry-After") == "" {
		t.Fatalf("request over the concurrency limit answered %d %q, want 503 with Retry-After", r.status, r.body)
	}
	if r := n.get("/hello"); r.status != 200 {
		t.Fatalf("other cell answered %d while spin was saturated", r.status)
	}
	// The client giving up stops the looping guest and frees the slot.
	cancel()
	<-first
	eventually(t, "the slot to be free", func() bool {
		r, err := n.do("GET", "/spin/work?n=1", "")
		return err == nil && r.status == 200
	})
	if !strings.Contains(n.Logs(), "over concurrency limit") {
		t.Error("logs lack the 503 refusal")
	}
}

// TestRestartUsesDiskCache restarts a node on the same data directory: the
// module is loaded from wazero's disk cache, which gains no new entries.
func TestRestartUsesDiskCache(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	hello := testbuild.Cell(t, "hello")
	n := startNode(t, data)
	n.drop("hello", hello)
	n.waitStatus("/hello", 200)
	n.stop()
	before := dirListing(t, filepath.Join(data, "cache"))
	if len(before) == 0 {
		t.Fatal("no compilation cache written under the data directory")
	}

	n2 := startNode(t, data)
	n2.drop("hello", hello)
	n2.waitStatus("/hello", 200)
	n2.stop()
	if after := dirListing(t, filepath.Join(data, "cache")); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("restarted node recompiled instead of using the disk cache:\nbefore %v\nafter  %v", before, after)
	}
}

// TestSignalDrainsInFlight: SIGTERM while a request runs lets it finish —
// here a looping request that ends at its 3s time limit — and the node then
// exits 0. The client gets its answer, not a reset connection.
func TestSignalDrainsInFlight(t *testing.T) {
	n := startNode(t, "", "--limit-time", "3s")
	n.drop("spin", testbuild.Cell(t, "spin"))
	n.waitStatus("/spin/work?n=1", 200)
	done := make(chan reply, 1)
	go func() {
		r, err := n.do("GET", "/spin/loop", "")
		if err != nil {
			r.body = err.Error()
		}
		done <- r
	}()
	eventually(t, "the request to be in flight", func() bool { return n.listCells()["spin"].InFlight == 1 })
	n.stop()
	if r := <-done; r.status != 504 {
		t.Fatalf("in-flight request answered %d %q during shutdown, want its 504", r.status, r.body)
	}
	if !strings.Contains(n.Logs(), "draining requests in flight") {
		t.Fatal("node did not log its drain")
	}
}

func dirListing(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			out = append(out, fmt.Sprintf("%s %d %s", strings.TrimPrefix(p, dir), fi.Size(), fi.ModTime().Format(time.RFC3339Nano)))
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out
}
