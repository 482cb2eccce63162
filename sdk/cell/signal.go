package cell

import "errors"

// Errors Signal returns: what the node answered to cel.signal.
var (
	// ErrSignalNotGranted: the cell's intent has no `grant signal`.
	ErrSignalNotGranted = errors.New("cel.signal: the cell's intent does not grant signal")
	// ErrSignalName: not a valid signal name (lower case letters, digits,
	// '.' and '_', starting with a letter, at most 64 bytes), or one the
	// node publishes itself for every cell (latency.p99, rps, ...).
	ErrSignalName = errors.New("cel.signal: invalid or reserved signal name")
	// ErrSignalRate: over the cell's rate (50 readings a second, bursts of
	// 100); the reading was dropped.
	ErrSignalRate = errors.New("cel.signal: rate limited; reading dropped")
	// ErrSignalTooMany: the cell already publishes 32 signal names.
	ErrSignalTooMany = errors.New("cel.signal: too many signal names")
)

// Signal publishes value as the cell's signal name (for example
// "jobs.pending"). The node labels it cell=<this cell>, and the cell's
// intent rules read it like any signal:
//
//	grant signal
//	when jobs.pending > 100 for 2s then clone
//
// It needs `grant signal`; readings are rate-limited per cell and the
// names a cell may use are bounded (see the errors). In a native build (go
// test), it does nothing and returns nil.
func Signal(name string, value float64) error {
	switch hostSignal(name, value) {
	case 0:
		return nil
	case 1:
		return ErrSignalNotGranted
	case 2:
		return ErrSignalName
	case 3:
		return ErrSignalRate
	default:
		return ErrSignalTooMany
	}
}
