package node

import (
	"context"
	"sync"
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
	{Name: "queue", Unit: "1", Kind: "gauge", Help: "requests waiting for a concurrency slot or a free replica now"},
	{Name: "replicas", Unit: "1", Kind: "gauge", Help: "live replicas (reactor instances), all versions"},
	{Name: "idle", Unit: "seconds", Kind: "gauge", Help: "time since the cell last finished a request (or was created)"},
	{Name: "cpu", Unit: "percent", Kind: "gauge", Help: "share of the replicas' time spent serving requests over the last tick"},
	{Name: "version.errors.rate", Unit: "percent", Kind: "gauge", Help: "per version (label version), while more than one is routed: share of the last tick's requests answered 5xx"},
	{Name: "version.latency.p99", Unit: "seconds", Kind: "gauge", Help: "per version, while more than one is routed: 99th percentile latency over the last tick"},
	{Name: "version.rps", Unit: "1/s", Kind: "rate", Help: "per version, while more than one is routed: requests per second over the last tick"},
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
		add("idle", in.Idle.Seconds())
		busy := 0.0
		if dt > 0 {
			busy = 100 * w.Busy.Seconds() / (dt.Seconds() * float64(max(in.Replicas, 1)))
		}
		add("cpu", min(busy, 100))
		for _, vw := range c.TakeVersionWindows() {
			vl := map[string]string{"cell": in.Name, "version": vw.SHA256[:12]}
			vadd := func(name string, v float64) {
				rs = append(rs, signals.Reading{Name: name, Labels: vl, Value: v, Time: now, Source: "core"})
			}
			vrate := 0.0
			if vw.Requests > 0 {
				vrate = 100 * float64(vw.Errors) / float64(vw.Requests)
			}
			vadd("version.errors.rate", vrate)
			vadd("version.latency.p99", vw.P99.Seconds())
			if dt > 0 {
				vadd("version.rps", float64(vw.Requests)/dt.Seconds())
			}
		}
	}
	rs = append(rs, n.ownReadings(now)...)
	if len(rs) > 0 {
		n.sig.Put(rs...)
	}
}

// cellSignal publishes a reading a cell made with cel.signal, labelled
// cell=<name> like the node's own cell signals, so that rules use it the
// same way (`when jobs.pending > 100 for 2s then clone`). The value holds
// until the cell publishes another: every telemetry tick publishes it
// again (ownSignals), so a rule's `for` window sees it hold.
func (n *Node) cellSignal(cellName, name string, value float64) {
	if _, ok := n.sig.Desc(name); !ok {
		n.sig.Describe(signals.Desc{Name: name, Kind: "gauge", Source: "cell",
			Help: "published by a cell with cel.signal (label cell)"})
	}
	n.own.mu.Lock()
	if n.own.last == nil {
		n.own.last = map[string]map[string]float64{}
	}
	if n.own.last[cellName] == nil {
		n.own.last[cellName] = map[string]float64{}
	}
	n.own.last[cellName][name] = value
	n.own.mu.Unlock()
	n.sig.Put(signals.Reading{Name: name, Labels: map[string]string{"cell": cellName}, Value: value, Time: time.Now(), Source: "cell " + cellName})
}

// ownSignals holds the last value of each signal cells published with
// cel.signal, by cell and name.
type ownSignals struct {
	mu   sync.Mutex
	last map[string]map[string]float64
}

// ownReadings returns this tick's readings of the cells' own signals, and
// forgets the cells that are gone.
func (n *Node) ownReadings(now time.Time) []signals.Reading {
	n.own.mu.Lock()
	defer n.own.mu.Unlock()
	var rs []signals.Reading
	for cellName, vals := range n.own.last {
		if n.reg.Lookup(cellName) == nil {
			delete(n.own.last, cellName)
			continue
		}
		labels := map[string]string{"cell": cellName}
		for name, v := range vals {
			rs = append(rs, signals.Reading{Name: name, Labels: labels, Value: v, Time: now, Source: "cell " + cellName})
		}
	}
	return rs
}
