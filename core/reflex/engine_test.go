package reflex

import (
	"fmt"
	"math"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/celluster/celluster/core/signals"
)

// fakeClock is a clock the test advances by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *fakeClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// recorder collects decisions.
type recorder struct {
	mu sync.Mutex
	ds []Decision
}

func (r *recorder) fire(d Decision) {
	r.mu.Lock()
	r.ds = append(r.ds, d)
	r.mu.Unlock()
}

// take returns the decisions recorded since the last take.
func (r *recorder) take() []Decision {
	r.mu.Lock()
	defer r.mu.Unlock()
	ds := r.ds
	r.ds = nil
	return ds
}

// names returns "cell/rule" for each decision since the last take.
func (r *recorder) names() []string {
	var out []string
	for _, d := range r.take() {
		out = append(out, d.Rule.Cell+"/"+d.Rule.Name)
	}
	return out
}

func newTestEngine(opts Options) (*Engine, *fakeClock, *recorder) {
	c, rec := newClock(), &recorder{}
	if opts.Clock == nil {
		opts.Clock = c.Now
	}
	return New(rec.fire, opts), c, rec
}

// reading returns a reading of name with value v and the given labels as
// key, value pairs.
func reading(name string, v float64, kv ...string) signals.Reading {
	r := signals.Reading{Name: name, Value: v}
	if len(kv) > 0 {
		r.Labels = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			r.Labels[kv[i]] = kv[i+1]
		}
	}
	return r
}

// at sets the clock to t and observes rs; it returns the decisions fired.
func at(e *Engine, c *fakeClock, rec *recorder, t time.Time, rs ...signals.Reading) []Decision {
	c.Set(t)
	e.Observe(rs)
	return rec.take()
}

func TestWindowFiresExactlyAtWindow(t *testing.T) {
	e, c, rec := newTestEngine(Options{})
	e.SetRules("hello", []Rule{{Name: "hot", Signal: "cpu", Op: GT, Threshold: 80, Window: 3 * time.Second, Verb: "clone"}})
	t0 := c.Now()
	if ds := at(e, c, rec, t0, reading("cpu", 81, "cell", "hello")); len(ds) != 0 {
		t.Fatalf("fired at t0: %+v", ds)
	}
	if ds := at(e, c, rec, t0.Add(3*time.Second-time.Nanosecond), reading("cpu", 82, "cell", "hello")); len(ds) != 0 {
		t.Fatalf("fired at since+3s-1ns: %+v", ds)
	}
	ds := at(e, c, rec, t0.Add(3*time.Second), reading("cpu", 83, "cell", "hello"))
	if len(ds) != 1 {
		t.Fatalf("at since+3s: %d decisions, want 1", len(ds))
	}
	d := ds[0]
	if !d.Time.Equal(t0.Add(3*time.Second)) || d.Rule.Name != "hot" || d.Rule.Cell != "hello" {
		t.Fatalf("decision = %+v", d)
	}
	if len(d.Values) != 2 || d.Values[0].Value != 81 || d.Values[1].Value != 83 {
		t.Fatalf("Values = %+v, want the window's first (81) and last (83)", d.Values)
	}
}

func TestWindowZeroFiresOnFirstTrueArrival(t *testing.T) {
	e, c, rec := newTestEngine(Options{})
	e.SetRules("hello", []Rule{{Name: "q", Signal: "queue", Op: GE, Threshold: 10, Verb: "clone"}})
	t0 := c.Now()
	if ds := at(e, c, rec, t0, reading("queue", 9, "cell", "hello")); len(ds) != 0 {
		t.Fatalf("fired on a false reading: %+v", ds)
	}
	ds := at(e, c, rec, t0.Add(time.Millisecond), reading("queue", 10, "cell", "hello"))
	if len(ds) != 1 || len(ds[0].Values) != 1 || ds[0].Values[0].Value != 10 {
		t.Fatalf("decisions = %+v, want one with the firing reading only", ds)
	}
}

func TestFalseReadingResetsWindow(t *testing.T) {
	e, c, rec := newTestEngine(Options{})
	e.SetRules("hello", []Rule{{Name: "hot", Signal: "cpu", Op: GT, Threshold: 80, Window: 3 * time.Second, Verb: "clone"}})
	t0 := c.Now()
	cpu := func(v float64) signals.Reading { return reading("cpu", v, "cell", "hello") }
	at(e, c, rec, t0, cpu(90))
	at(e, c, rec, t0.Add(2*time.Second), cpu(80)) // false: resets
	t1 := t0.Add(2500 * time.Millisecond)
	at(e, c, rec, t1, cpu(90)) // holding again from t1
	if ds := at(e, c, rec, t0.Add(3*time.Second), cpu(90)); len(ds) != 0 {
		t.Fatalf("fired at t0+3s although reset at t0+2s: %+v", ds)
	}
	if ds := at(e, c, rec, t1.Add(3*time.Second-time.Nanosecond), cpu(90)); len(ds) != 0 {
		t.Fatalf("fired before t1+3s: %+v", ds)
	}
	if ds := at(e, c, rec, t1.Add(3*time.Second), cpu(90)); len(ds) != 1 {
		t.Fatalf("at t1+3s: %d decisions, want 1", len(ds))
	}
}

func TestCooldownSuppressesUntilQuietUntil(t *testing.T) {
	e, c, rec := newTestEngine(Options{})
	e.SetRules("hello", []Rule{{Name: "q", Signal: "queue", Op: GT, Threshold: 0, Cooldown: 5 * time.Second, Verb: "clone"}})
	t0 := c.Now()
	q := reading("queue", 3, "cell", "hello")
	if ds := at(e, c, rec, t0, q); len(ds) != 1 {
		t.Fatalf("at t0: %d decisions, want 1", len(ds))
	}
	st := e.Status("hello")[0]
	if !st.LastFired.Equal(t0) || !st.QuietUntil.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("status after firing = %+v", st)
	}
	for _, d := range []time.Duration{time.Nanosecond, time.Second, 5*time.Second - time.Nanosecond} {
		if ds := at(e, c, rec, t0.Add(d), q); len(ds) != 0 {
			t.Fatalf("fired at t0+%v, inside the cooldown", d)
		}
	}
	if ds := at(e, c, rec, t0.Add(5*time.Second), q); len(ds) != 1 {
		t.Fatalf("at QuietUntil: %d decisions, want 1", len(ds))
	}
}

func TestRefireAfterMaxOfCooldownAndWindow(t *testing.T) {
	for _, tc := range []struct{ window, cooldown time.Duration }{
		{3 * time.Second, 5 * time.Second},
		{5 * time.Second, 3 * time.Second},
		{3 * time.Second, 3 * time.Second},
		{3 * time.Second, 0},
		{0, 3 * time.Second},
	} {
		t.Run(fmt.Sprintf("window=%v/cooldown=%v", tc.window, tc.cooldown), func(t *testing.T) {
			e, c, rec := newTestEngine(Options{})
			e.SetRules("hello", []Rule{{Name: "r", Signal: "rps", Op: GT, Threshold: 100,
				Window: tc.window, Cooldown: tc.cooldown, Verb: "clone"}})
			t0 := c.Now()
			step := 250 * time.Millisecond
			var fired []time.Duration
			for d := time.Duration(0); d <= 2*(tc.window+tc.cooldown)+step; d += step {
				for _, dec := range at(e, c, rec, t0.Add(d), reading("rps", 500, "cell", "hello")) {
					fired = append(fired, dec.Time.Sub(t0))
				}
			}
			if len(fired) < 2 {
				t.Fatalf("fired at %v, want at least twice", fired)
			}
			first, gap := tc.window, max(tc.window, tc.cooldown)
			if gap == 0 {
				gap = step
			}
			for i, f := range fired {
				if want := first + time.Duration(i)*gap; f != want {
					t.Fatalf("firings at %v: #%d at %v, want %v", fired, i, f, want)
				}
			}
		})
	}
}

func TestHoldingRestartsAfterFalseInCooldown(t *testing.T) {
	e, c, rec := newTestEngine(Options{})
	e.SetRules("hello", []Rule{{Name: "r", Signal: "rps", Op: GT, Threshold: 100,
		Window: 2 * time.Second, Cooldown: 5 * time.Second, Verb: "clone"}})
	t0 := c.Now()
	rps := func(v float64) signals.Reading { return reading("rps", v, "cell", "hello") }
	at(e, c, rec, t0, rps(500))
	if ds := at(e, c, rec, t0.Add(2*time.Second), rps(500)); len(ds) != 1 {
		t.Fatalf("first firing: %d decisions", len(ds))
	}
	// Quiet until t0+7s. False at 5s, true again from 6s: the window now
	// ends at 8s, after QuietUntil.
	at(e, c, rec, t0.Add(5*time.Second), rps(50))
	at(e, c, rec, t0.Add(6*time.Second), rps(501))
	if ds := at(e, c, rec, t0.Add(7*time.Second), rps(502)); len(ds) != 0 {
		t.Fatalf("fired at QuietUntil with a window restarted at 6s: %+v", ds)
	}
	if ds := at(e, c, rec, t0.Add(8*time.Second-time.Nanosecond), rps(503)); len(ds) != 0 {
		t.Fatalf("fired before the restarted window ended: %+v", ds)
	}
	ds := at(e, c, rec, t0.Add(8*time.Second), rps(504))
	if len(ds) != 1 || ds[0].Values[0].Value != 501 || ds[0].Values[1].Value != 504 {
		t.Fatalf("at 8s: %+v, want one decision with the readings of 6s and 8s", ds)
	}
}

func TestWindowPerSeries(t *testing.T) {
	e, c, rec := newTestEngine(Options{})
	e.SetRules("hello", []Rule{{Name: "retx", Signal: "kernel.tcp.retransmits", Op: GT, Threshold: 5,
		Window: 2 * time.Second, Verb: "reroute"}})
	t0 := c.Now()
	port := func(p string, v float64) signals.Reading {
		return reading("kernel.tcp.retransmits", v, "port", p)
	}
	at(e, c, rec, t0, port("8080", 9))
	at(e, c, rec, t0.Add(time.Second), port("9090", 9), port("8080", 9))
	at(e, c, rec, t0.Add(1500*time.Millisecond), port("9090", 1)) // resets 9090 only
	at(e, c, rec, t0.Add(1600*time.Millisecond), port("9090", 9))
	ds := at(e, c, rec, t0.Add(2*time.Second), port("9090", 9), port("8080", 7))
	if len(ds) != 1 || ds[0].Values[1].Labels["port"] != "8080" || ds[0].Values[0].Value != 9 || ds[0].Values[1].Value != 7 {
		t.Fatalf("at t0+2s: %+v, want one decision for port 8080", ds)
	}
	if ds := at(e, c, rec, t0.Add(3600*time.Millisecond-time.Nanosecond), port("9090", 9)); len(ds) != 0 {
		t.Fatalf("9090 fired before its own window: %+v", ds)
	}
	ds = at(e, c, rec, t0.Add(3600*time.Millisecond), port("9090", 9))
	if len(ds) != 1 || ds[0].Values[1].Labels["port"] != "9090" {
		t.Fatalf("at t0+3.6s: %+v, want one decision for port 9090", ds)
	}
}

func TestCooldownIsPerRule(t *testing.T) {
	e, c, rec := newTestEngine(Options{})
	e.SetRules("hello", []Rule{{Name: "retx", Signal: "kernel.tcp.retransmits", Op: GT, Threshold: 5,
		Cooldown: 10 * time.Second, Verb: "reroute"}})
	t0 := c.Now()
	port := func(p string) signals.Reading { return reading("kernel.tcp.retransmits", 9, "port", p) }
	if ds := at(e, c, rec, t0, port("8080"), port("9090")); len(ds) != 1 {
		t.Fatalf("two series true at once fired %d times, want 1 (cooldown per rule)", len(ds))
	}
	if ds := at(e, c, rec, t0.Add(10*time.Second-time.Nanosecond), port("9090")); len(ds) != 0 {
		t.Fatalf("another series fired inside the rule's cooldown: %+v", ds)
	}
	if ds := at(e, c, rec, t0.Add(10*time.Second), port("9090")); len(ds) != 1 {
		t.Fatalf("at QuietUntil: %d decisions, want 1", len(ds))
	}
}

func TestLabelSubsetMatching(t *testing.T) {
	e, c, rec := newTestEngine(Options{})
	t0 := c.Now()
	for i, tc := range []struct {
		r    signals.Reading
		want []string
	}{
		{reading("latency.p99", 0.05, "cell", "hello"), []string{"hello/any"}},
		{reading("latency.p99", 0.05, "cell", "hello", "port", "9090"), []string{"hello/any"}},
		{reading("latency.p99", 0.05, "cell", "hello", "port", "8080"), []string{"hello/p8080", "hello/any"}},
		{reading("latency.p99", 0.05, "cell", "hello", "port", "8080", "route", "/api"), []string{"hello/p8080", "hello/any", "hello/api8080"}},
		{reading("latency.p99", 0.05, "cell", "hello", "port", "8080", "route", "/"), []string{"hello/p8080", "hello/any"}},
		{reading("latency.p99", 0.05, "cell", "other", "port", "8080"), nil},
	} {
		e.SetRules("hello", nil) // fresh state, no cooldown in the way
		e.SetRules("hello", []Rule{
			{Name: "p8080", Signal: "latency.p99", Labels: map[string]string{"port": "8080"}, Op: GT, Threshold: 0.02, Verb: "clone"},
			{Name: "any", Signal: "latency.p99", Op: GT, Threshold: 0.02, Verb: "clone"},
			{Name: "api8080", Signal: "latency.p99", Labels: map[string]string{"port": "8080", "route": "/api"}, Op: GT, Threshold: 0.02, Verb: "clone"},
		})
		c.Set(t0.Add(time.Duration(i) * time.Second))
		e.Observe([]signals.Reading{tc.r})
		if got := rec.names(); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s%v fired %v, want %v", tc.r.Name, tc.r.Labels, got, tc.want)
		}
	}
}

func TestNodeWideReadingMatchesEveryCell(t *testing.T) {
	e, c, rec := newTestEngine(Options{})
	hot := func(name string) Rule {
		return Rule{Name: name, Signal: "host.cpu", Op: GT, Threshold: 90, Verb: "reroute"}
	}
	e.SetRules("a", []Rule{hot("a1"), {Name: "a-cpu", Signal: "cpu", Op: GT, Threshold: 90, Verb: "clone"}})
	e.SetRules("b", []Rule{hot("b1"), hot("b2")})
	e.SetRules("c", []Rule{{Name: "c1", Signal: "host.cpu", Labels: map[string]string{"core": "0"}, Op: GT, Threshold: 90, Verb: "clone"}})
	c.Advance(time.Second)
	e.Observe([]signals.Reading{reading("host.cpu", 95)})
	if got, want := rec.names(), []string{"a/a1", "b/b1", "b/b2"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("node-wide host.cpu fired %v, want %v", got, want)
	}
	c.Advance(time.Second)
	e.Observe([]signals.Reading{reading("host.cpu", 95, "core", "0")})
	if got, want := rec.names(), []string{"a/a1", "b/b1", "b/b2", "c/c1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("node-wide host.cpu{core=0} fired %v, want %v", got, want)
	}
	// A cell-labelled reading reaches only that cell.
	c.Advance(time.Second)
	e.Observe([]signals.Reading{reading("host.cpu", 95, "cell", "b"), reading("cpu", 95, "cell", "b")})
	if got, want := rec.names(), []string{"b/b1", "b/b2"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("host.cpu{cell=b}, cpu{cell=b} fired %v, want %v", got, want)
	}
}

func TestCellLabelledAndNodeWideAreDistinctSeries(t *testing.T) {
	e, c, rec := newTestEngine(Options{})
	e.SetRules("a", []Rule{{Name: "r", Signal: "cpu", Op: GT, Threshold: 90, Window: 2 * time.Second, Verb: "clone"}})
	t0 := c.Now()
	at(e, c, rec, t0, reading("cpu", 95, "cell", "a"))
	at(e, c, rec, t0.Add(time.Second), reading("cpu", 95))
	if ds := at(e, c, rec, t0.Add(2*time.Second), reading("cpu", 95)); len(ds) != 0 {
		t.Fatalf("node-wide series fired after 1s of holding: %+v", ds)
	}
	if ds := at(e, c, rec, t0.Add(2*time.Second), reading("cpu", 95, "cell", "a")); len(ds) != 1 {
		t.Fatalf("cell series: %d decisions, want 1", len(ds))
	}
}

func TestAllComparators(t *testing.T) {
	for _, tc := range []struct {
		op   Op
		str  string
		want [3]bool // value below, equal to, above the threshold
	}{
		{GT, ">", [3]bool{false, false, true}},
		{GE, ">=", [3]bool{false, true, true}},
		{LT, "<", [3]bool{true, false, false}},
		{LE, "<=", [3]bool{true, true, false}},
		{EQ, "==", [3]bool{false, true, false}},
		{NE, "!=", [3]bool{true, false, true}},
		{Op(0), "?", [3]bool{false, false, false}},
	} {
		if got := tc.op.String(); got != tc.str {
			t.Errorf("Op(%d).String() = %q, want %q", int(tc.op), got, tc.str)
		}
		e, c, rec := newTestEngine(Options{})
		e.SetRules("x", []Rule{{Name: "r", Signal: "s", Op: tc.op, Threshold: 10, Verb: "clone"}})
		for i, v := range []float64{9.5, 10, 10.5} {
			c.Advance(time.Second)
			e.Observe([]signals.Reading{reading("s", v, "cell", "x")})
			if got := len(rec.take()) == 1; got != tc.want[i] {
				t.Errorf("%v %v 10 fired = %v, want %v", v, tc.str, got, tc.want[i])
			}
		}
		c.Advance(time.Second)
		e.Observe([]signals.Reading{reading("s", math.NaN(), "cell", "x")})
		if got := len(rec.take()) == 1; got != (tc.op == NE) {
			t.Errorf("NaN %v 10 fired = %v, want %v", tc.str, got, tc.op == NE)
		}
	}
}

func TestSetRulesKeepsStateOfUnchangedRules(t *testing.T) {
	e, c, rec := newTestEngine(Options{})
	kept := Rule{Name: "line 9", Signal: "cpu", Op: GT, Threshold: 80, Window: 3 * time.Second, Verb: "clone", Origin: "old"}
	dropped := Rule{Name: "line 10", Signal: "queue", Op: GT, Threshold: 5, Window: 3 * time.Second, Verb: "clone"}
	e.SetRules("hello", []Rule{kept, dropped})
	t0 := c.Now()
	at(e, c, rec, t0, reading("cpu", 90, "cell", "hello"), reading("queue", 9, "cell", "hello"))

	// The same cpu rule moved to line 12; the queue rule is gone, then
	// comes back: it starts from scratch.
	moved := kept
	moved.Name, moved.Line, moved.Origin = "line 12", 12, "new"
	e.SetRules("hello", []Rule{{Name: "n", Signal: "rps", Op: GT, Threshold: 1, Verb: "clone"}, moved})
	e.SetRules("hello", []Rule{{Name: "n", Signal: "rps", Op: GT, Threshold: 1, Verb: "clone"}, moved, dropped})
	st := e.Status("hello")
	if len(st) != 3 || !st[1].Holding || !st[1].Since.Equal(t0) || st[2].Holding {
		t.Fatalf("status after SetRules = %+v", st)
	}
	at(e, c, rec, t0.Add(time.Second), reading("queue", 9, "cell", "hello"))
	ds := at(e, c, rec, t0.Add(3*time.Second), reading("cpu", 90, "cell", "hello"), reading("queue", 9, "cell", "hello"))
	if len(ds) != 1 {
		t.Fatalf("at t0+3s: %+v, want only the kept rule to fire", ds)
	}
	if r := ds[0].Rule; r.Name != "line 12" || r.Line != 12 || r.Origin != "new" || r.Cell != "hello" {
		t.Fatalf("fired rule = %+v, want the new name, line and origin", r)
	}
	if ds := at(e, c, rec, t0.Add(4*time.Second), reading("queue", 9, "cell", "hello")); len(ds) != 1 || ds[0].Rule.Name != "line 10" {
		t.Fatalf("re-added rule at 3s of its new window: %+v", ds)
	}
}

func TestSetRulesChangedRuleStartsAfresh(t *testing.T) {
	e, c, rec := newTestEngine(Options{})
	r := Rule{Name: "line 9", Signal: "cpu", Op: GT, Threshold: 80, Window: 3 * time.Second, Verb: "clone"}
	e.SetRules("hello", []Rule{r})
	t0 := c.Now()
	at(e, c, rec, t0, reading("cpu", 90, "cell", "hello"))
	r.Threshold = 85
	e.SetRules("hello", []Rule{r})
	if ds := at(e, c, rec, t0.Add(3*time.Second), reading("cpu", 90, "cell", "hello")); len(ds) != 0 {
		t.Fatalf("a changed rule kept the old rule's window: %+v", ds)
	}
}

func TestSetRulesCopiesRules(t *testing.T) {
	e, c, rec := newTestEngine(Options{})
	labels := map[string]string{"port": "8080"}
	args := []string{"1"}
	e.SetRules("hello", []Rule{{Name: "r", Signal: "s", Labels: labels, Op: GT, Verb: "clone", Args: args}})
	labels["port"] = "9090"
	args[0] = "2"
	c.Advance(time.Second)
	e.Observe([]signals.Reading{reading("s", 1, "port", "8080")})
	ds := rec.take()
	if len(ds) != 1 || ds[0].Rule.Args[0] != "1" || ds[0].Rule.Labels["port"] != "8080" {
		t.Fatalf("decisions = %+v: the engine used the caller's modified labels or args", ds)
	}
}

func TestRemoveCell(t *testing.T) {
	e, c, rec := newTestEngine(Options{})
	r := Rule{Name: "r", Signal: "host.cpu", Op: GT, Threshold: 90, Verb: "reroute"}
	e.SetRules("a", []Rule{r})
	e.SetRules("b", []Rule{r})
	e.RemoveCell("a")
	if st := e.Status("a"); st != nil {
		t.Fatalf("Status(a) after RemoveCell = %+v", st)
	}
	c.Advance(time.Second)
	e.Observe([]signals.Reading{reading("host.cpu", 95), reading("host.cpu", 95, "cell", "a")})
	if got, want := rec.names(), []string{"b/r"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	e.RemoveCell("b")
	e.RemoveCell("nope")
	if n := len(e.idx.Load().nodeWide) + len(e.idx.Load().cells); n != 0 {
		t.Fatalf("index keeps %d entries after every cell was removed", n)
	}
}

func TestAliases(t *testing.T) {
	e, c, rec := newTestEngine(Options{Aliases: map[string]string{"host_cpu": "host.cpu"}})
	e.SetRules("a", []Rule{{Name: "alias", Signal: "host_cpu", Op: GT, Threshold: 90, Verb: "reroute"}})
	e.SetRules("b", []Rule{{Name: "canonical", Signal: "host.cpu", Op: GT, Threshold: 90, Verb: "reroute"}})
	c.Advance(time.Second)
	e.Observe([]signals.Reading{reading("host.cpu", 95)})
	if got, want := rec.names(), []string{"a/alias", "b/canonical"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("host.cpu fired %v, want %v", got, want)
	}
	c.Advance(time.Second)
	e.Observe([]signals.Reading{reading("host_cpu", 95)})
	if got, want := rec.names(), []string{"a/alias", "b/canonical"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("host_cpu fired %v, want %v", got, want)
	}
	if st := e.Status("a"); st[0].Rule.Signal != "host_cpu" {
		t.Fatalf("Status keeps the signal as written, got %q", st[0].Rule.Signal)
	}
}

func TestStatus(t *testing.T) {
	e, c, rec := newTestEngine(Options{})
	e.SetRules("hello", []Rule{
		{Name: "hot", Signal: "cpu", Op: GT, Threshold: 80, Window: 2 * time.Second, Cooldown: 5 * time.Second, Verb: "clone"},
		{Name: "idle", Signal: "idle", Op: GE, Threshold: 300, Verb: "decay"},
	})
	if st := e.Status("nope"); st != nil {
		t.Fatalf("Status of an unknown cell = %+v", st)
	}
	st := e.Status("hello")
	if len(st) != 2 || st[0].Rule.Name != "hot" || st[1].Rule.Name != "idle" || st[0].Holding || !st[0].LastSeen.IsZero() {
		t.Fatalf("initial status = %+v", st)
	}
	t0 := c.Now()
	at(e, c, rec, t0, reading("cpu", 90, "cell", "hello"))
	at(e, c, rec, t0.Add(time.Second), reading("cpu", 91, "cell", "hello"))
	st = e.Status("hello")
	if s := st[0]; !s.Holding || !s.Since.Equal(t0) || s.LastValue != 91 || !s.LastSeen.Equal(t0.Add(time.Second)) || !s.LastFired.IsZero() {
		t.Fatalf("holding status = %+v", s)
	}
	at(e, c, rec, t0.Add(2*time.Second), reading("cpu", 92, "cell", "hello"))
	s := e.Status("hello")[0]
	if !s.Holding || !s.Since.Equal(t0.Add(2*time.Second)) || !s.LastFired.Equal(t0.Add(2*time.Second)) || !s.QuietUntil.Equal(t0.Add(7*time.Second)) {
		t.Fatalf("status after firing = %+v", s)
	}
	at(e, c, rec, t0.Add(3*time.Second), reading("cpu", 10, "cell", "hello"))
	if s := e.Status("hello")[0]; s.Holding || s.LastValue != 10 {
		t.Fatalf("status after a false reading = %+v", s)
	}
	// Status returns copies.
	e.SetRules("hello", []Rule{{Name: "l", Signal: "s", Labels: map[string]string{"k": "v"}, Op: GT, Verb: "clone", Args: []string{"1"}}})
	s = e.Status("hello")[0]
	s.Rule.Labels["k"], s.Rule.Args[0] = "changed", "changed"
	if s := e.Status("hello")[0]; s.Rule.Labels["k"] != "v" || s.Rule.Args[0] != "1" {
		t.Fatalf("Status shares the engine's labels or args: %+v", s)
	}
}

func TestFireMayCallTheEngine(t *testing.T) {
	c := newClock()
	var e *Engine
	calls := 0
	e = New(func(d Decision) {
		calls++
		_ = e.Status(d.Rule.Cell)
		e.SetRules(d.Rule.Cell, nil) // a rule that removes its cell
	}, Options{Clock: c.Now})
	e.SetRules("a", []Rule{
		{Name: "r1", Signal: "s", Op: GT, Verb: "decay"},
		{Name: "r2", Signal: "s", Op: GT, Verb: "decay"},
	})
	e.Observe([]signals.Reading{reading("s", 1, "cell", "a")})
	if calls != 1 {
		t.Fatalf("fire called %d times, want 1: r2 was removed by r1's decision", calls)
	}
}

func TestObserveIgnoresUnknownSignalsAndEmptyBatches(t *testing.T) {
	e, _, rec := newTestEngine(Options{})
	e.Observe(nil)
	e.Observe([]signals.Reading{reading("s", 1)})
	e.SetRules("a", []Rule{{Name: "r", Signal: "s", Op: GT, Verb: "decay"}})
	e.Observe([]signals.Reading{reading("other", 1, "cell", "a"), reading("s", 1, "cell", "b")})
	if ds := rec.take(); len(ds) != 0 {
		t.Fatalf("fired %+v", ds)
	}
}

func TestObserveAllocations(t *testing.T) {
	c := newClock()
	e := New(func(Decision) {}, Options{Clock: c.Now})
	var rules []Rule
	for i := range 10 {
		rules = append(rules, Rule{Name: fmt.Sprint(i), Signal: fmt.Sprintf("s%d", i), Op: GT, Threshold: 10, Verb: "clone"})
	}
	rules = append(rules, Rule{Name: "port", Signal: "kernel.x", Labels: map[string]string{"port": "1"}, Op: GT, Threshold: 10, Verb: "clone"})
	for i := range 100 {
		e.SetRules(fmt.Sprint("cell", i), rules)
	}
	quiet := []signals.Reading{
		reading("s3", 1, "cell", "cell7"),
		reading("s4", 1, "cell", "cell8", "version", "abc"),
		reading("kernel.x", 1, "port", "1", "proto", "tcp"),
		reading("unknown", 1, "cell", "cell1"),
	}
	if n := testing.AllocsPerRun(100, func() { e.Observe(quiet) }); n != 0 {
		t.Errorf("Observe of readings that fire nothing: %v allocs, want 0", n)
	}
	firing := []signals.Reading{reading("s3", 11, "cell", "cell7")}
	e.Observe(firing) // the series starts holding: its state is allocated once
	if n := testing.AllocsPerRun(100, func() { c.Advance(time.Second); e.Observe(firing) }); n > 1 {
		t.Errorf("Observe of a reading that fires: %v allocs, want at most 1 (the Decision's Values)", n)
	}
}

// TestConcurrentObserveAndSetRules runs Observe from many goroutines while
// another replaces rules and reads Status; run it with -race.
func TestConcurrentObserveAndSetRules(t *testing.T) {
	var fired atomic.Int64
	var bad atomic.Value
	e := New(func(d Decision) {
		fired.Add(1)
		if d.Rule.Cell != d.Values[len(d.Values)-1].Labels["cell"] {
			bad.Store(fmt.Sprintf("rule of %s fired on %v", d.Rule.Cell, d.Values))
		}
	}, Options{})
	const cells = 20
	rulesA := []Rule{
		{Name: "a", Signal: "cpu", Op: GT, Threshold: 50, Verb: "clone"},
		{Name: "b", Signal: "queue", Op: GT, Threshold: 1, Window: time.Microsecond, Verb: "clone"},
	}
	rulesB := []Rule{
		{Name: "a", Signal: "cpu", Op: GT, Threshold: 50, Verb: "clone"},
		{Name: "c", Signal: "rps", Op: LT, Threshold: 1000, Verb: "decay"},
	}
	for i := range cells {
		e.SetRules(fmt.Sprint("c", i), rulesA)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				cell := fmt.Sprint("c", (g+n)%cells)
				e.Observe([]signals.Reading{
					reading("cpu", float64(n%100), "cell", cell),
					reading("queue", float64(n%3), "cell", cell),
					reading("rps", float64(n%2000), "cell", cell),
				})
			}
		})
	}
	wg.Go(func() {
		// At least 300 updates, and on until rules have fired during them:
		// on a loaded machine the observers may not have run yet.
		for n := 0; n < 300 || fired.Load() < 50; n++ {
			cell := fmt.Sprint("c", n%cells)
			if n%2 == 0 {
				e.SetRules(cell, rulesB)
			} else {
				e.SetRules(cell, rulesA)
			}
			if n%7 == 0 {
				e.RemoveCell(fmt.Sprint("c", (n+3)%cells))
			}
			_ = e.Status(cell)
		}
		close(stop)
	})
	wg.Wait()
	if v := bad.Load(); v != nil {
		t.Fatal(v)
	}
	if fired.Load() == 0 {
		t.Fatal("no rule fired")
	}
	// After the storm the engine holds exactly what the last calls set.
	for i := range cells {
		e.SetRules(fmt.Sprint("c", i), rulesB)
	}
	rec := &recorder{}
	e.fire = rec.fire
	e.Observe([]signals.Reading{reading("cpu", 99, "cell", "c3"), reading("queue", 9, "cell", "c3"), reading("rps", 1, "cell", "c3")})
	if got, want := rec.names(), []string{"c3/a", "c3/c"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after concurrent updates fired %v, want %v", got, want)
	}
}
