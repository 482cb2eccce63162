package metrics

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/fabric"
	"github.com/celluster/celluster/core/signals"
)

// fakeSource is a Source whose answers the test sets.
type fakeSource struct {
	mu      sync.Mutex
	cells   []cell.Info
	signals []signals.Reading
	plugins []PluginInfo
	bpf     BPFInfo
}

func (f *fakeSource) Cells() []cell.Info {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]cell.Info(nil), f.cells...)
}

func (f *fakeSource) Signals() []signals.Reading {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]signals.Reading(nil), f.signals...)
}

func (f *fakeSource) Plugins() []PluginInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]PluginInfo(nil), f.plugins...)
}

func (f *fakeSource) BPF() BPFInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.bpf
	b.Programs = append([]BPFProgram(nil), b.Programs...)
	return b
}

// fakeLatency answers LatencyBuckets from a table of cells.
type fakeLatency map[string]fakeHist

type fakeHist struct {
	counts []uint64
	sum    float64
	count  uint64
}

func (f fakeLatency) LatencyBuckets(name string, bounds []float64) ([]uint64, float64, uint64, bool) {
	h, ok := f[name]
	if !ok {
		return nil, 0, 0, false
	}
	return append([]uint64(nil), h.counts...), h.sum, h.count, true
}

var at = time.Date(2026, 11, 27, 1, 0, 0, 0, time.UTC)

func newFixture() (*fakeSource, fakeLatency) {
	src := &fakeSource{
		cells: []cell.Info{
			{Name: "hello", Requests: 42, Errors: 3, Replicas: 2, InFlight: 5, Queued: 1},
			{Name: "idle", Requests: 0},
		},
		signals: []signals.Reading{
			{Name: "latency.p99", Labels: map[string]string{"cell": "hello"}, Value: 0.012, Time: at, Source: "core"},
			{Name: "tcp.retransmits", Labels: map[string]string{"port": "8080"}, Value: 7, Time: at, Source: "bpf"},
			{Name: "load", Value: 0.5, Time: at, Source: "host"},
		},
		plugins: []PluginInfo{
			{Name: "scaler", Up: true, Restarts: 0},
			{Name: "tcpstats", Up: false, Restarts: 4},
		},
		bpf: BPFInfo{Available: true, Programs: []BPFProgram{
			{Object: "tcp_bpfel.o", Name: "tcp_retransmit", Loaded: true},
			{Object: "tcp_bpfel.o", Name: "tcp_rtt", Loaded: false},
		}},
	}
	// 10 requests for "hello": 1 at or below 0.5ms, 4 at or below 5ms, 9
	// at or below 0.1s, all at or below 1s.
	counts := make([]uint64, len(cell.LatencyBounds))
	for i, b := range cell.LatencyBounds {
		switch {
		case b < 0.001:
			counts[i] = 1
		case b <= 0.005:
			counts[i] = 4
		case b <= 0.1:
			counts[i] = 9
		default:
			counts[i] = 10
		}
	}
	lat := fakeLatency{"hello": {counts: counts, sum: 1.25, count: 10}}
	return src, lat
}

// serve serves m on a 127.0.0.1 listener until the test ends and returns
// its base URL.
func serve(t *testing.T, m *Metrics) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + l.Addr().String()
}

// fetch fetches url in the classic text format and returns the status and
// body.
func fetch(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	code, body, err := fetch(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	return code, body
}

// scrape fetches and parses base/metrics.
func scrape(t *testing.T, base string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, body)
	}
	return mfs, body
}

// find returns the metric of family name whose labels include want.
func find(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	m, n := lookup(mfs, name, want)
	if n != 1 {
		t.Fatalf("%s%v: %d series match, want 1", name, want, n)
	}
	return m
}

func lookup(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (*dto.Metric, int) {
	mf := mfs[name]
	if mf == nil {
		return nil, 0
	}
	var found *dto.Metric
	n := 0
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		match := true
		for k, v := range want {
			if gv, ok := got[k]; !ok || gv != v {
				match = false
			}
		}
		if match {
			found = m
			n++
		}
	}
	return found, n
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return -1
}

func wantValue(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels map[string]string, typ dto.MetricType, want float64) {
	t.Helper()
	if mf := mfs[name]; mf == nil || mf.GetType() != typ {
		t.Fatalf("%s: family %v, want type %v", name, mf, typ)
	}
	if got := value(find(t, mfs, name, labels)); got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

func TestScrape(t *testing.T) {
	src, lat := newFixture()
	m := New(src, lat)
	m.ObserveVerb("scale", "done")
	m.ObserveVerb("scale", "done")
	m.ObserveVerb("upgrade", "rolled-back")
	mfs, _ := scrape(t, serve(t, m))

	hello := map[string]string{"cell": "hello"}
	wantValue(t, mfs, "celluster_cell_requests_total", hello, dto.MetricType_COUNTER, 42)
	wantValue(t, mfs, "celluster_cell_errors_total", hello, dto.MetricType_COUNTER, 3)
	wantValue(t, mfs, "celluster_cell_replicas", hello, dto.MetricType_GAUGE, 2)
	wantValue(t, mfs, "celluster_cell_inflight", hello, dto.MetricType_GAUGE, 5)
	wantValue(t, mfs, "celluster_cell_queued", hello, dto.MetricType_GAUGE, 1)
	wantValue(t, mfs, "celluster_cell_requests_total", map[string]string{"cell": "idle"}, dto.MetricType_COUNTER, 0)

	// The histogram: every bound, cumulative counts, sum and count.
	if mf := mfs["celluster_cell_request_duration_seconds"]; mf.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("histogram family: %v", mf)
	}
	h := find(t, mfs, "celluster_cell_request_duration_seconds", hello).GetHistogram()
	if h.GetSampleCount() != 10 || h.GetSampleSum() != 1.25 {
		t.Errorf("histogram count %d sum %v, want 10 and 1.25", h.GetSampleCount(), h.GetSampleSum())
	}
	// The text format adds the +Inf bucket.
	if bs := h.GetBucket(); len(bs) != len(cell.LatencyBounds)+1 || !math.IsInf(bs[len(bs)-1].GetUpperBound(), 1) || bs[len(bs)-1].GetCumulativeCount() != 10 {
		t.Fatalf("buckets %v, want %d bounds and +Inf", bs, len(cell.LatencyBounds))
	}
	wantBuckets := map[float64]uint64{0.0005: 1, 0.001: 4, 0.005: 4, 0.01: 9, 0.1: 9, 0.25: 10, 10: 10}
	for _, b := range h.GetBucket() {
		if want, ok := wantBuckets[b.GetUpperBound()]; ok && b.GetCumulativeCount() != want {
			t.Errorf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
	// A cell the latency source does not know has no histogram.
	if _, n := lookup(mfs, "celluster_cell_request_duration_seconds", map[string]string{"cell": "idle"}); n != 0 {
		t.Errorf("histogram for a cell without latencies")
	}

	wantValue(t, mfs, "celluster_verbs_total", map[string]string{"verb": "scale", "outcome": "done"}, dto.MetricType_COUNTER, 2)
	wantValue(t, mfs, "celluster_verbs_total", map[string]string{"verb": "upgrade", "outcome": "rolled-back"}, dto.MetricType_COUNTER, 1)

	wantValue(t, mfs, "celluster_signal",
		map[string]string{"name": "latency.p99", "source": "core", "cell": "hello", "port": ""}, dto.MetricType_GAUGE, 0.012)
	wantValue(t, mfs, "celluster_signal",
		map[string]string{"name": "tcp.retransmits", "source": "bpf", "cell": "", "port": "8080"}, dto.MetricType_GAUGE, 7)
	wantValue(t, mfs, "celluster_signal",
		map[string]string{"name": "load", "source": "host", "cell": "", "port": ""}, dto.MetricType_GAUGE, 0.5)

	wantValue(t, mfs, "celluster_plugin_up", map[string]string{"plugin": "scaler"}, dto.MetricType_GAUGE, 1)
	wantValue(t, mfs, "celluster_plugin_up", map[string]string{"plugin": "tcpstats"}, dto.MetricType_GAUGE, 0)
	wantValue(t, mfs, "celluster_plugin_restarts_total", map[string]string{"plugin": "tcpstats"}, dto.MetricType_COUNTER, 4)
	wantValue(t, mfs, "celluster_plugin_restarts_total", map[string]string{"plugin": "scaler"}, dto.MetricType_COUNTER, 0)

	wantValue(t, mfs, "celluster_bpf_available", nil, dto.MetricType_GAUGE, 1)
	wantValue(t, mfs, "celluster_bpf_program_loaded",
		map[string]string{"object": "tcp_bpfel.o", "program": "tcp_retransmit"}, dto.MetricType_GAUGE, 1)
	wantValue(t, mfs, "celluster_bpf_program_loaded",
		map[string]string{"object": "tcp_bpfel.o", "program": "tcp_rtt"}, dto.MetricType_GAUGE, 0)

	// The standard collectors are there.
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if mfs[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	// Every family has a help string.
	for name, mf := range mfs {
		if strings.HasPrefix(name, "celluster_") && len(mf.GetHelp()) < 20 {
			t.Errorf("%s: help %q", name, mf.GetHelp())
		}
	}
}

// The scrape reads the sources anew each time.
func TestScrapeFollowsSource(t *testing.T) {
	src, lat := newFixture()
	base := serve(t, New(src, lat))
	mfs, _ := scrape(t, base)
	wantValue(t, mfs, "celluster_cell_requests_total", map[string]string{"cell": "hello"}, dto.MetricType_COUNTER, 42)

	src.mu.Lock()
	src.cells[0].Requests = 50
	src.cells = src.cells[:1]
	src.bpf = BPFInfo{}
	src.mu.Unlock()
	mfs, _ = scrape(t, base)
	wantValue(t, mfs, "celluster_cell_requests_total", map[string]string{"cell": "hello"}, dto.MetricType_COUNTER, 50)
	if _, n := lookup(mfs, "celluster_cell_requests_total", map[string]string{"cell": "idle"}); n != 0 {
		t.Errorf("removed cell still reported")
	}
	wantValue(t, mfs, "celluster_bpf_available", nil, dto.MetricType_GAUGE, 0)
	if mfs["celluster_bpf_program_loaded"] != nil {
		t.Errorf("programs reported without any")
	}
}

// Series that collide on the labels celluster_signal keeps (name, source,
// cell, port, version), and names listed
// twice, do not break the scrape: the latest reading, or the last entry,
// wins.
func TestCollisions(t *testing.T) {
	src, lat := newFixture()
	src.signals = []signals.Reading{
		{Name: "version.rps", Labels: map[string]string{"cell": "hello", "version": "b"}, Value: 9, Time: at.Add(time.Second), Source: "core"},
		{Name: "version.rps", Labels: map[string]string{"cell": "hello", "version": "a"}, Value: 1, Time: at, Source: "core"},
		{Name: "x", Labels: map[string]string{"a": "1"}, Value: 1, Time: at, Source: "p"},
		{Name: "x", Labels: map[string]string{"a": "2"}, Value: 2, Time: at, Source: "p"},
		// Same name and labels from another source: a series of its own.
		{Name: "x", Labels: map[string]string{"a": "3"}, Value: 3, Time: at, Source: "q"},
	}
	src.cells = append(src.cells, cell.Info{Name: "hello", Requests: 43})
	src.plugins = append(src.plugins, PluginInfo{Name: "scaler", Up: false, Restarts: 1})
	src.bpf.Programs = append(src.bpf.Programs, BPFProgram{Object: "tcp_bpfel.o", Name: "tcp_rtt", Loaded: true})
	mfs, _ := scrape(t, serve(t, New(src, lat)))

	// Versions are series of their own.
	wantValue(t, mfs, "celluster_signal", map[string]string{"name": "version.rps", "cell": "hello", "version": "b"}, dto.MetricType_GAUGE, 9)
	wantValue(t, mfs, "celluster_signal", map[string]string{"name": "version.rps", "cell": "hello", "version": "a"}, dto.MetricType_GAUGE, 1)
	wantValue(t, mfs, "celluster_signal", map[string]string{"name": "x", "source": "p"}, dto.MetricType_GAUGE, 2)
	wantValue(t, mfs, "celluster_signal", map[string]string{"name": "x", "source": "q"}, dto.MetricType_GAUGE, 3)
	wantValue(t, mfs, "celluster_cell_requests_total", map[string]string{"cell": "hello"}, dto.MetricType_COUNTER, 43)
	wantValue(t, mfs, "celluster_plugin_up", map[string]string{"plugin": "scaler"}, dto.MetricType_GAUGE, 0)
	wantValue(t, mfs, "celluster_plugin_restarts_total", map[string]string{"plugin": "scaler"}, dto.MetricType_COUNTER, 1)
	wantValue(t, mfs, "celluster_bpf_program_loaded", map[string]string{"program": "tcp_rtt"}, dto.MetricType_GAUGE, 1)
}

// Invalid UTF-8 in names does not break the scrape or panic.
func TestInvalidUTF8(t *testing.T) {
	src, lat := newFixture()
	bad := "bad\xff"
	src.cells = append(src.cells, cell.Info{Name: bad, Requests: 1})
	src.signals = append(src.signals, signals.Reading{Name: bad, Labels: map[string]string{"cell": bad}, Value: 1, Source: bad})
	src.plugins = append(src.plugins, PluginInfo{Name: bad})
	m := New(src, lat)
	m.ObserveVerb(bad, bad)
	mfs, _ := scrape(t, serve(t, m))
	wantValue(t, mfs, "celluster_cell_requests_total", map[string]string{"cell": "bad\uFFFD"}, dto.MetricType_COUNTER, 1)
	wantValue(t, mfs, "celluster_verbs_total", map[string]string{"verb": "bad\uFFFD"}, dto.MetricType_COUNTER, 1)
}

// Latencies of the wrong shape are left out, not served wrong.
func TestLatencyWrongLength(t *testing.T) {
	src, _ := newFixture()
	lat := fakeLatency{"hello": {counts: []uint64{1, 2}, sum: 1, count: 2}}
	mfs, _ := scrape(t, serve(t, New(src, lat)))
	if mfs["celluster_cell_request_duration_seconds"] != nil {
		t.Errorf("histogram served from %d counts", 2)
	}
	wantValue(t, mfs, "celluster_cell_requests_total", map[string]string{"cell": "hello"}, dto.MetricType_COUNTER, 42)
}

// Without sources only the verbs and the standard collectors are served.
func TestNilSources(t *testing.T) {
	m := New(nil, nil)
	m.ObserveVerb("scale", "noop")
	mfs, _ := scrape(t, serve(t, m))
	for name := range mfs {
		if strings.HasPrefix(name, "celluster_") && name != "celluster_verbs_total" {
			t.Errorf("unexpected %s", name)
		}
	}
	wantValue(t, mfs, "celluster_verbs_total", map[string]string{"verb": "scale", "outcome": "noop"}, dto.MetricType_COUNTER, 1)
	if mfs["go_goroutines"] == nil {
		t.Errorf("no go_goroutines")
	}
}

// promtool finds no problem in what is served.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("promtool is required in CI (Debian package prometheus): %v", err)
		}
		t.Skipf("promtool not found (Debian package prometheus): %v", err)
	}
	src, lat := newFixture()
	m := New(src, lat)
	m.ObserveVerb("scale", "done")
	m.WatchFabric(func() (fabric.Stats, bool) { return fabric.Stats{PacketsSent: 3, Connections: 1}, true })
	_, body := scrape(t, serve(t, m))
	if !strings.Contains(body, "celluster_fabric_packets_total") {
		t.Fatal("no fabric metrics to check")
	}

	cmd := exec.CommandContext(t.Context(), promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	if err != nil || strings.TrimSpace(out.String()) != "" {
		t.Fatalf("promtool check metrics: %v\n%s", err, out.String())
	}
}

func TestServeIndexAndShutdown(t *testing.T) {
	m := New(nil, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + l.Addr().String()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, l) }()

	code, body := get(t, base+"/")
	if code != http.StatusOK || !strings.Contains(body, `href="/metrics"`) {
		t.Errorf("GET /: %d %q", code, body)
	}
	if code, _ := get(t, base+"/nothing"); code != http.StatusNotFound {
		t.Errorf("GET /nothing: %d, want 404", code)
	}
	if code, _ := get(t, base+"/metrics"); code != http.StatusOK {
		t.Errorf("GET /metrics: %d", code)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
	if _, err := net.Dial("tcp", l.Addr().String()); err == nil {
		t.Errorf("listener still accepts after Serve returned")
	}
}

func TestServeClosedListener(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	err = New(nil, nil).Serve(t.Context(), l)
	if err == nil || errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve on a closed listener: %v", err)
	}
}

// Scrapes, verbs and source changes may run at once (run with -race).
func TestConcurrent(t *testing.T) {
	src, lat := newFixture()
	m := New(src, lat)
	base := serve(t, m)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for range 5 {
				m.ObserveVerb("scale", "done")
				src.mu.Lock()
				src.cells[0].Requests++
				src.signals = append(src.signals, signals.Reading{Name: "load", Value: float64(i), Time: at, Source: "host"})
				src.mu.Unlock()
			}
		})
		wg.Go(func() {
			for range 3 {
				if code, body, err := fetch(t.Context(), base+"/metrics"); err != nil || code != http.StatusOK {
					t.Errorf("scrape: %d %v\n%s", code, err, body)
				}
			}
		})
	}
	wg.Wait()
	mfs, _ := scrape(t, base)
	wantValue(t, mfs, "celluster_verbs_total", map[string]string{"verb": "scale", "outcome": "done"}, dto.MetricType_COUNTER, 20)
	wantValue(t, mfs, "celluster_cell_requests_total", map[string]string{"cell": "hello"}, dto.MetricType_COUNTER, 62)
}
