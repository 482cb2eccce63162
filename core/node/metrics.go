package node

import (
	"context"
	"fmt"
	"net"

	"github.com/celluster/celluster/core/fabric"
	"github.com/celluster/celluster/core/metrics"
)

// newMetrics builds the node's Prometheus metrics over its own state.
func (n *Node) newMetrics() *metrics.Metrics {
	src := metrics.SourceFuncs{
		CellsFunc:   n.reg.List,
		SignalsFunc: n.Signals,
		PluginsFunc: func() []metrics.PluginInfo {
			var out []metrics.PluginInfo
			for _, p := range n.Plugins() {
				out = append(out, metrics.PluginInfo{Name: p.Name, Up: p.State == "running", Restarts: p.Restarts})
			}
			return out
		},
		BPFFunc: n.bpfInfo,
	}
	lat := metrics.LatencyFunc(func(name string, _ []float64) ([]uint64, float64, uint64, bool) {
		c := n.reg.Lookup(name)
		if c == nil {
			return nil, 0, 0, false
		}
		counts, sum, count := c.LatencyBuckets()
		return counts, sum, count, true
	})
	return metrics.New(src, lat)
}

// fabricStats reads the fabric's counters for the metrics; the node calls
// Metrics.WatchFabric with it once the fabric is up.
func (n *Node) fabricStats() (fabric.Stats, bool) {
	if n.mesh == nil || n.mesh.f == nil {
		return fabric.Stats{}, false
	}
	return n.mesh.f.Stats(), true
}

// serveMetrics serves /metrics on addr until ctx ends.
func (n *Node) serveMetrics(ctx context.Context, addr string) (net.Addr, <-chan error, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics: listening on %s: %w", addr, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- n.metrics.Serve(ctx, l) }()
	return l.Addr(), errc, nil
}
