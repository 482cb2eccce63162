package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
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
				n := launch(b, cells, data, "--log-level", "info")
				d := n.firstRequest("/hello")
				b.StopTimer()
				n.stop()
				compile += n.compileTime()
				first += d
				b.StartTimer()
			}
			b.ReportMetric(float64(first)/float64(b.N)/float64(time.Millisecond), "ms/first-request")
			b.ReportMetric(float64(compile)/float64(b.N)/float64(time.Millisecond), "ms/compile")
		})
	}
}

// firstRequest polls GET path every millisecond until it answers 200 and
// returns the time since the process started.
func (n *proc) firstRequest(path string) time.Duration {
	n.t.Helper()
	n.awaitReady()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	deadline := n.start.Add(60 * time.Second)
	last := "no answer"
	for {
		resp, err := client.Get(n.base + path)
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
			n.t.Fatalf("GET %s did not answer 200 within 60s of the start; last: %s\n%s", path, last, n.Logs())
		}
		time.Sleep(time.Millisecond)
	}
}

// compileTime is the compile (or cache load) time the node logged for its
// last spawned cell.
func (n *proc) compileTime() time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.compile
}
