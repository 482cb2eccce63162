package plugin

import (
	"context"
	"strconv"
	"strings"
	"time"
)

// IntentParser is a plugin of kind dev.celluster.intent.v1: it turns the
// bytes of an intent file into a typed [IntentSpec].
type IntentParser interface {
	// Accepts declares what the parser reads: file extensions including
	// the dot (".intent") and media types.
	Accepts() (extensions, mediaTypes []string)
	// Parse returns a spec, or diagnostics (at least one with severity
	// [Error]) explaining why not; err is for failures of the parser
	// itself, not of the input. Warnings may accompany a spec. filename
	// (e.g. "hello.intent", or "module.wasm#cel.intent" for an embedded
	// intent) is for diagnostics; a Diagnostic with no File gets it.
	Parse(ctx context.Context, filename, mediaType string, content []byte) (*IntentSpec, []Diagnostic, error)
}

// IntentSpec is what an operator stated about a cell, typed.
type IntentSpec struct {
	// Cell is the cell's name. Required.
	Cell string
	// Module is the WebAssembly module the cell runs.
	Module ModuleRef
	// ABI is "reactor", "command", or "" to let the core decide.
	ABI string
	// Endpoints are where the cell is served.
	Endpoints []Endpoint
	// Replicas bound the number of live replicas.
	Replicas ReplicaBounds
	// Warm is how many replicas to keep ready beyond demand.
	Warm int
	// Objectives are service-level objectives the core keeps.
	Objectives []Objective
	// Rules are "when SIGNAL OP THRESHOLD then VERB" reflexes.
	Rules []Rule
	// Limits bound each request.
	Limits Limits
	// Grants give the cell host capabilities.
	Grants []Grant
	// AllowFrom lists identities allowed to call the cell, e.g.
	// "cell:frontend", "node:*".
	AllowFrom []string
	// Placement says where replicas may run.
	Placement Placement
	// DecayAfterIdle decays the cell to zero replicas after this long
	// idle; zero means never.
	DecayAfterIdle time.Duration
	// State says whether the cell's in-memory state outlives its
	// replicas; the zero value keeps nothing.
	State StatePolicy
	// Hosts are the host names the cell is served for, lowercase and
	// without a port; "*.example.com" matches any one label before
	// example.com. Empty means any host. With hosts, the cell answers
	// only requests for them, under its endpoints' paths (every path
	// when it has none).
	Hosts []string
}

// StatePolicy is `keep state [replicated every D]`: what becomes of a
// cell's in-memory state (its linear memory and globals). State is one per
// cell, kept for reactor cells only, and never crosses module versions (an
// upgrade starts fresh).
type StatePolicy struct {
	// Keep makes the state survive decay to zero, a node restart (saved
	// on drain, restored at start) and clones, on this node or onto a
	// peer: new replicas fork a live replica's state.
	Keep bool
	// ReplicateEvery, with Keep, ships the state's changed pages this
	// often to the peer that would take the cell over, so that it
	// survives the node's death; zero means not replicated. The default
	// parser accepts [MinReplicateEvery] to [MaxReplicateEvery].
	ReplicateEvery time.Duration
}

// Bounds of `keep state replicated every D` in the default intent
// language.
const (
	MinReplicateEvery = 100 * time.Millisecond
	MaxReplicateEvery = time.Hour
)

// ABI values of [IntentSpec.ABI].
const (
	// ABIReactor is a module celcore loads once and calls per request.
	ABIReactor = "reactor"
	// ABICommand is a WASI command run once per request.
	ABICommand = "command"
)

// ModuleRef names a cell's module.
type ModuleRef struct {
	// Path relative to the intent, e.g. "hello.wasm".
	Path string
	// SHA256 is the hex digest the module must have; empty means any.
	SHA256 string
}

// Endpoint is one place a cell is served.
type Endpoint struct {
	// Protocol, e.g. "http".
	Protocol string
	// Listen address, e.g. ":8080"; empty means the node's ingress.
	Listen string
	// Path prefix, e.g. "/hello".
	Path string
}

// ReplicaBounds bound a cell's live replicas.
type ReplicaBounds struct {
	// Min and Max bound the count; a zero Max means no upper bound was
	// stated.
	Min, Max int
}

// ObjectiveKind says what an [Objective] keeps under its threshold. The
// zero value is unspecified.
type ObjectiveKind int

// Objective kinds.
const (
	// LatencyP99 keeps the p99 latency under the threshold, in seconds.
	LatencyP99 ObjectiveKind = iota + 1
	// ErrorRate keeps the error rate under the threshold, a fraction 0..1.
	ErrorRate
)

// String returns "latency_p99", "error_rate" or "ObjectiveKind(N)".
func (k ObjectiveKind) String() string {
	switch k {
	case LatencyP99:
		return "latency_p99"
	case ErrorRate:
		return "error_rate"
	}
	return "ObjectiveKind(" + strconv.Itoa(int(k)) + ")"
}

// Objective is one service-level objective.
type Objective struct {
	// Kind says what is kept under the threshold.
	Kind ObjectiveKind
	// Threshold is in the kind's unit.
	Threshold float64
	// Line is the source line in the intent, for explanations.
	Line int
}

// Comparator compares a signal's value with a rule's threshold.
type Comparator string

// Comparators.
const (
	Greater        Comparator = ">"  // value > threshold
	GreaterOrEqual Comparator = ">=" // value >= threshold
	Less           Comparator = "<"  // value < threshold
	LessOrEqual    Comparator = "<=" // value <= threshold
	Equal          Comparator = "==" // value == threshold
	NotEqual       Comparator = "!=" // value != threshold
)

// Holds reports whether "value c threshold" is true; it is false for an
// unknown comparator.
func (c Comparator) Holds(value, threshold float64) bool {
	switch c {
	case Greater:
		return value > threshold
	case GreaterOrEqual:
		return value >= threshold
	case Less:
		return value < threshold
	case LessOrEqual:
		return value <= threshold
	case Equal:
		return value == threshold
	case NotEqual:
		return value != threshold
	}
	return false
}

// Rule is "when SIGNAL OP THRESHOLD [for WINDOW] then VERB [ARGS]
// [cooldown D]".
type Rule struct {
	// Name identifies the rule in the journal, e.g. "line 9".
	Name string
	// Signal is the signal the rule watches.
	Signal string
	// Comparator compares the signal's value with Threshold.
	Comparator Comparator
	// Threshold is the value the signal is compared with.
	Threshold float64
	// Window is how long the condition must hold before the rule fires.
	Window time.Duration
	// Verb is the verb the rule runs when it fires.
	Verb string
	// Args are the verb's arguments.
	Args []string
	// Cooldown is how long the rule stays quiet after firing.
	Cooldown time.Duration
	// Labels the signal must carry, e.g. {"port": "8080"}.
	Labels map[string]string
	// Line is the source line in the intent.
	Line int
}

// Limits bound each request of a cell.
type Limits struct {
	// RequestTime bounds one request's duration; zero means the default.
	RequestTime time.Duration
	// Memory bounds an instance's memory in bytes.
	Memory uint64
	// Concurrency bounds requests in flight per replica.
	Concurrency int
	// Body bounds a request's body in bytes (413 beyond); zero means the
	// node's default.
	Body uint64
	// KV is the cell's key-value store quota in bytes, keys and values
	// together (`limit kv`); zero means the node's default.
	KV uint64
}

// Grant gives a cell a host capability, e.g. "kv", "signal", or "call"
// with targets ["cell:auth"].
type Grant struct {
	// Capability is the capability's name.
	Capability string
	// Targets narrow it, e.g. the cells "call" may reach.
	Targets []string
}

// Placement says where a cell's replicas may run.
type Placement struct {
	// SpreadAcrossNodes puts replicas on as many nodes as possible.
	SpreadAcrossNodes bool
	// SpreadMinNodes is N of `spread across N nodes`: the fleet keeps the
	// cell on at least N live nodes (0: as many as the replicas ask).
	SpreadMinNodes int
	// PreferNodes are nodes to use first.
	PreferNodes []string
	// AvoidNodes are nodes not to use.
	AvoidNodes []string
}

// Severity is how bad a [Diagnostic] is. The zero value is unspecified.
type Severity int

// Severities.
const (
	// Error means the input cannot be used.
	Error Severity = iota + 1
	// Warning means the input can be used but is probably not what was
	// meant.
	Warning
)

// String returns "error", "warning" or "Severity(N)".
func (s Severity) String() string {
	switch s {
	case Error:
		return "error"
	case Warning:
		return "warning"
	}
	return "Severity(" + strconv.Itoa(int(s)) + ")"
}

// Diagnostic points at one problem in an intent.
type Diagnostic struct {
	// File is the file name the problem is in.
	File string
	// Line and Column are 1-based; zero when unknown.
	Line, Column int
	// Severity says whether the input can be used at all.
	Severity Severity
	// Message says what was found and what was expected.
	Message string
	// Hint says how to fix it, when the parser knows.
	Hint string
}

// String formats d as "file:line:col: message (hint)", leaving out the
// parts that are unknown.
func (d Diagnostic) String() string {
	var b strings.Builder
	b.WriteString(d.File)
	if d.Line > 0 {
		b.WriteString(":" + strconv.Itoa(d.Line))
		if d.Column > 0 {
			b.WriteString(":" + strconv.Itoa(d.Column))
		}
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	b.WriteString(d.Message)
	if d.Hint != "" {
		b.WriteString(" (" + d.Hint + ")")
	}
	return b.String()
}
