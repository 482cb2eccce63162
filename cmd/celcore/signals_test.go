package main

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/celluster/celluster/core/testbuild"
)

// TestSIGHUPDrainsLikeSIGTERM: SIGHUP (a closed terminal or session) stops
// the node gracefully: it logs the signal, lets the request in flight finish
// — a looping request that ends at its 3s time limit — stops its plugins and
// exits 0.
func TestSIGHUPDrainsLikeSIGTERM(t *testing.T) {
	n := startNode(t, "", "--limit-time", "3s")
	n.drop("spin", testbuild.Cell(t, "spin"))
	n.waitStatus("/spin/work?n=1", 200)
	var pids []int
	eventually(t, "the built-in plugins to run", func() bool {
		pids = pids[:0]
		for _, p := range n.listPlugins() {
			if p.State != "running" {
				return false
			}
			pids = append(pids, p.PID)
		}
		return len(pids) > 0
	})
	done := make(chan reply, 1)
	go func() {
		r, err := n.do("GET", "/spin/loop", "")
		if err != nil {
			r.body = err.Error()
		}
		done <- r
	}()
	eventually(t, "the request to be in flight", func() bool { return n.listCells()["spin"].InFlight == 1 })
	if err := n.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.exited:
	case <-time.After(60 * time.Second):
		t.Fatal("celcore did not stop within 60s of SIGHUP")
	}
	if n.err != nil {
		t.Fatalf("celcore exited with %v after SIGHUP, want 0", n.err)
	}
	if r := <-done; r.status != 504 {
		t.Fatalf("in-flight request answered %d %q after SIGHUP, want its 504", r.status, r.body)
	}
	var sawSignal, sawDrain bool
	for line := range strings.Lines(n.Logs()) {
		var rec struct {
			Msg    string `json:"msg"`
			Signal string `json:"signal"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		sawSignal = sawSignal || strings.HasPrefix(rec.Msg, "signal received") && rec.Signal == "hangup"
		sawDrain = sawDrain || strings.Contains(rec.Msg, "draining requests in flight")
	}
	if !sawSignal || !sawDrain {
		t.Fatalf("logged the signal: %v, the drain: %v", sawSignal, sawDrain)
	}
	for _, pid := range pids {
		if processAlive(pid) {
			t.Errorf("plugin pid %d outlived its node", pid)
		}
	}
}
