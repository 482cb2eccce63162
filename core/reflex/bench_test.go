package reflex

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/celluster/celluster/core/signals"
)

const (
	benchCells        = 1000
	benchRulesPerCell = 10
)

// benchRules are the 10 rules of each benchmark cell, over 9 signals, one
// with a label; none has a window or cooldown, so every reading meant to
// fire one of them does.
var benchRules = []struct {
	rule  Rule
	value float64  // a value firing this rule and no other
	kv    []string // labels of the reading besides cell
}{
	{Rule{Name: "p99-clone", Signal: "latency.p99", Op: GT, Threshold: 0.02, Verb: "clone", Args: []string{"1"}}, 0.03, nil},
	{Rule{Name: "p99-decay", Signal: "latency.p99", Op: LT, Threshold: 0.01, Verb: "decay", Args: []string{"1"}}, 0.005, nil},
	{Rule{Name: "errors-reroute", Signal: "version.errors.rate", Op: GT, Threshold: 1, Verb: "reroute", Args: []string{"away"}}, 4, []string{"version", "0123456789ab"}},
	{Rule{Name: "errors", Signal: "errors.rate", Op: GE, Threshold: 5, Verb: "upgrade", Args: []string{"rollback"}}, 6, nil},
	{Rule{Name: "cpu", Signal: "cpu", Op: GT, Threshold: 80, Verb: "clone"}, 90, nil},
	{Rule{Name: "queue", Signal: "queue", Op: GT, Threshold: 10, Verb: "clone"}, 11, nil},
	{Rule{Name: "inflight", Signal: "inflight", Op: GE, Threshold: 100, Verb: "clone"}, 120, nil},
	{Rule{Name: "rps", Signal: "rps", Op: GT, Threshold: 1000, Verb: "spawn"}, 2000, nil},
	{Rule{Name: "idle-decay", Signal: "idle", Op: GE, Threshold: 300, Verb: "decay", Args: []string{"all"}}, 301, nil},
	{Rule{Name: "retx", Signal: "kernel.tcp.retransmits", Labels: map[string]string{"port": "8080"}, Op: GT, Threshold: 5, Verb: "reroute"}, 9, []string{"port", "8080"}},
}

// benchSetup returns an engine holding 10 000 rules over 1 000 cells, and
// one single-reading batch per rule, each firing exactly that rule, in a
// scrambled order.
func benchSetup(fire func(Decision)) (*Engine, [][]signals.Reading) {
	e := New(fire, Options{})
	var batches [][]signals.Reading
	for c := range benchCells {
		cell := fmt.Sprintf("cell-%04d", c)
		rules := make([]Rule, len(benchRules))
		for i, br := range benchRules {
			rules[i] = br.rule
			batches = append(batches, []signals.Reading{reading(br.rule.Signal, br.value, append([]string{"cell", cell}, br.kv...)...)})
		}
		e.SetRules(cell, rules)
	}
	// A fixed permutation (7919 is prime to the count), so consecutive
	// readings hit different cells and signals.
	n := len(batches)
	scrambled := make([][]signals.Reading, n)
	for i := range batches {
		scrambled[i] = batches[(i*7919)%n]
	}
	return e, scrambled
}

// sweeper evaluates the engine's rules the naive way: every rule is looked
// at for every reading. It shares the per-rule evaluation with Engine, so
// the difference measured is the index.
type sweeper struct {
	rules []*ruleState
	fire  func(Decision)
	clock func() time.Time
}

func newSweeper(e *Engine) *sweeper {
	s := &sweeper{fire: e.fire, clock: e.clock}
	cells := make([]string, 0, len(e.cells))
	for c := range e.cells {
		cells = append(cells, c)
	}
	slices.Sort(cells)
	for _, c := range cells {
		s.rules = append(s.rules, e.cells[c]...)
	}
	return s
}

func (s *sweeper) Observe(rs []signals.Reading) {
	t := s.clock()
	var kb [64]byte
	for i := range rs {
		r := &rs[i]
		cell, hasCell := r.Labels[cellLabel]
		for _, st := range s.rules {
			if st.signal != r.Name || (hasCell && st.cell != cell) || !subset(st.labels, r.Labels) {
				continue
			}
			if d, ok := st.observe(appendSeriesKey(kb[:0], r.Labels, hasCell), r, t); ok {
				s.fire(d)
			}
		}
	}
}

// BenchmarkObserve measures arrival -> fire latency over 10 000 rules on
// 1 000 cells: each iteration observes one reading that fires one rule,
// timed from before Observe until fire is called. /indexed is the Engine;
// /sweep evaluates the same rules by looking at all of them per reading.
func BenchmarkObserve(b *testing.B) {
	for _, mode := range []string{"indexed", "sweep"} {
		b.Run(mode, func(b *testing.B) {
			var start time.Time
			var lat []time.Duration
			e, batches := benchSetup(func(Decision) { lat = append(lat, time.Since(start)) })
			observe := e.Observe
			if mode == "sweep" {
				sw := newSweeper(e)
				if len(sw.rules) != benchCells*benchRulesPerCell {
					b.Fatalf("sweeping %d rules", len(sw.rules))
				}
				observe = sw.Observe
			}
			// Warm up: every rule's series starts holding (allocating its
			// state once), as in a steady stream of readings.
			lat = make([]time.Duration, 0, len(batches))
			for _, rs := range batches {
				observe(rs)
			}
			lat = make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				start = time.Now()
				observe(batches[i%len(batches)])
			}
			b.StopTimer()
			if len(lat) != b.N {
				b.Fatalf("%d readings fired %d rules, want one each", b.N, len(lat))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
		})
	}
}
