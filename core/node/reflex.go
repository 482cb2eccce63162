package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/celluster/celluster/core/admin"
	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/dispatch"
	"github.com/celluster/celluster/core/ingress"
	"github.com/celluster/celluster/core/intents"
	"github.com/celluster/celluster/core/journal"
	"github.com/celluster/celluster/core/pluginhost"
	"github.com/celluster/celluster/core/reflex"
	"github.com/celluster/celluster/core/signals"
	"github.com/celluster/celluster/core/tracing"
	pb "github.com/celluster/celluster/pluginapi/v1"
)

// intentState is what the node keeps per cell about its intent.
type intentState struct {
	applied *admin.Intent
	require cell.Requirement // what the intent in force pins about the module
	calls   callPolicy
	err     string
	hash    string          // sha256 of the applied text and origin
	routes  []ingress.Route // what the intent routes to the cell (routes.go)
}

// setupReflex opens the journal and starts the reflex engine and the verb
// dispatch loop, fed by the signal store.
func (n *Node) setupReflex() error {
	j, err := journal.Open(n.cfg.DataDir+"/journal", journal.Options{Logger: n.log})
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	n.journal = j
	n.disp = dispatch.New(verbExecutor{n}, j, dispatch.Options{
		Precheck: n.precheck,
		OnResult: n.onVerbResult,
		Logger:   n.log,
	})
	n.engine = reflex.New(n.onDecision, reflex.Options{})
	n.sig.Subscribe(n.engine.Observe)
	return nil
}

// onDecision hands a fired rule to the dispatch loop. It runs on the
// signal path and must not block.
func (n *Node) onDecision(d reflex.Decision) {
	vals := make([]journal.Value, len(d.Values))
	for i, r := range d.Values {
		vals[i] = journal.Value{Signal: r.Name, Labels: r.Labels, Value: r.Value, Time: r.Time}
	}
	req := dispatch.Request{
		Cell: d.Rule.Cell, Verb: d.Rule.Verb, Args: d.Rule.Args, Rule: d.Rule.Name,
		Origin: d.Rule.Origin, Condition: d.Rule.Op.String() + " " + formatNum(d.Rule.Threshold),
		Values: vals, Time: d.Time,
	}
	if tracing.Enabled() {
		// The decision is a trace of its own: the rule firing on its
		// readings, then the verb, its plugin and the host calls it makes.
		attrs := []attribute.KeyValue{attribute.String("celluster.cell", req.Cell), attribute.String("celluster.rule", req.Rule),
			attribute.String("celluster.condition", req.Condition), attribute.String("celluster.verb", req.Verb)}
		for _, v := range vals {
			attrs = append(attrs, attribute.Float64("celluster.signal."+v.Signal, v.Value))
		}
		_, span := tracing.Start(context.Background(), "reflex "+req.Rule, trace.SpanKindInternal, attrs...)
		req.Trace = span.SpanContext()
		span.End()
	}
	n.disp.Submit(req)
}

func formatNum(f float64) string { return strings.TrimSuffix(fmt.Sprintf("%g", f), ".0") }

// Verb runs a verb by hand through the dispatch loop and returns its
// journal entry.
func (n *Node) Verb(ctx context.Context, verb, cellName string, args []string) (journal.Entry, error) {
	if n.reg.Lookup(cellName) == nil {
		return journal.Entry{}, fmt.Errorf("no cell named %q on this node", cellName)
	}
	req := dispatch.Request{Cell: cellName, Verb: verb, Args: args, Manual: true}
	if tracing.Enabled() {
		_, span := tracing.Start(ctx, "manual "+verb, trace.SpanKindInternal, attribute.String("celluster.cell", cellName))
		req.Trace = span.SpanContext()
		defer span.End()
	}
	return n.disp.Do(ctx, req)
}

// Journal returns journal entries, oldest first.
func (n *Node) Journal(cellName string, limit int) []journal.Entry {
	return n.journal.Query(journal.Query{Cell: cellName, Limit: limit})
}

// Note implements hostapi.Notes: a plugin's note goes to the journal.
func (n *Node) Note(_ context.Context, plugin, cellName, note string) error {
	_, err := n.journal.Append(journal.Entry{Cell: cellName, Rule: journal.RuleNote, Outcome: journal.Note, Message: note, Plugin: plugin})
	return err
}

// precheck enforces the replica bounds before a verb reaches its plugin.
func (n *Node) precheck(_ context.Context, req dispatch.Request) (dispatch.Result, bool) {
	c := n.reg.Lookup(req.Cell)
	if c == nil {
		return dispatch.Result{Outcome: journal.Refused, Message: "no cell " + req.Cell + " on this node"}, false
	}
	in := c.Info()
	pol := in.Policy
	reactor := in.ABI == "reactor"
	switch req.Verb {
	case "clone":
		if slices.Contains(req.Args, "on") {
			break // onto a peer: its own bounds apply there
		}
		if !reactor {
			return dispatch.Result{Outcome: journal.Noop, Message: "command cells keep no replicas"}, false
		}
		if in.Replicas >= pol.Max {
			return dispatch.Result{Outcome: journal.Noop, Message: fmt.Sprintf("at max replicas: %d live, keep replicas %d..%d", in.Replicas, pol.Min, pol.Max)}, false
		}
	case "decay":
		if !reactor {
			return dispatch.Result{Outcome: journal.Noop, Message: "command cells keep no replicas"}, false
		}
		if floor := c.Floor(); in.Replicas <= floor {
			return dispatch.Result{Outcome: journal.Noop, Message: fmt.Sprintf("at min replicas: %d live, floor %d (keep replicas %d..%d)", in.Replicas, floor, pol.Min, pol.Max)}, false
		}
	case "spawn":
		if reactor && in.Replicas >= max(pol.Warm, pol.Min) && in.Replicas > 0 {
			return dispatch.Result{Outcome: journal.Noop, Message: fmt.Sprintf("already %d live (warm %d, keep replicas %d..%d)", in.Replicas, pol.Warm, pol.Min, pol.Max)}, false
		}
	}
	return dispatch.Result{}, true
}

// verbJournaled, when set (by benchmarks, before the node starts), is
// called as soon as a verb's end has been written to the journal.
var verbJournaled func(dispatch.Request, dispatch.Result)

// onVerbResult keeps the cell's state in step with a finished verb.
func (n *Node) onVerbResult(req dispatch.Request, res dispatch.Result) {
	if verbJournaled != nil {
		verbJournaled(req, res)
	}
	if n.metrics != nil {
		n.metrics.ObserveVerb(req.Verb, res.Outcome)
	}
	c := n.reg.Lookup(req.Cell)
	if c == nil {
		return
	}
	if req.Verb == "upgrade" && len(req.Args) > 0 {
		switch res.Outcome {
		case journal.RolledBack:
			c.NoteError(fmt.Sprintf("upgrade to %s rolled back: %s", short(req.Args[0]), res.Message))
		case journal.Done:
			c.ClearError()
		}
		// Whatever the outcome, the cell converges to its file on disk
		// (converge.go): a failed upgrade is retried, a done one checked.
		n.upgradeEnded(req, res)
	}
	if res.Outcome != journal.Done {
		return // nothing changed (and refusals may run on the signal path)
	}
	// Replica counts are a change that matters: publish at once.
	in := c.Info()
	n.sig.Put(signals.Reading{Name: "replicas", Labels: map[string]string{"cell": req.Cell}, Value: float64(in.Replicas), Source: "core"})
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// verbExecutor carries verbs out through the verb plugins.
type verbExecutor struct{ n *Node }

// Execute implements dispatch.Executor.
func (e verbExecutor) Execute(ctx context.Context, req dispatch.Request) (dispatch.Result, error) {
	n := e.n
	// Verbs dispatched while the node starts wait for its plugins.
	select {
	case <-n.pluginsReady:
	case <-ctx.Done():
		return dispatch.Result{}, ctx.Err()
	}
	var resp *pb.VerbResponse
	var plugin string
	err := pluginhost.ErrNoPlugin
	if n.plugins != nil {
		trig := &pb.Trigger{Rule: req.Rule, Manual: req.Manual}
		for _, v := range req.Values {
			trig.Values = append(trig.Values, &pb.SignalValue{Signal: v.Signal, Value: v.Value, Labels: v.Labels, TimeUnixNano: v.Time.UnixNano()})
		}
		resp, plugin, err = n.plugins.Execute(ctx, &pb.VerbRequest{Verb: req.Verb, Cell: req.Cell, Args: req.Args, Trigger: trig})
	}
	if errors.Is(err, pluginhost.ErrNoPlugin) && req.Verb == "upgrade" && len(req.Args) > 0 {
		// Mechanism without policy: no verb plugin, so swap at once.
		c := n.reg.Lookup(req.Cell)
		if c == nil {
			return dispatch.Result{}, fmt.Errorf("no cell %s", req.Cell)
		}
		if err := c.Promote(req.Args[0]); err != nil {
			return dispatch.Result{}, err
		}
		return dispatch.Result{Outcome: journal.Done, Message: "no verb plugin implements upgrade: promoted " + short(req.Args[0]) + " at once", Plugin: "core"}, nil
	}
	if err != nil {
		return dispatch.Result{Plugin: plugin}, err
	}
	return dispatch.Result{Outcome: outcomeName(resp.GetOutcome()), Message: resp.GetMessage(), Plugin: plugin}, nil
}

func outcomeName(o pb.Outcome) string {
	switch o {
	case pb.Outcome_OUTCOME_DONE:
		return journal.Done
	case pb.Outcome_OUTCOME_NOOP:
		return journal.Noop
	case pb.Outcome_OUTCOME_REFUSED:
		return journal.Refused
	case pb.Outcome_OUTCOME_ROLLED_BACK:
		return journal.RolledBack
	}
	return journal.Failed
}

// preparedIntent is an intent parsed, checked and compiled, not yet applied.
type preparedIntent struct {
	src      intents.Source
	hash     string
	spec     *pb.IntentSpec
	parser   string
	prog     *reflex.Program
	require  cell.Requirement
	routes   []ingress.Route
	warnings []string
}

// prepareFound parses and checks the intent intents.Find returned (src,
// err) for a cell. It returns nil when the intent is unchanged or was
// rejected (the one in force stays; the error shows in `celctl cells`).
func (n *Node) prepareFound(ctx context.Context, c *cell.Cell, src intents.Source, err error) *preparedIntent {
	if err != nil {
		n.intentError(c, err.Error())
		return nil
	}
	return n.prepareSource(ctx, c, src)
}

// applySource parses, compiles and applies one intent source for a cell
// whose module is module (loaded from path).
func (n *Node) applySource(ctx context.Context, c *cell.Cell, src intents.Source, module []byte, path string) {
	if p := n.prepareSource(ctx, c, src); p != nil {
		c.Require(p.require)
		n.commitIntent(ctx, c, p, module, path)
	}
}

// requirement returns what the intent to be in force pins about the cell's
// module: p's when a new intent was prepared, else the one in force.
func (n *Node) requirement(name string, p *preparedIntent) cell.Requirement {
	if p != nil {
		return p.require
	}
	n.imu.Lock()
	defer n.imu.Unlock()
	if st := n.intents[name]; st != nil {
		return st.require
	}
	return cell.Requirement{}
}

// prepareSource parses, checks and compiles one intent source; nil when it
// is unchanged or rejected.
func (n *Node) prepareSource(ctx context.Context, c *cell.Cell, src intents.Source) *preparedIntent {
	sum := sha256.Sum256(append([]byte(string(src.Origin)+"\x00"), src.Content...))
	hash := hex.EncodeToString(sum[:])
	n.imu.Lock()
	st := n.intents[c.Name()]
	unchanged := st != nil && st.hash == hash && st.err == ""
	n.imu.Unlock()
	if unchanged {
		return nil
	}
	spec, parser, warnings, err := n.parseIntent(ctx, src)
	if err != nil {
		n.intentError(c, err.Error())
		return nil
	}
	if spec.GetCell() != "" && spec.GetCell() != c.Name() {
		n.intentError(c, fmt.Sprintf("%s: the intent is for cell %q, but the module is %s", src.Name, spec.GetCell(), c.Name()))
		return nil
	}
	req, err := checkStatements(c.Name(), src, spec)
	if err == nil {
		err = checkRoutes(c.Name(), src, spec)
	}
	if err != nil {
		n.intentError(c, err.Error())
		return nil
	}
	prog, err := reflex.Compile(c.Name(), spec, reflex.Defaults{})
	if err != nil {
		n.intentError(c, fmt.Sprintf("%s: %v", src.Name, err))
		return nil
	}
	grantsSignal := slices.ContainsFunc(spec.GetGrants(), func(g *pb.Grant) bool { return g.GetCapability() == "signal" })
	warnings = append(warnings, n.silentSignals(src, prog.Rules, grantsSignal)...)
	for _, w := range warnings {
		n.log.Warn("intent warning", "cell", c.Name(), "warning", w)
	}
	return &preparedIntent{src: src, hash: hash, spec: spec, parser: parser, prog: &prog, require: req, routes: cellRoutes(c.Name(), spec), warnings: warnings}
}

// commitIntent applies a prepared intent to the cell.
func (n *Node) commitIntent(ctx context.Context, c *cell.Cell, p *preparedIntent, module []byte, path string) {
	src, spec, prog := p.src, p.spec, p.prog
	lim := n.cfg.Limits
	if l := spec.GetLimits(); l != nil {
		if d := l.GetRequestTime(); d != nil {
			lim.RequestTimeout = d.AsDuration()
		}
		if m := l.GetMemoryBytes(); m != 0 {
			lim.Memory = m
		}
		if cc := l.GetConcurrency(); cc != 0 {
			lim.Concurrency = int(cc)
		}
		if b := l.GetBodyBytes(); b != 0 {
			lim.MaxBody = int64(b) // the cell's own, below or above --limit-body
		}
	}
	reload, err := c.SetLimits(lim)
	if err != nil {
		n.intentError(c, fmt.Sprintf("%s: %v", src.Name, err))
		return
	}
	if err := c.SetPolicy(cell.Policy{Min: prog.Min, Max: prog.Max, Warm: prog.Warm, DecayIdle: prog.DecayIdle,
		KeepState: prog.KeepState, StateEvery: prog.StateEvery}); err != nil {
		n.intentError(c, fmt.Sprintf("%s: %v", src.Name, err))
		return
	}
	if reload {
		if err := c.Load(ctx, module, path); err != nil {
			n.log.Error("reloading with the intent's memory limit failed; the previous build keeps serving", "cell", c.Name(), "err", err)
		}
	}
	n.engine.SetRules(c.Name(), prog.Rules)
	n.imu.Lock()
	var calls callPolicy
	signal := false
	for _, g := range spec.GetGrants() {
		switch g.GetCapability() {
		case "call":
			calls.calls = append(calls.calls, g.GetTargets()...)
		case "signal":
			signal = true
		}
	}
	c.SetSignalGrant(signal)
	calls.spreadNodes = int(spec.GetPlacement().GetSpreadMinNodes())
	c.SetCallPolicy(cell.CallPolicy{Calls: calls.calls, AllowFrom: spec.GetAllowFrom()})
	calls.allowFrom = spec.GetAllowFrom()
	calls.prefer = spec.GetPlacement().GetPreferNodes()
	calls.avoid = spec.GetPlacement().GetAvoidNodes()
	calls.spread = spec.GetPlacement().GetSpreadAcrossNodes()
	n.intents[c.Name()] = &intentState{hash: p.hash, calls: calls, require: p.require, routes: p.routes, applied: &admin.Intent{
		Cell: c.Name(), Origin: string(src.Origin), Source: src.Name, Text: string(src.Content),
		Parser: p.parser, Applied: time.Now(), Min: prog.Min, Max: prog.Max, Warm: prog.Warm,
		DecayIdle: prog.DecayIdle, UpgradeArgs: prog.UpgradeArgs, Warnings: p.warnings,
		KeepState: prog.KeepState, StateEvery: prog.StateEvery,
	}}
	n.imu.Unlock()
	n.rebuildRoutes()
	n.log.Info("intent applied", "cell", c.Name(), "source", src.Name, "rules", len(prog.Rules),
		"replicas", fmt.Sprintf("%d..%d", prog.Min, prog.Max), "warm", prog.Warm, "warnings", len(p.warnings))
	n.disp.Submit(dispatch.Request{Cell: c.Name(), Verb: "spawn", Rule: "intent", Origin: "intent applied from " + src.Name})
}

// parseIntent has an intent plugin parse src, waiting (bounded by ctx) for
// the plugins to start.
func (n *Node) parseIntent(ctx context.Context, src intents.Source) (*pb.IntentSpec, string, []string, error) {
	select {
	case <-n.pluginsReady:
	case <-ctx.Done():
		return nil, "", nil, ctx.Err()
	}
	if n.plugins == nil {
		return nil, "", nil, fmt.Errorf("%s: no intent parser plugin is running", src.Name)
	}
	filename := src.Name
	if src.Origin != intents.FromFile {
		filename = src.Name + intents.Ext // route by extension
	}
	var resp *pb.ParseResponse
	var parser string
	var err error
	for attempt := 0; ; attempt++ {
		resp, parser, err = n.plugins.Parse(ctx, filename, "", src.Content)
		if err == nil || !errors.Is(err, pluginhost.ErrPluginShutdown) || attempt >= 20 {
			break
		}
		select { // the parser is restarting
		case <-time.After(250 * time.Millisecond):
		case <-ctx.Done():
			return nil, "", nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, parser, nil, fmt.Errorf("%s: %w", src.Name, err)
	}
	var errs, warnings []string
	for _, d := range resp.GetDiagnostics() {
		if d.GetSeverity() == pb.Severity_SEVERITY_WARNING {
			warnings = append(warnings, fmt.Sprintf("%s:%d:%d: %s", src.Name, d.GetLine(), d.GetColumn(), d.GetMessage()))
			continue
		}
		msg := fmt.Sprintf("%s:%d:%d: %s", src.Name, d.GetLine(), d.GetColumn(), d.GetMessage())
		if h := d.GetHint(); h != "" {
			msg += " (hint: " + h + ")"
		}
		errs = append(errs, msg)
	}
	if len(errs) > 0 || resp.GetSpec() == nil {
		if len(errs) == 0 {
			errs = append(errs, src.Name+": the parser returned no intent and no diagnostics")
		}
		return nil, parser, nil, errors.New(strings.Join(errs, "; "))
	}
	return resp.GetSpec(), parser, warnings, nil
}

// intentError records a rejected intent; the one in force stays.
func (n *Node) intentError(c *cell.Cell, msg string) {
	n.imu.Lock()
	st := n.intents[c.Name()]
	if st == nil {
		st = &intentState{}
		n.intents[c.Name()] = st
	}
	st.err = msg
	st.hash = ""
	n.imu.Unlock()
	n.log.Error("intent rejected; the intent in force stays", "cell", c.Name(), "err", msg)
}

// forgetIntent drops a removed cell's intent and rules.
func (n *Node) forgetIntent(name string) {
	n.engine.RemoveCell(name)
	n.imu.Lock()
	delete(n.intents, name)
	n.imu.Unlock()
	n.rebuildRoutes()
}

// Intent implements admin.Node: the intent in force for a cell, with its
// rules' state.
func (n *Node) Intent(name string) (admin.Intent, bool) {
	n.imu.Lock()
	st := n.intents[name]
	var in admin.Intent
	ok := st != nil
	if ok && st.applied != nil {
		in = *st.applied
	}
	if ok {
		in.Error = st.err
	}
	n.imu.Unlock()
	if !ok {
		return admin.Intent{}, false
	}
	in.Cell = name
	in.Rules = n.engine.Status(name)
	return in, true
}

// intentErr returns the last intent error of a cell.
func (n *Node) intentErr(name string) string {
	n.imu.Lock()
	defer n.imu.Unlock()
	if st := n.intents[name]; st != nil {
		return st.err
	}
	return ""
}
