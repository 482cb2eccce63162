package pluginhost

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/celluster/celluster/pluginapi"
	pb "github.com/celluster/celluster/pluginapi/v1"
)

func TestDiscoveryDescribeAndBuiltins(t *testing.T) {
	dir := t.TempDir()
	install(t, dir, "ticker", "ticker")
	install(t, dir, "parser", "parser")
	install(t, dir, "verber", "verber")
	install(t, dir, "ticker", "ticker2") // same described name: refused
	if err := os.WriteFile(filepath.Join(dir, "README.txt"), []byte("not a plugin"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	install(t, filepath.Join(dir, "sub"), "ticker", "nested") // not scanned
	if err := os.WriteFile(filepath.Join(dir, "broken"), []byte("#!/bin/sh\necho 'no describe here' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	multi := filepath.Join(bins(t), "multi")

	m, lb := startManager(t, Config{
		Dir:      dir,
		Builtins: []Spec{{Name: "host", Path: multi, Args: []string{"plugin", "host"}, Builtin: true}},
		Settings: map[string]map[string]string{"ticker": {"every": "10ms"}},
	})

	var names []string
	for _, s := range m.Status() {
		names = append(names, s.Name)
	}
	want := []string{"broken", "host", "parser", "ticker", "ticker2", "verber"}
	if !slices.Equal(names, want) {
		t.Fatalf("plugins = %v, want %v", names, want)
	}

	sum, err := sha256File(filepath.Join(dir, "ticker"))
	if err != nil {
		t.Fatal(err)
	}
	tk := statusOf(t, m, "ticker")
	if tk.State != StateRunning || tk.Kind != pluginapi.KindTelemetry || tk.Version != "0.0.1-test" ||
		tk.API != 1 || tk.PID == 0 || tk.SHA256 != sum || tk.Builtin || !slices.Equal(tk.Signals, []string{"test.ticks"}) {
		t.Errorf("ticker status = %+v", tk)
	}
	if p := statusOf(t, m, "parser"); p.State != StateRunning || !slices.Equal(p.Extensions, []string{".intent"}) || p.Kind != pluginapi.KindIntent {
		t.Errorf("parser status = %+v", p)
	}
	if v := statusOf(t, m, "verber"); v.State != StateRunning || !slices.Contains(v.Verbs, "poke") {
		t.Errorf("verber status = %+v", v)
	}
	h := statusOf(t, m, "host")
	if h.State != StateRunning || !h.Builtin || !slices.Equal(h.Args, []string{"plugin", "host"}) || !slices.Equal(h.Verbs, []string{"host", "echo-host"}) {
		t.Errorf("built-in status = %+v", h)
	}
	if d := statusOf(t, m, "ticker2"); d.State != StateFailed || !strings.Contains(d.LastError, "name already used") {
		t.Errorf("duplicate status = %+v", d)
	}
	b := statusOf(t, m, "broken")
	if b.State != StateFailed || !strings.Contains(b.LastError, "plugin broken: `"+filepath.Join(dir, "broken")+" describe` failed: exit status 1") ||
		!strings.Contains(b.LastError, "no describe here") {
		t.Errorf("broken status = %+v", b)
	}

	if sig := m.Signals(); len(sig) != 1 || len(sig["ticker"]) != 1 || sig["ticker"][0].GetName() != "test.ticks" ||
		sig["ticker"][0].GetKind() != pb.SignalKind_SIGNAL_KIND_COUNTER {
		t.Errorf("Signals() = %v", sig)
	}

	// The built-in is routed to like any plugin.
	resp, name, err := m.Execute(context.Background(), &pb.VerbRequest{Verb: "echo-host", Cell: "c1"})
	if err != nil || name != "host" || resp.GetOutcome() != pb.Outcome_OUTCOME_DONE {
		t.Errorf("Execute(echo-host) = %v, %q, %v", resp, name, err)
	}

	// Plugin stderr reaches the node's log under the plugin's name: hclog
	// JSON lines written before the handshake, and plain lines after it
	// (go-plugin's stdio stream).
	waitFor(t, 10*time.Second, "plugin stderr lines in the log", func() bool {
		return lb.has(map[string]string{"plugin": "ticker", "msg": "ticker starting", "level": "INFO"}) &&
			lb.has(map[string]string{"plugin": "ticker", "msg": "ticker: configured for node n1", "stream": "stderr"})
	})
}

func TestTelemetryStreamAndRestartAfterKill(t *testing.T) {
	dir := t.TempDir()
	install(t, dir, "ticker", "ticker")
	m, _ := startManager(t, Config{Dir: dir, Backoff: Backoff{Min: 400 * time.Millisecond, Max: time.Second}})

	var mu sync.Mutex
	var values []float64
	m.Subscribe(func(plugin string, b *pb.SampleBatch) {
		if plugin != "ticker" {
			t.Errorf("batch from %q", plugin)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, s := range b.GetSamples() {
			if s.GetSignal() != "test.ticks" || s.GetLabels()["cell"] != "hello" {
				t.Errorf("sample %v", s)
			}
			values = append(values, s.GetValue())
		}
	})
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(values)
	}
	waitFor(t, 10*time.Second, "batches", func() bool { return count() >= 5 })

	before := statusOf(t, m, "ticker")
	// Record the state transitions while the plugin is killed and restarted.
	var states []State
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for done := false; !done; {
			select {
			case <-stop:
				done = true // one last look
			case <-time.After(2 * time.Millisecond):
			}
			st := statusOf(t, m, "ticker").State
			if len(states) == 0 || states[len(states)-1] != st {
				states = append(states, st)
			}
		}
	}()
	if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	values = nil
	mu.Unlock()
	waitFor(t, 30*time.Second, "ticker restarted", func() bool {
		s := statusOf(t, m, "ticker")
		return s.State == StateRunning && s.Restarts == 1
	})
	close(stop)
	<-stopped
	if i := slices.Index(states, StateBackoff); i < 0 || !slices.Contains(states[i:], StateRunning) {
		t.Errorf("states after kill -9: %v, want backoff then running", states)
	}
	after := statusOf(t, m, "ticker")
	if after.PID == before.PID || after.PID == 0 || !strings.Contains(after.LastError, "signal: killed") {
		t.Errorf("after restart: %+v (pid before %d)", after, before.PID)
	}
	// The stream was opened again: the new process counts from 1.
	waitFor(t, 10*time.Second, "batches from the restarted plugin", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(values, 1) && len(values) >= 3
	})
}

func TestParseDiagnostics(t *testing.T) {
	dir := t.TempDir()
	install(t, dir, "parser", "parser")
	m, _ := startManager(t, Config{Dir: dir})
	ctx := context.Background()

	resp, name, err := m.Parse(ctx, "hello.intent", "", []byte("cell hello\n    bad thing\n"))
	if err != nil || name != "parser" {
		t.Fatalf("Parse = %q, %v", name, err)
	}
	if len(resp.GetDiagnostics()) != 1 {
		t.Fatalf("diagnostics = %v", resp.GetDiagnostics())
	}
	d := resp.GetDiagnostics()[0]
	if d.GetLine() != 2 || d.GetColumn() != 5 || d.GetSeverity() != pb.Severity_SEVERITY_ERROR || d.GetFile() != "hello.intent" || resp.GetSpec() != nil {
		t.Errorf("diagnostic = %v", d)
	}

	// By media type (parameters ignored), whatever the extension.
	resp, _, err = m.Parse(ctx, "x.txt", "application/vnd.celluster.intent; charset=utf-8", []byte("cell hello\n"))
	if err != nil || resp.GetSpec().GetCell() != "hello" || len(resp.GetDiagnostics()) != 0 {
		t.Errorf("Parse by media type = %v, %v", resp, err)
	}
	// An embedded intent name routes by its extension too.
	if _, _, err := m.Parse(ctx, "mod.wasm#cel.INTENT", "", []byte("cell x\n")); err != nil {
		t.Errorf("Parse embedded: %v", err)
	}
	if _, _, err := m.Parse(ctx, "x.yaml", "", nil); !errors.Is(err, ErrNoPlugin) {
		t.Errorf("Parse(x.yaml) error = %v, want ErrNoPlugin", err)
	}
}

func TestExecuteCallsBackTheHost(t *testing.T) {
	dir := t.TempDir()
	install(t, dir, "verber", "verber")
	host := newRecordingHost()
	m, _ := startManager(t, Config{Dir: dir, Host: host})

	resp, name, err := m.Execute(context.Background(), &pb.VerbRequest{Verb: "poke", Cell: "hello", Trigger: &pb.Trigger{Manual: true}})
	if err != nil || name != "verber" {
		t.Fatalf("Execute = %q, %v", name, err)
	}
	if resp.GetOutcome() != pb.Outcome_OUTCOME_DONE || resp.GetMessage() != "poked hello; the node has 2 cells" {
		t.Errorf("response = %v", resp)
	}
	if got, want := host.Calls(), []string{"ListCells", "AddJournalNote hello: poked by verber"}; !slices.Equal(got, want) {
		t.Errorf("host calls = %q, want %q", got, want)
	}
	if _, _, err := m.Execute(context.Background(), &pb.VerbRequest{Verb: "nosuchverb"}); !errors.Is(err, ErrNoPlugin) {
		t.Errorf("Execute(nosuchverb) error = %v, want ErrNoPlugin", err)
	}
}

// TestHostForServesEachPluginItsOwnHost: with HostFor, each plugin gets the
// host service made for its name, so callbacks can be attributed.
func TestHostForServesEachPluginItsOwnHost(t *testing.T) {
	dir := t.TempDir()
	install(t, dir, "verber", "verber")
	fallback, own := newRecordingHost(), newRecordingHost()
	var asked []string
	var mu sync.Mutex
	m, _ := startManager(t, Config{Dir: dir, Host: fallback, HostFor: func(plugin string) HostService {
		mu.Lock()
		asked = append(asked, plugin)
		mu.Unlock()
		return own
	}})
	if _, _, err := m.Execute(context.Background(), &pb.VerbRequest{Verb: "poke", Cell: "hello", Trigger: &pb.Trigger{Manual: true}}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(asked, []string{"verber"}) {
		t.Errorf("HostFor asked for %q, want [verber]", asked)
	}
	if len(own.Calls()) != 2 || len(fallback.Calls()) != 0 {
		t.Errorf("calls: own %q, fallback %q", own.Calls(), fallback.Calls())
	}
}

func TestInFlightCallWhenPluginDies(t *testing.T) {
	dir := t.TempDir()
	install(t, dir, "verber", "verber")
	host := newRecordingHost()
	m, lb := startManager(t, Config{Dir: dir, Host: host, Backoff: Backoff{Min: 2 * time.Second, Max: 2 * time.Second}})
	pid := statusOf(t, m, "verber").PID

	// kill -9 while a call is in flight.
	type result struct {
		err  error
		took time.Duration
	}
	done := make(chan result, 1)
	go func() {
		t0 := time.Now()
		_, _, err := m.Execute(context.Background(), &pb.VerbRequest{Verb: "block", Cell: "c"})
		done <- result{err, time.Since(t0)}
	}()
	select {
	case n := <-host.notes:
		if n.GetNote() != "blocking" {
			t.Fatalf("note %v", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the block verb never reached the host")
	}
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if !errors.Is(r.err, ErrPluginShutdown) || !strings.Contains(r.err.Error(), "plugin verber: verb block") {
			t.Errorf("in-flight Execute error = %v, want it to wrap ErrPluginShutdown", r.err)
		}
		t.Logf("in-flight call failed %v after the kill: %v", time.Since(killed), r.err)
	case <-time.After(5 * time.Second):
		t.Fatal("in-flight Execute did not return within 5s of the plugin's death")
	}
	waitFor(t, 5*time.Second, "the warning in the log", func() bool {
		return lb.has(map[string]string{"plugin": "verber", "level": "WARN", "msg": "plugin shut down during a call"})
	})

	// While it waits to restart, calls fail at once.
	waitFor(t, 5*time.Second, "backoff", func() bool { return statusOf(t, m, "verber").State == StateBackoff })
	t0 := time.Now()
	_, _, err := m.Execute(context.Background(), &pb.VerbRequest{Verb: "echo"})
	if !errors.Is(err, ErrPluginShutdown) || !strings.Contains(err.Error(), "state backoff") || time.Since(t0) > time.Second {
		t.Errorf("Execute during backoff = %v after %v", err, time.Since(t0))
	}

	// A plugin that exits by itself mid-call.
	waitFor(t, 30*time.Second, "first restart", func() bool {
		s := statusOf(t, m, "verber")
		return s.State == StateRunning && s.Restarts == 1
	})
	_, _, err = m.Execute(context.Background(), &pb.VerbRequest{Verb: "crash"})
	if !errors.Is(err, ErrPluginShutdown) {
		t.Errorf("Execute(crash) error = %v, want ErrPluginShutdown", err)
	}

	// The caller's own deadline is reported as such.
	waitFor(t, 30*time.Second, "second restart", func() bool {
		s := statusOf(t, m, "verber")
		return s.State == StateRunning && s.Restarts == 2
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, _, err = m.Execute(ctx, &pb.VerbRequest{Verb: "block"})
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrPluginShutdown) {
		t.Errorf("Execute with a deadline = %v", err)
	}
}

func TestChecksumPins(t *testing.T) {
	dir := t.TempDir()
	marks := t.TempDir()
	t.Setenv("TPLUG_MARKER_DIR", marks)
	install(t, dir, "ticker", "ticker")
	parser := install(t, dir, "parser", "parser")
	good, err := sha256File(parser)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Repeat("0", 64)
	m, _ := startManager(t, Config{Dir: dir, Pins: map[string]string{"ticker": bad, "parser": good}})

	s := statusOf(t, m, "ticker")
	sum, _ := sha256File(filepath.Join(dir, "ticker"))
	want := fmt.Sprintf("plugin ticker: sha256 mismatch: %s has %s, pinned %s", filepath.Join(dir, "ticker"), sum, bad)
	if s.State != StateFailed || s.LastError != want || s.PID != 0 {
		t.Errorf("ticker = %+v\nwant error %q", s, want)
	}
	if p := statusOf(t, m, "parser"); p.State != StateRunning || p.SHA256 != good {
		t.Errorf("correctly pinned parser = %+v", p)
	}
	time.Sleep(500 * time.Millisecond) // not retried
	for _, f := range append(markers(t, marks, "describe"), markers(t, marks, "serve")...) {
		if strings.HasPrefix(f, "ticker.") {
			t.Errorf("the mismatching binary ran: marker %s", f)
		}
	}
	if s := statusOf(t, m, "ticker"); s.State != StateFailed || s.Restarts != 0 {
		t.Errorf("ticker after a while = %+v", s)
	}
}

// Pins name files, and are checked before anything runs: a pin naming what
// a plugin reports (not its file) pins nothing, so with pins given the
// unpinned file is refused without being run — describe included — and the
// stray pin is reported; a mismatching pin refuses the file naming it,
// the pinned and the actual sum, again without running it.
func TestPinsCheckedBeforeAnythingRuns(t *testing.T) {
	dir := t.TempDir()
	marks := t.TempDir()
	t.Setenv("TPLUG_MARKER_DIR", marks)
	tk := install(t, dir, "ticker", "tk") // describes itself as "ticker"
	parser := install(t, dir, "parser", "parser")
	vb := install(t, dir, "verber", "vb")
	good, _ := sha256File(parser)
	tkSum, _ := sha256File(tk)
	vbSum, _ := sha256File(vb)
	bad := strings.Repeat("0", 64)
	m, lb := startManager(t, Config{Dir: dir, Pins: map[string]string{"ticker": tkSum, "parser": good, "vb": bad}})

	s := statusOf(t, m, "tk")
	if s.State != StateFailed || s.PID != 0 || !strings.Contains(s.LastError, "plugin file "+tk+": plugin file not pinned") ||
		!strings.Contains(s.LastError, "tk="+tkSum) {
		t.Errorf("unpinned tk = %+v", s)
	}
	if !lb.has(map[string]string{"msg": "a pin names no plugin file", "pin": "ticker"}) {
		t.Error("the pin naming no file was not reported")
	}
	v := statusOf(t, m, "vb")
	want := fmt.Sprintf("plugin vb: sha256 mismatch: %s has %s, pinned %s", vb, vbSum, bad)
	if v.State != StateFailed || v.LastError != want {
		t.Errorf("vb = %+v\nwant error %q", v, want)
	}
	if p := statusOf(t, m, "parser"); p.State != StateRunning {
		t.Errorf("pinned parser = %+v", p)
	}
	for _, f := range append(markers(t, marks, "describe"), markers(t, marks, "serve")...) {
		if strings.HasPrefix(f, "tk.") || strings.HasPrefix(f, "vb.") {
			t.Errorf("a binary refused by its pin ran: marker %s", f)
		}
	}
	if len(markers(t, marks, "serve")) == 0 {
		t.Fatal("no marker from the pinned plugin: the markers prove nothing")
	}
}

func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	marks := t.TempDir()
	t.Setenv("TPLUG_MARKER_DIR", marks)
	install(t, dir, "badcookie", "badcookie")
	install(t, dir, "badversion", "badversion")
	install(t, dir, "hang", "hang")
	m, _ := startManager(t, Config{Dir: dir, StartTimeout: 2 * time.Second, HealthInterval: 50 * time.Millisecond})

	cases := []struct {
		name  string
		want  []string
		cause error
	}{
		{"badcookie", []string{"plugin badcookie refused the handshake: magic cookie mismatch", "This binary is a plugin"}, ErrBadCookie},
		{"badversion", []string{"plugin badversion speaks API versions [99]; this node speaks [1]"}, ErrUnsupportedAPI},
		{"hang", []string{"plugin hang did not complete the handshake within 2s"}, ErrHandshakeTimeout},
	}
	for _, c := range cases {
		s := statusOf(t, m, c.name)
		if s.State != StateFailed || s.PID != 0 {
			t.Errorf("%s: %+v", c.name, s)
		}
		for _, w := range c.want {
			if !strings.Contains(s.LastError, w) {
				t.Errorf("%s: error %q does not say %q", c.name, s.LastError, w)
			}
		}
	}
	// Refused plugins are not restarted in a loop.
	time.Sleep(time.Second)
	for _, c := range cases {
		if s := statusOf(t, m, c.name); s.State != StateFailed || s.Restarts != 0 {
			t.Errorf("%s later: %+v", c.name, s)
		}
	}
	serves := markers(t, marks, "serve")
	slices.Sort(serves)
	var ran []string
	for _, f := range serves {
		ran = append(ran, strings.Split(f, ".")[0])
	}
	// badversion is refused from its describe output, before launch.
	if !slices.Equal(ran, []string{"badcookie", "hang"}) {
		t.Errorf("launched: %v, want badcookie and hang once each", serves)
	}
}

func TestBadVersionAtHandshake(t *testing.T) {
	// A plugin whose describe claims v1 but that only serves v99 is caught
	// by go-plugin's negotiation, with the same message.
	dir := t.TempDir()
	t.Setenv("TPLUG_DESCRIBE_API", "1")
	install(t, dir, "badversion", "badversion")
	m, _ := startManager(t, Config{Dir: dir})
	s := statusOf(t, m, "badversion")
	if s.State != StateFailed || s.LastError != "plugin badversion speaks API versions [99]; this node speaks [1]" {
		t.Errorf("badversion = %+v", s)
	}
}

func TestRefusedPluginRetriedWhenFileChanges(t *testing.T) {
	dir := t.TempDir()
	install(t, dir, "badversion", "plug")
	m, _ := startManager(t, Config{Dir: dir, HealthInterval: 50 * time.Millisecond})
	// Unclaimed (refused) plugins keep their file name; Kind shows what
	// describe said.
	if s := statusOf(t, m, "plug"); s.State != StateFailed || s.Kind != pluginapi.KindVerb {
		t.Fatalf("badversion = %+v", s)
	}
	install(t, dir, "ticker", "plug") // replaced in place (rename)
	s := waitRunning(t, m, "ticker")
	if s.Path != filepath.Join(dir, "plug") || s.Kind != pluginapi.KindTelemetry {
		t.Errorf("after the file changed: %+v", s)
	}
}

func TestCrashRestartsWithBackoff(t *testing.T) {
	dir := t.TempDir()
	install(t, dir, "crashy", "crashy")
	m, _ := startManager(t, Config{Dir: dir, Backoff: Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}})
	var batches atomic.Int64
	m.Subscribe(func(string, *pb.SampleBatch) { batches.Add(1) })
	waitFor(t, 60*time.Second, "three restarts", func() bool { return statusOf(t, m, "crashy").Restarts >= 3 })
	s := statusOf(t, m, "crashy")
	if s.State == StateFailed || !strings.Contains(s.LastError, "exited unexpectedly (exit status 2)") {
		t.Errorf("crashy = %+v", s)
	}
	if batches.Load() < 3 {
		t.Errorf("batches = %d", batches.Load())
	}
}

func TestBackoffSequence(t *testing.T) {
	b := newBackoff(Backoff{Min: 100 * time.Millisecond, Max: time.Second})
	var got []time.Duration
	for range 7 {
		got = append(got, b.next())
	}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if !slices.Equal(got, want) {
		t.Errorf("backoff = %v, want %v", got, want)
	}
	b.reset()
	if d := b.next(); d != 100*time.Millisecond {
		t.Errorf("after reset: %v", d)
	}
	c := Config{}.withDefaults()
	if c.Backoff != (Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second, ResetAfter: time.Minute}) ||
		c.StartTimeout != 10*time.Second || c.HealthInterval != 2*time.Second {
		t.Errorf("defaults = %+v", c)
	}
}

func TestCloseKillsEveryPlugin(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"ticker", "parser", "verber"} {
		install(t, dir, n, n)
	}
	multi := filepath.Join(bins(t), "multi")
	m, _ := startManager(t, Config{Dir: dir, Builtins: []Spec{{Name: "b1", Path: multi, Args: []string{"plugin", "b1"}, Builtin: true}}})
	var pids []int
	for _, s := range m.Status() {
		if s.State != StateRunning || !alive(s.PID) {
			t.Fatalf("%+v", s)
		}
		pids = append(pids, s.PID)
	}
	m.Close()
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("pid %d still alive after Close", pid)
		}
	}
	for _, s := range m.Status() {
		if s.State != StateStopped || s.PID != 0 {
			t.Errorf("after Close: %+v", s)
		}
	}
	if _, _, err := m.Execute(context.Background(), &pb.VerbRequest{Verb: "echo"}); !errors.Is(err, ErrPluginShutdown) {
		t.Errorf("Execute after Close = %v", err)
	}
	m.Close() // idempotent
}

func TestPluginsDieWithTheNode(t *testing.T) {
	dir := t.TempDir()
	install(t, dir, "ticker", "ticker")
	install(t, dir, "verber", "verber")
	bins(t)
	cmd, pids := startTestNode(t, "PLUGINHOST_TEST_DIR="+dir)
	if len(pids) != 2 {
		t.Fatalf("pids %v", pids)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitFor(t, 10*time.Second, "plugins to die with their node", func() bool {
		for _, pid := range pids {
			if alive(pid) {
				return false
			}
		}
		return true
	})
}

func TestHealthCheckKillsHungPlugin(t *testing.T) {
	dir := t.TempDir()
	install(t, dir, "verber", "verber")
	m, _ := startManager(t, Config{Dir: dir, HealthInterval: 100 * time.Millisecond},
		func(m *Manager) { m.pingTimeout = time.Second })
	before := statusOf(t, m, "verber")
	// A stopped process keeps its socket open but answers nothing.
	if err := syscall.Kill(before.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(before.PID, syscall.SIGKILL)
	waitFor(t, 30*time.Second, "restart after a failed health check", func() bool {
		s := statusOf(t, m, "verber")
		return s.State == StateRunning && s.Restarts == 1
	})
	s := statusOf(t, m, "verber")
	if !strings.Contains(s.LastError, "failed its health check: no answer to ping within 1s") || s.PID == before.PID {
		t.Errorf("after the health check: %+v", s)
	}
	if alive(before.PID) {
		t.Errorf("the hung process %d is still alive", before.PID)
	}
	if _, _, err := m.Execute(context.Background(), &pb.VerbRequest{Verb: "echo"}); err != nil {
		t.Errorf("Execute after restart: %v", err)
	}
}

func TestCleanupAll(t *testing.T) {
	dir := t.TempDir()
	install(t, dir, "ticker", "ticker")
	m, _ := startManager(t, Config{Dir: dir})
	pid := statusOf(t, m, "ticker").PID
	CleanupAll()
	if alive(pid) {
		t.Errorf("pid %d alive after CleanupAll", pid)
	}
	if s := statusOf(t, m, "ticker"); s.State != StateStopped {
		t.Errorf("after CleanupAll: %+v", s)
	}
	if len(live.all()) != 0 || len(managers.all()) != 0 {
		t.Errorf("registries not empty: %d instances, %d managers", len(live.all()), len(managers.all()))
	}
}

func TestCrashSummary(t *testing.T) {
	js := `{"@level":"info","@message":"configured","@timestamp":"x"}`
	if got := crashSummary("a\n" + js + "\n"); got != "a\n[INFO] configured" {
		t.Errorf("got %q", got)
	}
	panicked := "x\npanic: boom\n\ngoroutine 1 [running]:\nmain.main()\n\t/x.go:3\n"
	if got := crashSummary(panicked); got != "panic: boom" {
		t.Errorf("got %q", got)
	}
}

// A plugin that forks leaves no orphan: the child forked by `describe` dies
// when describe ends, the child of a served plugin dies when the plugin is
// killed (and restarted), and the child of the restarted one at Close.
func TestForkedChildrenDieWithTheirPlugin(t *testing.T) {
	dir := t.TempDir()
	marks := t.TempDir()
	t.Setenv("TPLUG_MARKER_DIR", marks)
	install(t, dir, "forker", "forker")
	m, _ := startManager(t, Config{Dir: dir})
	first := waitRunning(t, m, "forker")
	desc, kids := children(t, marks, "describe"), children(t, marks, "serve")
	killAtEnd(t, append(desc, kids...)...)
	if len(desc) != 1 || len(kids) != 1 {
		t.Fatalf("children: describe %v, serve %v", desc, kids)
	}
	waitFor(t, 10*time.Second, "describe's child to die with describe", func() bool { return !alive(desc[0]) })
	if !alive(kids[0]) {
		t.Fatalf("the running plugin's child %d is not alive", kids[0])
	}

	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "forker restarted", func() bool {
		s := statusOf(t, m, "forker")
		return s.State == StateRunning && s.Restarts == 1
	})
	waitFor(t, 10*time.Second, "the killed plugin's child to die", func() bool {
		for _, pid := range kids {
			if alive(pid) {
				return false
			}
		}
		return true
	})
	waitFor(t, 30*time.Second, "the restarted plugin's child", func() bool { return len(children(t, marks, "serve")) == 2 })
	var last int
	for _, pid := range children(t, marks, "serve") {
		if !slices.Contains(kids, pid) {
			last = pid
		}
	}
	killAtEnd(t, last)
	if !alive(last) {
		t.Fatalf("the running plugin's child %d is not alive", last)
	}
	m.Close()
	// SIGKILLed with its group; it is gone once the kernel has torn it down.
	waitFor(t, 10*time.Second, "the child to die at Close", func() bool { return !alive(last) })
}

// A node killed outright takes its plugins with it (parent-death signal);
// what they forked is killed by the next Manager started with the same
// Owner, and a Manager with another Owner leaves it alone.
func TestOrphansOfADeadNodeKilledAtStart(t *testing.T) {
	dir := t.TempDir()
	marks := t.TempDir()
	t.Setenv("TPLUG_MARKER_DIR", marks)
	install(t, dir, "forker", "forker")
	bins(t)
	owner := filepath.Join(t.TempDir(), "data")
	cmd, pids := startTestNode(t, "PLUGINHOST_TEST_DIR="+dir, "PLUGINHOST_TEST_OWNER="+owner)
	plugin := pids[0]
	kids := children(t, marks, "serve")
	if len(kids) != 1 || !alive(kids[0]) {
		t.Fatalf("the served plugin's children: %v", kids)
	}
	child := kids[0]
	killAtEnd(t, child)

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitFor(t, 10*time.Second, "the plugin to die with its node", func() bool { return !alive(plugin) })
	if !alive(child) {
		t.Fatalf("the plugin's child %d died with the node: this test would prove nothing", child)
	}

	// Another owner's Manager does not touch it.
	empty := t.TempDir()
	other, _ := startManager(t, Config{Dir: empty, Owner: owner + "-other"})
	other.Close()
	if !alive(child) {
		t.Fatal("a Manager with another Owner killed the orphan")
	}

	_, lb := startManager(t, Config{Dir: empty, Owner: owner})
	waitFor(t, 10*time.Second, "the orphan to be killed", func() bool { return !alive(child) })
	if !lb.has(map[string]string{"msg": "left behind", "pid": strconv.Itoa(child)}) {
		t.Error("no log line names the orphan killed")
	}
}

// startTestNode runs this test binary as a node (PLUGINHOST_TEST_NODE) with
// env added, and returns it with the plugin pids it reports on its first
// line. The process is killed when the test ends.
func startTestNode(t *testing.T, env ...string) (*exec.Cmd, []int) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "PLUGINHOST_TEST_NODE=1"), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "PIDS ") {
		t.Fatalf("node said %q, %v", line, err)
	}
	var pids []int
	for _, f := range strings.Fields(strings.TrimPrefix(line, "PIDS ")) {
		pid, _ := strconv.Atoi(f)
		pids = append(pids, pid)
	}
	if len(pids) == 0 {
		t.Fatalf("node said %q: no plugin pids", line)
	}
	return cmd, pids
}

// TestPluginDirectoryWatched: the plugin directory is created when
// missing and followed while the node runs — a plugin dropped in is
// started, a replaced binary is restarted (a replacement its pin refuses
// is not: the running instance keeps running), a removed one is stopped,
// and files that are not plugins are logged with the reason.
func TestPluginDirectoryWatched(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "plugins")
	sum := func(src string) string {
		s, err := sha256File(filepath.Join(bins(t), src))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	m, lb := startManager(t, Config{Dir: dir, Pins: map[string]string{
		"tick": sum("ticker"), "later": sum("verber"),
	}})
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("plugin directory not created: %v", err)
	}
	if len(m.Status()) != 0 {
		t.Fatalf("plugins in an empty directory: %+v", m.Status())
	}

	if err := os.WriteFile(filepath.Join(dir, "README.txt"), []byte("not a plugin"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the non-executable file logged", func() bool {
		return lb.has(map[string]string{"msg": "skipping a file in the plugin directory", "path": filepath.Join(dir, "README.txt"),
			"reason": "not executable (mode -rw-r--r--); chmod +x it to run it as a plugin"})
	})

	// Added while the node runs: described and started.
	install(t, dir, "ticker", "tick")
	first := waitRunning(t, m, "ticker")
	if first.Path != filepath.Join(dir, "tick") || first.SHA256 != sum("ticker") {
		t.Fatalf("added plugin: %+v", first)
	}

	// Replaced by a binary its pin refuses: the running instance stays.
	install(t, dir, "parser", "tick")
	waitFor(t, 30*time.Second, "the refused replacement logged", func() bool {
		return lb.has(map[string]string{"msg": "the plugin's executable was replaced by one that is refused; the running instance keeps running"})
	})
	if s := statusOf(t, m, "ticker"); s.State != StateRunning || s.PID != first.PID || !strings.Contains(s.LastError, "sha256 mismatch") {
		t.Fatalf("after a refused replacement: %+v", s)
	}

	// Replaced by the pinned binary again, but a new file: restarted.
	install(t, dir, "ticker", "tick")
	waitFor(t, 30*time.Second, "ticker restarted on its replaced binary", func() bool {
		s := statusOf(t, m, "ticker")
		return s.State == StateRunning && s.PID != first.PID && s.PID != 0
	})
	if alive(first.PID) {
		t.Errorf("the replaced plugin's old process %d still runs", first.PID)
	}
	if s := statusOf(t, m, "ticker"); s.Restarts < 1 {
		t.Errorf("restart not counted: %+v", s)
	}

	// A second plugin, then the first removed: stopped and forgotten,
	// the other untouched.
	install(t, dir, "verber", "later")
	v := waitRunning(t, m, "verber")
	second := statusOf(t, m, "ticker")
	if err := os.Remove(filepath.Join(dir, "tick")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the removed plugin gone", func() bool {
		for _, s := range m.Status() {
			if s.Name == "ticker" {
				return false
			}
		}
		return true
	})
	waitFor(t, 10*time.Second, "the removed plugin's process gone", func() bool { return !alive(second.PID) })
	if s := statusOf(t, m, "verber"); s.State != StateRunning || s.PID != v.PID {
		t.Errorf("the other plugin after a removal: %+v (was pid %d)", s, v.PID)
	}
	if _, name, err := m.Execute(context.Background(), &pb.VerbRequest{Verb: "poke", Cell: "c1"}); name != "verber" {
		t.Errorf("the plugin added later is not routed to: %q, %v", name, err)
	}
}
