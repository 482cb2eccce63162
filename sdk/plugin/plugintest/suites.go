package plugintest

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/celluster/celluster/pluginapi"
	pb "github.com/celluster/celluster/pluginapi/v1"
	"github.com/celluster/celluster/sdk/plugin"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Timing of the telemetry stream checks.
const (
	// StreamInterval is the interval the suite asks a source for.
	StreamInterval = 100 * time.Millisecond
	// FirstBatchTimeout is how long a source may take to send its first
	// batch.
	FirstBatchTimeout = 5 * time.Second
	// StreamStopTimeout is how long Stream may take to return once its
	// ctx has ended.
	StreamStopTimeout = 2 * time.Second
)

// signalName is the form of a signal name: lower-case dotted words.
var signalName = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$`)

// TelemetrySuite runs impl as a telemetry source through the real gRPC
// boundary and checks that:
//
//   - Info has kind dev.celluster.telemetry.v1, info's name, a version,
//     and api_versions including pluginapi.ProtocolVersion;
//   - Configure succeeds;
//   - Signals is non-empty, every name is unique and has the form
//     `^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$`, and every signal has a unit and
//     a kind;
//   - Stream delivers a batch within [FirstBatchTimeout], whose samples
//     name only declared signals and carry a time;
//   - once its stream is canceled, Stream returns nil within
//     [StreamStopTimeout].
func TelemetrySuite(t *testing.T, info plugin.Info, impl plugin.TelemetrySource, opts ...Option) {
	t.Helper()
	o := buildOptions(opts)
	w := &watchedSource{impl: impl, ended: make(chan error, 16)}
	h := start(t, info, w, pluginapi.KindTelemetry)
	h.configure(o)
	client := pb.NewTelemetryClient(h.conn)

	resp, err := client.Signals(h.ctx(), &pb.SignalsRequest{})
	if err != nil {
		t.Fatalf("Signals: %v", err)
	}
	declared := make(map[string]bool)
	if len(resp.GetSignals()) == 0 {
		t.Errorf("Signals: none declared")
	}
	for _, s := range resp.GetSignals() {
		name := s.GetName()
		if !signalName.MatchString(name) {
			t.Errorf("Signals: name %q does not match %s", name, signalName)
		}
		if declared[name] {
			t.Errorf("Signals: %q declared twice", name)
		}
		declared[name] = true
		if s.GetUnit() == "" {
			t.Errorf("Signals: %q has no unit", name)
		}
		if s.GetKind() == pb.SignalKind_SIGNAL_KIND_UNSPECIFIED {
			t.Errorf("Signals: %q has no kind", name)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := client.Stream(ctx, &pb.StreamRequest{Interval: durationpb.New(StreamInterval)})
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	type recv struct {
		batch *pb.SampleBatch
		err   error
	}
	got := make(chan recv, 1)
	go func() {
		b, err := stream.Recv()
		got <- recv{b, err}
	}()
	select {
	case r := <-got:
		if r.err != nil {
			t.Errorf("Stream: ended before its first batch: %v", r.err)
			return
		}
		if len(r.batch.GetSamples()) == 0 {
			t.Errorf("Stream: empty batch")
		}
		for _, s := range r.batch.GetSamples() {
			if !declared[s.GetSignal()] {
				t.Errorf("Stream: sample of undeclared signal %q", s.GetSignal())
			}
			if s.GetTimeUnixNano() == 0 {
				t.Errorf("Stream: sample of %q has no time", s.GetSignal())
			}
		}
	case <-time.After(FirstBatchTimeout):
		t.Errorf("Stream: no batch within %v", FirstBatchTimeout)
	}

	cancel()
	select {
	case err := <-w.ended:
		if err != nil {
			t.Errorf("Stream returned %v after its ctx ended; want nil", err)
		}
	case <-time.After(StreamStopTimeout):
		t.Errorf("Stream did not return within %v of its ctx ending", StreamStopTimeout)
	}
}

// watchedSource reports when the source's Stream returns.
type watchedSource struct {
	impl  plugin.TelemetrySource
	ended chan error
}

func (w *watchedSource) Configure(ctx context.Context, cfg plugin.Config, host plugin.Host) error {
	if c, ok := w.impl.(plugin.Configurer); ok {
		return c.Configure(ctx, cfg, host)
	}
	return nil
}

func (w *watchedSource) Signals(ctx context.Context) ([]plugin.Signal, error) {
	return w.impl.Signals(ctx)
}

func (w *watchedSource) Stream(ctx context.Context, interval time.Duration, send func([]plugin.Sample) error) error {
	err := w.impl.Stream(ctx, interval, send)
	select {
	case w.ended <- err:
	default:
	}
	return err
}

// Position is a 1-based line and column in an intent.
type Position struct {
	// Line and Column are 1-based.
	Line, Column int
}

// String returns "line:column".
func (p Position) String() string { return fmt.Sprintf("%d:%d", p.Line, p.Column) }

// IntentCase is one input for [IntentSuite].
type IntentCase struct {
	// Name names the subtest.
	Name string
	// Filename is passed to Parse; empty means "case" with the parser's
	// first extension.
	Filename string
	// MediaType is passed to Parse; optional.
	MediaType string
	// Content is the intent.
	Content []byte
	// WantErrorAt is where the input's error is, or nil for a valid input.
	WantErrorAt *Position
}

// IntentSuite runs impl as an intent parser through the real gRPC boundary
// and checks that:
//
//   - Info has kind dev.celluster.intent.v1, info's name, a version, and
//     api_versions including pluginapi.ProtocolVersion;
//   - Configure succeeds;
//   - Accepts declares at least one extension or media type, extensions
//     start with "." and media types contain "/";
//   - each valid case (WantErrorAt nil; at least one is required) parses
//     to a spec with a cell name and no error diagnostics;
//   - each invalid case parses to no spec and at least one diagnostic of
//     severity error at WantErrorAt, with a message;
//   - every diagnostic has a severity, a message, and the file name.
func IntentSuite(t *testing.T, info plugin.Info, impl plugin.IntentParser, cases []IntentCase, opts ...Option) {
	t.Helper()
	o := buildOptions(opts)
	h := start(t, info, impl, pluginapi.KindIntent)
	h.configure(o)
	client := pb.NewIntentParserClient(h.conn)

	acc, err := client.Accepts(h.ctx(), &pb.AcceptsRequest{})
	if err != nil {
		t.Fatalf("Accepts: %v", err)
	}
	if len(acc.GetExtensions())+len(acc.GetMediaTypes()) == 0 {
		t.Errorf("Accepts: no extensions and no media types")
	}
	for _, e := range acc.GetExtensions() {
		if len(e) < 2 || e[0] != '.' {
			t.Errorf("Accepts: extension %q does not start with a dot", e)
		}
	}
	for _, m := range acc.GetMediaTypes() {
		if !strings.Contains(m, "/") {
			t.Errorf("Accepts: media type %q has no '/'", m)
		}
	}
	if !slices.ContainsFunc(cases, func(c IntentCase) bool { return c.WantErrorAt == nil }) {
		t.Errorf("IntentSuite needs at least one valid case (WantErrorAt nil)")
	}

	for i, c := range cases {
		name := c.Name
		if name == "" {
			name = fmt.Sprintf("case%d", i)
		}
		t.Run(name, func(t *testing.T) {
			filename := c.Filename
			if filename == "" {
				filename = "case"
				if len(acc.GetExtensions()) > 0 {
					filename += acc.GetExtensions()[0]
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			defer cancel()
			resp, err := client.Parse(ctx, &pb.ParseRequest{Filename: filename, MediaType: c.MediaType, Content: c.Content})
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			var errs []*pb.Diagnostic
			for _, d := range resp.GetDiagnostics() {
				if d.GetSeverity() == pb.Severity_SEVERITY_UNSPECIFIED {
					t.Errorf("diagnostic %s has no severity", formatDiag(d))
				}
				if d.GetSeverity() != pb.Severity_SEVERITY_WARNING {
					errs = append(errs, d)
				}
				if d.GetMessage() == "" {
					t.Errorf("diagnostic at %d:%d has no message", d.GetLine(), d.GetColumn())
				}
				if d.GetFile() != filename {
					t.Errorf("diagnostic %s names file %q, want %q", formatDiag(d), d.GetFile(), filename)
				}
			}
			if c.WantErrorAt == nil {
				if resp.GetSpec() == nil {
					t.Errorf("valid input gave no spec")
				} else if resp.GetSpec().GetCell() == "" {
					t.Errorf("valid input gave a spec with no cell name")
				}
				for _, d := range errs {
					t.Errorf("valid input gave error diagnostic %s", formatDiag(d))
				}
				return
			}
			if resp.GetSpec() != nil {
				t.Errorf("invalid input gave a spec (for cell %q)", resp.GetSpec().GetCell())
			}
			if len(errs) == 0 {
				t.Fatalf("invalid input gave no error diagnostic; want one at %v", *c.WantErrorAt)
			}
			at := slices.IndexFunc(errs, func(d *pb.Diagnostic) bool {
				return d.GetSeverity() == pb.Severity_SEVERITY_ERROR &&
					int(d.GetLine()) == c.WantErrorAt.Line && int(d.GetColumn()) == c.WantErrorAt.Column
			})
			if at < 0 {
				var got []string
				for _, d := range errs {
					got = append(got, formatDiag(d))
				}
				t.Errorf("no error diagnostic at %v; got:\n\t%s", *c.WantErrorAt, strings.Join(got, "\n\t"))
			}
		})
	}
}

func formatDiag(d *pb.Diagnostic) string {
	return plugin.Diagnostic{
		File: d.GetFile(), Line: int(d.GetLine()), Column: int(d.GetColumn()),
		Message: d.GetMessage(), Hint: d.GetHint(),
	}.String()
}

// VerbCase is one request for [VerbSuite].
type VerbCase struct {
	// Name names the subtest; empty means "VERB CELL".
	Name string
	// Request is executed.
	Request plugin.VerbRequest
	// WantOutcome is the outcome the plugin must answer with.
	WantOutcome plugin.Outcome
	// Check, if set, is called after the request with its result and the
	// host calls the plugin made while executing it.
	Check func(t *testing.T, res plugin.VerbResult, calls []HostCall)
}

// UndeclaredVerb is the verb VerbSuite asks for to check that a plugin
// refuses verbs it does not declare.
const UndeclaredVerb = "plugintest-undeclared-verb"

// VerbSuite runs impl as a verb plugin through the real gRPC boundary,
// with a [RecordingHost] served to it over the broker, and checks that:
//
//   - Info has kind dev.celluster.verb.v1, info's name, a version, and
//     api_versions including pluginapi.ProtocolVersion;
//   - Configure succeeds;
//   - Verbs is non-empty, without empty or repeated names;
//   - each case's Execute answers with the case's outcome (and passes its
//     Check);
//   - a request for a verb the plugin does not declare ([UndeclaredVerb])
//     is answered with an error or the outcome Refused.
//
// Pass [WithHost] to give the host cells and readings and to inspect the
// calls it received.
func VerbSuite(t *testing.T, info plugin.Info, impl plugin.VerbPlugin, cases []VerbCase, opts ...Option) {
	t.Helper()
	o := buildOptions(opts)
	h := start(t, info, impl, pluginapi.KindVerb)
	h.configure(o)
	client := pb.NewVerbClient(h.conn)

	vr, err := client.Verbs(h.ctx(), &pb.VerbsRequest{})
	if err != nil {
		t.Fatalf("Verbs: %v", err)
	}
	verbs := vr.GetVerbs()
	if len(verbs) == 0 {
		t.Errorf("Verbs: none declared")
	}
	for i, v := range verbs {
		if v == "" {
			t.Errorf("Verbs: empty verb name")
		}
		if slices.Contains(verbs[:i], v) {
			t.Errorf("Verbs: %q declared twice", v)
		}
	}

	for _, c := range cases {
		name := c.Name
		if name == "" {
			name = c.Request.Verb + " " + c.Request.Cell
		}
		t.Run(name, func(t *testing.T) {
			before := len(o.host.Calls())
			res, err := execute(client, c.Request)
			calls := o.host.Calls()[before:]
			if err != nil {
				t.Fatalf("Execute: %v; want outcome %v", err, c.WantOutcome)
			}
			if res.Outcome != c.WantOutcome {
				t.Errorf("Execute: outcome %v (%q), want %v", res.Outcome, res.Message, c.WantOutcome)
			}
			if c.Check != nil {
				c.Check(t, res, calls)
			}
		})
	}

	if slices.Contains(verbs, UndeclaredVerb) {
		return
	}
	res, err := execute(client, plugin.VerbRequest{Verb: UndeclaredVerb, Cell: "plugintest", Trigger: plugin.Trigger{Manual: true}})
	if err == nil && res.Outcome != plugin.Refused {
		t.Errorf("Execute of undeclared verb %q: outcome %v (%q); want an error or %v", UndeclaredVerb, res.Outcome, res.Message, plugin.Refused)
	}
}

// execute calls Execute over gRPC, converting as the core would (with
// its own conversion, independent of the SDK's).
func execute(client pb.VerbClient, req plugin.VerbRequest) (plugin.VerbResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	preq := &pb.VerbRequest{
		Verb: req.Verb,
		Cell: req.Cell,
		Args: req.Args,
		Trigger: &pb.Trigger{
			Rule:   req.Trigger.Rule,
			Manual: req.Trigger.Manual,
		},
	}
	for _, v := range req.Trigger.Values {
		pv := &pb.SignalValue{Signal: v.Signal, Value: v.Value, Labels: v.Labels}
		if !v.Time.IsZero() {
			pv.TimeUnixNano = v.Time.UnixNano()
		}
		preq.Trigger.Values = append(preq.Trigger.Values, pv)
	}
	resp, err := client.Execute(ctx, preq)
	if err != nil {
		return plugin.VerbResult{}, err
	}
	res := plugin.VerbResult{Message: resp.GetMessage()}
	switch resp.GetOutcome() {
	case pb.Outcome_OUTCOME_DONE:
		res.Outcome = plugin.Done
	case pb.Outcome_OUTCOME_NOOP:
		res.Outcome = plugin.Noop
	case pb.Outcome_OUTCOME_REFUSED:
		res.Outcome = plugin.Refused
	case pb.Outcome_OUTCOME_FAILED:
		res.Outcome = plugin.Failed
	case pb.Outcome_OUTCOME_ROLLED_BACK:
		res.Outcome = plugin.RolledBack
	default:
		return res, fmt.Errorf("response has outcome %v", resp.GetOutcome())
	}
	return res, nil
}
