package cell

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// stats records a cell's requests. Latency goes into an HDR histogram in
// microseconds, 1 µs to 10 min at two significant figures (1 % precision):
// about 21 KiB per histogram, where three figures would take 172 KiB, which
// for the three histograms of each cell and of each version came to over
// 1 MiB per cell, resident because each window's histogram is reset every
// tick.
type stats struct {
	requests atomic.Uint64
	errors   atomic.Uint64
	inflight atomic.Int64
	queued   atomic.Int64
	lastReq  atomic.Int64 // unix nanos
	buckets  bucketCounts

	mu    sync.Mutex
	hist  *hdrhistogram.Histogram // since the cell was created
	win   *hdrhistogram.Histogram // since the last TakeWindow
	old   *hdrhistogram.Histogram // the previous window, reused
	wReq  uint64                  // requests counted in win
	wErr  uint64
	wBusy time.Duration // time spent serving the window's requests
}

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 2)
}

func newStats() *stats {
	return &stats{hist: newHist(), win: newHist(), old: newHist()}
}

// record counts one finished request; statuses of 500 and above are errors.
func (s *stats) record(d time.Duration, status int) {
	s.requests.Add(1)
	if status >= 500 {
		s.errors.Add(1)
	}
	s.lastReq.Store(time.Now().UnixNano())
	s.buckets.record(d)
	us := d.Microseconds()
	if us < 1 {
		us = 1
	}
	s.mu.Lock()
	_ = s.hist.RecordValue(us) // values beyond the range are dropped
	_ = s.win.RecordValue(us)
	s.wReq++
	s.wBusy += d
	if status >= 500 {
		s.wErr++
	}
	s.mu.Unlock()
}

// Window is what a cell did since the previous TakeWindow.
type Window struct {
	// Requests and Errors (5xx) finished in the window.
	Requests, Errors uint64
	// P50, P90 and P99 are latency quantiles of the window's requests; zero
	// when there were none.
	P50, P90, P99 time.Duration
	// Busy is the time spent serving the window's requests, summed.
	Busy time.Duration
}

// takeWindow returns the window and starts a new one.
func (s *stats) takeWindow() Window {
	s.mu.Lock()
	w := Window{Requests: s.wReq, Errors: s.wErr, Busy: s.wBusy}
	if s.win.TotalCount() > 0 {
		w.P50 = time.Duration(s.win.ValueAtQuantile(50)) * time.Microsecond
		w.P90 = time.Duration(s.win.ValueAtQuantile(90)) * time.Microsecond
		w.P99 = time.Duration(s.win.ValueAtQuantile(99)) * time.Microsecond
	}
	s.win, s.old = s.old, s.win
	if s.win.TotalCount() > 0 { // an idle cell's windows stay untouched
		s.win.Reset()
	}
	s.wReq, s.wErr, s.wBusy = 0, 0, 0
	s.mu.Unlock()
	return w
}

func (s *stats) quantiles() (p50, p99 time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hist.TotalCount() == 0 {
		return 0, 0
	}
	return time.Duration(s.hist.ValueAtQuantile(50)) * time.Microsecond,
		time.Duration(s.hist.ValueAtQuantile(99)) * time.Microsecond
}

// LatencyBounds are the upper bounds, in seconds, of the buckets
// LatencyBuckets counts requests in.
var LatencyBounds = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// bucketCounts counts requests per latency bucket (the last one: above the
// largest bound) and sums their durations, lock-free.
type bucketCounts struct {
	n     [15]atomic.Uint64
	sumNs atomic.Int64
}

func (b *bucketCounts) record(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(LatencyBounds) && s > LatencyBounds[i] {
		i++
	}
	b.n[i].Add(1)
	b.sumNs.Add(int64(d))
}

// cumulative returns the cumulative count at or below each bound, the sum
// of durations in seconds and the total count.
func (b *bucketCounts) cumulative() (counts []uint64, sum float64, count uint64) {
	counts = make([]uint64, len(LatencyBounds))
	for i := range b.n {
		c := b.n[i].Load()
		count += c
		if i < len(counts) {
			counts[i] = count
		}
	}
	return counts, time.Duration(b.sumNs.Load()).Seconds(), count
}
