package reflex

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/celluster/celluster/core/signals"
	pluginapiv1 "github.com/celluster/celluster/pluginapi/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// helloSpec is plugins/intent/testdata/hello.intent as the parser types it:
//
//	1  cell hello
//	2  module hello.wasm
//	3  serve http :8080 /hello
//	4  keep replicas 1..8
//	5  keep warm 1
//	6  keep p99 latency under 20ms
//	7  keep error rate under 1%
//	8  limit request time 2s
//	9  limit memory 64MiB
//	10 when cpu > 80% for 3s then clone cooldown 10s
//	11 decay after 5m idle
func helloSpec() *pluginapiv1.IntentSpec {
	return &pluginapiv1.IntentSpec{
		Cell:     "hello",
		Module:   &pluginapiv1.ModuleRef{Path: "hello.wasm"},
		Replicas: &pluginapiv1.ReplicaBounds{Min: 1, Max: 8},
		Warm:     1,
		Objectives: []*pluginapiv1.Objective{
			{Kind: pluginapiv1.ObjectiveKind_OBJECTIVE_KIND_LATENCY_P99, Threshold: 0.02, Line: 6},
			{Kind: pluginapiv1.ObjectiveKind_OBJECTIVE_KIND_ERROR_RATE, Threshold: 0.01, Line: 7},
		},
		Rules: []*pluginapiv1.Rule{{
			Name: "line 10", Signal: "cpu", Comparator: pluginapiv1.Comparator_COMPARATOR_GT, Threshold: 80,
			Window: durationpb.New(3 * time.Second), Verb: "clone", Cooldown: durationpb.New(10 * time.Second), Line: 10,
		}},
		DecayAfterIdle: durationpb.New(5 * time.Minute),
	}
}

func TestCompileHello(t *testing.T) {
	p, err := Compile("hello", helloSpec(), Defaults{})
	if err != nil {
		t.Fatal(err)
	}
	p99 := "keep p99 latency under 20ms (line 6)"
	want := Program{
		Cell: "hello",
		Rules: []Rule{
			{Cell: "hello", Name: "p99-clone", Signal: "latency.p99", Op: GT, Threshold: 0.02, Window: 2 * time.Second,
				Cooldown: 5 * time.Second, Verb: "clone", Args: []string{"1"}, Origin: p99, Line: 6},
			{Cell: "hello", Name: "p99-decay", Signal: "latency.p99", Op: LT, Threshold: 0.01, Window: 30 * time.Second,
				Cooldown: 30 * time.Second, Verb: "decay", Args: []string{"1"}, Origin: p99, Line: 6},
			{Cell: "hello", Name: "errors-reroute", Signal: "version.errors.rate", Op: GT, Threshold: 1, Window: 2 * time.Second,
				Cooldown: 10 * time.Second, Verb: "reroute", Args: []string{"away"}, Origin: "keep error rate under 1% (line 7)", Line: 7},
			{Cell: "hello", Name: "idle-decay", Signal: "idle", Op: GE, Threshold: 300, Cooldown: 5 * time.Minute,
				Verb: "decay", Args: []string{"all"}, Origin: "decay after 5m idle"},
			{Cell: "hello", Name: "line 10", Signal: "cpu", Op: GT, Threshold: 80, Window: 3 * time.Second,
				Cooldown: 10 * time.Second, Verb: "clone", Origin: "when cpu > 80 for 3s then clone cooldown 10s (line 10)", Line: 10},
		},
		Min: 1, Max: 8, Warm: 1,
		DecayIdle:   5 * time.Minute,
		UpgradeArgs: []string{"max-p99=0.02", "max-error-rate=0.01"},
	}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("Compile(hello) =\n%+v\nwant\n%+v", p, want)
	}
	var got []string
	for _, r := range p.Rules {
		got = append(got, r.String())
	}
	wantStrings := []string{
		"when latency.p99 > 0.02 for 2s then clone 1 cooldown 5s",
		"when latency.p99 < 0.01 for 30s then decay 1 cooldown 30s",
		"when version.errors.rate > 1 for 2s then reroute away cooldown 10s",
		"when idle >= 300 then decay all cooldown 5m",
		"when cpu > 80 for 3s then clone cooldown 10s",
	}
	if !reflect.DeepEqual(got, wantStrings) {
		t.Fatalf("rules:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantStrings, "\n"))
	}
}

// TestCompiledP99Hysteresis runs the p99 objective's rules: above T for 2s
// clones, below T/2 for 30s decays, and the band between does nothing.
func TestCompiledP99Hysteresis(t *testing.T) {
	spec := &pluginapiv1.IntentSpec{Cell: "hello", Objectives: []*pluginapiv1.Objective{
		{Kind: pluginapiv1.ObjectiveKind_OBJECTIVE_KIND_LATENCY_P99, Threshold: 0.02, Line: 5},
	}}
	p, err := Compile("hello", spec, Defaults{})
	if err != nil {
		t.Fatal(err)
	}
	e, c, rec := newTestEngine(Options{})
	e.SetRules(p.Cell, p.Rules)
	t0 := c.Now()
	p99 := func(v float64) signals.Reading { return reading("latency.p99", v, "cell", "hello") }
	// In the band [T/2, T]: for a minute, nothing holds and nothing fires.
	for s := 0; s <= 60; s++ {
		v := []float64{0.01, 0.015, 0.02}[s%3]
		if ds := at(e, c, rec, t0.Add(time.Duration(s)*time.Second), p99(v)); len(ds) != 0 {
			t.Fatalf("p99 %v in the band fired %+v", v, ds)
		}
		for _, st := range e.Status("hello") {
			if st.Holding {
				t.Fatalf("p99 %v in the band: %s holding", v, st.Rule.Name)
			}
		}
	}
	t1 := t0.Add(61 * time.Second)
	at(e, c, rec, t1, p99(0.021))
	ds := at(e, c, rec, t1.Add(2*time.Second), p99(0.03))
	if len(ds) != 1 || ds[0].Rule.Name != "p99-clone" || ds[0].Rule.Origin != "keep p99 latency under 20ms (line 5)" {
		t.Fatalf("above T for 2s: %+v, want p99-clone", ds)
	}
	t2 := t1.Add(10 * time.Second)
	at(e, c, rec, t2, p99(0.0099))
	if ds := at(e, c, rec, t2.Add(30*time.Second-time.Nanosecond), p99(0.001)); len(ds) != 0 {
		t.Fatalf("below T/2 for 30s-1ns: %+v", ds)
	}
	ds = at(e, c, rec, t2.Add(30*time.Second), p99(0.001))
	if len(ds) != 1 || ds[0].Rule.Name != "p99-decay" || ds[0].Rule.Args[0] != "1" {
		t.Fatalf("below T/2 for 30s: %+v, want p99-decay", ds)
	}
}

func TestCompileErrorRate(t *testing.T) {
	for _, tc := range []struct {
		rate      float64
		threshold float64
		origin    string
		arg       string
	}{
		{0.01, 1, "keep error rate under 1% (line 3)", "max-error-rate=0.01"},
		{0.005, 0.5, "keep error rate under 0.5% (line 3)", "max-error-rate=0.005"},
		{0.07, 7, "keep error rate under 7% (line 3)", "max-error-rate=0.07"},
		{1, 100, "keep error rate under 100% (line 3)", "max-error-rate=1"},
	} {
		spec := &pluginapiv1.IntentSpec{Objectives: []*pluginapiv1.Objective{
			{Kind: pluginapiv1.ObjectiveKind_OBJECTIVE_KIND_ERROR_RATE, Threshold: tc.rate, Line: 3},
		}}
		p, err := Compile("api", spec, Defaults{})
		if err != nil {
			t.Fatal(err)
		}
		want := []Rule{{Cell: "api", Name: "errors-reroute", Signal: "version.errors.rate", Op: GT, Threshold: tc.threshold,
			Window: 2 * time.Second, Cooldown: 10 * time.Second, Verb: "reroute", Args: []string{"away"}, Origin: tc.origin, Line: 3}}
		if !reflect.DeepEqual(p.Rules, want) {
			t.Errorf("error rate %v: rules %+v, want %+v", tc.rate, p.Rules, want)
		}
		if !reflect.DeepEqual(p.UpgradeArgs, []string{tc.arg}) {
			t.Errorf("error rate %v: UpgradeArgs %q, want [%q]", tc.rate, p.UpgradeArgs, tc.arg)
		}
	}
}

func TestCompiledErrorsRerouteReadsEachVersion(t *testing.T) {
	spec := &pluginapiv1.IntentSpec{Objectives: []*pluginapiv1.Objective{
		{Kind: pluginapiv1.ObjectiveKind_OBJECTIVE_KIND_ERROR_RATE, Threshold: 0.01, Line: 3},
	}}
	p, err := Compile("api", spec, Defaults{})
	if err != nil {
		t.Fatal(err)
	}
	e, c, rec := newTestEngine(Options{})
	e.SetRules(p.Cell, p.Rules)
	t0 := c.Now()
	v := func(version string, pct float64) signals.Reading {
		return reading("version.errors.rate", pct, "cell", "api", "version", version)
	}
	at(e, c, rec, t0, v("aaaaaaaaaaaa", 0), v("bbbbbbbbbbbb", 5))
	at(e, c, rec, t0.Add(time.Second), v("aaaaaaaaaaaa", 2), v("bbbbbbbbbbbb", 5))
	ds := at(e, c, rec, t0.Add(2*time.Second), v("aaaaaaaaaaaa", 2), v("bbbbbbbbbbbb", 5))
	if len(ds) != 1 || ds[0].Values[1].Labels["version"] != "bbbbbbbbbbbb" || ds[0].Rule.Args[0] != "away" {
		t.Fatalf("decisions %+v, want one reroute away from version bbbbbbbbbbbb", ds)
	}
}

func TestCompileDecayAfterIdle(t *testing.T) {
	spec := &pluginapiv1.IntentSpec{DecayAfterIdle: durationpb.New(90 * time.Second)}
	p, err := Compile("hello", spec, Defaults{})
	if err != nil {
		t.Fatal(err)
	}
	want := []Rule{{Cell: "hello", Name: "idle-decay", Signal: "idle", Op: GE, Threshold: 90, Cooldown: 90 * time.Second,
		Verb: "decay", Args: []string{"all"}, Origin: "decay after 1m30s idle"}}
	if !reflect.DeepEqual(p.Rules, want) || p.DecayIdle != 90*time.Second || p.UpgradeArgs != nil {
		t.Fatalf("Compile = %+v, want rules %+v and DecayIdle 90s", p, want)
	}
	e, c, rec := newTestEngine(Options{})
	e.SetRules(p.Cell, p.Rules)
	t0 := c.Now()
	if ds := at(e, c, rec, t0, reading("idle", 89.999, "cell", "hello")); len(ds) != 0 {
		t.Fatalf("idle 89.999s fired %+v", ds)
	}
	if ds := at(e, c, rec, t0.Add(time.Second), reading("idle", 90, "cell", "hello")); len(ds) != 1 {
		t.Fatalf("idle 90s: %d decisions, want 1", len(ds))
	}
	if ds := at(e, c, rec, t0.Add(91*time.Second-time.Nanosecond), reading("idle", 180, "cell", "hello")); len(ds) != 0 {
		t.Fatalf("decayed again inside the cooldown: %+v", ds)
	}
}

func TestCompileKeepState(t *testing.T) {
	keep := func(k bool, every time.Duration) *pluginapiv1.StatePolicy {
		st := &pluginapiv1.StatePolicy{Keep: k}
		if every != 0 {
			st.ReplicateEvery = durationpb.New(every)
		}
		return st
	}
	for _, tc := range []struct {
		name  string
		abi   pluginapiv1.ABI
		state *pluginapiv1.StatePolicy
		keep  bool
		every time.Duration
	}{
		{"unstated", 0, nil, false, 0},
		{"empty", 0, &pluginapiv1.StatePolicy{}, false, 0},
		{"keep", 0, keep(true, 0), true, 0},
		{"keep reactor", pluginapiv1.ABI_ABI_REACTOR, keep(true, 0), true, 0},
		{"replicated", 0, keep(true, time.Second), true, time.Second},
		{"replicated fastest", 0, keep(true, MinStateEvery), true, 100 * time.Millisecond},
		{"replicated slowest", pluginapiv1.ABI_ABI_REACTOR, keep(true, MaxStateEvery), true, time.Hour},
		{"not kept in a command cell", pluginapiv1.ABI_ABI_COMMAND, &pluginapiv1.StatePolicy{}, false, 0},
	} {
		spec := &pluginapiv1.IntentSpec{Cell: "kv", Abi: tc.abi, State: tc.state}
		p, err := Compile("", spec, Defaults{})
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		want := Program{Cell: "kv", Min: 1, Max: 8, Warm: 1, KeepState: tc.keep, StateEvery: tc.every}
		if !reflect.DeepEqual(p, want) {
			t.Errorf("%s: Compile = %+v, want %+v", tc.name, p, want)
		}
	}
}

func TestCompileNoObjectives(t *testing.T) {
	p, err := Compile("plain", &pluginapiv1.IntentSpec{Cell: "plain", Module: &pluginapiv1.ModuleRef{Path: "plain.wasm"}}, Defaults{})
	if err != nil {
		t.Fatal(err)
	}
	want := Program{Cell: "plain", Min: 1, Max: 8, Warm: 1}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("Compile = %+v, want %+v", p, want)
	}
}

func TestCompileReplicasAndWarm(t *testing.T) {
	for _, tc := range []struct {
		name           string
		replicas       *pluginapiv1.ReplicaBounds
		warm           uint32
		defaults       Defaults
		min, max, want int
	}{
		{"unstated", nil, 0, Defaults{}, 1, 8, 1},
		{"node defaults", nil, 0, Defaults{Min: 2, Max: 4, Warm: 3}, 2, 4, 3},
		{"partial node defaults", nil, 0, Defaults{Max: 16}, 1, 16, 1},
		{"stated range", &pluginapiv1.ReplicaBounds{Min: 2, Max: 6}, 4, Defaults{Min: 3, Max: 3, Warm: 3}, 2, 6, 4},
		{"stated exact", &pluginapiv1.ReplicaBounds{Min: 3, Max: 3}, 0, Defaults{}, 3, 3, 3},
		{"warm raised to min", &pluginapiv1.ReplicaBounds{Min: 3, Max: 8}, 1, Defaults{}, 3, 8, 3},
		{"default warm raised to min", &pluginapiv1.ReplicaBounds{Min: 3, Max: 8}, 0, Defaults{}, 3, 8, 3},
		{"warm lowered to max", &pluginapiv1.ReplicaBounds{Min: 1, Max: 4}, 0, Defaults{Warm: 10}, 1, 4, 4},
		{"min zero keeps warm", &pluginapiv1.ReplicaBounds{Min: 0, Max: 4}, 0, Defaults{}, 0, 4, 1},
		{"min zero keeps stated warm", &pluginapiv1.ReplicaBounds{Min: 0, Max: 4}, 2, Defaults{}, 0, 4, 2},
		{"default max raised to min", nil, 0, Defaults{Min: 10}, 10, 10, 10},
		{"max zero is unstated", &pluginapiv1.ReplicaBounds{Min: 5}, 0, Defaults{}, 1, 8, 1},
	} {
		p, err := Compile("c", &pluginapiv1.IntentSpec{Replicas: tc.replicas, Warm: tc.warm}, tc.defaults)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if p.Min != tc.min || p.Max != tc.max || p.Warm != tc.want {
			t.Errorf("%s: Min, Max, Warm = %d, %d, %d; want %d, %d, %d", tc.name, p.Min, p.Max, p.Warm, tc.min, tc.max, tc.want)
		}
	}
}

func TestCompileExplicitRules(t *testing.T) {
	comparators := map[pluginapiv1.Comparator]Op{
		pluginapiv1.Comparator_COMPARATOR_GT: GT, pluginapiv1.Comparator_COMPARATOR_GE: GE,
		pluginapiv1.Comparator_COMPARATOR_LT: LT, pluginapiv1.Comparator_COMPARATOR_LE: LE,
		pluginapiv1.Comparator_COMPARATOR_EQ: EQ, pluginapiv1.Comparator_COMPARATOR_NE: NE,
	}
	for pc, op := range comparators {
		spec := &pluginapiv1.IntentSpec{Rules: []*pluginapiv1.Rule{{Name: "line 4", Signal: "queue", Comparator: pc, Threshold: 0,
			Verb: "decay", Window: durationpb.New(5 * time.Minute), Line: 4}}}
		p, err := Compile("c", spec, Defaults{})
		if err != nil {
			t.Fatal(err)
		}
		if r := p.Rules[0]; r.Op != op || r.Origin != "when queue "+op.String()+" 0 for 5m then decay (line 4)" {
			t.Errorf("comparator %v: Op %v, Origin %q", pc, r.Op, r.Origin)
		}
	}

	labels := map[string]string{"port": "8080", "route": "/api"}
	spec := &pluginapiv1.IntentSpec{Rules: []*pluginapiv1.Rule{
		{Name: "line 9", Signal: "latency.p99", Labels: labels, Comparator: pluginapiv1.Comparator_COMPARATOR_GE,
			Threshold: 0.02, Window: durationpb.New(30 * time.Second), Verb: "upgrade", Args: []string{"rollback", "now"},
			Cooldown: durationpb.New(10 * time.Minute), Line: 9},
		{Signal: "host.memory.available", Comparator: pluginapiv1.Comparator_COMPARATOR_LT, Threshold: 268435456, Verb: "reroute", Line: 12},
		{Signal: "rps", Comparator: pluginapiv1.Comparator_COMPARATOR_GT, Threshold: -1.5, Verb: "spawn"},
	}}
	p, err := Compile("c", spec, Defaults{})
	if err != nil {
		t.Fatal(err)
	}
	labels["port"] = "9090" // the program does not share the spec's maps
	want := []Rule{
		{Cell: "c", Name: "line 9", Signal: "latency.p99", Labels: map[string]string{"port": "8080", "route": "/api"}, Op: GE,
			Threshold: 0.02, Window: 30 * time.Second, Cooldown: 10 * time.Minute, Verb: "upgrade", Args: []string{"rollback", "now"},
			Origin: "when latency.p99{port=8080,route=/api} >= 0.02 for 30s then upgrade rollback now cooldown 10m (line 9)", Line: 9},
		{Cell: "c", Name: "line 12", Signal: "host.memory.available", Op: LT, Threshold: 268435456, Verb: "reroute",
			Origin: "when host.memory.available < 268435456 then reroute (line 12)", Line: 12},
		{Cell: "c", Name: "rule 3", Signal: "rps", Op: GT, Threshold: -1.5, Verb: "spawn",
			Origin: "when rps > -1.5 then spawn"},
	}
	if !reflect.DeepEqual(p.Rules, want) {
		t.Fatalf("rules =\n%+v\nwant\n%+v", p.Rules, want)
	}
	if p.UpgradeArgs != nil || p.DecayIdle != 0 {
		t.Fatalf("explicit rules set UpgradeArgs %q, DecayIdle %v", p.UpgradeArgs, p.DecayIdle)
	}
}

func TestCompileCellName(t *testing.T) {
	p, err := Compile("", &pluginapiv1.IntentSpec{Cell: "from-spec", DecayAfterIdle: durationpb.New(time.Minute)}, Defaults{})
	if err != nil || p.Cell != "from-spec" || p.Rules[0].Cell != "from-spec" {
		t.Fatalf("Compile(\"\") = %+v, %v; want the spec's cell", p, err)
	}
	p, err = Compile("renamed", &pluginapiv1.IntentSpec{Cell: "from-spec"}, Defaults{})
	if err != nil || p.Cell != "renamed" {
		t.Fatalf("Compile(renamed) = %+v, %v; want the given cell", p, err)
	}
}

func TestCompileErrors(t *testing.T) {
	gt := pluginapiv1.Comparator_COMPARATOR_GT
	rule := func(mod func(r *pluginapiv1.Rule)) *pluginapiv1.IntentSpec {
		r := &pluginapiv1.Rule{Name: "line 9", Signal: "cpu", Comparator: gt, Threshold: 80, Verb: "clone", Line: 9}
		mod(r)
		return &pluginapiv1.IntentSpec{Cell: "c", Rules: []*pluginapiv1.Rule{r}}
	}
	objective := func(kind pluginapiv1.ObjectiveKind, v float64) *pluginapiv1.IntentSpec {
		return &pluginapiv1.IntentSpec{Cell: "c", Objectives: []*pluginapiv1.Objective{{Kind: kind, Threshold: v, Line: 5}}}
	}
	p99, errRate := pluginapiv1.ObjectiveKind_OBJECTIVE_KIND_LATENCY_P99, pluginapiv1.ObjectiveKind_OBJECTIVE_KIND_ERROR_RATE
	for _, tc := range []struct {
		name string
		spec *pluginapiv1.IntentSpec
		want []string // substrings of the error
	}{
		{"nil spec", nil, []string{"no intent spec"}},
		{"no cell", &pluginapiv1.IntentSpec{}, []string{"no cell name"}},
		{"unknown verb", rule(func(r *pluginapiv1.Rule) { r.Verb = "explode" }),
			[]string{`reflex: compile c: rule "line 9" (line 9): unknown verb "explode"`, "spawn, clone, reroute, upgrade, decay"}},
		{"NaN threshold", rule(func(r *pluginapiv1.Rule) { r.Threshold = math.NaN() }), []string{`rule "line 9" (line 9): threshold is NaN`}},
		{"no comparator", rule(func(r *pluginapiv1.Rule) { r.Comparator = 0 }), []string{`rule "line 9" (line 9): unknown comparator`}},
		{"no signal", rule(func(r *pluginapiv1.Rule) { r.Signal = "" }), []string{`rule "line 9" (line 9): no signal`}},
		{"negative window", rule(func(r *pluginapiv1.Rule) { r.Window = durationpb.New(-time.Second) }), []string{`rule "line 9" (line 9): window: negative duration -1s`}},
		{"invalid cooldown", rule(func(r *pluginapiv1.Rule) { r.Cooldown = &durationpb.Duration{Seconds: 1, Nanos: -1} }), []string{`rule "line 9" (line 9): cooldown:`}},
		{"every problem of a rule", rule(func(r *pluginapiv1.Rule) { r.Verb, r.Threshold = "", math.NaN() }), []string{"threshold is NaN", `unknown verb ""`}},
		{"rule without a line", rule(func(r *pluginapiv1.Rule) { r.Name, r.Line, r.Verb = "", 0, "x" }), []string{`rule "rule 1": unknown verb "x"`}},
		{"zero p99", objective(p99, 0), []string{"keep p99 latency (line 5): threshold 0 is not a positive number of seconds"}},
		{"NaN p99", objective(p99, math.NaN()), []string{"keep p99 latency (line 5)"}},
		{"error rate above 1", objective(errRate, 2), []string{"keep error rate (line 5): threshold 2 is not a fraction in (0, 1]"}},
		{"negative error rate", objective(errRate, -0.1), []string{"keep error rate (line 5)"}},
		{"unknown objective", objective(0, 1), []string{"objective (line 5): unknown kind"}},
		{"two p99 objectives", &pluginapiv1.IntentSpec{Cell: "c", Objectives: []*pluginapiv1.Objective{
			{Kind: p99, Threshold: 0.02, Line: 5}, {Kind: p99, Threshold: 0.03, Line: 8}}},
			[]string{"objective (line 8): a second p99 latency objective (the first is (line 5))"}},
		{"min above max", &pluginapiv1.IntentSpec{Cell: "c", Replicas: &pluginapiv1.ReplicaBounds{Min: 5, Max: 3}},
			[]string{"keep replicas 5..3: minimum above maximum"}},
		{"negative idle", &pluginapiv1.IntentSpec{Cell: "c", DecayAfterIdle: durationpb.New(-time.Minute)},
			[]string{"decay after idle: negative duration -1m0s"}},
		{"negative state every", &pluginapiv1.IntentSpec{Cell: "c", State: &pluginapiv1.StatePolicy{Keep: true, ReplicateEvery: durationpb.New(-time.Second)}},
			[]string{"reflex: compile c: keep state replicated every: negative duration -1s"}},
		{"invalid state every", &pluginapiv1.IntentSpec{Cell: "c", State: &pluginapiv1.StatePolicy{Keep: true, ReplicateEvery: &durationpb.Duration{Seconds: 1, Nanos: -1}}},
			[]string{"keep state replicated every:"}},
		{"state replicated not kept", &pluginapiv1.IntentSpec{Cell: "c", State: &pluginapiv1.StatePolicy{ReplicateEvery: durationpb.New(time.Second)}},
			[]string{"keep state replicated every 1s: replicated but not kept"}},
		{"state every too short", &pluginapiv1.IntentSpec{Cell: "c", State: &pluginapiv1.StatePolicy{Keep: true, ReplicateEvery: durationpb.New(99 * time.Millisecond)}},
			[]string{"keep state replicated every 99ms: not from 100ms to 1h"}},
		{"state every too long", &pluginapiv1.IntentSpec{Cell: "c", State: &pluginapiv1.StatePolicy{Keep: true, ReplicateEvery: durationpb.New(2 * time.Hour)}},
			[]string{"keep state replicated every 2h: not from 100ms to 1h"}},
		{"state in a command cell", &pluginapiv1.IntentSpec{Cell: "c", Abi: pluginapiv1.ABI_ABI_COMMAND, State: &pluginapiv1.StatePolicy{Keep: true}},
			[]string{"keep state: the cell is a command cell (abi command); state is kept only for reactor cells"}},
		{"duplicate names", &pluginapiv1.IntentSpec{Cell: "c",
			Objectives: []*pluginapiv1.Objective{{Kind: p99, Threshold: 0.02, Line: 5}},
			Rules:      []*pluginapiv1.Rule{{Name: "p99-clone", Signal: "cpu", Comparator: gt, Verb: "clone", Line: 9}}},
			[]string{`rule "p99-clone" (line 9): name already used by the rule from keep p99 latency under 20ms (line 5)`}},
		{"all problems at once", &pluginapiv1.IntentSpec{Cell: "c",
			Objectives: []*pluginapiv1.Objective{{Kind: errRate, Threshold: 3, Line: 2}},
			Rules: []*pluginapiv1.Rule{
				{Name: "line 9", Signal: "cpu", Comparator: gt, Verb: "boom", Line: 9},
				{Name: "line 10", Signal: "cpu", Comparator: gt, Verb: "clone", Line: 10},
				{Name: "line 11", Signal: "cpu", Comparator: gt, Threshold: math.NaN(), Verb: "clone", Line: 11},
			}},
			[]string{"(line 2)", `"line 9" (line 9): unknown verb "boom"`, `"line 11" (line 11): threshold is NaN`}},
	} {
		p, err := Compile("", tc.spec, Defaults{})
		if err == nil {
			t.Errorf("%s: Compile = %+v, want an error", tc.name, p)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", tc.name, err, w)
			}
		}
		if !reflect.DeepEqual(p, Program{}) {
			t.Errorf("%s: Compile returned %+v with its error", tc.name, p)
		}
	}
}

func TestRuleString(t *testing.T) {
	for _, tc := range []struct {
		r    Rule
		want string
	}{
		{Rule{Signal: "latency.p99", Op: GT, Threshold: 0.02, Window: 2 * time.Second, Verb: "clone", Args: []string{"1"}, Cooldown: 5 * time.Second},
			"when latency.p99 > 0.02 for 2s then clone 1 cooldown 5s"},
		{Rule{Signal: "queue", Op: EQ, Threshold: 0, Window: 5 * time.Minute, Verb: "decay"},
			"when queue == 0 for 5m then decay"},
		{Rule{Signal: "k", Labels: map[string]string{"z": "1", "a": "x y"}, Op: NE, Threshold: 1e-9, Verb: "reroute", Cooldown: 90 * time.Minute},
			`when k{a="x y",z=1} != 1e-09 then reroute cooldown 1h30m`},
		{Rule{Signal: "s", Op: LE, Threshold: 1e6, Verb: "spawn", Args: []string{"", "a=b"}, Cooldown: 2 * time.Hour},
			`when s <= 1000000 then spawn "" "a=b" cooldown 2h`},
		{Rule{Signal: "s", Op: GE, Threshold: math.Inf(-1), Verb: "spawn", Window: 1500 * time.Millisecond},
			"when s >= -Inf for 1.5s then spawn"},
	} {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}
