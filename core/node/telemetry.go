package node

import (
	"context"
	"time"

	"github.com/celluster/celluster/core/signals"
)

// cellSignals describes the signals the node publishes for every cell,
// labelled cell=<name>.
var cellSignals = []signals.Desc{
	{Name: "latency.p50", Unit: "seconds", Kind: "gauge", Help: "median request latency over the last tick"},
	{Name: "latency.p90", Unit: "seconds", Kind: "gauge", Help: "90th percentile request latency over the last tick"},
	{Name: "latency.p99", Unit: "seconds", Kind: "gauge", Help: "99th percentile request latency over the last tick"},
	{Name: "rps", Unit: "1/s", Kind: "rate", Help: "requests finished per second over the last tick"},
	{Name: "errors.rate", Unit: "percent", Kind: "gauge", Help: "share of the last tick's requests answered 5xx"},
	{Name: "inflight", Unit: "1", Kind: "gauge", Help: "requests running now"},
	{Name: "queue", Unit: "1", Kind: "gauge", Help: "requests waiting for a concurrency slot now"},
	{Name: "replicas", Unit: "1", Kind: "gauge", Help: "live instances"},
	{Name: "idle", Unit: "seconds", Kind: "gauge", Help: "time since the cell last finished a request (or was loaded)"},
}

// publishCellSignals samples every cell each interval and publishes its
// signals to the store, until ctx ends.
func (n *Node) publishCellSignals(ctx context.Context, interval time.Duration) {
	for _, d := range cellSignals {
		d.Source = "core"
		n.sig.Describe(d)
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	prev := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			n.sampleCells(now, now.Sub(prev))
			prev = now
		}
	}
}

// sampleCells publishes one tick of cell signals covering the last dt.
func (n *Node) sampleCells(now time.Time, dt time.Duration) {
	var rs []signals.Reading
	for _, c := range n.reg.Cells() {
		in := c.Info()
		w := c.TakeWindow()
		labels := map[string]string{"cell": in.Name}
		add := func(name string, v float64) {
			rs = append(rs, signals.Reading{Name: name, Labels: labels, Value: v, Time: now, Source: "core"})
		}
		add("latency.p50", w.P50.Seconds())
		add("latency.p90", w.P90.Seconds())
		add("latency.p99", w.P99.Seconds())
		if dt > 0 {
			add("rps", float64(w.Requests)/dt.Seconds())
		}
		errRate := 0.0
		if w.Requests > 0 {
			errRate = 100 * float64(w.Errors) / float64(w.Requests)
		}
		add("errors.rate", errRate)
		add("inflight", float64(in.InFlight))
		add("queue", float64(in.Queued))
		add("replicas", float64(in.Replicas))
		last := in.LastUsed
		if last.IsZero() {
			last = in.Updated
		}
		add("idle", now.Sub(last).Seconds())
	}
	if len(rs) > 0 {
		n.sig.Put(rs...)
	}
}
