package node

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/celluster/celluster/core/dispatch"
	"github.com/celluster/celluster/core/journal"
	"github.com/celluster/celluster/core/reflex"
	"github.com/celluster/celluster/core/signals"
)

// stampExec is the verb plugin's place taken by a channel: it reports when
// the dispatch loop hands it a verb, so the plugin call itself is excluded.
type stampExec struct{ got chan time.Time }

func (e stampExec) Execute(context.Context, dispatch.Request) (dispatch.Result, error) {
	e.got <- time.Now()
	return dispatch.Result{Outcome: journal.Noop, Message: "bench"}, nil
}

// BenchmarkSignalToVerb: a signal reading arrives at the node's reflex
// engine with 10 000 rules loaded over 1 000 cells; the measured span ends
// when the dispatch loop hands the verb to its executor (plugin call
// excluded), journal included. Aim: p99 ≤ 50 µs. Peer in the same run: the
// engine alone, arrival to rule fired.
func BenchmarkSignalToVerb(b *testing.B) {
	const cells, perCell = 1000, 10
	sigs := []string{"latency.p99", "rps", "errors.rate", "inflight", "queue", "replicas", "idle", "cpu", "version.errors.rate", "host.cpu"}
	rulesFor := func(cell string) []reflex.Rule {
		rs := make([]reflex.Rule, perCell)
		for i := range rs {
			rs[i] = reflex.Rule{Cell: cell, Name: fmt.Sprintf("r%d", i), Signal: sigs[i], Op: reflex.GT, Threshold: 100, Verb: "clone"}
		}
		return rs
	}
	reading := func(i int) signals.Reading {
		return signals.Reading{Name: "latency.p99", Labels: map[string]string{"cell": fmt.Sprintf("c%d", i%cells)}, Value: 1000}
	}
	measure := func(b *testing.B, observe func(signals.Reading), fired <-chan time.Time) {
		lat := make([]time.Duration, 0, b.N)
		i := 0
		for b.Loop() {
			t0 := time.Now()
			observe(reading(i))
			lat = append(lat, (<-fired).Sub(t0))
			i++
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
		b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
	}

	b.Run("dispatched", func(b *testing.B) {
		j, err := journal.Open(b.TempDir(), journal.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		defer j.Close()
		exec := stampExec{got: make(chan time.Time, 1)}
		d := dispatch.New(exec, j, dispatch.Options{Logger: slog.New(slog.DiscardHandler)})
		defer d.Close(context.Background())
		eng := reflex.New(func(dec reflex.Decision) {
			d.Submit(dispatch.Request{Cell: dec.Rule.Cell, Verb: dec.Rule.Verb, Rule: dec.Rule.Name, Time: dec.Time})
		}, reflex.Options{})
		for c := range cells {
			eng.SetRules(fmt.Sprintf("c%d", c), rulesFor(fmt.Sprintf("c%d", c)))
		}
		measure(b, func(r signals.Reading) { eng.Observe([]signals.Reading{r}) }, exec.got)
	})
	b.Run("fired", func(b *testing.B) {
		got := make(chan time.Time, 1)
		eng := reflex.New(func(reflex.Decision) { got <- time.Now() }, reflex.Options{})
		for c := range cells {
			eng.SetRules(fmt.Sprintf("c%d", c), rulesFor(fmt.Sprintf("c%d", c)))
		}
		measure(b, func(r signals.Reading) { eng.Observe([]signals.Reading{r}) }, got)
	})
}
