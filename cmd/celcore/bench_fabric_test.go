package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/celluster/celluster/core/testbuild"
)

// BenchmarkCloneToPeer: `clone 1 on NODE` of a Go cell, from the verb on
// node A to the replica serving on node B (the verb's journaled duration:
// the plugin call, the placement request over the fabric, B loading the
// module and starting the replica). module=present: B already keeps and has
// compiled the module (peers prefetch each other's modules by hash; aim
// ≤ 50 ms); module=fetched: B must fetch the module over the fabric and
// compile it (started with --no-prefetch), in the same run.
func BenchmarkCloneToPeer(b *testing.B) {
	dir := b.TempDir()
	ca := filepath.Join(dir, "ca")
	if out, err := runCelctl(b, "ca", "init", "--trust-domain", "test.local", "--out", ca); err != nil {
		b.Fatalf("ca init: %v\n%s", err, out)
	}
	args := []string{"--fabric", "127.0.0.1:0", "--ca", ca, "--trust-domain", "test.local", "--telemetry-interval", "200ms"}
	a := startNode(b, "", args...)
	seed, _ := a.fabricAddr()
	warmB := startNode(b, "", append(args, "--join", seed)...)
	coldB := startNode(b, "", append(args, "--join", seed, "--no-prefetch")...)
	_, nameWarm := warmB.fabricAddr()
	_, nameCold := coldB.fabricAddr()
	eventually(b, "three alive nodes", func() bool { return len(a.nodes()) == 3 })

	hello := testbuild.Cell(b, "hello")
	seq := 0
	for _, peer := range []struct {
		name, node string
		module     func(i int) []byte
	}{
		{"module=present", nameWarm, func(int) []byte { return hello }},
		{"module=fetched", nameCold, func(i int) []byte { return testbuild.Cell(b, "hello", fmt.Sprintf("-X main.version=clone%d", i)) }},
	} {
		b.Run(peer.name, func(b *testing.B) {
			var took []time.Duration
			i := 0
			for b.Loop() {
				b.StopTimer()
				seq++
				name := fmt.Sprintf("c%d", seq)
				mod := peer.module(i)
				a.drop(name, mod)
				a.waitStatus("/"+name, 200)
				if peer.node == nameWarm {
					sha := a.listCells()[name].SHA256
					eventually(b, "B to keep and compile the module", func() bool {
						_, err := os.Stat(filepath.Join(warmB.data, "modules", sha+".wasm"))
						return err == nil && containsLog(warmB, "precompiled a peer's module")
					})
				}
				b.StartTimer()
				if out, err := a.celctl("verb", "clone", name, "1", "on", peer.node); err != nil {
					b.Fatalf("clone on %s: %v\n%s", peer.node, err, out)
				}
				b.StopTimer()
				e := find(a.journal(name), func(e journalEntry) bool { return e.Verb == "clone" && e.Outcome == "done" })
				if e == nil {
					b.Fatal("no clone entry")
				}
				took = append(took, time.Duration(e.DurationMs*float64(time.Millisecond)))
				i++
				b.StartTimer()
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
		})
	}
}

func containsLog(n *proc, s string) bool { return strings.Contains(n.Logs(), s) }
