package plugin

import (
	"context"
	"strconv"
	"time"
)

// TelemetrySource is a plugin of kind dev.celluster.telemetry.v1: it
// describes signals and streams samples of them.
type TelemetrySource interface {
	// Signals describes every signal the source may send.
	Signals(ctx context.Context) ([]Signal, error)
	// Stream calls send with batches of samples, about every interval,
	// until ctx ends (then it returns nil) or it fails. interval is the
	// host's wish (never zero: [DefaultInterval] if the host gave none);
	// the source may use another. send returns an error once the host has
	// gone; Stream should then return.
	Stream(ctx context.Context, interval time.Duration, send func([]Sample) error) error
}

// DefaultInterval is the interval [TelemetrySource.Stream] is given when
// the host asks for none.
const DefaultInterval = time.Second

// SignalKind says how a signal's values combine. The zero value is
// unspecified, which the conformance suite rejects.
type SignalKind int

// Signal kinds.
const (
	// Gauge is a value that goes up and down (CPU %, queue depth).
	Gauge SignalKind = iota + 1
	// Counter is a count that only increases; the core derives rates.
	Counter
	// Rate is a rate already computed by the source, per second.
	Rate
)

// String returns "gauge", "counter", "rate" or "SignalKind(N)".
func (k SignalKind) String() string {
	switch k {
	case Gauge:
		return "gauge"
	case Counter:
		return "counter"
	case Rate:
		return "rate"
	}
	return "SignalKind(" + strconv.Itoa(int(k)) + ")"
}

// Signal describes one signal a telemetry source offers.
type Signal struct {
	// Name as rules use it: lower-case dotted words, e.g. "host.cpu" or
	// "kernel.tcp.retransmits".
	Name string
	// Unit, e.g. "percent", "bytes", "seconds", "1" (dimensionless).
	Unit string
	// Help is one line.
	Help string
	// Kind says how values combine.
	Kind SignalKind
	// Labels are the label keys the signal's samples carry, e.g. "port".
	Labels []string
}

// Sample is one value of one signal at one time.
type Sample struct {
	// Signal is the name of a declared signal.
	Signal string
	// Value is the observed value.
	Value float64
	// Time is when the value was observed; a zero Time is stamped with the
	// time the sample is sent.
	Time time.Time
	// Labels scope the value, e.g. {"port": "8080"}.
	Labels map[string]string
}
