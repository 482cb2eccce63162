package webui

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/celluster/celluster/core/admin"
	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/journal"
	"github.com/celluster/celluster/core/reflex"
	"github.com/celluster/celluster/core/signals"
)

// fakeNode is a node of one cell, "hello", with one rule; entries are
// appended to its journal with add.
type fakeNode struct {
	mu      sync.Mutex
	entries []journal.Entry
	reads   int // Journal calls
}

var _ Node = (*fakeNode)(nil)

const cellsDir = "/srv/secret/cells"

func (f *fakeNode) Status() admin.Status {
	return admin.Status{Version: "test", HTTPAddr: "127.0.0.1:1", CellsDir: cellsDir, DataDir: "/srv/secret/data",
		BPF: admin.BPFStatus{Available: true, Programs: []admin.BPFProgram{{Object: "kernel/tcp", Name: "cel_retransmit", Type: "tracing", Attach: "tcp_retransmit_skb", ID: 7}}}}
}

func (f *fakeNode) Cells() []cell.Info {
	return []cell.Info{{Name: "hello", SHA256: strings.Repeat("ab", 32), ABI: "reactor", State: cell.StateServing, Replicas: 2,
		Error: "cache: cannot write " + cellsDir + "/hello.wasm.tmp", Policy: cell.Policy{Min: 1, Max: 4, Warm: 1},
		Versions: []cell.VersionInfo{{SHA256: strings.Repeat("ab", 32), Weight: 100, Replicas: 2}},
		Snapshot: cell.SnapshotInfo{Init: 4096, Kept: true, ID: "c0ffee", State: 31 << 10, How: "fork", Taken: time.Now()}}}
}

func (f *fakeNode) Plugins() []admin.PluginStatus {
	return []admin.PluginStatus{{Name: "verbs", Kind: "verb", State: "running", PID: 42, Restarts: 1, LastError: "exited: see " + cellsDir}}
}

func (f *fakeNode) Signals() []signals.Reading {
	now := time.Now()
	l := map[string]string{"cell": "hello"}
	return []signals.Reading{
		{Name: "rps", Labels: l, Value: 12.5, Time: now},
		{Name: "latency.p99", Labels: l, Value: 0.02, Time: now},
		{Name: "latency.p50", Labels: l, Value: math.NaN(), Time: now},
		{Name: "replicas", Labels: l, Value: 2, Time: now},
		{Name: "rps", Labels: map[string]string{"cell": "hello", "version": "abababababab"}, Value: 99, Time: now},
		{Name: "host.cpu", Value: 3, Time: now},
	}
}

func (f *fakeNode) Journal(cellName string, limit int) []journal.Entry {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	var out []journal.Entry
	for _, e := range f.entries {
		if cellName == "" || e.Cell == cellName {
			out = append(out, e)
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}

func (f *fakeNode) Intent(name string) (admin.Intent, bool) {
	if name != "hello" {
		return admin.Intent{}, false
	}
	return admin.Intent{Cell: name, Origin: "file", Source: cellsDir + "/hello.intent", Text: "cell hello\n# <b>not bold</b>\nwhen queue > 2 for 1s then clone\n",
		Rules: []reflex.RuleStatus{
			{Rule: reflex.Rule{Name: "line 3", Signal: "queue", Op: reflex.GT, Threshold: 2, Window: time.Second, Verb: "clone"}, Holding: true, Since: time.Now(), LastValue: 5, LastSeen: time.Now()},
			{Rule: reflex.Rule{Name: "never-read", Signal: "cpu", Op: reflex.GT, Threshold: 80, Verb: "clone"}, LastValue: math.NaN()},
		}}, true
}

func (f *fakeNode) Nodes() (string, string, []admin.NodeInfo) { return "", "", nil }

func (f *fakeNode) add(e journal.Entry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e.Seq = uint64(len(f.entries) + 1)
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	f.entries = append(f.entries, e)
}

func (f *fakeNode) journalReads() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

// seqNode is fakeNode with JournalSeq.
type seqNode struct{ *fakeNode }

func (s seqNode) JournalSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return uint64(len(s.entries))
}

var quiet = slog.New(slog.DiscardHandler)

// serve runs a view of node on 127.0.0.1 and returns its base URL.
func serve(t *testing.T, node Node, cfg Config) string {
	t.Helper()
	if cfg.Interval == 0 {
		cfg.Interval = 50 * time.Millisecond
	}
	if cfg.JournalPoll == 0 {
		cfg.JournalPoll = 20 * time.Millisecond
	}
	cfg.Logger = quiet
	cfg.Name = "test-node"
	l, err := Listen("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(node, cfg).Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(3 * time.Second):
			t.Errorf("Serve did not return within 3s of its context ending (open streams?)")
		}
	})
	return "http://" + l.Addr().String()
}

type sse struct{ name, data string }

// stream opens /events and returns its events as they come.
func stream(t *testing.T, base string) <-chan sse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		t.Fatalf("/events: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	ch := make(chan sse, 1024)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sse
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					ch <- ev
				}
				ev = sse{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data += strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
	})
	return ch
}

// next returns the next event named name, failing after 3s.
func next(t *testing.T, ch <-chan sse, name string) sse {
	t.Helper()
	deadline := time.After(3 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("stream ended waiting for %s", name)
			}
			if ev.name == name {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s event within 3s", name)
		}
	}
}

func TestStreamSnapshotAndJournal(t *testing.T) {
	for _, tc := range []struct {
		name string
		node func(*fakeNode) Node
	}{
		{"polled", func(f *fakeNode) Node { return f }},
		{"with JournalSeq", func(f *fakeNode) Node { return seqNode{f} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeNode{}
			f.add(journal.Entry{Cell: "hello", Verb: "spawn", Rule: "intent", Outcome: journal.Noop})
			base := serve(t, tc.node(f), Config{})
			ch := stream(t, base)

			var h hello
			if err := json.Unmarshal([]byte(next(t, ch, "hello").data), &h); err != nil || h.Name != "test-node" || h.IntervalMs != 50 || h.History != DefaultHistory {
				t.Fatalf("hello = %+v, %v", h, err)
			}
			var snap snapshot
			if err := json.Unmarshal([]byte(next(t, ch, "snapshot").data), &snap); err != nil {
				t.Fatal(err)
			}
			if len(snap.Cells) != 1 || snap.Cells[0].Name != "hello" || snap.Cells[0].Replicas != 2 || snap.Cells[0].Intent == nil ||
				len(snap.Cells[0].Intent.Rules) != 2 || !snap.Cells[0].Intent.Rules[0].Holding || snap.Cells[0].Intent.Rules[0].Text != "when queue > 2 for 1s then clone" {
				t.Fatalf("snapshot cells = %+v", snap.Cells)
			}
			if len(snap.Plugins) != 1 || snap.Plugins[0].Restarts != 1 || len(snap.Kernel.Programs) != 1 || snap.Kernel.Programs[0].Name != "cel_retransmit" {
				t.Fatalf("snapshot plugins %+v, kernel %+v", snap.Plugins, snap.Kernel)
			}
			var backlog []entryView
			if err := json.Unmarshal([]byte(next(t, ch, "journal").data), &backlog); err != nil || len(backlog) != 1 || backlog[0].Seq != 1 {
				t.Fatalf("journal backlog = %+v, %v", backlog, err)
			}

			// A new entry arrives as it is written, once.
			f.add(journal.Entry{Cell: "hello", Verb: "clone", Args: []string{"1"}, Rule: "line 3", Outcome: journal.Done, Duration: 3 * time.Millisecond,
				Message: "spawned 1 replica, 3 live", Values: []journal.Value{{Signal: "queue", Labels: map[string]string{"cell": "hello"}, Value: 5}}})
			var got []entryView
			if err := json.Unmarshal([]byte(next(t, ch, "journal").data), &got); err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Seq != 2 || got[0].Verb != "clone" || got[0].Rule != "line 3" || got[0].DurationMs != 3 ||
				len(got[0].Values) != 1 || got[0].Values[0].Value != 5 {
				t.Fatalf("journal event = %+v, want entry 2 alone", got)
			}
			// Snapshots keep coming, with the plot points taken since the last.
			points := 0
			for range 4 {
				var s snapshot
				if err := json.Unmarshal([]byte(next(t, ch, "snapshot").data), &s); err != nil {
					t.Fatal(err)
				}
				for _, p := range s.Points["hello"] {
					points++
					if p[1] != 2 || p[2] != 12.5 || p[4] != 0.02 || p[3] != 0 {
						t.Fatalf("point %v, want replicas 2, rps 12.5, p50 0 (NaN), p99 0.02", p)
					}
				}
			}
			if points == 0 {
				t.Error("no plot points in four snapshots")
			}
			select {
			case ev := <-ch:
				if ev.name == "journal" {
					t.Fatalf("a journal event with nothing new: %s", ev.data)
				}
			case <-time.After(100 * time.Millisecond):
			}
		})
	}
}

// TestJournalReadOnlyWhenGrown: the journal is not read while nobody
// watches; with JournalSeq, it is read when a viewer joins and when it has
// grown, not at every poll.
func TestJournalReadOnlyWhenGrown(t *testing.T) {
	idle := &fakeNode{}
	serve(t, idle, Config{JournalPoll: 5 * time.Millisecond})
	time.Sleep(100 * time.Millisecond)
	if n := idle.journalReads(); n != 0 {
		t.Fatalf("%d journal reads with nobody watching, want 0", n)
	}

	f := &fakeNode{}
	base := serve(t, seqNode{f}, Config{JournalPoll: 5 * time.Millisecond})
	ch := stream(t, base)
	next(t, ch, "snapshot")
	time.Sleep(200 * time.Millisecond) // 40 polls
	if n := f.journalReads(); n != 1 {
		t.Fatalf("%d journal reads with nothing written, want 1 (the backlog)", n)
	}
	f.add(journal.Entry{Cell: "hello", Verb: "clone", Outcome: journal.Done})
	next(t, ch, "journal")
	if n := f.journalReads(); n != 2 {
		t.Fatalf("%d journal reads after one entry, want 2", n)
	}
}

func TestHeaders(t *testing.T) {
	base := serve(t, &fakeNode{}, Config{})
	for _, tc := range []struct {
		path, method string
		status       int
		ctype        string
	}{
		{"/", "GET", 200, "text/html; charset=utf-8"},
		{"/app.js", "GET", 200, "text/javascript; charset=utf-8"},
		{"/style.css", "GET", 200, "text/css; charset=utf-8"},
		{"/events", "GET", 200, "text/event-stream"},
		{"/nope", "GET", 404, "text/plain; charset=utf-8"},
		{"/assets/app.js", "GET", 404, "text/plain; charset=utf-8"},
		{"/", "POST", 405, "text/plain; charset=utf-8"},
		{"/events", "DELETE", 405, "text/plain; charset=utf-8"},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, tc.method, base+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		h := resp.Header
		if resp.StatusCode != tc.status || h.Get("Content-Type") != tc.ctype {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, resp.StatusCode, h.Get("Content-Type"), tc.status, tc.ctype)
		}
		if got := h.Get("Content-Security-Policy"); got != CSP {
			t.Errorf("%s %s: Content-Security-Policy %q", tc.method, tc.path, got)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s %s: headers %v", tc.method, tc.path, h)
		}
		if resp.StatusCode >= 400 {
			body, _ := io.ReadAll(resp.Body)
			if len(body) > 40 || strings.Contains(string(body), "/") {
				t.Errorf("%s %s: error body %q: want a short generic text", tc.method, tc.path, body)
			}
		}
		cancel()
		resp.Body.Close()
	}
}

// TestLoopbackOnlyAnswersLoopbackHosts: a page elsewhere whose name
// resolves to 127.0.0.1 (DNS rebinding) is refused.
func TestLoopbackOnlyAnswersLoopbackHosts(t *testing.T) {
	base := serve(t, &fakeNode{}, Config{})
	port := base[strings.LastIndex(base, ":")+1:]
	for host, want := range map[string]int{
		"127.0.0.1:" + port:        200,
		"localhost:" + port:        200,
		"ui.localhost:" + port:     200,
		"[::1]:" + port:            200,
		"evil.example:" + port:     http.StatusMisdirectedRequest,
		"10.0.0.1:" + port:         http.StatusMisdirectedRequest,
		"127.0.0.1.nip.io:" + port: http.StatusMisdirectedRequest,
	} {
		req, _ := http.NewRequest(http.MethodGet, base+"/", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: %d, want %d", host, resp.StatusCode, want)
		}
	}
}

func TestCheckAddr(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:8090": true, "127.0.0.1:0": true, "localhost:8090": true, "[::1]:8090": true, "127.1.2.3:80": true,
		":8090": false, "0.0.0.0:8090": false, "[::]:8090": false, "10.0.0.1:8090": false, "example.com:80": false, "nonsense": false,
	} {
		err := CheckAddr(addr, false)
		if (err == nil) != ok {
			t.Errorf("CheckAddr(%q, false) = %v, want ok %v", addr, err, ok)
		}
		if err != nil && addr != "nonsense" && !strings.Contains(err.Error(), "--ui-public") {
			t.Errorf("CheckAddr(%q): %v: should say how to allow it", addr, err)
		}
		if addr != "nonsense" {
			if err := CheckAddr(addr, true); err != nil {
				t.Errorf("CheckAddr(%q, true) = %v", addr, err)
			}
		}
	}
}

func TestMaxViewers(t *testing.T) {
	base := serve(t, &fakeNode{}, Config{MaxViewers: 1})
	next(t, stream(t, base), "hello")
	resp, err := http.Get(base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a second viewer over MaxViewers 1: %s, want 503", resp.Status)
	}
}

// TestSlowViewerDropped: a viewer whose queue is full is disconnected, not
// waited for.
func TestSlowViewerDropped(t *testing.T) {
	s := New(&fakeNode{}, Config{Logger: quiet})
	v := s.join()
	for range viewerQueue + 1 {
		s.broadcast(event{name: "snapshot", data: []byte("{}")})
	}
	select {
	case <-v.gone:
	default:
		t.Fatal("a viewer with a full queue was not dropped")
	}
	if s.watched() {
		t.Fatal("the dropped viewer still counts")
	}
}

// TestShown: what is shown has no host paths and no NaN (which JSON cannot
// carry).
func TestShown(t *testing.T) {
	s := New(&fakeNode{}, Config{Logger: quiet})
	b, err := json.Marshal(s.build(time.Now(), s.node.Cells()))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if strings.Contains(text, "/srv/secret") {
		t.Errorf("snapshot shows a host path: %s", text)
	}
	var snap snapshot
	if err := json.Unmarshal(b, &snap); err != nil {
		t.Fatal(err)
	}
	if c := snap.Cells[0]; c.Error != "cache: cannot write <cells>/hello.wasm.tmp" || c.Intent.Source != "hello.intent" {
		t.Errorf("error %q, intent source %q: want the cells directory cut out", c.Error, c.Intent.Source)
	}
	if !strings.Contains(text, `"last_value":null`) {
		t.Errorf("a rule that read nothing should show no value: %s", text)
	}
}

// TestAssetsBuildTheDOMSafely: the page has no inline script, style or
// event handler (the CSP would refuse them), and the script never parses
// data as HTML.
func TestAssetsBuildTheDOMSafely(t *testing.T) {
	html := string(files["/"].body)
	for _, m := range regexp.MustCompile(`(?is)<script\b[^>]*>(.*?)</script>`).FindAllStringSubmatch(html, -1) {
		if strings.TrimSpace(m[1]) != "" || !strings.Contains(m[0], `src="app.js"`) {
			t.Errorf("inline script in index.html: %s", m[0])
		}
	}
	for _, bad := range []*regexp.Regexp{regexp.MustCompile(`(?i)\son[a-z]+\s*=`), regexp.MustCompile(`(?i)\sstyle\s*=`), regexp.MustCompile(`(?i)<style`), regexp.MustCompile(`(?i)(src|href)="(https?:)?//`)} {
		if m := bad.FindString(html); m != "" {
			t.Errorf("index.html has %q", m)
		}
	}
	js := strings.ReplaceAll(string(files["/app.js"].body), "'http://www.w3.org/2000/svg'", "SVGNS")
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setTimeout('", "http://", "https://"} {
		if strings.Contains(js, bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
	if m := regexp.MustCompile(`setAttribute\(\s*['"]on`).FindString(js); m != "" {
		t.Errorf("app.js sets an event handler attribute: %s", m)
	}
}

func TestServeStopsWithOpenStreams(t *testing.T) {
	l, err := Listen("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(&fakeNode{}, Config{Logger: quiet}).Serve(ctx, l) }()
	ch := stream(t, "http://"+l.Addr().String())
	next(t, ch, "hello")
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve still running 3s after its context ended")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Serve took %v to stop with a stream open", d)
	}
	if _, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil || errors.Is(err, context.Canceled) {
		t.Error("still accepting after Serve returned")
	}
}
