package reflex

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/celluster/celluster/core/signals"
)

// cellLabel is the label that scopes a reading to one cell.
const cellLabel = "cell"

// Decision is one firing of a rule.
type Decision struct {
	// Time is the arrival time of the reading that fired the rule.
	Time time.Time
	// Rule is the rule that fired. Its Labels and Args are shared with the
	// engine: read them, do not modify them.
	Rule Rule
	// Values are the readings that satisfied the condition: the firing
	// reading alone for a rule without a window, else the reading that
	// started the window and the firing reading, in that order.
	Values []signals.Reading
}

// RuleStatus is the state of one rule of a cell, for display. A rule
// reading several series (e.g. one per port) reports them together.
type RuleStatus struct {
	// Rule is a copy of the rule.
	Rule Rule
	// Holding is whether the condition currently holds for some series;
	// Since is when the earliest of those began holding (or was restarted
	// by a firing).
	Holding bool
	Since   time.Time
	// LastFired is when the rule last fired; QuietUntil is the end of its
	// cooldown. Both are zero if it never fired.
	LastFired  time.Time
	QuietUntil time.Time
	// LastValue is the value of the last reading the rule read, at
	// LastSeen (zero if it read none yet).
	LastValue float64
	LastSeen  time.Time
}

// Options configure an Engine.
type Options struct {
	// Clock returns the arrival time of readings; time.Now when nil.
	Clock func() time.Time
	// Aliases map a signal name to the name it stands for, e.g.
	// "host_cpu" -> "host.cpu". An alias is resolved once, in rules and in
	// readings alike. No aliases are needed for the cell signals: "cpu"
	// and "memory" in a rule read the cell's own cpu and memory readings.
	Aliases map[string]string
}

// Engine evaluates rules as readings arrive and reports the rules that
// fire. It is safe for concurrent use.
type Engine struct {
	fire    func(Decision)
	clock   func() time.Time
	aliases map[string]string

	// idx is the current, immutable rule index; Observe reads it without
	// locking and SetRules replaces it.
	idx atomic.Pointer[index]

	mu    sync.Mutex // serialises SetRules and RemoveCell; guards cells
	cells map[string][]*ruleState
}

// index finds the rules that read a reading. It is never modified once
// published.
type index struct {
	// cells holds each cell's rules by signal, in SetRules order.
	cells map[string]map[string][]*ruleState
	// nodeWide holds every cell's rules by signal, for readings without a
	// cell label.
	nodeWide map[string][]*ruleState
}

// ruleState is one rule in the engine and the state it carries between
// readings.
type ruleState struct {
	// Set on creation, never changed: what decides whether the rule
	// fires (all part of key).
	key       string // Rule.String()
	cell      string
	signal    string // Rule.Signal with its alias resolved
	labels    map[string]string
	op        Op
	threshold float64
	window    time.Duration
	cooldown  time.Duration

	mu         sync.Mutex
	rule       Rule // Name, Origin and Line may change in SetRules
	removed    bool
	holding    map[string]*series // series for which the condition holds
	last       *series            // the holding series read last, if any
	lastFired  time.Time
	quietUntil time.Time
	lastValue  float64
	lastSeen   time.Time
}

// series is a series of readings for which a rule's condition holds.
type series struct {
	key   string
	since time.Time
	first signals.Reading
}

// New returns an engine without rules that calls fire, synchronously from
// Observe, for every rule that fires. fire must not block; it may call
// the engine's methods. A nil fire discards decisions.
func New(fire func(Decision), opts Options) *Engine {
	if fire == nil {
		fire = func(Decision) {}
	}
	e := &Engine{fire: fire, clock: opts.Clock, aliases: maps.Clone(opts.Aliases), cells: map[string][]*ruleState{}}
	if e.clock == nil {
		e.clock = time.Now
	}
	e.idx.Store(&index{})
	return e
}

// SetRules replaces the rules of cell with rules (setting each Rule.Cell
// to cell). A rule that is kept unchanged — one with the same String() as
// a current rule — keeps its window and cooldown state and takes the new
// Name, Origin and Line; removed rules are dropped with their state and
// fire no more once SetRules returns. No rules removes the cell.
func (e *Engine) SetRules(cell string, rules []Rule) {
	e.mu.Lock()
	defer e.mu.Unlock()

	old := e.cells[cell]
	pool := make(map[string][]*ruleState, len(old))
	for _, st := range old {
		pool[st.key] = append(pool[st.key], st)
	}
	next := make([]*ruleState, 0, len(rules))
	for _, r := range rules {
		r.Cell = cell
		r.Labels = maps.Clone(r.Labels)
		r.Args = slices.Clone(r.Args)
		k := r.String()
		if same := pool[k]; len(same) > 0 {
			st := same[0]
			pool[k] = same[1:]
			st.mu.Lock()
			st.rule = r
			st.mu.Unlock()
			next = append(next, st)
			continue
		}
		next = append(next, e.newRuleState(r, k))
	}

	cur := e.idx.Load()
	idx := &index{cells: maps.Clone(cur.cells), nodeWide: maps.Clone(cur.nodeWide)}
	if idx.cells == nil {
		idx.cells = map[string]map[string][]*ruleState{}
		idx.nodeWide = map[string][]*ruleState{}
	}
	bySignal := map[string][]*ruleState{}
	for _, st := range next {
		bySignal[st.signal] = append(bySignal[st.signal], st)
	}
	if len(next) == 0 {
		delete(idx.cells, cell)
	} else {
		idx.cells[cell] = bySignal
	}
	affected := map[string]bool{}
	for _, st := range old {
		affected[st.signal] = true
	}
	for name := range bySignal {
		affected[name] = true
	}
	for name := range affected {
		prev, mine := idx.nodeWide[name], bySignal[name]
		all := make([]*ruleState, 0, len(prev)+len(mine))
		for _, st := range prev {
			if st.cell != cell {
				all = append(all, st)
			}
		}
		all = append(all, mine...)
		if len(all) == 0 {
			delete(idx.nodeWide, name)
		} else {
			idx.nodeWide[name] = all
		}
	}
	e.idx.Store(idx)
	if len(next) == 0 {
		delete(e.cells, cell)
	} else {
		e.cells[cell] = next
	}

	// Readings that loaded the previous index may still reach removed
	// rules: make them skip.
	for _, same := range pool {
		for _, st := range same {
			st.mu.Lock()
			st.removed = true
			st.mu.Unlock()
		}
	}
}

// RemoveCell drops every rule of cell and its state.
func (e *Engine) RemoveCell(cell string) { e.SetRules(cell, nil) }

func (e *Engine) newRuleState(r Rule, key string) *ruleState {
	sig := r.Signal
	if a, ok := e.aliases[sig]; ok {
		sig = a
	}
	return &ruleState{
		key: key, cell: r.Cell, signal: sig, labels: r.Labels, op: r.Op, threshold: r.Threshold,
		window: r.Window, cooldown: r.Cooldown, rule: r,
	}
}

// Observe evaluates the rules that read the given readings, in order, all
// arriving at one time from the Clock, and calls fire for each rule that
// fires. A reading labelled cell=X is read by cell X's rules on its signal;
// a reading without a cell label by every cell's rules on its signal; in
// both cases only by rules whose Labels it carries. The engine keeps
// readings (and their label maps): do not modify them afterwards.
func (e *Engine) Observe(rs []signals.Reading) {
	idx := e.idx.Load()
	if len(rs) == 0 || len(idx.nodeWide) == 0 {
		return
	}
	t := e.clock()
	var kb [64]byte
	for i := range rs {
		r := &rs[i]
		name := r.Name
		if a, ok := e.aliases[name]; ok {
			name = a
		}
		var rules []*ruleState
		cell, hasCell := r.Labels[cellLabel]
		if hasCell {
			rules = idx.cells[cell][name]
		} else {
			rules = idx.nodeWide[name]
		}
		key, keyed := kb[:0], false
		for _, st := range rules {
			if !subset(st.labels, r.Labels) {
				continue
			}
			if !keyed {
				key, keyed = appendSeriesKey(kb[:0], r.Labels, hasCell), true
			}
			if d, ok := st.observe(key, r, t); ok {
				e.fire(d)
			}
		}
	}
}

// observe applies one reading of the series key, arriving at t, to the
// rule, and returns the decision if the rule fires. See the package
// documentation for the semantics.
func (st *ruleState) observe(key []byte, r *signals.Reading, t time.Time) (Decision, bool) {
	holds := st.op.holds(r.Value, st.threshold)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.removed {
		return Decision{}, false
	}
	st.lastValue, st.lastSeen = r.Value, t
	s := st.last
	if s == nil || s.key != string(key) {
		s = st.holding[string(key)]
	}
	if !holds {
		if s != nil {
			delete(st.holding, s.key)
			if st.last == s {
				st.last = nil
			}
		}
		return Decision{}, false
	}
	if s == nil {
		if st.holding == nil {
			st.holding = map[string]*series{}
		}
		s = &series{key: string(key), since: t, first: *r}
		st.holding[s.key] = s
	}
	st.last = s
	if t.Before(st.quietUntil) || t.Sub(s.since) < st.window {
		return Decision{}, false
	}
	d := Decision{Time: t, Rule: st.rule}
	if st.window > 0 {
		d.Values = []signals.Reading{s.first, *r}
	} else {
		d.Values = []signals.Reading{*r}
	}
	st.lastFired, st.quietUntil = t, t.Add(st.cooldown)
	s.since, s.first = t, *r
	return d, true
}

// Status returns the state of cell's rules, in SetRules order; nil for a
// cell without rules.
func (e *Engine) Status(cell string) []RuleStatus {
	e.mu.Lock()
	rules := e.cells[cell]
	e.mu.Unlock()
	if len(rules) == 0 {
		return nil
	}
	out := make([]RuleStatus, 0, len(rules))
	for _, st := range rules {
		st.mu.Lock()
		rs := RuleStatus{
			Rule:       st.rule,
			Holding:    len(st.holding) > 0,
			LastFired:  st.lastFired,
			QuietUntil: st.quietUntil,
			LastValue:  st.lastValue,
			LastSeen:   st.lastSeen,
		}
		for _, s := range st.holding {
			if rs.Since.IsZero() || s.since.Before(rs.Since) {
				rs.Since = s.since
			}
		}
		st.mu.Unlock()
		rs.Rule.Labels = maps.Clone(rs.Rule.Labels)
		rs.Rule.Args = slices.Clone(rs.Rule.Args)
		out = append(out, rs)
	}
	return out
}

// subset reports whether every label of want is in have with the same
// value.
func subset(want, have map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

// appendSeriesKey appends the identity of a reading's series among the
// readings one rule reads: whether it carries a cell label (its value is
// always the rule's cell), then its other labels, sorted. It does not
// allocate for readings with at most 8 labels that fit in b. hasCell says
// whether labels has a cell label.
func appendSeriesKey(b []byte, labels map[string]string, hasCell bool) []byte {
	n := len(labels)
	if hasCell {
		b = append(b, 'c')
		n--
	} else {
		b = append(b, 'n')
	}
	if n == 0 {
		return b
	}
	var ka [8]string
	keys := ka[:0]
	for k := range labels {
		if k != cellLabel {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		b = append(b, 0)
		b = append(b, k...)
		b = append(b, 0)
		b = append(b, labels[k]...)
	}
	return b
}
