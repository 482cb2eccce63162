package reflex

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"

	pluginapiv1 "github.com/celluster/celluster/pluginapi/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Built-in defaults, used for the fields of Defaults left zero.
const (
	DefaultMin  = 1
	DefaultMax  = 8
	DefaultWarm = 1
)

// Defaults are the node's replica defaults for intents that do not state
// them. A zero field means the built-in DefaultMin, DefaultMax or
// DefaultWarm.
type Defaults struct {
	Min, Max, Warm int
}

// Program is what one cell's intent compiles to: its rules and the replica
// bounds the core keeps.
type Program struct {
	Cell  string
	Rules []Rule
	// Min and Max bound the live replicas; Warm is kept ready beyond demand.
	Min, Max, Warm int
	// DecayIdle is "decay after D idle"; zero means never.
	DecayIdle time.Duration
	// KeepState is "keep state": the cell's in-memory state survives
	// decay to zero, node restarts and clones (reactor cells only).
	KeepState bool
	// StateEvery is D of "keep state replicated every D": how often the
	// state's changed pages are shipped to the survivor; zero means not
	// replicated. Non-zero only with KeepState, within
	// [MinStateEvery, MaxStateEvery].
	StateEvery time.Duration
	// UpgradeArgs are the health bounds an upgrade is checked against,
	// e.g. "max-p99=0.02", "max-error-rate=0.01".
	UpgradeArgs []string
}

// Bounds of StateEvery, as the default intent parser enforces them
// (plugin.MinReplicateEvery and plugin.MaxReplicateEvery): more often
// costs the node more than it saves, less often keeps too old a copy.
const (
	MinStateEvery = 100 * time.Millisecond
	MaxStateEvery = time.Hour
)

// Names of the rules Compile generates from objectives and "decay after".
const (
	RuleP99Clone      = "p99-clone"
	RuleP99Decay      = "p99-decay"
	RuleErrorsReroute = "errors-reroute"
	RuleIdleDecay     = "idle-decay"
)

// Verbs a rule may run.
var verbs = []string{"spawn", "clone", "reroute", "upgrade", "decay"}

// Compile turns a cell's intent into its Program, as the table in the
// package documentation describes. cell names the cell (spec.Cell when
// empty). Every problem found is reported, each naming its rule and line.
func Compile(cell string, spec *pluginapiv1.IntentSpec, defaults Defaults) (Program, error) {
	if spec == nil {
		return Program{}, errors.New("reflex: compile: no intent spec")
	}
	if cell == "" {
		cell = spec.GetCell()
	}
	if cell == "" {
		return Program{}, errors.New("reflex: compile: no cell name")
	}
	p := Program{Cell: cell}
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("reflex: compile %s: "+format, append([]any{cell}, args...)...))
	}

	// Replicas and warm.
	if r := spec.GetReplicas(); r.GetMax() > 0 {
		p.Min, p.Max = int(r.GetMin()), int(r.GetMax())
		if p.Min > p.Max {
			fail("keep replicas %d..%d: minimum above maximum", p.Min, p.Max)
		}
	} else {
		p.Min, p.Max = orDefault(defaults.Min, DefaultMin), orDefault(defaults.Max, DefaultMax)
		p.Max = max(p.Max, p.Min)
	}
	p.Warm = int(spec.GetWarm())
	if p.Warm == 0 {
		p.Warm = orDefault(defaults.Warm, DefaultWarm)
	}
	p.Warm = min(max(p.Warm, p.Min), max(p.Max, p.Min))

	// Objectives.
	seen := map[pluginapiv1.ObjectiveKind]int{}
	for _, o := range spec.GetObjectives() {
		line, t := int(o.GetLine()), o.GetThreshold()
		if first, dup := seen[o.GetKind()]; dup {
			fail("objective%s: a second %s objective (the first is%s)", atLine(line), objectiveName(o.GetKind()), atLine(first))
			continue
		}
		seen[o.GetKind()] = line
		switch o.GetKind() {
		case pluginapiv1.ObjectiveKind_OBJECTIVE_KIND_LATENCY_P99:
			if math.IsNaN(t) || math.IsInf(t, 0) || t <= 0 {
				fail("keep p99 latency%s: threshold %v is not a positive number of seconds", atLine(line), t)
				continue
			}
			origin := "keep p99 latency under " + formatSeconds(t) + atLine(line)
			p.Rules = append(p.Rules,
				Rule{Name: RuleP99Clone, Signal: "latency.p99", Op: GT, Threshold: t,
					Window: 2 * time.Second, Cooldown: 5 * time.Second, Verb: "clone", Args: []string{"1"}},
				Rule{Name: RuleP99Decay, Signal: "latency.p99", Op: LT, Threshold: t / 2,
					Window: 30 * time.Second, Cooldown: 30 * time.Second, Verb: "decay", Args: []string{"1"}},
			)
			setOrigin(p.Rules[len(p.Rules)-2:], origin, line)
			p.UpgradeArgs = append(p.UpgradeArgs, fmt.Sprintf("max-p99=%g", t))
		case pluginapiv1.ObjectiveKind_OBJECTIVE_KIND_ERROR_RATE:
			if math.IsNaN(t) || t <= 0 || t > 1 {
				fail("keep error rate%s: threshold %v is not a fraction in (0, 1]", atLine(line), t)
				continue
			}
			p.Rules = append(p.Rules, Rule{Name: RuleErrorsReroute, Signal: "version.errors.rate", Op: GT,
				Threshold: round12(t * 100), Window: 2 * time.Second, Cooldown: 10 * time.Second,
				Verb: "reroute", Args: []string{"away"}})
			setOrigin(p.Rules[len(p.Rules)-1:], "keep error rate under "+formatPercent(t)+atLine(line), line)
			p.UpgradeArgs = append(p.UpgradeArgs, fmt.Sprintf("max-error-rate=%g", t))
		default:
			fail("objective%s: unknown kind %v", atLine(line), o.GetKind())
		}
	}

	// Decay after idle.
	if dd, err := duration(spec.GetDecayAfterIdle()); err != nil {
		fail("decay after idle: %w", err)
	} else if dd > 0 {
		p.DecayIdle = dd
		p.Rules = append(p.Rules, Rule{Name: RuleIdleDecay, Signal: "idle", Op: GE,
			Threshold: dd.Seconds(), Cooldown: dd, Verb: "decay", Args: []string{"all"},
			Origin: "decay after " + formatDuration(dd) + " idle"})
	}

	// Kept state.
	if st := spec.GetState(); st != nil {
		every, err := duration(st.GetReplicateEvery())
		switch {
		case err != nil:
			fail("keep state replicated every: %w", err)
		case every > 0 && !st.GetKeep():
			fail("keep state replicated every %s: replicated but not kept", formatDuration(every))
		case every > 0 && (every < MinStateEvery || every > MaxStateEvery):
			fail("keep state replicated every %s: not from %s to %s", formatDuration(every), formatDuration(MinStateEvery), formatDuration(MaxStateEvery))
		case st.GetKeep() && spec.GetAbi() == pluginapiv1.ABI_ABI_COMMAND:
			fail("keep state: the cell is a command cell (abi command); state is kept only for reactor cells")
		default:
			p.KeepState, p.StateEvery = st.GetKeep(), every
		}
	}

	// Explicit rules.
	for i, sr := range spec.GetRules() {
		r, err := compileRule(i, sr)
		if err != nil {
			fail("%w", err)
			continue
		}
		p.Rules = append(p.Rules, r)
	}

	names := map[string]int{}
	for i := range p.Rules {
		r := &p.Rules[i]
		r.Cell = cell
		if first, dup := names[r.Name]; dup {
			fail("rule %q%s: name already used by the rule from %s", r.Name, atLine(r.Line), p.Rules[first].Origin)
			continue
		}
		names[r.Name] = i
	}
	if err := errors.Join(errs...); err != nil {
		return Program{}, err
	}
	return p, nil
}

// compileRule translates the i-th (0-based) explicit rule of a spec.
func compileRule(i int, sr *pluginapiv1.Rule) (Rule, error) {
	line := int(sr.GetLine())
	r := Rule{
		Name:      sr.GetName(),
		Signal:    sr.GetSignal(),
		Threshold: sr.GetThreshold(),
		Verb:      sr.GetVerb(),
		Args:      slices.Clone(sr.GetArgs()),
		Line:      line,
	}
	if r.Name == "" {
		if line > 0 {
			r.Name = "line " + strconv.Itoa(line)
		} else {
			r.Name = "rule " + strconv.Itoa(i+1)
		}
	}
	if len(sr.GetLabels()) > 0 {
		r.Labels = maps.Clone(sr.GetLabels())
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("rule %q%s: "+format, append([]any{r.Name, atLine(line)}, args...)...))
	}
	if r.Signal == "" {
		bad("no signal")
	}
	switch sr.GetComparator() {
	case pluginapiv1.Comparator_COMPARATOR_GT:
		r.Op = GT
	case pluginapiv1.Comparator_COMPARATOR_GE:
		r.Op = GE
	case pluginapiv1.Comparator_COMPARATOR_LT:
		r.Op = LT
	case pluginapiv1.Comparator_COMPARATOR_LE:
		r.Op = LE
	case pluginapiv1.Comparator_COMPARATOR_EQ:
		r.Op = EQ
	case pluginapiv1.Comparator_COMPARATOR_NE:
		r.Op = NE
	default:
		bad("unknown comparator %v", sr.GetComparator())
	}
	if math.IsNaN(r.Threshold) {
		bad("threshold is NaN")
	}
	if !slices.Contains(verbs, r.Verb) {
		bad("unknown verb %q (verbs: spawn, clone, reroute, upgrade, decay)", r.Verb)
	}
	var err error
	if r.Window, err = duration(sr.GetWindow()); err != nil {
		bad("window: %w", err)
	}
	if r.Cooldown, err = duration(sr.GetCooldown()); err != nil {
		bad("cooldown: %w", err)
	}
	if err := errors.Join(errs...); err != nil {
		return Rule{}, err
	}
	r.Origin = r.String() + atLine(line)
	return r, nil
}

// duration converts an optional protobuf duration, rejecting invalid and
// negative ones.
func duration(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, err
	}
	if v := d.AsDuration(); v >= 0 {
		return v, nil
	}
	return 0, fmt.Errorf("negative duration %s", d.AsDuration())
}

func setOrigin(rs []Rule, origin string, line int) {
	for i := range rs {
		rs[i].Origin, rs[i].Line = origin, line
	}
}

func orDefault(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// atLine is " (line N)" for diagnostics, or "" when the line is unknown.
func atLine(line int) string {
	if line <= 0 {
		return ""
	}
	return " (line " + strconv.Itoa(line) + ")"
}

func objectiveName(k pluginapiv1.ObjectiveKind) string {
	switch k {
	case pluginapiv1.ObjectiveKind_OBJECTIVE_KIND_LATENCY_P99:
		return "p99 latency"
	case pluginapiv1.ObjectiveKind_OBJECTIVE_KIND_ERROR_RATE:
		return "error rate"
	}
	return k.String()
}

// formatSeconds renders seconds as the duration an operator would write,
// e.g. 0.02 -> "20ms".
func formatSeconds(s float64) string {
	d := time.Duration(math.Round(s * 1e9))
	return formatDuration(d)
}

// formatPercent renders a fraction as the shortest percentage that reads
// back to it, e.g. 0.01 -> "1%", 0.005 -> "0.5%".
func formatPercent(f float64) string {
	for prec := 0; prec <= 17; prec++ {
		s := strconv.FormatFloat(f*100, 'f', prec, 64)
		if v, err := strconv.ParseFloat(s, 64); err == nil && v/100 == f {
			return s + "%"
		}
	}
	return strconv.FormatFloat(f*100, 'g', -1, 64) + "%"
}

// round12 rounds f to 12 significant digits, so 0.07*100 is 7 and not
// 7.000000000000001.
func round12(f float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'g', 12, 64), 64)
	return v
}
