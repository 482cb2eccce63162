// Package metrics exposes a node's state to Prometheus: per cell request
// counters, gauges and a latency histogram, the signals in the store, the
// verbs fired, the plugins, the BPF programs and the fabric's traffic
// (WatchFabric).
//
// The package reads what it exposes through two small interfaces, Source and
// LatencySource, on every scrape; only the verbs counter keeps state of its
// own (ObserveVerb). Metrics serves its registry, which also holds the
// standard Go runtime and process collectors, as an http.Handler or on a
// listener of its own (Serve).
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/signals"
)

// Source is what the metrics read on each scrape. Its methods may be called
// concurrently, from the scraping goroutines.
type Source interface {
	// Cells returns a snapshot of every cell.
	Cells() []cell.Info
	// Signals returns the latest reading of every signal series.
	Signals() []signals.Reading
	// Plugins returns the state of every plugin.
	Plugins() []PluginInfo
	// BPF returns the state of the node's BPF programs.
	BPF() BPFInfo
}

// PluginInfo is one plugin as the metrics see it.
type PluginInfo struct {
	Name string
	// Up is true while the plugin runs and answers.
	Up bool
	// Restarts counts the plugin's restarts since the node started.
	Restarts int
}

// BPFInfo is the state of the node's BPF programs.
type BPFInfo struct {
	// Available is true when the kernel lets the node load BPF programs.
	Available bool
	Programs  []BPFProgram
}

// BPFProgram is one BPF program the node knows of.
type BPFProgram struct {
	// Object is the compiled object the program comes from, Name the
	// program's name in it.
	Object, Name string
	// Loaded is true while the program is loaded (and attached).
	Loaded bool
}

// LatencySource gives a cell's request durations as a Prometheus histogram:
// for each of bounds (seconds, ascending) the count of requests that took at
// most that long (cumulative), the sum of all durations in seconds and the
// count of all requests. ok is false for an unknown cell. The metrics ask
// with cell.LatencyBounds; counts of another length are ignored.
type LatencySource interface {
	LatencyBuckets(cell string, bounds []float64) (counts []uint64, sum float64, count uint64, ok bool)
}

// LatencyFunc adapts a function to a LatencySource.
type LatencyFunc func(cell string, bounds []float64) (counts []uint64, sum float64, count uint64, ok bool)

// LatencyBuckets calls f.
func (f LatencyFunc) LatencyBuckets(cell string, bounds []float64) ([]uint64, float64, uint64, bool) {
	return f(cell, bounds)
}

// SourceFuncs adapts functions to a Source; a nil function reports nothing.
type SourceFuncs struct {
	CellsFunc   func() []cell.Info
	SignalsFunc func() []signals.Reading
	PluginsFunc func() []PluginInfo
	BPFFunc     func() BPFInfo
}

var (
	_ Source        = SourceFuncs{}
	_ LatencySource = LatencyFunc(nil)
)

// Cells calls CellsFunc.
func (s SourceFuncs) Cells() []cell.Info {
	if s.CellsFunc == nil {
		return nil
	}
	return s.CellsFunc()
}

// Signals calls SignalsFunc.
func (s SourceFuncs) Signals() []signals.Reading {
	if s.SignalsFunc == nil {
		return nil
	}
	return s.SignalsFunc()
}

// Plugins calls PluginsFunc.
func (s SourceFuncs) Plugins() []PluginInfo {
	if s.PluginsFunc == nil {
		return nil
	}
	return s.PluginsFunc()
}

// BPF calls BPFFunc.
func (s SourceFuncs) BPF() BPFInfo {
	if s.BPFFunc == nil {
		return BPFInfo{}
	}
	return s.BPFFunc()
}

// Metrics is a Prometheus registry holding the node's metrics.
type Metrics struct {
	reg     *prometheus.Registry
	verbs   *prometheus.CounterVec
	handler http.Handler

	fabricOnce sync.Once
}

// New returns the metrics of src and lat, registered with the Go runtime
// and process collectors. Either may be nil: its metrics are then absent.
func New(src Source, lat LatencySource) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		verbs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "celluster_verbs_total",
			Help: "Verb requests (scale, upgrade, ...) that ended, by verb and outcome (done, noop, refused, failed, rolled-back, ...).",
		}, []string{"verb", "outcome"}),
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.verbs,
		newCollector(src, lat),
	)
	errLog := slog.NewLogLogger(slog.Default().Handler(), slog.LevelError)
	errLog.SetPrefix("metrics: ")
	m.handler = promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      errLog,
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      reg,
	}))
	return m
}

// Registry returns the registry, for collectors of the caller's own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ObserveVerb counts one verb request that ended with outcome (one of the
// journal's outcomes).
func (m *Metrics) ObserveVerb(verb, outcome string) {
	m.verbs.WithLabelValues(validUTF8(verb), validUTF8(outcome)).Inc()
}

// Handler returns the handler serving the metrics in the Prometheus
// exposition formats. A metric that fails to gather is logged and left out;
// the rest is served.
func (m *Metrics) Handler() http.Handler { return m.handler }

// Server timeouts for Serve.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	shutdownTimeout   = 5 * time.Second
)

const indexPage = `<!DOCTYPE html>
<html><head><title>Celluster metrics</title></head>
<body><h1>Celluster metrics</h1><p><a href="/metrics">/metrics</a></p></body></html>
`

// Serve serves the metrics on l at /metrics, and a page linking them at /,
// until ctx ends; then it shuts the server down, letting scrapes in progress
// finish for a few seconds, and returns nil. It closes l.
func (m *Metrics) Serve(ctx context.Context, l net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.handler)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(indexPage))
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		_ = srv.Close()
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("metrics: serve: %w", serr)
	}
	if err != nil {
		return fmt.Errorf("metrics: shutdown: %w", err)
	}
	return nil
}

// validUTF8 makes s a valid label value.
func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
