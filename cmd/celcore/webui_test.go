package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/celluster/celluster/core/testbuild"
)

// browser is a headless Chromium tab, and what went wrong in it: uncaught
// exceptions, console errors and the browser's own error log (a refused
// Content-Security-Policy is reported there).
type browser struct {
	ctx context.Context

	mu       sync.Mutex
	problems []string
}

// newBrowser starts headless Chromium (Debian's chromium package) for the
// test. Without it the test skips, except under CI=true, where it fails.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chromium (Debian package chromium; make deps installs it) is required in CI: %v", err)
		}
		t.Skip("chromium not installed: apt-get install chromium (make deps installs it)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("headless", "new"),
		chromedp.NoSandbox, // the tests run as root
		chromedp.Flag("disable-gpu", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	b := &browser{ctx: ctx}
	if err := chromedp.Listen(ctx, b.observe); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return b
}

func (b *browser) observe(ev any) {
	var p string
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		p = fmt.Sprintf("exception: %s (line %d)", d.Text, d.LineNumber)
		if d.Exception != nil && d.Exception.Description != "" {
			p += ": " + d.Exception.Description
		}
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError && ev.Type != runtime.ConsoleAPICalledTypeWarning {
			return
		}
		var args []string
		for _, a := range ev.Args {
			args = append(args, string(a.Value)+a.Description)
		}
		p = fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " "))
	case *cdplog.EventEntryAdded:
		if ev.Entry.Level != cdplog.EntryLevelError && ev.Entry.Level != cdplog.EntryLevelWarning {
			return
		}
		p = fmt.Sprintf("log %s %s: %s %s", ev.Entry.Level, ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
	default:
		return
	}
	b.mu.Lock()
	b.problems = append(b.problems, p)
	b.mu.Unlock()
}

// checkClean fails the test on anything that went wrong in the page.
func (b *browser) checkClean(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		t.Errorf("in the page: %s", p)
	}
}

// open navigates to url and waits until sel is visible.
func (b *browser) open(t *testing.T, url, sel string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(sel))); err != nil {
		t.Fatalf("opening %s and waiting for %s: %v", url, sel, err)
	}
}

// eval runs a JavaScript expression in the page and decodes its value.
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// uiAddr returns the web view's address from the node's "celcore ready"
// log line.
func (n *proc) uiAddr() string {
	n.t.Helper()
	for line := range strings.SplitSeq(n.Logs(), "\n") {
		var rec struct {
			Msg string `json:"msg"`
			UI  string `json:"ui"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "celcore ready" {
			if rec.UI == "" {
				n.t.Fatal("no ui address in the ready log line")
			}
			return rec.UI
		}
	}
	n.t.Fatal("no ready log line")
	return ""
}

// domDecision is a decision row of the page, read from the DOM.
type domDecision struct {
	Seq     string `json:"seq"`
	Cell    string `json:"cell"`
	Rule    string `json:"rule"`
	Verb    string `json:"verb"`
	Outcome string `json:"outcome"`
	Message string `json:"message"`
	Values  string `json:"values"`
}

const readDecisions = `Array.from(document.querySelectorAll('#decision-body tr.decision')).map(tr => ({
	seq: tr.dataset.seq,
	cell: tr.querySelector('td.cell').textContent,
	rule: tr.querySelector('td.rule').textContent,
	verb: tr.querySelector('td.verb').textContent,
	outcome: tr.querySelector('td.outcome').textContent,
	message: tr.querySelector('td.msg').textContent,
	values: tr.querySelector('td.values').textContent,
}))`

// TestWebViewShowsReflexes: with --ui, a browser on the web view sees a
// clone fired under queueing — the decision with its rule and the new
// replica count — within a few seconds of the journal having it, from the
// event stream alone.
func TestWebViewShowsReflexes(t *testing.T) {
	b := newBrowser(t)
	n := startNode(t, "", "--ui", "127.0.0.1:0", "--telemetry-interval", "200ms")
	ui := "http://" + n.uiAddr() + "/"
	n.writeIntent("slow", "cell slow\nkeep replicas 1..3\nwhen queue > 2 for 400ms then clone 1 cooldown 1s\n")
	n.drop("slow", testbuild.Cell(t, "slow"))
	n.waitStatus("/slow?ms=1", 200)
	eventually(t, "the slow intent to be applied", func() bool {
		in, ok := n.intent("slow")
		return ok && in.Replicas.Max == 3 && len(in.Rules) > 0
	})

	b.open(t, ui, `article.cell[data-cell="slow"] .rules tr.rule`)
	if r := eval[string](t, b, `document.querySelector('article.cell[data-cell="slow"] .replicas').textContent`); r != "1" {
		t.Fatalf("replicas shown before any load = %q, want 1", r)
	}

	// Six clients, 30ms each, on one replica: about five requests queue.
	l := startLoad(n, "/slow?ms=30", 6)
	defer l.end()
	var clone *journalEntry
	eventually(t, "a clone fired by the queue rule", func() bool {
		clone = find(n.journal("slow"), func(e journalEntry) bool { return e.Verb == "clone" && e.Outcome == "done" && !e.Manual })
		return clone != nil
	})
	journaled := time.Now()
	if !slices.ContainsFunc(clone.Values, func(v struct {
		Signal string            `json:"signal"`
		Labels map[string]string `json:"labels"`
		Value  float64           `json:"value"`
	}) bool {
		return v.Signal == "queue" && v.Value > 2
	}) {
		t.Fatalf("clone entry = %+v, want one fired by queue > 2", clone)
	}

	// The page shows the decision with its rule, and the replica count the
	// node reports, within a few seconds.
	const within = 5 * time.Second
	var (
		shown    bool
		replicas string
		want     int
		rows     []domDecision
	)
	for deadline := journaled.Add(within); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		rows = eval[[]domDecision](t, b, readDecisions)
		shown = slices.ContainsFunc(rows, func(d domDecision) bool {
			return d.Seq == fmt.Sprint(clone.Seq) && d.Cell == "slow" && strings.HasPrefix(d.Rule, clone.Rule) &&
				strings.HasPrefix(d.Verb, "clone") && d.Outcome == "done" && strings.Contains(d.Values, "queue")
		})
		replicas = eval[string](t, b, `document.querySelector('article.cell[data-cell="slow"] .replicas').textContent`)
		want = n.listCells()["slow"].Replicas
		if shown && replicas == fmt.Sprint(want) && want >= 2 {
			break
		}
	}
	if !shown {
		t.Fatalf("%v after the journal had clone #%d (rule %s), the page shows no such decision; rows: %+v", within, clone.Seq, clone.Rule, rows)
	}
	if replicas != fmt.Sprint(want) || want < 2 {
		t.Fatalf("%v after the clone the page shows %s replicas, the node %d (want at least 2)", within, replicas, want)
	}
	t.Logf("the page showed clone #%d (rule %s) and %s replicas %v after the journal had it", clone.Seq, clone.Rule, replicas, time.Since(journaled).Round(time.Millisecond))

	// The rule's live state: it fired, and the plots have points.
	lastFired := eval[string](t, b, fmt.Sprintf(`(() => { const r = Array.from(document.querySelectorAll('article.cell[data-cell="slow"] tr.rule')).find(r => r.dataset.rule === %q); return r ? r.children[4].textContent : 'no row'; })()`, clone.Rule))
	if !strings.Contains(lastFired, "ago") {
		t.Errorf("rule %s's last fired shows %q, want a time", clone.Rule, lastFired)
	}
	if lines := eval[int](t, b, `document.querySelectorAll('article.cell[data-cell="slow"] .plot polyline').length`); lines < 4 {
		t.Errorf("%d plot lines for slow, want at least 4", lines)
	}
	b.checkClean(t)
}

// TestWebViewEscapes: markup in an intent's comments and in a journal
// entry (a verb's arguments and the message quoting them) is shown as
// text and never runs.
func TestWebViewEscapes(t *testing.T) {
	b := newBrowser(t)
	n := startNode(t, "", "--ui", "127.0.0.1:0")
	const (
		script = `<script>window.__pwned=1</script>`
		img    = `<img src=x onerror="window.__pwned=1">`
	)
	n.writeIntent("hello", "cell hello\n# "+script+"\n# "+img+"\nkeep replicas 1..3\n")
	n.drop("hello", testbuild.Cell(t, "hello"))
	n.waitStatus("/hello", 200)
	eventually(t, "the hello intent to be applied", func() bool {
		in, ok := n.intent("hello")
		return ok && in.Replicas.Max == 3 && strings.Contains(in.Text, script)
	})
	if out, err := n.celctl("verb", "reroute", "hello", img, script); err == nil {
		t.Fatalf("reroute with markup for arguments succeeded:\n%s", out)
	}
	e := find(n.journal("hello"), func(e journalEntry) bool { return e.Verb == "reroute" })
	if e == nil || !slices.Contains(e.Args, img) || !strings.Contains(e.Message, "<img src=x onerror=") {
		t.Fatalf("reroute entry = %+v, want the markup in its arguments and message", e)
	}

	b.open(t, "http://"+n.uiAddr()+"/", `#decision-body tr.decision[data-cell="hello"] td.verb`)
	var row domDecision
	eventually(t, "the reroute decision on the page", func() bool {
		for _, d := range eval[[]domDecision](t, b, readDecisions) {
			if strings.HasPrefix(d.Verb, "reroute") {
				row = d
				return true
			}
		}
		return false
	})
	if row.Verb != "reroute "+img+" "+script || !strings.Contains(row.Message, "<img src=x onerror=") {
		t.Errorf("decision shown as verb %q, message %q: want the markup as text", row.Verb, row.Message)
	}
	intent := eval[string](t, b, `document.querySelector('article.cell[data-cell="hello"] pre.intent-text').textContent`)
	if !strings.Contains(intent, script) || !strings.Contains(intent, img) {
		t.Errorf("intent shown as %q: want its comments' markup as text", intent)
	}
	// Let the page take a few snapshots, then check nothing ran.
	time.Sleep(1500 * time.Millisecond)
	if got := eval[string](t, b, `typeof window.__pwned`); got != "undefined" {
		t.Errorf("window.__pwned is %s: markup from the node ran in the page", got)
	}
	if got := eval[int](t, b, `document.querySelectorAll('img').length + document.querySelectorAll('script').length`); got != 1 {
		t.Errorf("the page has %d img and script elements, want only its own script", got)
	}
	b.checkClean(t)
}

// TestWebViewRefusesPublicAddress: --ui on an address other hosts can
// reach is refused, before anything starts, unless --ui-public.
func TestWebViewRefusesPublicAddress(t *testing.T) {
	bin := testbuild.Binary(t, "./cmd/celcore", raceBinaries)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--cells", dir+"/cells", "--data", dir+"/data", "--http", "127.0.0.1:0", "--ui", "0.0.0.0:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not a loopback address") || !strings.Contains(string(out), "--ui-public") {
		t.Fatalf("--ui 0.0.0.0:0: %v\n%s", err, out)
	}
	if _, err := os.Stat(dir + "/data"); err == nil {
		t.Error("the data directory was created before the address was refused")
	}
}
