package plugintest_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/celluster/celluster/sdk/plugin"
	"github.com/celluster/celluster/sdk/plugin/plugintest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ----- a telemetry source emitting a counter -----

type counter struct {
	n       atomic.Int64
	mu      sync.Mutex
	node    string
	cells   []plugin.CellState
	signals []plugin.Signal // nil: the default signal
	// sample, when set, replaces the samples Stream sends.
	sample *plugin.Sample
	// stubborn makes Stream return its ctx's error instead of nil.
	stubborn bool
}

func (c *counter) Configure(ctx context.Context, cfg plugin.Config, host plugin.Host) error {
	cells, err := host.ListCells(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.node, c.cells = cfg.Node, cells
	return nil
}

func (c *counter) Signals(context.Context) ([]plugin.Signal, error) {
	if c.signals != nil {
		return c.signals, nil
	}
	return []plugin.Signal{{
		Name: "example.requests", Unit: "1", Kind: plugin.Counter,
		Help: "Requests seen.", Labels: []string{"node"},
	}}, nil
}

func (c *counter) Stream(ctx context.Context, interval time.Duration, send func([]plugin.Sample) error) error {
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			if c.stubborn {
				return ctx.Err()
			}
			return nil
		case <-tk.C:
			c.mu.Lock()
			node := c.node
			c.mu.Unlock()
			s := plugin.Sample{Signal: "example.requests", Value: float64(c.n.Add(1)), Labels: map[string]string{"node": node}}
			if c.sample != nil {
				s = *c.sample
			}
			if err := send([]plugin.Sample{s}); err != nil {
				return err
			}
		}
	}
}

var counterInfo = plugin.Info{Name: "counter", Version: "1.0.0", Description: "counts"}

func TestTelemetrySuite(t *testing.T) {
	host := &plugintest.RecordingHost{Cells: []plugin.CellState{{Name: "hello", Replicas: 1}}}
	c := &counter{}
	plugintest.TelemetrySuite(t, counterInfo, c, plugintest.WithHost(host))
	if c.n.Load() == 0 {
		t.Errorf("the source never sent")
	}
	// Configure's host call crossed the broker.
	if got := host.CallsTo("ListCells"); len(got) != 1 {
		t.Errorf("host got ListCells calls %+v", got)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.node != "plugintest" || !reflect.DeepEqual(c.cells, host.Cells) {
		t.Errorf("source configured with node %q, cells %+v", c.node, c.cells)
	}
}

// ----- a toy intent parser: "cell NAME" lines -----

type toyParser struct{}

func (toyParser) Accepts() ([]string, []string) {
	return []string{".toy"}, []string{"text/x-toy"}
}

func (toyParser) Parse(ctx context.Context, filename, mediaType string, content []byte) (*plugin.IntentSpec, []plugin.Diagnostic, error) {
	var spec plugin.IntentSpec
	var diags []plugin.Diagnostic
	fail := func(line, col int, msg, hint string) {
		diags = append(diags, plugin.Diagnostic{Line: line, Column: col, Severity: plugin.Error, Message: msg, Hint: hint})
	}
	sc := bufio.NewScanner(bytes.NewReader(content))
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		trimmed := strings.TrimLeft(text, " \t")
		col := len(text) - len(trimmed) + 1
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		word, rest, _ := strings.Cut(trimmed, " ")
		if word != "cell" {
			fail(line, col, fmt.Sprintf("unknown directive %q", word), `the only directive is "cell NAME"`)
			continue
		}
		name := strings.TrimSpace(rest)
		nameCol := col + len(word) + 1 + (len(rest) - len(strings.TrimLeft(rest, " ")))
		if name == "" {
			fail(line, col+len(word), "missing cell name", "e.g. cell hello")
			continue
		}
		for i, r := range name {
			if !(r >= 'a' && r <= 'z' || r == '-' || i > 0 && r >= '0' && r <= '9') {
				fail(line, nameCol+i, fmt.Sprintf("invalid character %q in cell name", r), "use lower-case letters, digits and '-'")
				break
			}
		}
		if spec.Cell != "" {
			diags = append(diags, plugin.Diagnostic{Line: line, Column: col, Severity: plugin.Warning, Message: "cell named again; the last name wins"})
		}
		spec.Cell = name
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	if spec.Cell == "" && len(diags) == 0 {
		fail(max(line, 1), 1, "no cell directive", "add a line: cell NAME")
	}
	for _, d := range diags {
		if d.Severity == plugin.Error {
			return nil, diags, nil
		}
	}
	return &spec, diags, nil
}

func TestIntentSuite(t *testing.T) {
	plugintest.IntentSuite(t, plugin.Info{Name: "toy", Version: "0.0.1"}, toyParser{}, []plugintest.IntentCase{
		{Name: "valid", Filename: "hello.toy", Content: []byte("# a cell\ncell hello\n")},
		{Name: "valid with warning", Content: []byte("cell a\n  cell b2\n")},
		{Name: "default filename", Content: []byte("cell x"), MediaType: "text/x-toy"},
		{Name: "unknown directive", Content: []byte("cell a\n\n  service b\n"), WantErrorAt: &plugintest.Position{Line: 3, Column: 3}},
		{Name: "bad name", Content: []byte("cell  heLlo\n"), WantErrorAt: &plugintest.Position{Line: 1, Column: 9}},
		{Name: "missing name", Content: []byte("cell\n"), WantErrorAt: &plugintest.Position{Line: 1, Column: 5}},
		{Name: "empty", Content: nil, WantErrorAt: &plugintest.Position{Line: 1, Column: 1}},
	})
}

// ----- a verb plugin that scales through the host -----

type scaler struct{}

func (scaler) Verbs() []string { return []string{"spawn", "drain"} }

func (scaler) Execute(ctx context.Context, host plugin.Host, req plugin.VerbRequest) (plugin.VerbResult, error) {
	n := 1
	if len(req.Args) > 0 {
		var err error
		if n, err = strconv.Atoi(req.Args[0]); err != nil || n < 1 || n > 10 {
			return plugin.VerbResult{Outcome: plugin.Refused, Message: fmt.Sprintf("count %q is not 1..10", req.Args[0])}, nil
		}
	}
	var live int
	var err error
	if req.Verb == "spawn" {
		live, err = host.SpawnReplicas(ctx, req.Cell, n)
	} else {
		live, err = host.DrainReplicas(ctx, req.Cell, n)
	}
	if err != nil {
		return plugin.VerbResult{Outcome: plugin.Failed, Message: err.Error()}, nil
	}
	msg := fmt.Sprintf("%s %d of %s: %d live", req.Verb, n, req.Cell, live)
	if err := host.AddJournalNote(ctx, req.Cell, msg); err != nil {
		return plugin.VerbResult{}, err
	}
	return plugin.VerbResult{Outcome: plugin.Done, Message: msg}, nil
}

func TestVerbSuite(t *testing.T) {
	host := &plugintest.RecordingHost{Cells: []plugin.CellState{{Name: "hello", Replicas: 1}}}
	checked := false
	plugintest.VerbSuite(t, plugin.Info{Name: "scaler", Version: "2.0.0"}, scaler{}, []plugintest.VerbCase{
		{
			Request: plugin.VerbRequest{Verb: "spawn", Cell: "hello", Args: []string{"2"}, Trigger: plugin.Trigger{
				Rule: "p99-clone", Values: []plugin.SignalValue{{Signal: "cell.latency.p99", Value: 0.4, Time: time.Now()}},
			}},
			WantOutcome: plugin.Done,
			Check: func(t *testing.T, res plugin.VerbResult, calls []plugintest.HostCall) {
				checked = true
				want := []plugintest.HostCall{
					{Method: "SpawnReplicas", Cell: "hello", Count: 2},
					{Method: "AddJournalNote", Cell: "hello", Note: "spawn 2 of hello: 3 live"},
				}
				if !reflect.DeepEqual(calls, want) {
					t.Errorf("host calls %+v, want %+v", calls, want)
				}
				if res.Message != "spawn 2 of hello: 3 live" {
					t.Errorf("message %q", res.Message)
				}
			},
		},
		{Name: "drain", Request: plugin.VerbRequest{Verb: "drain", Cell: "hello"}, WantOutcome: plugin.Done},
		{Name: "unknown cell", Request: plugin.VerbRequest{Verb: "spawn", Cell: "ghost"}, WantOutcome: plugin.Failed},
		{Name: "bad count", Request: plugin.VerbRequest{Verb: "spawn", Cell: "hello", Args: []string{"99"}}, WantOutcome: plugin.Refused},
	}, plugintest.WithHost(host))
	if !checked {
		t.Errorf("the case's Check did not run")
	}
	// The callbacks arrived at the host over the broker.
	spawns := host.CallsTo("SpawnReplicas")
	if len(spawns) != 2 || spawns[0].Cell != "hello" || spawns[0].Count != 2 || spawns[1].Cell != "ghost" {
		t.Errorf("SpawnReplicas calls %+v", spawns)
	}
	notes := host.CallsTo("AddJournalNote")
	if len(notes) != 2 || notes[1].Note != "drain 1 of hello: 2 live" {
		t.Errorf("AddJournalNote calls %+v", notes)
	}
	cells, _ := host.ListCells(context.Background())
	if cells[0].Replicas != 2 {
		t.Errorf("host has %d replicas of hello, want 2", cells[0].Replicas)
	}
}

func TestRecordingHost(t *testing.T) {
	ctx := context.Background()
	h := &plugintest.RecordingHost{Readings: []plugin.Reading{{Signal: "a.b", Value: 1}, {Signal: "c.d", Value: 2}}}
	if n, err := h.SpawnReplicas(ctx, "any", 3); n != 3 || err != nil {
		t.Errorf("SpawnReplicas with no cells = %d, %v", n, err)
	}
	if n, _ := h.DrainReplicas(ctx, "any", 5); n != 0 {
		t.Errorf("DrainReplicas below zero = %d", n)
	}
	if r, _ := h.ReadSignals(ctx, "c.d"); len(r) != 1 || r[0].Value != 2 {
		t.Errorf("ReadSignals(c.d) = %+v", r)
	}
	if r, _ := h.ReadSignals(ctx); len(r) != 2 {
		t.Errorf("ReadSignals() = %+v", r)
	}
	_ = h.SetRouteWeights(ctx, "any", []plugin.RouteWeight{{Target: "x", Weight: 1}})
	_ = h.EmitSignal(ctx, plugin.Sample{Signal: "a.b"})
	if got := len(h.Calls()); got != 6 {
		t.Errorf("%d calls recorded, want 6", got)
	}
	h.Cells = []plugin.CellState{{Name: "hello"}}
	h.Reset()
	if _, err := h.SpawnReplicas(ctx, "ghost", 1); status.Code(err) != codes.NotFound {
		t.Errorf("SpawnReplicas(ghost) = %v, want NotFound", err)
	}
	h.Err = errors.New("down")
	if err := h.AddJournalNote(ctx, "hello", "n"); err == nil {
		t.Errorf("Err not returned")
	}
	if got := h.Calls(); len(got) != 2 || got[1].Note != "n" {
		t.Errorf("calls after Reset %+v", got)
	}
}

// ----- the suites catch broken plugins -----

type badParser struct{ toyParser }

// Parse reports every valid input's warnings as errors, and errors one
// column off.
func (p badParser) Parse(ctx context.Context, filename, mediaType string, content []byte) (*plugin.IntentSpec, []plugin.Diagnostic, error) {
	spec, diags, err := p.toyParser.Parse(ctx, filename, mediaType, content)
	for i := range diags {
		diags[i].Column++
	}
	if spec != nil {
		diags = append(diags, plugin.Diagnostic{Line: 1, Column: 1, Severity: plugin.Error, Message: "spurious"})
	}
	return spec, diags, err
}

type lazyVerbs struct{ scaler }

func (lazyVerbs) Execute(ctx context.Context, host plugin.Host, req plugin.VerbRequest) (plugin.VerbResult, error) {
	return plugin.VerbResult{Outcome: plugin.Noop}, nil
}

// TestBrokenPlugin runs a suite against a broken plugin when the test
// binary is run by TestSuitesCatchBrokenPlugins; it must fail.
func TestBrokenPlugin(t *testing.T) {
	switch os.Getenv("PLUGINTEST_BROKEN") {
	case "":
		t.Skip("run by TestSuitesCatchBrokenPlugins")
	case "telemetry":
		plugintest.TelemetrySuite(t, plugin.Info{Name: "bad"}, &counter{
			signals: []plugin.Signal{
				{Name: "Bad-Name", Unit: "1", Kind: plugin.Gauge},
				{Name: "nounit.signal", Kind: plugin.Gauge},
				{Name: "nokind.signal", Unit: "1"},
			},
			sample:   &plugin.Sample{Signal: "undeclared.signal", Value: 1},
			stubborn: true,
		})
	case "intent":
		plugintest.IntentSuite(t, plugin.Info{Name: "bad", Version: "1"}, badParser{}, []plugintest.IntentCase{
			{Name: "valid", Content: []byte("cell a\n")},
			{Name: "bad name", Content: []byte("cell A\n"), WantErrorAt: &plugintest.Position{Line: 1, Column: 6}},
		})
	case "intent-no-valid":
		plugintest.IntentSuite(t, plugin.Info{Name: "bad", Version: "1"}, toyParser{}, nil)
	case "verb":
		plugintest.VerbSuite(t, plugin.Info{Name: "bad", Version: "1"}, lazyVerbs{}, []plugintest.VerbCase{
			{Request: plugin.VerbRequest{Verb: "spawn", Cell: "hello"}, WantOutcome: plugin.Done},
		})
	}
}

func TestSuitesCatchBrokenPlugins(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the test binary")
	}
	for kind, want := range map[string][]string{
		"telemetry": {
			"Info: empty version",
			`Signals: name "Bad-Name" does not match`,
			`Signals: "nounit.signal" has no unit`,
			`Signals: "nokind.signal" has no kind`,
			`Stream: sample of undeclared signal "undeclared.signal"`,
			"Stream returned context canceled after its ctx ended; want nil",
		},
		"intent": {
			`valid input gave error diagnostic case.toy:1:1: spurious`,
			"no error diagnostic at 1:6; got:",
			"case.toy:1:7: invalid character 'A' in cell name",
		},
		"intent-no-valid": {"IntentSuite needs at least one valid case"},
		"verb":            {"Execute: outcome noop (\"\"), want done"},
	} {
		t.Run(kind, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenPlugin$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), "PLUGINTEST_BROKEN="+kind)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("the suite passed a broken plugin (err %v):\n%s", err, out)
			}
			for _, w := range want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q", w)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}
