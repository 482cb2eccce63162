package plugin

import (
	"context"
	"strconv"
	"time"
)

// VerbPlugin is a plugin of kind dev.celluster.verb.v1: it carries out
// lifecycle verbs (spawn, clone, reroute, upgrade, decay, ...) through the
// [Host].
type VerbPlugin interface {
	// Verbs declares the verbs the plugin implements, e.g. "clone". The
	// SDK answers a request for any other verb itself, with an error.
	Verbs() []string
	// Execute carries out one verb. host is the same handle Configure
	// received. A VerbResult must have an Outcome; an error means the
	// plugin could not carry the verb out at all, and the core journals
	// it as a failure.
	Execute(ctx context.Context, host Host, req VerbRequest) (VerbResult, error)
}

// Outcome is how a verb ended. The zero value is unspecified and is not a
// valid result.
type Outcome int

// Outcomes.
const (
	// Done means the verb changed the world as asked.
	Done Outcome = iota + 1
	// Noop means nothing needed doing (e.g. already at the bound).
	Noop
	// Refused means the verb was refused by policy.
	Refused
	// Failed means the verb failed.
	Failed
	// RolledBack means the verb undid its own change because it broke the
	// cell's objectives (e.g. an upgrade whose new version failed).
	RolledBack
)

// String returns "done", "noop", "refused", "failed", "rolled-back" or
// "Outcome(N)".
func (o Outcome) String() string {
	switch o {
	case Done:
		return "done"
	case Noop:
		return "noop"
	case Refused:
		return "refused"
	case Failed:
		return "failed"
	case RolledBack:
		return "rolled-back"
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// SignalValue is one signal reading that contributed to a decision.
type SignalValue struct {
	// Signal is the signal's name.
	Signal string
	// Value is the value read.
	Value float64
	// Labels scope the value.
	Labels map[string]string
	// Time is when the value was observed.
	Time time.Time
}

// Trigger says why a verb runs.
type Trigger struct {
	// Rule is the name of the rule that fired; empty for a manual verb.
	Rule string
	// Manual is set when an operator asked for the verb.
	Manual bool
	// Values are the readings that made the rule fire.
	Values []SignalValue
}

// VerbRequest asks a plugin to carry out one verb on one cell.
type VerbRequest struct {
	// Verb is one of the plugin's Verbs.
	Verb string
	// Cell is the cell to act on.
	Cell string
	// Args are the verb's arguments, e.g. from the rule.
	Args []string
	// Trigger says why the verb runs.
	Trigger Trigger
}

// VerbResult is how a verb ended.
type VerbResult struct {
	// Outcome is how the verb ended; it must be set.
	Outcome Outcome
	// Message explains the outcome in words, for the journal.
	Message string
}
