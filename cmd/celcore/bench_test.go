package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/celluster/celluster/core/testbuild"
)

// BenchmarkRestartFirstRequest measures how long a node takes from the
// start of its process to answering the first request for a cell that is
// already in its cells directory: each iteration starts the real celcore
// binary with hello.wasm in place and times cmd.Start() to the first
// GET /hello answering 200 (polled every millisecond; requests racing the
// load wait for the cell instead of getting 404 once the node has seen the
// file), then stops it with SIGTERM. cache=cold starts on an empty data
// directory, so the module is compiled; cache=warm restarts on a data
// directory holding the compilation cache of an earlier (untimed) run, the
// case a disk cache is for. ms/compile is the compile (or cache load) time
// the node logs for the cell, part of ms/first-request.
//
// Aim: a warm restart answers its first request within 150 ms.
//
// A cold iteration takes about a second: run it with -benchtime=5x, as
// make bench does.
func BenchmarkRestartFirstRequest(b *testing.B) {
	bin := testbuild.Binary(b, "./cmd/celcore", raceBinaries)
	hello := testbuild.Cell(b, "hello")
	cells := b.TempDir()
	if err := os.WriteFile(filepath.Join(cells, "hello.wasm"), hello, 0o644); err != nil {
		b.Fatal(err)
	}
	// Fill the warm data directory's cache with the harness's node.
	warm := filepath.Join(b.TempDir(), "data")
	n := startNode(b, warm)
	n.drop("hello", hello)
	n.waitStatus("/hello", 200)
	n.stop()
	if _, err := os.Stat(filepath.Join(warm, "cache")); err != nil {
		b.Fatalf("no compilation cache after the first run: %v", err)
	}

	for _, peer := range []struct {
		name string
		data func(b *testing.B) string
	}{
		{"cold", func(b *testing.B) string { return filepath.Join(b.TempDir(), "data") }},
		{"warm", func(*testing.B) string { return warm }},
	} {
		b.Run("cache="+peer.name, func(b *testing.B) {
			var first, compile time.Duration
			for b.Loop() {
				b.StopTimer()
				data := peer.data(b)
				b.StartTimer()
				n := startBenchNode(b, bin, cells, data)
				d := n.firstRequest("/hello")
				b.StopTimer()
				compile += n.stop()
				first += d
				b.StartTimer()
			}
			b.ReportMetric(float64(first)/float64(b.N)/float64(time.Millisecond), "ms/first-request")
			b.ReportMetric(float64(compile)/float64(b.N)/float64(time.Millisecond), "ms/compile")
		})
	}
}

// benchNode is a celcore process started for one benchmark iteration. Unlike
// the harness's startNode it does not wait for the node to be ready, so the
// time to the first answer can be taken from the process start.
type benchNode struct {
	b     *testing.B
	cmd   *exec.Cmd
	start time.Time
	addr  chan string // the HTTP address, from the "celcore ready" log line
	done  chan struct{}
	err   error // cmd.Wait's, once done is closed

	mu      sync.Mutex
	logs    bytes.Buffer
	compile time.Duration // from the "spawned cell" log line
}

// startBenchNode starts celcore on cells and data with its HTTP ingress on
// a free loopback port, logging JSON at info level.
func startBenchNode(b *testing.B, bin, cells, data string) *benchNode {
	b.Helper()
	n := &benchNode{b: b, addr: make(chan string, 1), done: make(chan struct{})}
	n.cmd = exec.Command(bin, "--cells", cells, "--data", data, "--http", "127.0.0.1:0",
		"--log-format", "json", "--log-level", "info")
	pr, pw := io.Pipe()
	n.cmd.Stdout = pw
	n.cmd.Stderr = pw
	go n.readLogs(pr)
	n.start = time.Now()
	if err := n.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() {
		n.err = n.cmd.Wait()
		pw.Close()
		close(n.done)
	}()
	b.Cleanup(func() { n.stop() })
	return n
}

func (n *benchNode) readLogs(r io.Reader) {
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
			Cell    string  `json:"cell"`
			Compile float64 `json:"compile"` // a time.Duration: nanoseconds
		}
		if json.Unmarshal(line, &rec) != nil {
			continue
		}
		switch rec.Msg {
		case "celcore ready":
			select {
			case n.addr <- rec.HTTP:
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

func (n *benchNode) Logs() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.logs.String()
}

// firstRequest polls GET path every millisecond until it answers 200 and
// returns the time since the process started.
func (n *benchNode) firstRequest(path string) time.Duration {
	n.b.Helper()
	var addr string
	select {
	case addr = <-n.addr:
	case <-n.done:
		n.b.Fatalf("celcore exited before ready: %v\n%s", n.err, n.Logs())
	case <-time.After(60 * time.Second):
		n.b.Fatalf("celcore not ready after 60s:\n%s", n.Logs())
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	url := "http://" + addr + path
	deadline := n.start.Add(60 * time.Second)
	last := "no answer"
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return time.Since(n.start)
			}
			last = fmt.Sprintf("%d %q", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			n.b.Fatalf("GET %s did not answer 200 within 60s of the start; last: %s\n%s", path, last, n.Logs())
		}
		time.Sleep(time.Millisecond)
	}
}

// stop sends SIGTERM, waits for a clean exit and returns the compile time
// the node logged for its cell.
func (n *benchNode) stop() time.Duration {
	select {
	case <-n.done:
	default:
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.done:
			if n.err != nil {
				n.b.Errorf("celcore exited with %v after SIGTERM, want 0\n%s", n.err, n.Logs())
			}
		case <-time.After(60 * time.Second):
			_ = n.cmd.Process.Kill()
			<-n.done
			n.b.Errorf("celcore did not stop within 60s of SIGTERM")
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.compile
}
