package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/celluster/celluster/core/journal"
)

// fakeExec records calls. Execute on a gated "cell verb" waits until the
// gate is closed (or its context ends), so a test can hold a verb running.
type fakeExec struct {
	mu      sync.Mutex
	calls   []Request
	gates   map[string]chan struct{}
	started chan Request // every call, as it starts
	result  func(Request) (Result, error)
}

func newFakeExec() *fakeExec {
	return &fakeExec{gates: map[string]chan struct{}{}, started: make(chan Request, 1000)}
}

// hold makes the next Execute of verb on cell wait until the returned
// function is called.
func (f *fakeExec) hold(cell, verb string) (release func()) {
	ch := make(chan struct{})
	f.mu.Lock()
	f.gates[cell+" "+verb] = ch
	f.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

func (f *fakeExec) Execute(ctx context.Context, req Request) (Result, error) {
	f.mu.Lock()
	f.calls = append(f.calls, req)
	gate := f.gates[req.Cell+" "+req.Verb]
	delete(f.gates, req.Cell+" "+req.Verb)
	result := f.result
	f.mu.Unlock()
	f.started <- req
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return Result{}, fmt.Errorf("gave up waiting: %w", ctx.Err())
		}
	}
	if result != nil {
		return result(req)
	}
	return Result{Message: "ran " + strings.Join(append([]string{req.Verb}, req.Args...), " "), Plugin: "fake"}, nil
}

// calledOn returns "verb args" of every call on cell, in call order.
func (f *fakeExec) calledOn(cell string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.calls {
		if r.Cell == cell {
			out = append(out, strings.Join(append([]string{r.Verb}, r.Args...), " "))
		}
	}
	return out
}

// waitStart waits until an Execute of verb on cell starts, skipping the
// starts of other calls (their order is checked with calledOn).
func (f *fakeExec) waitStart(t *testing.T, cell, verb string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case r := <-f.started:
			if r.Cell == cell && r.Verb == verb {
				return
			}
		case <-timeout:
			t.Fatalf("%s on %s did not start", verb, cell)
		}
	}
}

type result struct {
	req Request
	res Result
}

// fixture is a dispatcher over a fake executor and a real journal.
type fixture struct {
	t       *testing.T
	exec    *fakeExec
	j       *journal.Journal
	d       *Dispatcher
	results chan result
}

func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	j, err := journal.Open(t.TempDir(), journal.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, exec: newFakeExec(), j: j, results: make(chan result, 1000)}
	opts.OnResult = func(req Request, res Result) { f.results <- result{req, res} }
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	f.d = New(f.exec, j, opts)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		f.d.Close(ctx)
		j.Close()
	})
	return f
}

// wait returns the next n results handed to OnResult.
func (f *fixture) wait(n int) []result {
	f.t.Helper()
	var out []result
	for range n {
		select {
		case r := <-f.results:
			out = append(out, r)
		case <-time.After(10 * time.Second):
			f.t.Fatalf("got %d of %d results", len(out), n)
		}
	}
	return out
}

// entries returns the journal's entries for cell, oldest first.
func (f *fixture) entries(cell string) []journal.Entry {
	return f.j.Query(journal.Query{Cell: cell})
}

// last returns the journal's newest entry for cell.
func (f *fixture) last(cell string) journal.Entry {
	f.t.Helper()
	es := f.entries(cell)
	if len(es) == 0 {
		f.t.Fatalf("no entries for %s", cell)
	}
	return es[len(es)-1]
}

func (f *fixture) workers() int {
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	if f.d.workers != len(f.d.cells) {
		f.t.Fatalf("%d workers for %d cells", f.d.workers, len(f.d.cells))
	}
	return f.d.workers
}

func req(cell, verb string, args ...string) Request {
	return Request{Cell: cell, Verb: verb, Args: args, Rule: "r-" + verb}
}

func manual(cell, verb string, args ...string) Request {
	return Request{Cell: cell, Verb: verb, Args: args, Manual: true}
}

func TestCellOrderIsSubmissionOrder(t *testing.T) {
	f := newFixture(t, Options{})
	release := f.exec.hold("a", "spawn")
	f.d.Submit(req("a", "spawn", "0"))
	f.exec.waitStart(t, "a", "spawn")
	want := []string{"spawn 0"}
	for i := 1; i <= 8; i++ {
		verb := []string{"spawn", "clone", "upgrade", "decay"}[i%4]
		if verb == "decay" {
			verb = "stop" // decay would be superseded by the queued clone
		}
		r := req("a", verb, fmt.Sprint(i))
		if !f.d.Submit(r) {
			t.Fatalf("%s %d not queued", verb, i)
		}
		want = append(want, verb+" "+fmt.Sprint(i))
	}
	running, queued := f.d.Busy("a")
	if running != "spawn" || len(queued) != 8 || queued[0] != "clone" {
		t.Fatalf("Busy = %q %v", running, queued)
	}
	release()
	f.wait(9)
	if got := f.exec.calledOn("a"); !slices.Equal(got, want) {
		t.Fatalf("ran %v, want %v", got, want)
	}
	es := f.entries("a")
	var journaled []string
	for i, e := range es {
		journaled = append(journaled, e.Verb+" "+strings.Join(e.Args, " "))
		if e.Outcome != journal.Done || e.Duration <= 0 || (i > 0 && e.Seq <= es[i-1].Seq) {
			t.Errorf("entry %+v", e)
		}
	}
	if !slices.Equal(journaled, want) {
		t.Fatalf("journaled %v, want %v", journaled, want)
	}
}

func TestCellsRunInParallel(t *testing.T) {
	f := newFixture(t, Options{})
	release := f.exec.hold("a", "upgrade")
	defer release()
	f.d.Submit(req("a", "upgrade", "v2"))
	f.exec.waitStart(t, "a", "upgrade")
	// b runs to the end while a's upgrade is still running.
	e, err := f.d.Do(context.Background(), req("b", "clone", "1"))
	if err != nil || e.Outcome != journal.Done || e.Cell != "b" {
		t.Fatalf("Do on b: %+v, %v", e, err)
	}
	if running, _ := f.d.Busy("a"); running != "upgrade" {
		t.Fatalf("a running %q, want upgrade", running)
	}
	if n := f.workers(); n != 1 {
		t.Fatalf("%d workers, want 1 (a's)", n)
	}
	release()
	f.wait(2)
	if got := f.last("a"); got.Outcome != journal.Done || got.Verb != "upgrade" {
		t.Fatalf("a: %+v", got)
	}
}

func TestCoalesce(t *testing.T) {
	f := newFixture(t, Options{})
	release := f.exec.hold("a", "spawn")
	f.d.Submit(req("a", "spawn", "x"))
	f.exec.waitStart(t, "a", "spawn")

	if !f.d.Submit(req("a", "spawn", "x")) {
		t.Fatal("a request identical to the running one must queue")
	}
	if !f.d.Submit(req("a", "clone", "1")) {
		t.Fatal("first clone 1 not queued")
	}
	if f.d.Submit(req("a", "clone", "1")) {
		t.Fatal("second clone 1 queued, want coalesced")
	}
	r := f.wait(1)[0]
	if r.res.Outcome != journal.Coalesced || !strings.Contains(r.res.Message, "queued clone 1 (rule r-clone)") {
		t.Fatalf("result %+v", r.res)
	}
	if e := f.last("a"); e.Outcome != journal.Coalesced || e.Duration != 0 || e.Verb != "clone" {
		t.Fatalf("entry %+v", e)
	}
	if !f.d.Submit(req("a", "clone", "2")) {
		t.Fatal("clone 2 differs in args and must queue")
	}
	release()
	f.wait(4)
	if got, want := f.exec.calledOn("a"), []string{"spawn x", "spawn x", "clone 1", "clone 2"}; !slices.Equal(got, want) {
		t.Fatalf("ran %v, want %v", got, want)
	}
	if n := len(f.entries("a")); n != 5 {
		t.Fatalf("%d entries, want 5 (one per request)", n)
	}
}

func TestCloneSupersedesQueuedDecays(t *testing.T) {
	f := newFixture(t, Options{})
	release := f.exec.hold("a", "spawn")
	f.d.Submit(req("a", "spawn"))
	f.exec.waitStart(t, "a", "spawn")
	f.d.Submit(req("a", "decay", "1"))
	f.d.Submit(manual("a", "decay", "1"))
	f.d.Submit(req("a", "decay", "all"))
	if !f.d.Submit(req("a", "clone", "1")) {
		t.Fatal("clone not queued")
	}
	rs := f.wait(2)
	for _, r := range rs {
		if r.req.Verb != "decay" || r.req.Manual || r.res.Outcome != journal.Superseded ||
			r.res.Message != "clone 1 (rule r-clone) came in after it" {
			t.Fatalf("result %+v", r)
		}
	}
	if _, queued := f.d.Busy("a"); !slices.Equal(queued, []string{"decay", "clone"}) {
		t.Fatalf("queued %v, want the manual decay and the clone", queued)
	}
	release()
	f.wait(3)
	if got, want := f.exec.calledOn("a"), []string{"spawn", "decay 1", "clone 1"}; !slices.Equal(got, want) {
		t.Fatalf("ran %v, want %v", got, want)
	}
	var sup int
	for _, e := range f.entries("a") {
		if e.Outcome == journal.Superseded {
			sup++
			if e.Duration != 0 || !strings.Contains(e.Message, "clone 1") {
				t.Errorf("entry %+v", e)
			}
		}
	}
	if sup != 2 {
		t.Fatalf("%d superseded entries, want 2", sup)
	}
}

func TestDecaySupersededByClone(t *testing.T) {
	t.Run("running", func(t *testing.T) {
		f := newFixture(t, Options{})
		release := f.exec.hold("a", "clone")
		defer release()
		f.d.Submit(req("a", "clone", "1"))
		f.exec.waitStart(t, "a", "clone")
		if f.d.Submit(req("a", "decay", "1")) {
			t.Fatal("decay queued while a clone runs")
		}
		if e := f.last("a"); e.Outcome != journal.Superseded || e.Message != "clone 1 (rule r-clone) is running" {
			t.Fatalf("entry %+v", e)
		}
		if !f.d.Submit(manual("a", "decay", "1")) {
			t.Fatal("manual decay must not be superseded")
		}
	})
	t.Run("queued", func(t *testing.T) {
		f := newFixture(t, Options{})
		release := f.exec.hold("a", "spawn")
		defer release()
		f.d.Submit(req("a", "spawn"))
		f.exec.waitStart(t, "a", "spawn")
		f.d.Submit(manual("a", "clone", "2"))
		if f.d.Submit(req("a", "decay", "1")) {
			t.Fatal("decay queued behind a clone")
		}
		if e := f.last("a"); e.Outcome != journal.Superseded || e.Message != "manual clone 2 is queued" {
			t.Fatalf("entry %+v", e)
		}
	})
}

func TestRerouteRefusedDuringUpgrade(t *testing.T) {
	f := newFixture(t, Options{})
	release := f.exec.hold("a", "upgrade")
	f.d.Submit(req("a", "upgrade", "v2"))
	f.exec.waitStart(t, "a", "upgrade")

	if f.d.Submit(req("a", "reroute", "away")) {
		t.Fatal("reroute queued during a running upgrade")
	}
	e := f.last("a")
	if e.Outcome != journal.Refused || !strings.HasPrefix(e.Message, "upgrade in progress") || e.Duration != 0 {
		t.Fatalf("entry %+v", e)
	}
	if e, err := f.d.Do(context.Background(), manual("a", "reroute", "away")); err != nil || e.Outcome != journal.Refused || e.Rule != journal.RuleManual {
		t.Fatalf("manual reroute: %+v, %v", e, err)
	}
	if !f.d.Submit(req("a", "decay", "1")) || !f.d.Submit(req("a", "spawn", "1")) {
		t.Fatal("decay and spawn must queue behind the upgrade")
	}
	if running, queued := f.d.Busy("a"); running != "upgrade" || !slices.Equal(queued, []string{"decay", "spawn"}) {
		t.Fatalf("Busy = %q %v", running, queued)
	}
	release()
	f.wait(2 + 3)

	// A queued (not yet running) upgrade blocks reroutes too.
	release = f.exec.hold("b", "spawn")
	f.d.Submit(req("b", "spawn"))
	f.exec.waitStart(t, "b", "spawn")
	f.d.Submit(req("b", "upgrade", "v3"))
	if f.d.Submit(req("b", "reroute", "away")) {
		t.Fatal("reroute queued behind a queued upgrade")
	}
	release()
	f.wait(3)
	// With the upgrade over, reroute runs.
	if e, err := f.d.Do(context.Background(), req("b", "reroute", "away")); err != nil || e.Outcome != journal.Done {
		t.Fatalf("reroute after upgrade: %+v, %v", e, err)
	}
}

func TestManualNeverCoalesced(t *testing.T) {
	f := newFixture(t, Options{})
	release := f.exec.hold("a", "spawn")
	f.d.Submit(req("a", "spawn"))
	f.exec.waitStart(t, "a", "spawn")
	for i := range 2 {
		if !f.d.Submit(manual("a", "clone", "1")) {
			t.Fatalf("identical manual request %d not queued", i+1)
		}
	}
	// An automatic request identical to a queued manual one is coalesced.
	if f.d.Submit(req("a", "clone", "1")) {
		t.Fatal("automatic clone 1 not coalesced with the queued manual one")
	}
	if e := f.last("a"); e.Outcome != journal.Coalesced || e.Message != "same as queued manual clone 1" {
		t.Fatalf("entry %+v", e)
	}
	release()
	f.wait(1 + 3)
	if got := f.exec.calledOn("a"); !slices.Equal(got, []string{"spawn", "clone 1", "clone 1"}) {
		t.Fatalf("ran %v", got)
	}
	var manuals int
	for _, e := range f.entries("a") {
		if e.Manual {
			manuals++
			if e.Rule != journal.RuleManual || e.Outcome != journal.Done {
				t.Errorf("manual entry %+v", e)
			}
		}
	}
	if manuals != 2 {
		t.Fatalf("%d manual entries, want 2", manuals)
	}
}

func TestPrecheckNoop(t *testing.T) {
	f := newFixture(t, Options{
		Precheck: func(ctx context.Context, req Request) (Result, bool) {
			if req.Verb == "clone" {
				return Result{Message: "at max replicas 8"}, false
			}
			return Result{}, true
		},
	})
	e, err := f.d.Do(context.Background(), req("a", "clone", "1"))
	if err != nil {
		t.Fatal(err)
	}
	if e.Outcome != journal.Noop || e.Message != "at max replicas 8" || e.Duration != 0 || e.Seq == 0 {
		t.Fatalf("entry %+v", e)
	}
	if got := f.exec.calledOn("a"); len(got) != 0 {
		t.Fatalf("Execute called: %v", got)
	}
	if e, _ := f.d.Do(context.Background(), req("a", "decay", "1")); e.Outcome != journal.Done {
		t.Fatalf("decay: %+v", e)
	}
}

func TestExecutorErrorFails(t *testing.T) {
	f := newFixture(t, Options{})
	f.exec.result = func(r Request) (Result, error) {
		if r.Verb == "boom" {
			panic("kaboom")
		}
		return Result{Plugin: "scaler"}, errors.New("plugin scaler: connection refused")
	}
	e, err := f.d.Do(context.Background(), req("a", "clone", "1"))
	if err != nil {
		t.Fatal(err)
	}
	if e.Outcome != journal.Failed || e.Message != "plugin scaler: connection refused" || e.Duration <= 0 || e.Plugin != "scaler" {
		t.Fatalf("entry %+v", e)
	}
	e, _ = f.d.Do(context.Background(), req("a", "boom"))
	if e.Outcome != journal.Failed || !strings.Contains(e.Message, "kaboom") {
		t.Fatalf("panicking executor: %+v", e)
	}
}

func TestTimeout(t *testing.T) {
	f := newFixture(t, Options{Timeout: time.Nanosecond})
	f.exec.hold("a", "upgrade") // never released: only the timeout ends it
	e, err := f.d.Do(context.Background(), req("a", "upgrade", "v2"))
	if err != nil {
		t.Fatal(err)
	}
	if e.Outcome != journal.Failed || !strings.HasPrefix(e.Message, "timed out after 1ns") {
		t.Fatalf("entry %+v", e)
	}
}

func TestQueueFull(t *testing.T) {
	f := newFixture(t, Options{QueueLimit: 2})
	release := f.exec.hold("a", "spawn")
	f.d.Submit(req("a", "spawn", "0"))
	f.exec.waitStart(t, "a", "spawn")
	if !f.d.Submit(req("a", "spawn", "1")) || !f.d.Submit(req("a", "decay", "1")) {
		t.Fatal("queue of 2 refused early")
	}
	if f.d.Submit(req("a", "spawn", "3")) {
		t.Fatal("third queued request accepted")
	}
	if e := f.last("a"); e.Outcome != journal.Refused || !strings.HasPrefix(e.Message, "queue full") || e.Verb != "spawn" {
		t.Fatalf("entry %+v", e)
	}
	// A clone makes room by dropping the queued decay.
	if !f.d.Submit(req("a", "clone", "1")) {
		t.Fatal("clone refused although it supersedes a queued decay")
	}
	release()
	f.wait(1 + 1 + 3)
	if got := f.exec.calledOn("a"); !slices.Equal(got, []string{"spawn 0", "spawn 1", "clone 1"}) {
		t.Fatalf("ran %v", got)
	}
}

func TestDoReturnsEntry(t *testing.T) {
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	f := newFixture(t, Options{Clock: func() time.Time { return at }})
	r := Request{Cell: "a", Verb: "clone", Args: []string{"1"}, Rule: "p99-clone", Origin: "keep p99 latency under 20ms (line 5)",
		Condition: "> 0.02", Values: []journal.Value{{Signal: "latency.p99", Labels: map[string]string{"cell": "a"}, Value: 0.031, Time: at}}}
	e, err := f.d.Do(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if e.Seq == 0 || !e.Time.Equal(at) || e.Outcome != journal.Done || e.Message != "ran clone 1" || e.Plugin != "fake" ||
		e.Duration <= 0 || e.Rule != "p99-clone" || e.Condition != "> 0.02" || len(e.Values) != 1 {
		t.Fatalf("entry %+v", e)
	}
	if got := f.last("a"); got.Seq != e.Seq || got.Message != e.Message {
		t.Fatalf("journal has %+v, Do returned %+v", got, e)
	}
	if s := journal.Explain(e); !strings.Contains(s, "rule p99-clone") || !strings.Contains(s, "0.031 (> 0.02)") || !strings.Contains(s, "done") {
		t.Fatalf("Explain: %s", s)
	}

	// A request's own Time is kept.
	own := at.Add(-time.Minute)
	if e, _ := f.d.Do(context.Background(), Request{Cell: "a", Verb: "spawn", Time: own}); !e.Time.Equal(own) {
		t.Fatalf("Time %v, want %v", e.Time, own)
	}
}

func TestDoContextEnds(t *testing.T) {
	f := newFixture(t, Options{})
	release := f.exec.hold("a", "upgrade")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := f.d.Do(ctx, manual("a", "upgrade", "v2"))
		done <- err
	}()
	f.exec.waitStart(t, "a", "upgrade")
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Do: %v, want context.Canceled", err)
	}
	release()
	f.wait(1)
	if e := f.last("a"); e.Outcome != journal.Done || e.Verb != "upgrade" {
		t.Fatalf("abandoned request still runs: %+v", e)
	}
}

func TestClose(t *testing.T) {
	f := newFixture(t, Options{})
	release := f.exec.hold("a", "upgrade")
	f.d.Submit(req("a", "upgrade", "v2"))
	f.exec.waitStart(t, "a", "upgrade")
	// What Do does, with the queueing done before Close starts.
	waiting := &item{req: f.d.normalize(manual("a", "spawn")), done: make(chan outcome, 1)}
	if !f.d.submit(waiting) {
		t.Fatal("spawn not queued")
	}

	closed := make(chan struct{})
	go func() {
		f.d.Close(context.Background())
		close(closed)
	}()
	// The queued request is refused by Close...
	if e := (<-waiting.done).entry; e.Outcome != journal.Refused || e.Message != "dispatcher closed" {
		t.Fatalf("queued request: %+v", e)
	}
	// ... which still waits for the running upgrade.
	select {
	case <-closed:
		t.Fatal("Close returned while a verb was running")
	default:
	}
	if f.d.Submit(req("b", "clone")) {
		t.Fatal("Submit accepted after Close")
	}
	if e := f.last("b"); e.Outcome != journal.Refused || e.Message != "dispatcher closed" {
		t.Fatalf("entry after Close: %+v", e)
	}
	release()
	<-closed
	if e := f.last("a"); e.Verb != "upgrade" || e.Outcome != journal.Done {
		t.Fatalf("running verb: %+v", e)
	}
	if f.workers() != 0 {
		t.Fatal("workers left after Close")
	}
	f.d.Close(context.Background()) // idempotent
}

func TestCloseBoundedByContext(t *testing.T) {
	f := newFixture(t, Options{})
	f.exec.hold("a", "upgrade") // never released
	f.d.Submit(req("a", "upgrade", "v2"))
	f.exec.waitStart(t, "a", "upgrade")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f.d.Close(ctx)
	// Close cancelled the running verb, which then ends as failed.
	r := f.wait(1)[0]
	if r.res.Outcome != journal.Failed || !strings.Contains(r.res.Message, "context canceled") {
		t.Fatalf("result %+v", r.res)
	}
}

func TestNoWorkerForIdleCell(t *testing.T) {
	f := newFixture(t, Options{})
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			cell := fmt.Sprint("c", i)
			for k := range 3 {
				if _, err := f.d.Do(context.Background(), req(cell, "spawn", fmt.Sprint(k))); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if n := f.workers(); n != 0 {
		t.Fatalf("%d workers for idle cells", n)
	}
	for i := range 20 {
		if running, queued := f.d.Busy(fmt.Sprint("c", i)); running != "" || queued != nil {
			t.Fatalf("idle cell busy: %q %v", running, queued)
		}
	}

	release := f.exec.hold("x", "spawn")
	f.d.Submit(req("x", "spawn"))
	f.exec.waitStart(t, "x", "spawn")
	if n := f.workers(); n != 1 {
		t.Fatalf("%d workers with one busy cell", n)
	}
	release()
	f.wait(60 + 1)
	f.d.Close(context.Background()) // returns once the worker has exited
	if n := f.workers(); n != 0 {
		t.Fatalf("%d workers after the cell went idle", n)
	}
}

func TestEveryRequestOneEntry(t *testing.T) {
	f := newFixture(t, Options{QueueLimit: 3})
	verbs := []string{"clone", "decay", "reroute", "upgrade", "spawn"}
	const perWorker = 200
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range perWorker {
				r := req(fmt.Sprint("c", i%3), verbs[(i+w)%len(verbs)], fmt.Sprint(i%2))
				r.Manual = i%7 == 0
				f.d.Submit(r)
			}
		})
	}
	wg.Wait()
	f.wait(4 * perWorker)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f.d.Close(ctx)
	es := f.j.Query(journal.Query{})
	if len(es) != 4*perWorker {
		t.Fatalf("%d entries for %d requests", len(es), 4*perWorker)
	}
	for _, e := range es {
		ran := e.Duration > 0
		if ran != (e.Outcome == journal.Done) {
			t.Fatalf("entry %+v: Duration must be > 0 exactly when the verb ran", e)
		}
		if e.Manual && (e.Outcome == journal.Coalesced || e.Outcome == journal.Superseded) {
			t.Fatalf("manual request %s: %+v", e.Outcome, e)
		}
	}
}
