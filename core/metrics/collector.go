package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/signals"
)

// collector reads a Source and a LatencySource on every scrape and reports
// what they say as const metrics.
type collector struct {
	src    Source
	lat    LatencySource
	bounds []float64

	cellRequests, cellErrors, cellReplicas, cellInflight, cellQueued, cellDuration *prometheus.Desc

	signal *prometheus.Desc

	pluginUp, pluginRestarts *prometheus.Desc

	bpfAvailable, bpfLoaded *prometheus.Desc
}

var _ prometheus.Collector = (*collector)(nil)

func newCollector(src Source, lat LatencySource) *collector {
	cellLabel := []string{"cell"}
	return &collector{
		src:    src,
		lat:    lat,
		bounds: append([]float64(nil), cell.LatencyBounds...),

		cellRequests: prometheus.NewDesc("celluster_cell_requests_total",
			"Requests a cell has finished since it was created, whatever their status.", cellLabel, nil),
		cellErrors: prometheus.NewDesc("celluster_cell_errors_total",
			"Requests a cell has answered with a 5xx status since it was created.", cellLabel, nil),
		cellReplicas: prometheus.NewDesc("celluster_cell_replicas",
			"Live replicas (warm reactor instances) of a cell, all versions.", cellLabel, nil),
		cellInflight: prometheus.NewDesc("celluster_cell_inflight",
			"Requests a cell is running now.", cellLabel, nil),
		cellQueued: prometheus.NewDesc("celluster_cell_queued",
			"Requests waiting now for a concurrency slot or a free replica of a cell.", cellLabel, nil),
		cellDuration: prometheus.NewDesc("celluster_cell_request_duration_seconds",
			"Time a cell took to answer its requests, queueing included, since it was created.", cellLabel, nil),

		signal: prometheus.NewDesc("celluster_signal",
			"Latest value of each signal series in the node's store; name is the signal's name, source what published it, cell, port and version the series' labels of those names (empty when absent).",
			[]string{"name", "source", "cell", "port", "version"}, nil),

		pluginUp: prometheus.NewDesc("celluster_plugin_up",
			"1 while a plugin runs and answers, else 0.", []string{"plugin"}, nil),
		pluginRestarts: prometheus.NewDesc("celluster_plugin_restarts_total",
			"Times the node has restarted a plugin since the node started.", []string{"plugin"}, nil),

		bpfAvailable: prometheus.NewDesc("celluster_bpf_available",
			"1 when the kernel lets the node load BPF programs, else 0.", nil, nil),
		bpfLoaded: prometheus.NewDesc("celluster_bpf_program_loaded",
			"1 while a BPF program is loaded, else 0; object is the compiled object it comes from.", []string{"object", "program"}, nil),
	}
}

// Describe sends every metric's description.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.cellRequests, c.cellErrors, c.cellReplicas, c.cellInflight, c.cellQueued, c.cellDuration,
		c.signal, c.pluginUp, c.pluginRestarts, c.bpfAvailable, c.bpfLoaded,
	} {
		ch <- d
	}
}

// Collect reads the sources and sends their metrics.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	if c.src != nil {
		c.collectCells(ch)
		c.collectSignals(ch)
		c.collectPlugins(ch)
		c.collectBPF(ch)
	}
}

// send sends a const metric, or an invalid one carrying the error.
func send(ch chan<- prometheus.Metric, d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err)
	}
	ch <- m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *collector) collectCells(ch chan<- prometheus.Metric) {
	cells := c.src.Cells()
	// A name listed twice would break the scrape: keep its last entry.
	last := make(map[string]int, len(cells))
	for i, in := range cells {
		last[validUTF8(in.Name)] = i
	}
	for i, in := range cells {
		name := validUTF8(in.Name)
		if last[name] != i {
			continue
		}
		send(ch, c.cellRequests, prometheus.CounterValue, float64(in.Requests), name)
		send(ch, c.cellErrors, prometheus.CounterValue, float64(in.Errors), name)
		send(ch, c.cellReplicas, prometheus.GaugeValue, float64(in.Replicas), name)
		send(ch, c.cellInflight, prometheus.GaugeValue, float64(in.InFlight), name)
		send(ch, c.cellQueued, prometheus.GaugeValue, float64(in.Queued), name)
		c.collectLatency(ch, in.Name, name)
	}
}

func (c *collector) collectLatency(ch chan<- prometheus.Metric, cellName, label string) {
	if c.lat == nil {
		return
	}
	counts, sum, count, ok := c.lat.LatencyBuckets(cellName, c.bounds)
	if !ok || len(counts) != len(c.bounds) {
		return
	}
	buckets := make(map[float64]uint64, len(c.bounds))
	for i, b := range c.bounds {
		buckets[b] = counts[i]
	}
	m, err := prometheus.NewConstHistogram(c.cellDuration, count, sum, buckets, label)
	if err != nil {
		m = prometheus.NewInvalidMetric(c.cellDuration, err)
	}
	ch <- m
}

// signalKey is a signal series as celluster_signal labels it.
type signalKey struct{ name, source, cell, port, version string }

func (c *collector) collectSignals(ch chan<- prometheus.Metric) {
	rs := c.src.Signals()
	// Series that differ only in labels other than cell, port and version collide:
	// keep the latest reading (the last listed among equals).
	latest := make(map[signalKey]signals.Reading, len(rs))
	var order []signalKey
	for _, r := range rs {
		k := signalKey{
			name:    validUTF8(r.Name),
			source:  validUTF8(r.Source),
			cell:    validUTF8(r.Labels["cell"]),
			port:    validUTF8(r.Labels["port"]),
			version: validUTF8(r.Labels["version"]),
		}
		prev, seen := latest[k]
		if !seen {
			order = append(order, k)
		}
		if !seen || !r.Time.Before(prev.Time) {
			latest[k] = r
		}
	}
	for _, k := range order {
		send(ch, c.signal, prometheus.GaugeValue, latest[k].Value, k.name, k.source, k.cell, k.port, k.version)
	}
}

func (c *collector) collectPlugins(ch chan<- prometheus.Metric) {
	ps := c.src.Plugins()
	last := make(map[string]int, len(ps))
	for i, p := range ps {
		last[validUTF8(p.Name)] = i
	}
	for i, p := range ps {
		name := validUTF8(p.Name)
		if last[name] != i {
			continue
		}
		send(ch, c.pluginUp, prometheus.GaugeValue, b2f(p.Up), name)
		send(ch, c.pluginRestarts, prometheus.CounterValue, float64(p.Restarts), name)
	}
}

func (c *collector) collectBPF(ch chan<- prometheus.Metric) {
	b := c.src.BPF()
	send(ch, c.bpfAvailable, prometheus.GaugeValue, b2f(b.Available))
	type key struct{ object, name string }
	last := make(map[key]int, len(b.Programs))
	for i, p := range b.Programs {
		last[key{validUTF8(p.Object), validUTF8(p.Name)}] = i
	}
	for i, p := range b.Programs {
		k := key{validUTF8(p.Object), validUTF8(p.Name)}
		if last[k] != i {
			continue
		}
		send(ch, c.bpfLoaded, prometheus.GaugeValue, b2f(p.Loaded), k.object, k.name)
	}
}
