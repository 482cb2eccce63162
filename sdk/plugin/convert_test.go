package plugin

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/celluster/celluster/pluginapi"
	pb "github.com/celluster/celluster/pluginapi/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

var t0 = time.Unix(1_700_000_000, 123_456_789).UTC()

func fullSpec() *IntentSpec {
	return &IntentSpec{
		Cell:   "hello",
		Module: ModuleRef{Path: "hello.wasm", SHA256: strings.Repeat("ab", 32)},
		ABI:    ABIReactor,
		Endpoints: []Endpoint{
			{Protocol: "http", Path: "/hello"},
			{Protocol: "http", Listen: ":8080", Path: "/"},
		},
		Replicas: ReplicaBounds{Min: 1, Max: 8},
		Warm:     2,
		Objectives: []Objective{
			{Kind: LatencyP99, Threshold: 0.25, Line: 4},
			{Kind: ErrorRate, Threshold: 0.01, Line: 5},
		},
		Rules: []Rule{{
			Name: "p99-clone", Signal: "cell.latency.p99", Comparator: GreaterOrEqual, Threshold: 0.2,
			Window: 30 * time.Second, Verb: "clone", Args: []string{"2"}, Cooldown: time.Minute,
			Labels: map[string]string{"port": "8080"}, Line: 9,
		}, {
			Name: "line 10", Signal: "host.cpu", Comparator: Less, Threshold: 10, Verb: "decay", Line: 10,
		}},
		Limits:    Limits{RequestTime: 2 * time.Second, Memory: 64 << 20, Concurrency: 16, Body: 1 << 20, KV: 16 << 20},
		Grants:    []Grant{{Capability: "kv"}, {Capability: "call", Targets: []string{"cell:auth"}}},
		AllowFrom: []string{"cell:frontend", "node:*"},
		Placement: Placement{SpreadAcrossNodes: true, PreferNodes: []string{"a"}, AvoidNodes: []string{"b", "c"}},

		DecayAfterIdle: 10 * time.Minute,
		State:          StatePolicy{Keep: true, ReplicateEvery: 1500 * time.Millisecond},
		Hosts:          []string{"shop.example", "*.shop.example"},
	}
}

func TestIntentSpecRoundTrip(t *testing.T) {
	for name, spec := range map[string]*IntentSpec{
		"full":    fullSpec(),
		"zero":    {},
		"minimal": {Cell: "x", Replicas: ReplicaBounds{Max: 1}, Limits: Limits{Memory: 1}},
		"command": {Cell: "job", ABI: ABICommand, Placement: Placement{AvoidNodes: []string{"n"}}},
		"keep":    {Cell: "kv", State: StatePolicy{Keep: true}},
		"routes":  {Cell: "shop", Hosts: []string{"shop.example"}, Limits: Limits{Body: 1}},
	} {
		t.Run(name, func(t *testing.T) {
			p, err := intentSpecToPB(spec)
			if err != nil {
				t.Fatal(err)
			}
			// Through the wire and back.
			b, err := proto.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			p2 := &pb.IntentSpec{}
			if err := proto.Unmarshal(b, p2); err != nil {
				t.Fatal(err)
			}
			got, err := intentSpecFromPB(p2)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, spec) {
				t.Errorf("round trip changed the spec:\n got %+v\nwant %+v", got, spec)
			}
		})
	}
	if p, err := intentSpecToPB(nil); p != nil || err != nil {
		t.Errorf("intentSpecToPB(nil) = %v, %v", p, err)
	}
	if s, err := intentSpecFromPB(nil); s != nil || err != nil {
		t.Errorf("intentSpecFromPB(nil) = %v, %v", s, err)
	}
}

func TestIntentSpecFromPBRoundTrip(t *testing.T) {
	p := &pb.IntentSpec{
		Cell:       "hello",
		Module:     &pb.ModuleRef{Path: "m.wasm"},
		Abi:        pb.ABI_ABI_COMMAND,
		Endpoints:  []*pb.Endpoint{{Protocol: "http", Path: "/h"}},
		Replicas:   &pb.ReplicaBounds{Min: 2, Max: 3},
		Warm:       1,
		Objectives: []*pb.Objective{{Kind: pb.ObjectiveKind_OBJECTIVE_KIND_ERROR_RATE, Threshold: 0.5, Line: 2}},
		Rules: []*pb.Rule{{
			Name: "r", Signal: "a.b", Comparator: pb.Comparator_COMPARATOR_NE, Threshold: 1,
			Window: durationpb.New(time.Second), Verb: "v", Args: []string{"x", "y"},
			Cooldown: durationpb.New(time.Hour), Labels: map[string]string{"k": "v"}, Line: 3,
		}},
		Limits:         &pb.Limits{RequestTime: durationpb.New(time.Millisecond), MemoryBytes: 7, Concurrency: 3, BodyBytes: 9, KvBytes: 11},
		Grants:         []*pb.Grant{{Capability: "signal", Targets: []string{"t"}}},
		AllowFrom:      []string{"node:*"},
		Placement:      &pb.Placement{PreferNodes: []string{"n1"}},
		DecayAfterIdle: durationpb.New(time.Minute),
		State:          &pb.StatePolicy{Keep: true, ReplicateEvery: durationpb.New(time.Second)},
		Hosts:          []string{"a.example"},
	}
	s, err := intentSpecFromPB(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := intentSpecToPB(s)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, p) {
		t.Errorf("round trip changed the message:\n got %v\nwant %v", got, p)
	}
}

func TestStatePolicyToPB(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state StatePolicy
		want  *pb.StatePolicy
	}{
		{"unstated is absent", StatePolicy{}, nil},
		{"keep", StatePolicy{Keep: true}, &pb.StatePolicy{Keep: true}},
		{"replicated", StatePolicy{Keep: true, ReplicateEvery: time.Second}, &pb.StatePolicy{Keep: true, ReplicateEvery: durationpb.New(time.Second)}},
	} {
		p, err := intentSpecToPB(&IntentSpec{Cell: "x", State: tc.state})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !proto.Equal(p.GetState(), tc.want) || (tc.want == nil) != (p.State == nil) {
			t.Errorf("%s: state %v, want %v", tc.name, p.GetState(), tc.want)
		}
		s, err := intentSpecFromPB(p)
		if err != nil || s.State != tc.state {
			t.Errorf("%s: back from pb: %+v, %v", tc.name, s.State, err)
		}
	}
}

func TestIntentSpecInvalid(t *testing.T) {
	for name, mutate := range map[string]func(*IntentSpec){
		"abi":             func(s *IntentSpec) { s.ABI = "Reactor" },
		"comparator":      func(s *IntentSpec) { s.Rules[0].Comparator = "=>" },
		"objective kind":  func(s *IntentSpec) { s.Objectives[0].Kind = 9 },
		"negative warm":   func(s *IntentSpec) { s.Warm = -1 },
		"negative min":    func(s *IntentSpec) { s.Replicas.Min = -1 },
		"negative line":   func(s *IntentSpec) { s.Rules[1].Line = -3 },
		"concurrency":     func(s *IntentSpec) { s.Limits.Concurrency = -1 },
		"huge replicas":   func(s *IntentSpec) { s.Replicas.Max = 1 << 40 },
		"objective line":  func(s *IntentSpec) { s.Objectives[1].Line = -1 },
		"first error won": func(s *IntentSpec) { s.ABI = "x"; s.Warm = -1 },
	} {
		s := fullSpec()
		mutate(s)
		if _, err := intentSpecToPB(s); err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.Contains(err.Error(), `cell "hello"`) {
			t.Errorf("%s: error %q does not name the cell", name, err)
		}
	}
	for name, p := range map[string]*pb.IntentSpec{
		"abi":        {Abi: 7},
		"comparator": {Rules: []*pb.Rule{{Comparator: 42}}},
		"objective":  {Objectives: []*pb.Objective{{Kind: 42}}},
	} {
		if _, err := intentSpecFromPB(p); err == nil {
			t.Errorf("from pb %s: no error", name)
		}
	}
}

func TestSignalAndSampleRoundTrip(t *testing.T) {
	for _, s := range []Signal{
		{Name: "host.cpu", Unit: "percent", Help: "CPU use.", Kind: Gauge},
		{Name: "kernel.tcp.retransmits", Unit: "1", Kind: Counter, Labels: []string{"port"}},
		{Name: "x.rate", Unit: "1/s", Kind: Rate},
		{Name: "no.kind", Unit: "1"},
	} {
		c := &conv{}
		got := signalFromPB(c, signalToPB(c, s))
		if c.err != nil {
			t.Fatal(c.err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Errorf("signal round trip: got %+v, want %+v", got, s)
		}
	}
	c := &conv{}
	signalToPB(c, Signal{Name: "bad", Kind: 9})
	if c.err == nil {
		t.Errorf("signal of kind 9: no error")
	}
	c = &conv{}
	signalFromPB(c, &pb.SignalDesc{Name: "bad", Kind: 9})
	if c.err == nil {
		t.Errorf("signal from pb of kind 9: no error")
	}

	for _, s := range []Sample{
		{Signal: "host.cpu", Value: 12.5, Time: t0, Labels: map[string]string{"cpu": "0"}},
		{Signal: "host.cpu"}, // zero time stays zero
		{Signal: "a.b", Value: -1, Time: time.Unix(0, 1).UTC()},
	} {
		if got := sampleFromPB(sampleToPB(s)); !reflect.DeepEqual(got, s) {
			t.Errorf("sample round trip: got %+v, want %+v", got, s)
		}
	}
	if n := sampleToPB(Sample{}).GetTimeUnixNano(); n != 0 {
		t.Errorf("zero time became %d", n)
	}
	// Empty maps and slices go to nil.
	if got := sampleFromPB(sampleToPB(Sample{Labels: map[string]string{}})); got.Labels != nil {
		t.Errorf("empty labels became %#v", got.Labels)
	}

	now := t0.Add(time.Hour)
	got := samplesToPB([]Sample{{Signal: "a.b"}, {Signal: "c.d", Time: t0}}, now)
	if got[0].GetTimeUnixNano() != now.UnixNano() || got[1].GetTimeUnixNano() != t0.UnixNano() {
		t.Errorf("samplesToPB stamped %d, %d; want %d, %d", got[0].GetTimeUnixNano(), got[1].GetTimeUnixNano(), now.UnixNano(), t0.UnixNano())
	}
}

func TestDiagnosticRoundTrip(t *testing.T) {
	for _, d := range []Diagnostic{
		{File: "a.intent", Line: 3, Column: 7, Severity: Error, Message: "expected a number", Hint: "e.g. 3"},
		{File: "b", Severity: Warning, Message: "w"},
		{Message: "no severity"},
	} {
		c := &conv{}
		got := diagnosticFromPB(c, diagnosticToPB(c, d))
		if c.err != nil {
			t.Fatal(c.err)
		}
		if got != d {
			t.Errorf("diagnostic round trip: got %+v, want %+v", got, d)
		}
	}
	for _, d := range []Diagnostic{{Severity: 5}, {Line: -1}, {Column: -1}} {
		c := &conv{}
		diagnosticToPB(c, d)
		if c.err == nil {
			t.Errorf("diagnostic %+v: no error", d)
		}
	}
}

func TestVerbRoundTrip(t *testing.T) {
	for _, r := range []VerbRequest{
		{Verb: "clone", Cell: "hello", Args: []string{"2"}, Trigger: Trigger{
			Rule: "p99-clone",
			Values: []SignalValue{
				{Signal: "cell.latency.p99", Value: 0.3, Labels: map[string]string{"cell": "hello"}, Time: t0},
				{Signal: "host.cpu", Value: 90},
			},
		}},
		{Verb: "decay", Cell: "x", Trigger: Trigger{Manual: true}},
		{Verb: "v"},
	} {
		p := verbRequestToPB(r)
		if got := verbRequestFromPB(p); !reflect.DeepEqual(got, r) {
			t.Errorf("request round trip: got %+v, want %+v", got, r)
		}
	}
	if p := verbRequestToPB(VerbRequest{Verb: "v"}); p.Trigger != nil {
		t.Errorf("empty trigger was sent: %v", p.Trigger)
	}
	for _, o := range []Outcome{0, Done, Noop, Refused, Failed} {
		res := VerbResult{Outcome: o, Message: "m " + o.String()}
		p, err := verbResultToPB(res)
		if err != nil {
			t.Fatal(err)
		}
		if int(p.GetOutcome()) != int(o) {
			t.Errorf("outcome %v became %v", o, p.GetOutcome())
		}
		got, err := verbResultFromPB(p)
		if err != nil || got != res {
			t.Errorf("result round trip: got %+v, %v; want %+v", got, err, res)
		}
	}
	if _, err := verbResultToPB(VerbResult{Outcome: 9}); err == nil {
		t.Errorf("outcome 9: no error")
	}
	if _, err := verbResultFromPB(&pb.VerbResponse{Outcome: 9}); err == nil {
		t.Errorf("outcome 9 from pb: no error")
	}
}

func TestHostTypesRoundTrip(t *testing.T) {
	cs := CellState{Name: "hello", SHA256: "ab", ABI: "reactor", State: "ready", Error: "e", Replicas: 3, Requests: 10, Errors: 1, InFlight: -2,
		Warm: 1, MinReplicas: 1, MaxReplicas: 8, Idle: 1500 * time.Millisecond,
		Versions: []VersionState{{SHA256: "ab", Weight: 90, Requests: 9, Errors: 1, P99: 20 * time.Millisecond, Replicas: 2, Source: "a.wasm"}, {SHA256: "cd", Weight: 10}}}
	c := &conv{}
	if got := cellStateFromPB(cellStateToPB(c, cs)); !reflect.DeepEqual(got, cs) || c.err != nil {
		t.Errorf("cell state round trip: got %+v (%v), want %+v", got, c.err, cs)
	}
	cellStateToPB(c, CellState{Replicas: -1})
	if c.err == nil {
		t.Errorf("negative replicas: no error")
	}
	for _, r := range []Reading{
		{Signal: "host.cpu", Value: 1, Labels: map[string]string{"a": "b"}, Time: t0, Source: "host"},
		{Signal: "x.y"},
	} {
		if got := readingFromPB(readingToPB(r)); !reflect.DeepEqual(got, r) {
			t.Errorf("reading round trip: got %+v, want %+v", got, r)
		}
	}
	w := RouteWeight{Target: "abc", Weight: 90}
	if got := routeWeightFromPB(routeWeightToPB(w)); got != w {
		t.Errorf("route weight round trip: got %+v, want %+v", got, w)
	}
}

func TestInfoAndConfig(t *testing.T) {
	info := Info{Name: "n", Version: "1", Description: "d", Capabilities: []string{"c"}}
	p := infoToPB(info, pluginapi.KindVerb)
	want := &pb.PluginInfo{Kind: pluginapi.KindVerb, Name: "n", Version: "1", ApiVersions: []uint32{pluginapi.ProtocolVersion}, Capabilities: []string{"c"}, Description: "d"}
	if !proto.Equal(p, want) {
		t.Errorf("infoToPB = %v, want %v", p, want)
	}
	got, kind := infoFromPB(p)
	if !reflect.DeepEqual(got, info) || kind != pluginapi.KindVerb {
		t.Errorf("infoFromPB = %+v, %q", got, kind)
	}
	cfg := configFromPB(&pb.ConfigureRequest{Settings: map[string]string{"a": "b"}, Node: "n1", HostBrokerId: 4, ApiVersion: 1})
	if !reflect.DeepEqual(cfg, Config{Settings: map[string]string{"a": "b"}, Node: "n1", APIVersion: 1}) {
		t.Errorf("configFromPB = %+v", cfg)
	}
}

// TestEnumTablesComplete fails when the protocol gains an enum value the
// SDK does not map.
func TestEnumTablesComplete(t *testing.T) {
	check := func(name string, values map[int32]string, known func(int32) bool) {
		for v, s := range values {
			if !known(v) {
				t.Errorf("%s value %s (%d) has no Go counterpart", name, s, v)
			}
		}
	}
	check("SignalKind", pb.SignalKind_name, func(v int32) bool { _, ok := signalKindsFromPB[pb.SignalKind(v)]; return ok })
	check("ABI", pb.ABI_name, func(v int32) bool { _, ok := abisFromPB[pb.ABI(v)]; return ok })
	check("ObjectiveKind", pb.ObjectiveKind_name, func(v int32) bool { _, ok := objectiveKindsFromPB[pb.ObjectiveKind(v)]; return ok })
	check("Comparator", pb.Comparator_name, func(v int32) bool { _, ok := comparatorsFromPB[pb.Comparator(v)]; return ok })
	check("Severity", pb.Severity_name, func(v int32) bool { _, ok := severitiesFromPB[pb.Severity(v)]; return ok })
	check("Outcome", pb.Outcome_name, func(v int32) bool { _, ok := outcomesFromPB[pb.Outcome(v)]; return ok })
	// Go values mirror the wire numbers.
	for k, v := range signalKinds {
		if int(k) != int(v) {
			t.Errorf("SignalKind %v is %d on the wire", k, v)
		}
	}
	for k, v := range outcomes {
		if int(k) != int(v) {
			t.Errorf("Outcome %v is %d on the wire", k, v)
		}
	}
}

func TestStrings(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{Diagnostic{File: "a.intent", Line: 3, Column: 7, Message: "bad", Hint: "fix it"}.String(), "a.intent:3:7: bad (fix it)"},
		{Diagnostic{File: "a.intent", Line: 3, Message: "bad"}.String(), "a.intent:3: bad"},
		{Diagnostic{File: "a.intent", Message: "bad"}.String(), "a.intent: bad"},
		{Diagnostic{Message: "bad"}.String(), "bad"},
		{Done.String(), "done"}, {Noop.String(), "noop"}, {Refused.String(), "refused"}, {Failed.String(), "failed"},
		{Outcome(0).String(), "Outcome(0)"},
		{Gauge.String(), "gauge"}, {Counter.String(), "counter"}, {Rate.String(), "rate"}, {SignalKind(7).String(), "SignalKind(7)"},
		{Error.String(), "error"}, {Warning.String(), "warning"}, {Severity(0).String(), "Severity(0)"},
		{LatencyP99.String(), "latency_p99"}, {ErrorRate.String(), "error_rate"}, {ObjectiveKind(3).String(), "ObjectiveKind(3)"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestComparatorHolds(t *testing.T) {
	for _, c := range []struct {
		cmp  Comparator
		v    float64
		want bool
	}{
		{Greater, 2, true}, {Greater, 1, false},
		{GreaterOrEqual, 1, true}, {GreaterOrEqual, 0, false},
		{Less, 0, true}, {Less, 1, false},
		{LessOrEqual, 1, true}, {LessOrEqual, 2, false},
		{Equal, 1, true}, {Equal, 2, false},
		{NotEqual, 2, true}, {NotEqual, 1, false},
		{"=>", 5, false},
	} {
		if got := c.cmp.Holds(c.v, 1); got != c.want {
			t.Errorf("%v %q 1 = %v, want %v", c.v, c.cmp, got, c.want)
		}
	}
}
