package cell

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// stats records a cell's requests. Latency goes into an HDR histogram in
// microseconds, 1 µs to 10 min at three significant figures.
type stats struct {
	requests atomic.Uint64
	errors   atomic.Uint64
	inflight atomic.Int64
	queued   atomic.Int64
	lastReq  atomic.Int64 // unix nanos

	mu   sync.Mutex
	hist *hdrhistogram.Histogram
}

func newStats() *stats {
	return &stats{hist: hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)}
}

// record counts one finished request; statuses of 500 and above are errors.
func (s *stats) record(d time.Duration, status int) {
	s.requests.Add(1)
	if status >= 500 {
		s.errors.Add(1)
	}
	s.lastReq.Store(time.Now().UnixNano())
	us := d.Microseconds()
	if us < 1 {
		us = 1
	}
	s.mu.Lock()
	_ = s.hist.RecordValue(us) // values beyond the range are dropped
	s.mu.Unlock()
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
