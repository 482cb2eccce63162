package plugin

// Conversions between the SDK's Go-native types and the generated
// protobuf types of package pluginapiv1. Every conversion between the two
// lives in this file. Zero values map to absent fields and back: a zero
// time.Time to time_unix_nano 0, a zero duration to a nil Duration, an
// empty map or slice to nil.

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/celluster/celluster/pluginapi"
	pb "github.com/celluster/celluster/pluginapi/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// conv records the first error of a conversion that can fail, so the
// conversion code reads straight through.
type conv struct{ err error }

func (c *conv) failf(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf(format, args...)
	}
}

// u32 converts a non-negative int to uint32.
func (c *conv) u32(what string, v int) uint32 {
	if v < 0 || uint64(v) > math.MaxUint32 {
		c.failf("%s %d is out of range (0..%d)", what, v, uint32(math.MaxUint32))
		return 0
	}
	return uint32(v)
}

func nanosFromTime(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func timeFromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func durationToPB(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func durationFromPB(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}

func cloneMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

func cloneStrings(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return slices.Clone(s)
}

// convertSlice maps f over s, keeping nil for empty.
func convertSlice[T, U any](s []T, f func(T) U) []U {
	if len(s) == 0 {
		return nil
	}
	out := make([]U, len(s))
	for i, v := range s {
		out[i] = f(v)
	}
	return out
}

// ----- plugin -----

func infoToPB(info Info, kind string) *pb.PluginInfo {
	return &pb.PluginInfo{
		Kind:         kind,
		Name:         info.Name,
		Version:      info.Version,
		ApiVersions:  []uint32{pluginapi.ProtocolVersion},
		Capabilities: cloneStrings(info.Capabilities),
		Description:  info.Description,
	}
}

func infoFromPB(p *pb.PluginInfo) (Info, string) {
	return Info{
		Name:         p.GetName(),
		Version:      p.GetVersion(),
		Description:  p.GetDescription(),
		Capabilities: cloneStrings(p.GetCapabilities()),
	}, p.GetKind()
}

func configFromPB(req *pb.ConfigureRequest) Config {
	return Config{
		Settings:   cloneMap(req.GetSettings()),
		Node:       req.GetNode(),
		APIVersion: req.GetApiVersion(),
	}
}

// ----- telemetry -----

var (
	signalKinds = map[SignalKind]pb.SignalKind{
		0:       pb.SignalKind_SIGNAL_KIND_UNSPECIFIED,
		Gauge:   pb.SignalKind_SIGNAL_KIND_GAUGE,
		Counter: pb.SignalKind_SIGNAL_KIND_COUNTER,
		Rate:    pb.SignalKind_SIGNAL_KIND_RATE,
	}
	signalKindsFromPB = reverse(signalKinds)
)

func signalToPB(c *conv, s Signal) *pb.SignalDesc {
	k, ok := signalKinds[s.Kind]
	if !ok {
		c.failf("signal %q: unknown kind %v", s.Name, s.Kind)
	}
	return &pb.SignalDesc{
		Name:   s.Name,
		Unit:   s.Unit,
		Kind:   k,
		Help:   s.Help,
		Labels: cloneStrings(s.Labels),
	}
}

func signalFromPB(c *conv, s *pb.SignalDesc) Signal {
	k, ok := signalKindsFromPB[s.GetKind()]
	if !ok {
		c.failf("signal %q: unknown kind %v", s.GetName(), s.GetKind())
	}
	return Signal{
		Name:   s.GetName(),
		Unit:   s.GetUnit(),
		Help:   s.GetHelp(),
		Kind:   k,
		Labels: cloneStrings(s.GetLabels()),
	}
}

func sampleToPB(s Sample) *pb.Sample {
	return &pb.Sample{
		Signal:       s.Signal,
		Value:        s.Value,
		TimeUnixNano: nanosFromTime(s.Time),
		Labels:       cloneMap(s.Labels),
	}
}

func sampleFromPB(s *pb.Sample) Sample {
	return Sample{
		Signal: s.GetSignal(),
		Value:  s.GetValue(),
		Time:   timeFromNanos(s.GetTimeUnixNano()),
		Labels: cloneMap(s.GetLabels()),
	}
}

// ----- intent -----

var (
	abis = map[string]pb.ABI{
		"":         pb.ABI_ABI_UNSPECIFIED,
		ABIReactor: pb.ABI_ABI_REACTOR,
		ABICommand: pb.ABI_ABI_COMMAND,
	}
	objectiveKinds = map[ObjectiveKind]pb.ObjectiveKind{
		0:          pb.ObjectiveKind_OBJECTIVE_KIND_UNSPECIFIED,
		LatencyP99: pb.ObjectiveKind_OBJECTIVE_KIND_LATENCY_P99,
		ErrorRate:  pb.ObjectiveKind_OBJECTIVE_KIND_ERROR_RATE,
	}
	comparators = map[Comparator]pb.Comparator{
		"":             pb.Comparator_COMPARATOR_UNSPECIFIED,
		Greater:        pb.Comparator_COMPARATOR_GT,
		GreaterOrEqual: pb.Comparator_COMPARATOR_GE,
		Less:           pb.Comparator_COMPARATOR_LT,
		LessOrEqual:    pb.Comparator_COMPARATOR_LE,
		Equal:          pb.Comparator_COMPARATOR_EQ,
		NotEqual:       pb.Comparator_COMPARATOR_NE,
	}
	severities = map[Severity]pb.Severity{
		0:       pb.Severity_SEVERITY_UNSPECIFIED,
		Error:   pb.Severity_SEVERITY_ERROR,
		Warning: pb.Severity_SEVERITY_WARNING,
	}
	outcomes = map[Outcome]pb.Outcome{
		0:          pb.Outcome_OUTCOME_UNSPECIFIED,
		Done:       pb.Outcome_OUTCOME_DONE,
		Noop:       pb.Outcome_OUTCOME_NOOP,
		Refused:    pb.Outcome_OUTCOME_REFUSED,
		Failed:     pb.Outcome_OUTCOME_FAILED,
		RolledBack: pb.Outcome_OUTCOME_ROLLED_BACK,
	}

	abisFromPB           = reverse(abis)
	objectiveKindsFromPB = reverse(objectiveKinds)
	comparatorsFromPB    = reverse(comparators)
	severitiesFromPB     = reverse(severities)
	outcomesFromPB       = reverse(outcomes)
)

func reverse[K, V comparable](m map[K]V) map[V]K {
	r := make(map[V]K, len(m))
	for k, v := range m {
		r[v] = k
	}
	return r
}

// intentSpecToPB converts a spec; it fails on values the wire cannot carry
// (an unknown ABI or comparator, a negative count).
func intentSpecToPB(s *IntentSpec) (*pb.IntentSpec, error) {
	if s == nil {
		return nil, nil
	}
	c := &conv{}
	abi, ok := abis[s.ABI]
	if !ok {
		c.failf("abi %q is not %q, %q or empty", s.ABI, ABIReactor, ABICommand)
	}
	out := &pb.IntentSpec{
		Cell: s.Cell,
		Abi:  abi,
		Endpoints: convertSlice(s.Endpoints, func(e Endpoint) *pb.Endpoint {
			return &pb.Endpoint{Protocol: e.Protocol, Listen: e.Listen, Path: e.Path}
		}),
		Warm: c.u32("warm", s.Warm),
		Objectives: convertSlice(s.Objectives, func(o Objective) *pb.Objective {
			k, ok := objectiveKinds[o.Kind]
			if !ok {
				c.failf("objective on line %d: unknown kind %v", o.Line, o.Kind)
			}
			return &pb.Objective{Kind: k, Threshold: o.Threshold, Line: c.u32("objective line", o.Line)}
		}),
		Rules: convertSlice(s.Rules, func(r Rule) *pb.Rule {
			cmp, ok := comparators[r.Comparator]
			if !ok {
				c.failf("rule %q: unknown comparator %q", r.Name, r.Comparator)
			}
			return &pb.Rule{
				Name:       r.Name,
				Signal:     r.Signal,
				Comparator: cmp,
				Threshold:  r.Threshold,
				Window:     durationToPB(r.Window),
				Verb:       r.Verb,
				Args:       cloneStrings(r.Args),
				Cooldown:   durationToPB(r.Cooldown),
				Labels:     cloneMap(r.Labels),
				Line:       c.u32("rule line", r.Line),
			}
		}),
		Grants: convertSlice(s.Grants, func(g Grant) *pb.Grant {
			return &pb.Grant{Capability: g.Capability, Targets: cloneStrings(g.Targets)}
		}),
		AllowFrom:      cloneStrings(s.AllowFrom),
		DecayAfterIdle: durationToPB(s.DecayAfterIdle),
		Hosts:          cloneStrings(s.Hosts),
	}
	if s.Module != (ModuleRef{}) {
		out.Module = &pb.ModuleRef{Path: s.Module.Path, Sha256: s.Module.SHA256}
	}
	if s.Replicas != (ReplicaBounds{}) {
		out.Replicas = &pb.ReplicaBounds{Min: c.u32("replicas min", s.Replicas.Min), Max: c.u32("replicas max", s.Replicas.Max)}
	}
	if s.Limits != (Limits{}) {
		out.Limits = &pb.Limits{
			RequestTime: durationToPB(s.Limits.RequestTime),
			MemoryBytes: s.Limits.Memory,
			Concurrency: c.u32("concurrency", s.Limits.Concurrency),
			BodyBytes:   s.Limits.Body,
			KvBytes:     s.Limits.KV,
		}
	}
	if s.State != (StatePolicy{}) {
		out.State = &pb.StatePolicy{Keep: s.State.Keep, ReplicateEvery: durationToPB(s.State.ReplicateEvery)}
	}
	p := s.Placement
	if p.SpreadAcrossNodes || p.SpreadMinNodes > 0 || len(p.PreferNodes) > 0 || len(p.AvoidNodes) > 0 {
		out.Placement = &pb.Placement{
			SpreadAcrossNodes: p.SpreadAcrossNodes,
			SpreadMinNodes:    c.u32("spread min nodes", p.SpreadMinNodes),
			PreferNodes:       cloneStrings(p.PreferNodes),
			AvoidNodes:        cloneStrings(p.AvoidNodes),
		}
	}
	if c.err != nil {
		return nil, fmt.Errorf("intent spec for cell %q: %w", s.Cell, c.err)
	}
	return out, nil
}

// intentSpecFromPB converts a spec from the wire; it fails on enum values
// this SDK does not know.
func intentSpecFromPB(s *pb.IntentSpec) (*IntentSpec, error) {
	if s == nil {
		return nil, nil
	}
	c := &conv{}
	abi, ok := abisFromPB[s.GetAbi()]
	if !ok {
		c.failf("unknown abi %v", s.GetAbi())
	}
	out := &IntentSpec{
		Cell:   s.GetCell(),
		Module: ModuleRef{Path: s.GetModule().GetPath(), SHA256: s.GetModule().GetSha256()},
		ABI:    abi,
		Endpoints: convertSlice(s.GetEndpoints(), func(e *pb.Endpoint) Endpoint {
			return Endpoint{Protocol: e.GetProtocol(), Listen: e.GetListen(), Path: e.GetPath()}
		}),
		Replicas: ReplicaBounds{Min: int(s.GetReplicas().GetMin()), Max: int(s.GetReplicas().GetMax())},
		Warm:     int(s.GetWarm()),
		Objectives: convertSlice(s.GetObjectives(), func(o *pb.Objective) Objective {
			k, ok := objectiveKindsFromPB[o.GetKind()]
			if !ok {
				c.failf("objective on line %d: unknown kind %v", o.GetLine(), o.GetKind())
			}
			return Objective{Kind: k, Threshold: o.GetThreshold(), Line: int(o.GetLine())}
		}),
		Rules: convertSlice(s.GetRules(), func(r *pb.Rule) Rule {
			cmp, ok := comparatorsFromPB[r.GetComparator()]
			if !ok {
				c.failf("rule %q: unknown comparator %v", r.GetName(), r.GetComparator())
			}
			return Rule{
				Name:       r.GetName(),
				Signal:     r.GetSignal(),
				Comparator: cmp,
				Threshold:  r.GetThreshold(),
				Window:     durationFromPB(r.GetWindow()),
				Verb:       r.GetVerb(),
				Args:       cloneStrings(r.GetArgs()),
				Cooldown:   durationFromPB(r.GetCooldown()),
				Labels:     cloneMap(r.GetLabels()),
				Line:       int(r.GetLine()),
			}
		}),
		Limits: Limits{
			RequestTime: durationFromPB(s.GetLimits().GetRequestTime()),
			Memory:      s.GetLimits().GetMemoryBytes(),
			Concurrency: int(s.GetLimits().GetConcurrency()),
			Body:        s.GetLimits().GetBodyBytes(),
			KV:          s.GetLimits().GetKvBytes(),
		},
		Grants: convertSlice(s.GetGrants(), func(g *pb.Grant) Grant {
			return Grant{Capability: g.GetCapability(), Targets: cloneStrings(g.GetTargets())}
		}),
		AllowFrom: cloneStrings(s.GetAllowFrom()),
		Placement: Placement{
			SpreadAcrossNodes: s.GetPlacement().GetSpreadAcrossNodes(),
			SpreadMinNodes:    int(s.GetPlacement().GetSpreadMinNodes()),
			PreferNodes:       cloneStrings(s.GetPlacement().GetPreferNodes()),
			AvoidNodes:        cloneStrings(s.GetPlacement().GetAvoidNodes()),
		},
		DecayAfterIdle: durationFromPB(s.GetDecayAfterIdle()),
		State: StatePolicy{
			Keep:           s.GetState().GetKeep(),
			ReplicateEvery: durationFromPB(s.GetState().GetReplicateEvery()),
		},
		Hosts: cloneStrings(s.GetHosts()),
	}
	if c.err != nil {
		return nil, fmt.Errorf("intent spec for cell %q: %w", s.GetCell(), c.err)
	}
	return out, nil
}

func diagnosticToPB(c *conv, d Diagnostic) *pb.Diagnostic {
	sev, ok := severities[d.Severity]
	if !ok {
		c.failf("diagnostic %q: unknown severity %v", d.Message, d.Severity)
	}
	return &pb.Diagnostic{
		File:     d.File,
		Line:     c.u32("diagnostic line", d.Line),
		Column:   c.u32("diagnostic column", d.Column),
		Severity: sev,
		Message:  d.Message,
		Hint:     d.Hint,
	}
}

func diagnosticFromPB(c *conv, d *pb.Diagnostic) Diagnostic {
	sev, ok := severitiesFromPB[d.GetSeverity()]
	if !ok {
		c.failf("diagnostic %q: unknown severity %v", d.GetMessage(), d.GetSeverity())
	}
	return Diagnostic{
		File:     d.GetFile(),
		Line:     int(d.GetLine()),
		Column:   int(d.GetColumn()),
		Severity: sev,
		Message:  d.GetMessage(),
		Hint:     d.GetHint(),
	}
}

// ----- verb -----

func signalValueToPB(v SignalValue) *pb.SignalValue {
	return &pb.SignalValue{
		Signal:       v.Signal,
		Value:        v.Value,
		Labels:       cloneMap(v.Labels),
		TimeUnixNano: nanosFromTime(v.Time),
	}
}

func signalValueFromPB(v *pb.SignalValue) SignalValue {
	return SignalValue{
		Signal: v.GetSignal(),
		Value:  v.GetValue(),
		Labels: cloneMap(v.GetLabels()),
		Time:   timeFromNanos(v.GetTimeUnixNano()),
	}
}

func verbRequestToPB(r VerbRequest) *pb.VerbRequest {
	out := &pb.VerbRequest{
		Verb: r.Verb,
		Cell: r.Cell,
		Args: cloneStrings(r.Args),
	}
	if t := r.Trigger; t.Rule != "" || t.Manual || len(t.Values) > 0 {
		out.Trigger = &pb.Trigger{
			Rule:   t.Rule,
			Manual: t.Manual,
			Values: convertSlice(t.Values, signalValueToPB),
		}
	}
	return out
}

func verbRequestFromPB(r *pb.VerbRequest) VerbRequest {
	return VerbRequest{
		Verb: r.GetVerb(),
		Cell: r.GetCell(),
		Args: cloneStrings(r.GetArgs()),
		Trigger: Trigger{
			Rule:   r.GetTrigger().GetRule(),
			Manual: r.GetTrigger().GetManual(),
			Values: convertSlice(r.GetTrigger().GetValues(), signalValueFromPB),
		},
	}
}

func verbResultToPB(r VerbResult) (*pb.VerbResponse, error) {
	o, ok := outcomes[r.Outcome]
	if !ok {
		return nil, fmt.Errorf("unknown outcome %v", r.Outcome)
	}
	return &pb.VerbResponse{Outcome: o, Message: r.Message}, nil
}

func verbResultFromPB(r *pb.VerbResponse) (VerbResult, error) {
	o, ok := outcomesFromPB[r.GetOutcome()]
	if !ok {
		return VerbResult{}, fmt.Errorf("unknown outcome %v", r.GetOutcome())
	}
	return VerbResult{Outcome: o, Message: r.GetMessage()}, nil
}

// ----- host -----

func cellStateToPB(c *conv, s CellState) *pb.CellState {
	return &pb.CellState{
		Name:              s.Name,
		Sha256:            s.SHA256,
		Abi:               s.ABI,
		State:             s.State,
		Replicas:          c.u32("replicas", s.Replicas),
		Requests:          s.Requests,
		Errors:            s.Errors,
		InFlight:          s.InFlight,
		Error:             s.Error,
		Warm:              c.u32("warm", s.Warm),
		MinReplicas:       c.u32("min replicas", s.MinReplicas),
		MaxReplicas:       c.u32("max replicas", s.MaxReplicas),
		IdleSeconds:       s.Idle.Seconds(),
		SpreadAcrossNodes: s.Spread,
		PreferNodes:       s.Prefer,
		AvoidNodes:        s.Avoid,
		Versions: convertSlice(s.Versions, func(v VersionState) *pb.VersionState {
			return &pb.VersionState{
				Sha256:     v.SHA256,
				Weight:     v.Weight,
				Requests:   v.Requests,
				Errors:     v.Errors,
				P99Seconds: v.P99.Seconds(),
				Replicas:   c.u32("version replicas", v.Replicas),
				Source:     v.Source,
			}
		}),
	}
}

func cellStateFromPB(s *pb.CellState) CellState {
	return CellState{
		Name:        s.GetName(),
		SHA256:      s.GetSha256(),
		ABI:         s.GetAbi(),
		State:       s.GetState(),
		Error:       s.GetError(),
		Replicas:    int(s.GetReplicas()),
		Requests:    s.GetRequests(),
		Errors:      s.GetErrors(),
		InFlight:    s.GetInFlight(),
		Warm:        int(s.GetWarm()),
		MinReplicas: int(s.GetMinReplicas()),
		MaxReplicas: int(s.GetMaxReplicas()),
		Idle:        secondsToDuration(s.GetIdleSeconds()),
		Spread:      s.GetSpreadAcrossNodes(),
		Prefer:      s.GetPreferNodes(),
		Avoid:       s.GetAvoidNodes(),
		Versions: convertSlice(s.GetVersions(), func(v *pb.VersionState) VersionState {
			return VersionState{
				SHA256:   v.GetSha256(),
				Weight:   v.GetWeight(),
				Requests: v.GetRequests(),
				Errors:   v.GetErrors(),
				P99:      secondsToDuration(v.GetP99Seconds()),
				Replicas: int(v.GetReplicas()),
				Source:   v.GetSource(),
			}
		}),
	}
}

// secondsToDuration converts seconds, saturating and mapping NaN to 0.
func secondsToDuration(s float64) time.Duration {
	switch {
	case s != s || s <= 0:
		return 0
	case s >= float64(math.MaxInt64)/1e9:
		return math.MaxInt64
	}
	return time.Duration(s * 1e9)
}

func readingToPB(r Reading) *pb.SignalReading {
	return &pb.SignalReading{
		Signal:       r.Signal,
		Value:        r.Value,
		Labels:       cloneMap(r.Labels),
		TimeUnixNano: nanosFromTime(r.Time),
		Source:       r.Source,
	}
}

func readingFromPB(r *pb.SignalReading) Reading {
	return Reading{
		Signal: r.GetSignal(),
		Value:  r.GetValue(),
		Labels: cloneMap(r.GetLabels()),
		Time:   timeFromNanos(r.GetTimeUnixNano()),
		Source: r.GetSource(),
	}
}

func routeWeightToPB(w RouteWeight) *pb.RouteWeight {
	return &pb.RouteWeight{Target: w.Target, Weight: w.Weight}
}

func routeWeightFromPB(w *pb.RouteWeight) RouteWeight {
	return RouteWeight{Target: w.GetTarget(), Weight: w.GetWeight()}
}
