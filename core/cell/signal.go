package cell

import (
	"strings"
	"sync"
	"time"

	"github.com/celluster/celluster/core/wasm"
)

// SignalSink receives the readings cells publish with cel.signal: cell
// published value under name. It must not block.
type SignalSink func(cell, name string, value float64)

// Bounds on what one cell may publish with cel.signal.
const (
	// SignalRate is the readings per second a cell may publish (on
	// average; SignalBurst at once); beyond, readings are dropped and
	// the guest is told (wasm.SignalRateLimited).
	SignalRate  = 50
	SignalBurst = 100
	// MaxSignalNames is how many distinct names a cell may publish.
	MaxSignalNames = 32
)

// reservedSignals are the names the node publishes for every cell: a cell
// may not publish under them.
var reservedSignals = map[string]bool{
	"latency.p50": true, "latency.p90": true, "latency.p99": true, "rps": true, "errors.rate": true,
	"inflight": true, "queue": true, "replicas": true, "idle": true, "cpu": true,
}

// ValidSignalName reports whether a cell may publish a signal named name:
// lower case letters, digits, '.' and '_', starting with a letter, at most
// 64 bytes, not one the node publishes for every cell, not under version.
func ValidSignalName(name string) bool {
	if name == "" || len(name) > 64 || name[0] < 'a' || name[0] > 'z' || reservedSignals[name] || strings.HasPrefix(name, "version.") {
		return false
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		if (b < 'a' || b > 'z') && (b < '0' || b > '9') && b != '.' && b != '_' {
			return false
		}
	}
	return true
}

// signals is a cell's cel.signal state: whether its intent grants it, its
// rate budget and the names it published.
type signals struct {
	mu      sync.Mutex
	granted bool
	tokens  float64
	last    time.Time
	names   map[string]bool
	warned  bool
}

// SetSignalGrant says whether the cell's intent has `grant signal`.
func (c *Cell) SetSignalGrant(granted bool) {
	c.sig.mu.Lock()
	c.sig.granted = granted
	c.sig.mu.Unlock()
}

// signalFunc is the cell's cel.signal: checked against its grant, its
// rate and its name budget, then handed to the registry's sink.
func (c *Cell) signalFunc() wasm.SignalFunc {
	if c.sink == nil {
		return nil
	}
	return func(name string, value float64) int32 {
		if !ValidSignalName(name) {
			return wasm.SignalBadName
		}
		s := &c.sig
		s.mu.Lock()
		if !s.granted {
			warn := !s.warned
			s.warned = true
			s.mu.Unlock()
			if warn {
				c.log.Warn("cel.signal refused: the cell's intent does not grant signal (add `grant signal`)", "signal", name)
			}
			return wasm.SignalNotGranted
		}
		now := time.Now()
		if s.last.IsZero() {
			s.tokens = SignalBurst
		} else {
			s.tokens = min(SignalBurst, s.tokens+now.Sub(s.last).Seconds()*SignalRate)
		}
		s.last = now
		if s.tokens < 1 {
			s.mu.Unlock()
			return wasm.SignalRateLimited
		}
		if !s.names[name] {
			if len(s.names) >= MaxSignalNames {
				s.mu.Unlock()
				return wasm.SignalTooMany
			}
			if s.names == nil {
				s.names = map[string]bool{}
			}
			s.names[name] = true
		}
		s.tokens--
		s.mu.Unlock()
		c.sink(c.name, name, value)
		return wasm.SignalOK
	}
}
