package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/celluster/celluster/core/testbuild"
)

func TestMain(m *testing.M) {
	// Helper processes for tests that need another network namespace.
	if port := os.Getenv("CELTEST_LOSSY_PORT"); port != "" {
		if err := lossyTransfer(port); err != nil {
			fmt.Fprintln(os.Stderr, "lossy transfer:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	testbuild.Main(m)
}

// raceBinaries says whether the daemon under test is built with the race
// detector: it is when this test binary is (go test -race), so the
// "DATA RACE" check in stop means something. testbuild leaves wazero (a
// dependency) uninstrumented, which keeps compiling and calling cells fast.
const raceBinaries = testbuild.Race

// nodeSeq numbers the nodes a test binary starts.
var nodeSeq atomic.Int64

// proc is a real celcore process on temporary directories and a loopback port.
type proc struct {
	t        testing.TB
	cmd      *exec.Cmd
	cellsDir string
	data     string
	admin    string
	http     string
	base     string
	ready    chan string // the HTTP address, from the "celcore ready" log line

	mu      sync.Mutex
	logs    bytes.Buffer
	compile time.Duration // from the last "spawned cell" log line
	metrics string        // the metrics address from the "celcore ready" line
	fabric  string        // the fabric address from the "celcore ready" line
	name    string        // the node's name
	exited  chan struct{}
	err     error
	start   time.Time
}

// startNode runs celcore with args added to the test defaults and waits
// until it is ready. data, when given, reuses a data directory.
func startNode(t testing.TB, data string, args ...string) *proc {
	t.Helper()
	dir := t.TempDir()
	if data == "" {
		data = filepath.Join(dir, "data")
	}
	n := launch(t, filepath.Join(dir, "cells"), data, args...)
	n.awaitReady()
	return n
}

// launch starts celcore on cells and data with args added to the test
// defaults, without waiting for it: n.start is the moment the process
// started. The node is stopped when the test ends.
func launch(t testing.TB, cells, data string, args ...string) *proc {
	t.Helper()
	return launchWrapped(t, nil, cells, data, args...)
}

// launchWrapped is launch with the command run through wrap (e.g. "ip
// netns exec NS").
func launchWrapped(t testing.TB, wrap []string, cells, data string, args ...string) *proc {
	t.Helper()
	return launchBin(t, testbuild.Binary(t, "./cmd/celcore", raceBinaries), wrap, cells, data, args...)
}

// startMeasuredNode is startNode with a daemon built without the race
// detector, for tests that measure the node's resident memory: the
// detector's shadow memory would be most of what they measure.
func startMeasuredNode(t testing.TB, args ...string) *proc {
	t.Helper()
	dir := t.TempDir()
	n := launchBin(t, testbuild.Binary(t, "./cmd/celcore", false), nil,
		filepath.Join(dir, "cells"), filepath.Join(dir, "data"), args...)
	n.awaitReady()
	return n
}

// launchBin is launchWrapped with the daemon binary given.
func launchBin(t testing.TB, bin string, wrap []string, cells, data string, args ...string) *proc {
	t.Helper()
	n := &proc{
		t:        t,
		cellsDir: cells,
		data:     data,
		admin:    filepath.Join(data, "admin.sock"),
		ready:    make(chan string, 1),
		exited:   make(chan struct{}),
	}
	base := []string{"--cells", n.cellsDir, "--data", n.data, "--http", "127.0.0.1:0",
		"--log-format", "json", "--log-level", "debug", "--settle", "100ms",
		// A name of its own: the node pins its BPF objects under it.
		"--node", fmt.Sprintf("test-%d-%d", os.Getpid(), nodeSeq.Add(1))}
	argv := append(append(append([]string(nil), wrap...), bin), append(base, args...)...)
	n.cmd = exec.Command(argv[0], argv[1:]...)
	pr, pw := io.Pipe()
	n.cmd.Stderr = pw
	n.cmd.Stdout = pw
	go n.readLogs(pr)
	n.start = time.Now()
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		n.err = n.cmd.Wait()
		pw.Close()
		close(n.exited)
	}()
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("celcore logs:\n%s", n.Logs())
		}
	})
	return n
}

// readLogs keeps the node's JSON log and picks out the lines tests wait on.
func (n *proc) readLogs(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		n.mu.Lock()
		n.logs.Write(line)
		n.logs.WriteByte('\n')
		n.mu.Unlock()
		var rec struct {
			Msg     string  `json:"msg"`
			HTTP    string  `json:"http"`
			Compile float64 `json:"compile"` // a time.Duration: nanoseconds
			Metrics string  `json:"metrics"`
			Fabric  string  `json:"fabric"`
			Node    string  `json:"node"`
		}
		if json.Unmarshal(line, &rec) != nil {
			continue
		}
		switch rec.Msg {
		case "celcore ready":
			n.mu.Lock()
			n.metrics = rec.Metrics
			n.fabric, n.name = rec.Fabric, rec.Node
			n.mu.Unlock()
			select {
			case n.ready <- rec.HTTP:
			default:
			}
		case "spawned cell":
			n.mu.Lock()
			n.compile = time.Duration(rec.Compile)
			n.mu.Unlock()
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// awaitReady waits for the node's "celcore ready" line and records its
// HTTP address.
func (n *proc) awaitReady() {
	n.t.Helper()
	select {
	case n.http = <-n.ready:
		n.base = "http://" + n.http
	case <-n.exited:
		n.t.Fatalf("celcore exited before ready: %v\n%s", n.err, n.Logs())
	case <-time.After(60 * time.Second):
		n.t.Fatalf("celcore not ready after 60s:\n%s", n.Logs())
	}
}

// Logs returns everything the node logged so far.
func (n *proc) Logs() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.logs.String()
}

// stop sends SIGTERM and waits for a clean exit.
func (n *proc) stop() {
	n.t.Helper()
	select {
	case <-n.exited:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
		if n.err != nil {
			n.t.Errorf("celcore exited with %v after SIGTERM, want 0", n.err)
		}
		if strings.Contains(n.Logs(), "DATA RACE") {
			n.t.Errorf("race detected in celcore")
		}
	case <-time.After(60 * time.Second):
		_ = n.cmd.Process.Kill()
		n.t.Errorf("celcore did not stop within 60s of SIGTERM")
	}
}

// drop installs a module the safe way: write beside, then rename into place.
func (n *proc) drop(name string, wasm []byte) {
	n.t.Helper()
	tmp := filepath.Join(n.cellsDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, wasm, 0o644); err != nil {
		n.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(n.cellsDir, name+".wasm")); err != nil {
		n.t.Fatal(err)
	}
}

func (n *proc) remove(name string) {
	n.t.Helper()
	if err := os.Remove(filepath.Join(n.cellsDir, name+".wasm")); err != nil {
		n.t.Fatal(err)
	}
}

type reply struct {
	status int
	body   string
	header http.Header
}

var client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

func (n *proc) do(method, path, body string) (reply, error) {
	req, err := http.NewRequest(method, n.base+path, strings.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, body: string(b), header: resp.Header}, err
}

func (n *proc) get(path string) reply {
	n.t.Helper()
	r, err := n.do("GET", path, "")
	if err != nil {
		n.t.Fatalf("GET %s: %v", path, err)
	}
	return r
}

// eventually polls cond until it holds or 60s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// eventuallyState is eventually for a condition that also describes what
// it saw, so that a timeout says how far the cluster got.
func eventuallyState(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	eventually(t, what, func() bool {
		ok, state := cond()
		if state != last {
			t.Logf("waiting for %s: %s", what, state)
			last = state
		}
		return ok
	})
}

// waitServing waits until path answers want.
func (n *proc) waitStatus(path string, want int) reply {
	n.t.Helper()
	var last reply
	eventually(n.t, fmt.Sprintf("GET %s to answer %d", path, want), func() bool {
		r, err := n.do("GET", path, "")
		last = r
		return err == nil && r.status == want
	})
	return last
}

// celctl runs the real celctl against the node.
func (n *proc) celctl(args ...string) (string, error) {
	bin := testbuild.Binary(n.t, "./cmd/celctl", false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"--admin", n.admin}, args...)...).CombinedOutput()
	return string(out), err
}

type cellJSON struct {
	Name     string  `json:"name"`
	SHA256   string  `json:"sha256"`
	ABI      string  `json:"abi"`
	Replicas int     `json:"replicas"`
	State    string  `json:"state"`
	Error    string  `json:"error"`
	Requests uint64  `json:"requests"`
	Errors   uint64  `json:"errors"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
	InFlight int64   `json:"in_flight"`
	Upgrades int     `json:"upgrades"`
	Snapshot struct {
		InitBytes  int64  `json:"init_bytes"`
		NoSnapshot string `json:"no_snapshot"`
		Kept       bool   `json:"kept"`
		StateID    string `json:"state_id"`
		StateBytes int64  `json:"state_bytes"`
		StateHow   string `json:"state_how"`
		Note       string `json:"note"`
	} `json:"snapshot"`
}

func (n *proc) listCells() map[string]cellJSON {
	n.t.Helper()
	out, err := n.celctl("cells", "-o", "json")
	if err != nil {
		n.t.Fatalf("celctl cells: %v\n%s", err, out)
	}
	var list []cellJSON
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		n.t.Fatalf("celctl cells -o json: %v\n%s", err, out)
	}
	m := map[string]cellJSON{}
	for _, c := range list {
		m[c.Name] = c
	}
	return m
}
