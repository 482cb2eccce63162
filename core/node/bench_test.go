package node

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/celluster/celluster/core/dispatch"
	"github.com/celluster/celluster/core/journal"
	"github.com/celluster/celluster/core/reflex"
	"github.com/celluster/celluster/core/signals"
)

// BenchmarkSignalToVerb: a signal reading is put into the node's signal
// store with 10 000 rules loaded over 1 000 cells, and travels the node's
// own wiring (setupReflex: the reflex engine, the dispatch loop with the
// node's precheck, its verb executor, the journal). The measured span ends
// when the verb's entry has been written to the journal (the stamp is taken
// in the node's result hook, which runs right after the write). No verb
// plugin is installed, so the executor answers at once: the plugin call is
// excluded, the journal write included. Aim: p99 ≤ 50 µs.
//
// Peer in the same run: engine, the reflex engine alone, from arrival to
// the rule firing.
func BenchmarkSignalToVerb(b *testing.B) {
	const cells, perCell = 1000, 10
	sigs := []string{"latency.p99", "rps", "errors.rate", "inflight", "queue", "replicas", "idle", "cpu", "version.errors.rate", "host.cpu"}
	rulesFor := func(cell string) []reflex.Rule {
		rs := make([]reflex.Rule, perCell)
		for i := range rs {
			rs[i] = reflex.Rule{Cell: cell, Name: fmt.Sprintf("r%d", i), Signal: sigs[i], Op: reflex.GT, Threshold: 100, Verb: "reroute"}
		}
		return rs
	}
	reading := func(i int) signals.Reading {
		return signals.Reading{Name: "latency.p99", Labels: map[string]string{"cell": fmt.Sprintf("c%d", i%cells)}, Value: 1000, Source: "bench"}
	}
	measure := func(b *testing.B, observe func(signals.Reading), done <-chan time.Time) {
		lat := make([]time.Duration, 0, b.N)
		i := 0
		for b.Loop() {
			t0 := time.Now()
			observe(reading(i))
			lat = append(lat, (<-done).Sub(t0))
			i++
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
		b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
	}

	b.Run("node", func(b *testing.B) {
		journaled := make(chan time.Time, 1)
		verbJournaled = func(req dispatch.Request, res dispatch.Result) {
			if req.Rule != "r0" || res.Outcome != journal.Failed {
				b.Errorf("journaled %s %s by %q: %s, want reroute by r0 failing for want of a plugin", req.Verb, req.Cell, req.Rule, res.Outcome)
			}
			journaled <- time.Now()
		}
		defer func() { verbJournaled = nil }()
		dir := b.TempDir()
		n, err := start(context.Background(), Config{
			CellsDir: filepath.Join(dir, "cells"), DataDir: filepath.Join(dir, "data"),
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			b.Fatal(err)
		}
		defer n.eng.Close(context.Background())
		defer n.reg.Close(context.Background())
		if err := n.setupReflex(); err != nil {
			b.Fatal(err)
		}
		defer n.journal.Close()
		defer n.disp.Close(context.Background())
		close(n.pluginsReady) // no verb plugin: the executor answers at once
		for c := range cells {
			name := fmt.Sprintf("c%d", c)
			if err := n.reg.Declare(name); err != nil {
				b.Fatal(err)
			}
			n.engine.SetRules(name, rulesFor(name))
		}
		before := len(n.Journal("", 0))
		measure(b, func(r signals.Reading) { n.sig.Put(r) }, journaled)
		b.StopTimer()
		if got := len(n.Journal("", 0)) - before; got != b.N {
			b.Fatalf("%d journal entries for %d readings", got, b.N)
		}
		if fi, err := os.Stat(filepath.Join(dir, "data", "journal", journal.FileName)); err != nil || fi.Size() == 0 {
			b.Fatalf("journal file: %v", err)
		}
	})
	b.Run("engine", func(b *testing.B) {
		got := make(chan time.Time, 1)
		eng := reflex.New(func(reflex.Decision) { got <- time.Now() }, reflex.Options{})
		for c := range cells {
			eng.SetRules(fmt.Sprintf("c%d", c), rulesFor(fmt.Sprintf("c%d", c)))
		}
		measure(b, func(r signals.Reading) { eng.Observe([]signals.Reading{r}) }, got)
	})
}
