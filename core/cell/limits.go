package cell

import (
	"fmt"
	"time"
)

// Limits bound what one cell may use. The zero value of a field means its
// default from DefaultLimits.
type Limits struct {
	// RequestTimeout stops a request that runs longer (answered 504; the
	// instance is discarded and replaced).
	RequestTimeout time.Duration
	// Memory caps an instance's linear memory in bytes; growing past it
	// fails inside the guest (answered 500; the instance is replaced).
	Memory uint64
	// Concurrency is how many requests a cell runs at once, each on its
	// own instance. More requests queue.
	Concurrency int
	// QueueLength is how many requests may wait for a free slot; one more
	// is answered 503 at once.
	QueueLength int
	// QueueTimeout is how long a request may wait in the queue before it is
	// answered 503.
	QueueTimeout time.Duration
	// MaxBody is the largest request body accepted (413 beyond).
	MaxBody int64
	// Warm is how many reactor instances are kept initialised and ready.
	Warm int
}

// DefaultLimits are applied to every cell unless configured otherwise.
func DefaultLimits() Limits {
	return Limits{
		RequestTimeout: 10 * time.Second,
		Memory:         128 << 20,
		Concurrency:    16,
		QueueLength:    64,
		QueueTimeout:   2 * time.Second,
		MaxBody:        8 << 20,
		Warm:           1,
	}
}

// WithDefaults returns l with its zero fields set from DefaultLimits.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	if l.RequestTimeout <= 0 {
		l.RequestTimeout = d.RequestTimeout
	}
	if l.Memory == 0 {
		l.Memory = d.Memory
	}
	if l.Concurrency <= 0 {
		l.Concurrency = d.Concurrency
	}
	if l.QueueLength < 0 {
		l.QueueLength = 0
	} else if l.QueueLength == 0 {
		l.QueueLength = d.QueueLength
	}
	if l.QueueTimeout <= 0 {
		l.QueueTimeout = d.QueueTimeout
	}
	if l.MaxBody <= 0 {
		l.MaxBody = d.MaxBody
	}
	if l.Warm < 0 {
		l.Warm = 0
	} else if l.Warm == 0 {
		l.Warm = d.Warm
	}
	if l.Warm > l.Concurrency {
		l.Warm = l.Concurrency
	}
	return l
}

// Validate reports limits that cannot work.
func (l Limits) Validate() error {
	if l.Memory != 0 && l.Memory < 1<<20 {
		return fmt.Errorf("memory limit %d bytes is below the 1 MiB minimum", l.Memory)
	}
	return nil
}
