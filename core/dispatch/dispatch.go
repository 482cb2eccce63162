package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/celluster/celluster/core/journal"
	"github.com/celluster/celluster/core/tracing"
)

// Verbs the conflict rules know about.
const (
	verbClone   = "clone"
	verbDecay   = "decay"
	verbReroute = "reroute"
	verbUpgrade = "upgrade"
)

// Defaults for Options.
const (
	// DefaultQueueLimit is the default Options.QueueLimit.
	DefaultQueueLimit = 64
	// DefaultTimeout is the default Options.Timeout.
	DefaultTimeout = 2 * time.Minute
)

// Request asks for a verb to run on a cell.
type Request struct {
	// Cell is the cell the verb acts on.
	Cell string
	// Verb is the verb's name: spawn, clone, reroute, upgrade, decay, ...
	Verb string
	// Args are the verb's arguments.
	Args []string
	// Rule is the name of the rule that fired (ignored when Manual).
	Rule string
	// Origin says in words what the rule came from.
	Origin string
	// Condition is the rule's test against its signal, e.g. "> 0.02".
	Condition string
	// Manual marks a request made by hand.
	Manual bool
	// Values are the readings that made the rule fire.
	Values []journal.Value
	// Time is when the request was made (zero: when it is submitted).
	Time time.Time
	// Trace is the span of the decision that made the request, when
	// traced: the verb's span is its child, and the journal entry carries
	// its trace id.
	Trace trace.SpanContext
}

// Result is how a verb ended.
type Result struct {
	// Outcome is one of the journal outcomes; "" means journal.Done after
	// Execute, journal.Noop from Precheck.
	Outcome string
	// Message says what happened.
	Message string
	// Plugin names the plugin that carried the verb out.
	Plugin string
}

// Executor runs verbs. An error means the verb could not be carried out
// (transport or plugin failure) and is journaled as failed.
type Executor interface {
	// Execute carries req out, returning when it is over or ctx ends.
	Execute(ctx context.Context, req Request) (Result, error)
}

// Options configure a Dispatcher. The zero value uses the defaults.
type Options struct {
	// Precheck, if set, runs on the cell's worker before Execute; when it
	// returns ok=false, res is journaled (e.g. noop "at max replicas 8") and
	// Execute is not called.
	Precheck func(ctx context.Context, req Request) (res Result, ok bool)
	// OnResult, if set, is called after each request is journaled, with the
	// result as journaled. It must not block.
	OnResult func(req Request, res Result)
	// Clock stamps requests without a Time (default time.Now).
	Clock func() time.Time
	// Logger receives failures and journal errors (default slog.Default()).
	Logger *slog.Logger
	// QueueLimit bounds each cell's queue, the running request not counted
	// (default DefaultQueueLimit).
	QueueLimit int
	// Timeout bounds each Execute (default DefaultTimeout).
	Timeout time.Duration
}

// Dispatcher runs verb requests: one at a time per cell, cells in parallel.
// It is safe for concurrent use.
type Dispatcher struct {
	exec Executor
	j    *journal.Journal
	opts Options
	log  *slog.Logger
	base context.Context // parent of every Execute; cancelled when Close gives up
	stop context.CancelFunc
	wg   sync.WaitGroup // workers

	mu      sync.Mutex
	cells   map[string]*cellQueue // cells with a worker
	workers int
	closed  bool
}

// cellQueue is one cell's work. It exists while the cell has a worker.
type cellQueue struct {
	running *item
	queued  []*item
}

type item struct {
	req  Request
	done chan outcome // buffered; nil unless a Do waits
}

type outcome struct {
	entry journal.Entry
	err   error
}

// New returns a dispatcher running verbs through exec and journaling them in
// j (nil: entries are only handed to OnResult and Do).
func New(exec Executor, j *journal.Journal, opts Options) *Dispatcher {
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.QueueLimit <= 0 {
		opts.QueueLimit = DefaultQueueLimit
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	base, stop := context.WithCancel(context.Background())
	return &Dispatcher{
		exec:  exec,
		j:     j,
		opts:  opts,
		log:   opts.Logger,
		base:  base,
		stop:  stop,
		cells: map[string]*cellQueue{},
	}
}

// Submit hands req to the dispatcher without blocking on other work. It
// returns true when req was queued to run, false when it was journaled
// without running (refused, superseded or coalesced; see the package
// documentation).
func (d *Dispatcher) Submit(req Request) bool {
	return d.submit(&item{req: d.normalize(req)})
}

// Do submits req and waits until it is journaled, returning its entry. A
// refused, failed or otherwise unsuccessful verb is not an error: see
// Entry.Outcome. The error reports a journal failure, or ctx ending first;
// the request then still runs and is journaled.
func (d *Dispatcher) Do(ctx context.Context, req Request) (journal.Entry, error) {
	it := &item{req: d.normalize(req), done: make(chan outcome, 1)}
	d.submit(it)
	select {
	case o := <-it.done:
		return o.entry, o.err
	case <-ctx.Done():
		return journal.Entry{}, fmt.Errorf("dispatch: waiting for %s on %s: %w", it.req.Verb, it.req.Cell, ctx.Err())
	}
}

// Busy returns the verb running on cell ("" if none) and the verbs queued
// behind it, in order.
func (d *Dispatcher) Busy(cell string) (running string, queued []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	q := d.cells[cell]
	if q == nil {
		return "", nil
	}
	if q.running != nil {
		running = q.running.req.Verb
	}
	for _, it := range q.queued {
		queued = append(queued, it.req.Verb)
	}
	return running, queued
}

// Close stops accepting requests, journals the queued ones refused, and
// waits for the running ones until ctx ends; then it cancels their
// contexts and returns without waiting further. Close is idempotent.
func (d *Dispatcher) Close(ctx context.Context) {
	d.mu.Lock()
	var dropped []*item
	if !d.closed {
		d.closed = true
		for _, q := range d.cells {
			dropped = append(dropped, q.queued...)
			q.queued = nil
		}
	}
	d.mu.Unlock()
	for _, it := range dropped {
		d.deliver(it, d.record(it.req, Result{Outcome: journal.Refused, Message: "dispatcher closed"}, 0))
	}

	done := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		d.mu.Lock()
		var busy []string
		for cell, q := range d.cells {
			if q.running != nil {
				busy = append(busy, cell+":"+q.running.req.Verb)
			}
		}
		d.mu.Unlock()
		slices.Sort(busy)
		d.log.Warn("dispatch: closing without waiting for running verbs; cancelling them", "running", busy, "err", ctx.Err())
	}
	d.stop()
}

// normalize stamps req and copies what the caller might reuse.
func (d *Dispatcher) normalize(req Request) Request {
	if req.Time.IsZero() {
		req.Time = d.opts.Clock()
	}
	if req.Manual {
		req.Rule = journal.RuleManual
	}
	req.Args = slices.Clone(req.Args)
	return req
}

// submit applies the conflict rules to it and queues it or journals it.
func (d *Dispatcher) submit(it *item) bool {
	req := it.req
	var (
		dropped []*item
		start   bool
		q       *cellQueue
	)
	d.mu.Lock()
	q = d.cells[req.Cell]
	res, rejected := d.conflict(q, req)
	if !rejected {
		if q == nil {
			q = &cellQueue{}
			d.cells[req.Cell] = q
			d.workers++
			d.wg.Add(1)
			start = true
		}
		if req.Verb == verbClone {
			kept := q.queued[:0]
			for _, x := range q.queued {
				if droppable(x.req) {
					dropped = append(dropped, x)
				} else {
					kept = append(kept, x)
				}
			}
			clear(q.queued[len(kept):])
			q.queued = kept
		}
		q.queued = append(q.queued, it)
	}
	d.mu.Unlock()

	if start {
		go d.work(req.Cell, q)
	}
	for _, x := range dropped {
		d.deliver(x, d.record(x.req, Result{Outcome: journal.Superseded, Message: describe(req) + " came in after it"}, 0))
	}
	if rejected {
		d.deliver(it, d.record(req, res, 0))
		d.log.Debug("dispatch: request not queued", "cell", req.Cell, "verb", req.Verb, "outcome", res.Outcome, "message", res.Message)
		return false
	}
	return true
}

// conflict decides whether req must be journaled instead of queued on q
// (nil when the cell has no work). d.mu is held.
func (d *Dispatcher) conflict(q *cellQueue, req Request) (Result, bool) {
	if d.closed {
		return Result{Outcome: journal.Refused, Message: "dispatcher closed"}, true
	}
	if q == nil {
		return Result{}, false
	}
	if req.Verb == verbReroute {
		if x := q.find(true, func(x Request) bool { return x.Verb == verbUpgrade }); x != nil {
			return Result{Outcome: journal.Refused, Message: "upgrade in progress: " + describe(x.req) + " is " + q.state(x)}, true
		}
	}
	if !req.Manual && req.Verb == verbDecay {
		if x := q.find(true, func(x Request) bool { return x.Verb == verbClone }); x != nil {
			return Result{Outcome: journal.Superseded, Message: describe(x.req) + " is " + q.state(x)}, true
		}
	}
	if !req.Manual {
		if x := q.find(false, func(x Request) bool { return x.Verb == req.Verb && slices.Equal(x.Args, req.Args) }); x != nil {
			return Result{Outcome: journal.Coalesced, Message: "same as queued " + describe(x.req)}, true
		}
	}
	n := len(q.queued)
	if req.Verb == verbClone {
		for _, x := range q.queued {
			if droppable(x.req) {
				n--
			}
		}
	}
	if n >= d.opts.QueueLimit {
		return Result{Outcome: journal.Refused, Message: fmt.Sprintf("queue full (%d queued)", len(q.queued))}, true
	}
	return Result{}, false
}

// find returns the first queued request (or, with running, the running one
// first) that match accepts.
func (q *cellQueue) find(running bool, match func(Request) bool) *item {
	if running && q.running != nil && match(q.running.req) {
		return q.running
	}
	for _, x := range q.queued {
		if match(x.req) {
			return x
		}
	}
	return nil
}

// state says whether x is running or queued.
func (q *cellQueue) state(x *item) string {
	if x == q.running {
		return "running"
	}
	return "queued"
}

// droppable reports whether a queued request gives way to a clone.
func droppable(r Request) bool { return r.Verb == verbDecay && !r.Manual }

// describe names a request in words: "clone 1 (rule p99-clone)".
func describe(r Request) string {
	s := strings.Join(append([]string{r.Verb}, r.Args...), " ")
	switch {
	case r.Manual:
		return "manual " + s
	case r.Rule != "":
		return s + " (rule " + r.Rule + ")"
	}
	return s
}

// work runs the cell's queue until it is empty, then exits.
func (d *Dispatcher) work(cell string, q *cellQueue) {
	defer d.wg.Done()
	it := d.next(cell, q)
	for it != nil {
		o := d.run(it.req)
		// Take the next request (or give the cell up) before answering, so
		// that a Do caller sees the cell idle once its last verb is done.
		next := d.next(cell, q)
		d.deliver(it, o)
		it = next
	}
}

// next marks the cell's next request running and returns it; when there is
// none, it removes the cell and returns nil.
func (d *Dispatcher) next(cell string, q *cellQueue) *item {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(q.queued) == 0 {
		q.running = nil
		delete(d.cells, cell)
		d.workers--
		return nil
	}
	it := q.queued[0]
	q.queued[0] = nil
	q.queued = q.queued[1:]
	q.running = it
	return it
}

// run prechecks and executes req and journals how it ended.
func (d *Dispatcher) run(req Request) outcome {
	ctx, cancel := context.WithTimeout(d.base, d.opts.Timeout)
	defer cancel()
	if req.Trace.IsValid() {
		var span trace.Span
		ctx, span = tracing.Start(trace.ContextWithRemoteSpanContext(ctx, req.Trace), "verb "+req.Verb, trace.SpanKindInternal,
			attribute.String("celluster.cell", req.Cell), attribute.StringSlice("celluster.args", req.Args), attribute.String("celluster.rule", req.Rule))
		defer span.End()
	}
	if d.opts.Precheck != nil {
		if res, ok := d.opts.Precheck(ctx, req); !ok {
			if res.Outcome == "" {
				res.Outcome = journal.Noop
			}
			return d.record(req, res, 0)
		}
	}
	start := time.Now()
	res, err := d.execute(ctx, req)
	dur := max(time.Since(start), 1)
	switch {
	case err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		res.Outcome, res.Message = journal.Failed, fmt.Sprintf("timed out after %s: %v", d.opts.Timeout, err)
	case err != nil:
		res.Outcome, res.Message = journal.Failed, err.Error()
	case res.Outcome == "":
		res.Outcome = journal.Done
	}
	if res.Outcome == journal.Failed {
		d.log.Warn("dispatch: verb failed", "cell", req.Cell, "verb", req.Verb, "args", req.Args, "rule", req.Rule, "message", res.Message)
	} else {
		d.log.Debug("dispatch: verb ran", "cell", req.Cell, "verb", req.Verb, "args", req.Args, "rule", req.Rule, "outcome", res.Outcome, "duration", dur)
	}
	return d.record(req, res, dur)
}

// execute calls the executor, turning a panic into an error so that one bad
// verb cannot take the cell's worker down.
func (d *Dispatcher) execute(ctx context.Context, req Request) (res Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			res, err = Result{}, fmt.Errorf("executor panicked: %v", p)
		}
	}()
	return d.exec.Execute(ctx, req)
}

// record journals req's end and calls OnResult.
func (d *Dispatcher) record(req Request, res Result, dur time.Duration) outcome {
	e := journal.Entry{
		Time:      req.Time,
		Cell:      req.Cell,
		Verb:      req.Verb,
		Args:      req.Args,
		Rule:      req.Rule,
		Origin:    req.Origin,
		Condition: req.Condition,
		Manual:    req.Manual,
		Values:    req.Values,
		Outcome:   res.Outcome,
		Message:   res.Message,
		Duration:  dur,
		Plugin:    res.Plugin,
	}
	if req.Trace.IsValid() && req.Trace.IsSampled() {
		e.TraceID = req.Trace.TraceID().String()
	}
	var err error
	if d.j != nil {
		var got journal.Entry
		if got, err = d.j.Append(e); err != nil {
			err = fmt.Errorf("dispatch: journaling %s on %s (%s): %w", req.Verb, req.Cell, res.Outcome, err)
			d.log.Error("dispatch: journal append failed", "cell", req.Cell, "verb", req.Verb, "outcome", res.Outcome, "err", err)
		} else {
			e = got
		}
	}
	if d.opts.OnResult != nil {
		d.opts.OnResult(req, res)
	}
	return outcome{entry: e, err: err}
}

// deliver answers a waiting Do, if any.
func (d *Dispatcher) deliver(it *item, o outcome) {
	if it.done != nil {
		it.done <- o
	}
}
