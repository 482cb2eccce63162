//go:build soak

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/celluster/celluster/core/testbuild"
)

// TestSoak runs one node for SOAK_TIME (default 10m; `make soak`) under
// mixed load through hello, counter, echo, slow and front, while hello is
// upgraded every minute (every other upgrade losing its verbs plugin
// half-way), slow's intent is edited every 20 s and one of the
// node's plugin processes is killed every 45 s. It fails on any failed
// request, an upgrade that does not converge to the file on disk, an
// intent edit not applied, a plugin not restarted, a leak (a significant
// upward trend of the node's RSS, open descriptors or goroutines) or a
// plugin process left running after the node stopped, and prints a report.
func TestSoak(t *testing.T) {
	dur := 10 * time.Minute
	if v := os.Getenv("SOAK_TIME"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Minute {
			t.Fatalf("SOAK_TIME=%q: want a duration of at least 1m, such as 10m", v)
		}
		dur = d
	}
	clients := 4
	if v := os.Getenv("SOAK_CLIENTS"); v != "" {
		c, err := strconv.Atoi(v)
		if err != nil || c < 1 {
			t.Fatalf("SOAK_CLIENTS=%q: want a whole number above 0", v)
		}
		clients = c
	}

	helloA := testbuild.Cell(t, "hello", "-X main.version=soak-a")
	helloB := testbuild.Cell(t, "hello", "-X main.version=soak-b")
	n := startNode(t, "", "--metrics", "127.0.0.1:0", "--log-level", "info")
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", "cells", p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	n.writeIntent("hello", read("hello/hello.intent"))
	n.writeIntent("front", read("front/front.intent"))
	slowIntent := read("slow/slow.intent")
	n.writeIntent("slow", slowIntent)
	n.drop("hello", helloA)
	for _, c := range []string{"counter", "echo", "slow", "front"} {
		n.drop(c, testbuild.Cell(t, c))
	}
	for _, p := range []string{"/hello", "/counter", "/echo", "/slow?ms=1", "/front"} {
		n.waitStatus(p, 200)
	}
	n.mu.Lock()
	metricsAddr := n.metrics
	n.mu.Unlock()
	pid := n.cmd.Process.Pid
	eventually(t, "the node's plugins to run", func() bool { return len(pluginProcs(pid)) >= 3 })

	r := &soakReport{start: time.Now(), dur: dur, clients: clients, plugins: map[int]string{}}
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var wg sync.WaitGroup
	run := func(fn func()) {
		wg.Add(1)
		go func() { defer wg.Done(); fn() }()
	}

	// Load: every client cycles through the cells.
	tr := &http.Transport{MaxIdleConnsPerHost: clients * 2}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	for c := range clients {
		run(func() {
			for i := c; ctx.Err() == nil; i++ {
				r.request(hc, n.base, soakRequests[i%len(soakRequests)])
			}
		})
	}

	// Upgrades: hello alternates between two builds every minute; each
	// must end with the node serving the build on disk.
	run(func() {
		builds := []struct {
			mod     []byte
			version string
		}{{helloB, "soak-b"}, {helloA, "soak-a"}}
		for i := 0; sleepCtx(ctx, time.Minute); i++ {
			b := builds[i%2]
			n.drop("hello", b.mod)
			t0 := time.Now()
			interrupted := ""
			if i%2 == 1 {
				// Every other upgrade loses its verbs plugin half-way: once
				// the new build takes part of the traffic.
				if waitCtx(ctx, 30*time.Second, func() bool {
					vs, err := versionsOf(n, "hello")
					return err == nil && len(vs) > 1 && slices.ContainsFunc(vs, func(v versionJSON) bool { return v.Weight > 0 && v.Weight < 100 })
				}) {
					for p, name := range pluginProcs(pid) {
						if name == "verbs" && syscall.Kill(p, syscall.SIGKILL) == nil {
							interrupted = fmt.Sprintf(", its verbs plugin (pid %d) killed mid-upgrade", p)
						}
					}
				}
				if interrupted == "" && ctx.Err() == nil {
					r.fail("upgrade to %s: could not catch it half-way to kill its verbs plugin", b.version)
				}
			}
			ok := waitCtx(ctx, 60*time.Second, func() bool {
				resp, err := n.do("GET", "/hello", "")
				return err == nil && resp.status == 200 && resp.header.Get("X-Cell-Version") == b.version
			})
			switch {
			case ok:
				r.note(&r.upgrades, "upgrade to %s served after %s%s", b.version, time.Since(t0).Round(time.Millisecond), interrupted)
			case ctx.Err() == nil:
				r.fail("upgrade to %s%s: still not served 60s after the file was replaced", b.version, interrupted)
			}
		}
	})

	// Intent edits: slow's latency objective alternates; each edit must be
	// applied (shown by celctl intent) within 30 s.
	run(func() {
		for i := 0; sleepCtx(ctx, 20*time.Second); i++ {
			ms := []string{"200ms", "100ms"}[i%2]
			text := strings.Replace(slowIntent, "keep p99 latency under 100ms", "keep p99 latency under "+ms, 1)
			n.writeIntent("slow", text)
			want := "latency.p99 > " + map[string]string{"200ms": "0.2", "100ms": "0.1"}[ms] + " "
			ok := waitCtx(ctx, 30*time.Second, func() bool {
				out, err := n.celctl("intent", "slow", "-o", "json")
				var in intentJSON
				if err != nil || json.Unmarshal([]byte(out), &in) != nil {
					return false
				}
				for _, rule := range in.Rules {
					if rule.Name == "p99-clone" && strings.Contains(rule.Rule, want) {
						return true
					}
				}
				return false
			})
			switch {
			case ok:
				r.note(&r.intents, "slow's p99 objective set to %s", ms)
			case ctx.Err() == nil:
				r.fail("intent edit of slow to %s: not applied within 30s", ms)
			}
		}
	})

	// Plugin kills: one plugin process in turn, with SIGKILL; the node
	// must start it again.
	run(func() {
		for i := 0; sleepCtx(ctx, 45*time.Second); i++ {
			procs := pluginProcs(pid)
			names := make([]string, 0, len(procs))
			for _, name := range procs {
				names = append(names, name)
			}
			slices.Sort(names)
			names = slices.Compact(names)
			if len(names) == 0 {
				r.fail("plugin kill %d: the node runs no plugin process", i+1)
				continue
			}
			name := names[i%len(names)]
			var victim int
			for p, nm := range procs {
				if nm == name {
					victim = p
				}
			}
			r.sawPlugins(procs)
			if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
				r.fail("killing plugin %s (pid %d): %v", name, victim, err)
				continue
			}
			ok := waitCtx(ctx, 60*time.Second, func() bool {
				for p, nm := range pluginProcs(pid) {
					if nm == name && p != victim {
						return true
					}
				}
				return false
			})
			switch {
			case ok:
				r.note(&r.kills, "plugin %s (pid %d) killed and restarted", name, victim)
			case ctx.Err() == nil:
				r.fail("plugin %s (pid %d) killed: not running again within 60s", name, victim)
			}
		}
	})

	// Samples of the node's process every 5 s.
	run(func() {
		for {
			s, err := scrape(metricsAddr)
			if err != nil {
				if ctx.Err() == nil {
					r.fail("reading the node's metrics: %v", err)
				}
			} else {
				s.at = time.Since(r.start)
				r.mu.Lock()
				r.samples = append(r.samples, s)
				r.mu.Unlock()
			}
			r.sawPlugins(pluginProcs(pid))
			if !sleepCtx(ctx, 5*time.Second) {
				return
			}
		}
	})

	wg.Wait()
	n.stop()
	// The plugins exit with the node: give them 10s to go.
	waitCtx(context.Background(), 10*time.Second, func() bool { return len(r.alive()) == 0 })
	r.orphans = r.alive()
	text, failed := r.finish()
	fmt.Println(text)
	if failed {
		t.Fail()
	}
}

// soakRequest is one kind of request the load sends, with how to tell a
// good answer.
type soakRequest struct {
	method, path, body string
	ok                 func(status int, body string) bool
}

var soakRequests = []soakRequest{
	{"GET", "/hello?name=soak", "", func(s int, b string) bool { return s == 200 && b == "Hello, soak!\n" }},
	{"GET", "/counter", "", func(s int, b string) bool {
		_, err := strconv.Atoi(strings.TrimSpace(b))
		return s == 200 && err == nil
	}},
	{"POST", "/echo", "soak", func(s int, b string) bool { return s == 200 && strings.Contains(b, `"body":"soak"`) }},
	{"GET", "/slow?ms=2", "", func(s int, b string) bool { return s == 200 && b == "slept 2ms\n" }},
	{"GET", "/front?name=soak", "", func(s int, b string) bool { return s == 200 && strings.Contains(b, "Hello, soak!") }},
}

// sample is one reading of the node's process.
type sample struct {
	at         time.Duration
	rss        float64 // bytes
	fds        float64
	goroutines float64
	heap       float64 // Go heap in use, bytes: shown, not judged
}

type soakReport struct {
	start   time.Time
	dur     time.Duration
	clients int

	requests, failedReqs atomic.Int64
	byPath               sync.Map // path -> *atomic.Int64

	mu                       sync.Mutex
	failures                 []string
	upgrades, intents, kills []string
	samples                  []sample
	plugins                  map[int]string // every plugin process seen
	orphans                  []string
}

func (r *soakReport) request(c *http.Client, base string, q soakRequest) {
	r.requests.Add(1)
	v, _ := r.byPath.LoadOrStore(q.path, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
	req, err := http.NewRequest(q.method, base+q.path, strings.NewReader(q.body))
	if err != nil {
		panic(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		r.failedRequest("%s %s: %v", q.method, q.path, err)
		return
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !q.ok(resp.StatusCode, string(b)) {
		r.failedRequest("%s %s: %d %.200q %v", q.method, q.path, resp.StatusCode, b, err)
	}
}

func (r *soakReport) failedRequest(format string, args ...any) {
	if r.failedReqs.Add(1) <= 10 {
		r.fail("request: "+format, args...)
	}
}

func (r *soakReport) fail(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, fmt.Sprintf("%7s  ", time.Since(r.start).Round(time.Second))+fmt.Sprintf(format, args...))
}

func (r *soakReport) note(list *[]string, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*list = append(*list, fmt.Sprintf("%7s  ", time.Since(r.start).Round(time.Second))+fmt.Sprintf(format, args...))
}

func (r *soakReport) sawPlugins(procs map[int]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, name := range procs {
		r.plugins[p] = name
	}
}

// alive lists the plugin processes seen during the run that still exist.
func (r *soakReport) alive() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for p, name := range r.plugins {
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p)); err == nil && !isZombie(string(st)) && strings.Contains(cmdline(p), "plugin") {
			out = append(out, fmt.Sprintf("%s (pid %d)", name, p))
		}
	}
	slices.Sort(out)
	return out
}

// trend is a least-squares line through (minutes, value).
type trend struct {
	slope, se float64 // per minute, and its standard error
	growth    float64 // slope × the span of the samples
	n         int
}

func fit(ss []sample, val func(sample) float64) trend {
	n := float64(len(ss))
	if len(ss) < 3 {
		return trend{n: len(ss)}
	}
	var sx, sy float64
	for _, s := range ss {
		sx += s.at.Minutes()
		sy += val(s)
	}
	mx, my := sx/n, sy/n
	var sxx, sxy float64
	for _, s := range ss {
		dx := s.at.Minutes() - mx
		sxx += dx * dx
		sxy += dx * (val(s) - my)
	}
	if sxx == 0 {
		return trend{n: len(ss)}
	}
	slope := sxy / sxx
	var ssr float64
	for _, s := range ss {
		e := val(s) - (my + slope*(s.at.Minutes()-mx))
		ssr += e * e
	}
	span := ss[len(ss)-1].at.Minutes() - ss[0].at.Minutes()
	return trend{slope: slope, se: math.Sqrt(ssr/(n-2)) / math.Sqrt(sxx), growth: slope * span, n: len(ss)}
}

// finish renders the report and says whether the soak failed.
func (r *soakReport) finish() (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	failed := len(r.failures) > 0 || len(r.orphans) > 0 || r.failedReqs.Load() > 0
	fmt.Fprintf(&b, "\n=== soak report: %s, %d clients ===\n", r.dur, r.clients)
	fmt.Fprintf(&b, "requests: %d, failed: %d\n", r.requests.Load(), r.failedReqs.Load())
	r.byPath.Range(func(k, v any) bool {
		fmt.Fprintf(&b, "  %-18s %d\n", k, v.(*atomic.Int64).Load())
		return true
	})
	fmt.Fprintf(&b, "upgrades converged: %d, intent edits applied: %d, plugin kills recovered: %d\n", len(r.upgrades), len(r.intents), len(r.kills))
	for _, l := range [][]string{r.upgrades, r.intents, r.kills} {
		for _, s := range l {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}

	// Trends after the warm-up: the first fifth of the run, and at least
	// the first two upgrades (both builds of hello compiled, replicas
	// started, caches full), at most half the run. A leak is a rise both
	// significant (slope above 3 standard errors) and larger than the
	// metric's noise floor.
	warm := min(max(r.dur/5, 150*time.Second), r.dur/2)
	var ss []sample
	for _, s := range r.samples {
		if s.at >= warm {
			ss = append(ss, s)
		}
	}
	fmt.Fprintf(&b, "samples: %d (every 5s), trends over the %d after the first %s:\n", len(r.samples), len(ss), warm)
	for _, m := range []struct {
		name  string
		val   func(sample) float64
		scale float64
		unit  string
		floor float64 // growth over the run below this is noise
	}{
		{"rss", func(s sample) float64 { return s.rss }, 1 << 20, "MiB", 48 << 20},
		{"open fds", func(s sample) float64 { return s.fds }, 1, "", 16},
		{"goroutines", func(s sample) float64 { return s.goroutines }, 1, "", 64},
	} {
		tr := fit(ss, m.val)
		first, last := 0.0, 0.0
		if len(ss) > 0 {
			first, last = m.val(ss[0]), m.val(ss[len(ss)-1])
		}
		leak := tr.n >= 3 && tr.growth > m.floor && tr.slope > 3*tr.se
		verdict := "flat (within noise)"
		if leak {
			verdict = "LEAK"
			failed = true
		} else if tr.n < 3 {
			verdict = "too few samples to judge"
			failed = true
		}
		fmt.Fprintf(&b, "  %-10s %8.1f -> %8.1f %-3s  slope %+8.2f %s/min (± %.2f), over the run %+8.1f %s (noise floor %.0f): %s\n",
			m.name, first/m.scale, last/m.scale, m.unit, tr.slope/m.scale, m.unit, tr.se/m.scale, tr.growth/m.scale, m.unit, m.floor/m.scale, verdict)
	}
	fmt.Fprintf(&b, "  %7s  %9s  %8s  %10s  %13s\n", "at", "rss MiB", "open fds", "goroutines", "go heap MiB")
	for i, s := range r.samples {
		if i%6 == 0 || i == len(r.samples)-1 {
			fmt.Fprintf(&b, "  %7s  %9.1f  %8.0f  %10.0f  %13.1f\n", s.at.Round(time.Second), s.rss/(1<<20), s.fds, s.goroutines, s.heap/(1<<20))
		}
	}
	fmt.Fprintf(&b, "plugin processes seen: %d; left running after the node stopped: %d\n", len(r.plugins), len(r.orphans))
	for _, o := range r.orphans {
		fmt.Fprintf(&b, "  ORPHAN %s\n", o)
	}
	if len(r.failures) > 0 {
		fmt.Fprintf(&b, "failures (%d; requests: the first 10):\n", len(r.failures))
		for _, f := range r.failures {
			fmt.Fprintf(&b, "  %s\n", f)
		}
	}
	if failed {
		fmt.Fprintf(&b, "RESULT: FAIL\n")
	} else {
		fmt.Fprintf(&b, "RESULT: PASS\n")
	}
	return b.String(), failed
}

// scrape reads the node's process metrics from its Prometheus endpoint.
func scrape(addr string) (sample, error) {
	var s sample
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		var dst *float64
		switch name {
		case "process_resident_memory_bytes":
			dst = &s.rss
		case "process_open_fds":
			dst = &s.fds
		case "go_goroutines":
			dst = &s.goroutines
		case "go_memstats_heap_inuse_bytes":
			dst = &s.heap
		default:
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return s, fmt.Errorf("%s: %w", name, err)
		}
		*dst = v
		found++
	}
	if err := sc.Err(); err != nil {
		return s, err
	}
	if found != 4 {
		return s, fmt.Errorf("metrics lack process_resident_memory_bytes, process_open_fds, go_goroutines or go_memstats_heap_inuse_bytes")
	}
	return s, nil
}

// pluginProcs returns the node's plugin processes (its children running
// `celcore plugin NAME`, and any process they started) by pid.
func pluginProcs(node int) map[int]string {
	parents := map[int]int{}
	des, _ := os.ReadDir("/proc")
	for _, de := range des {
		p, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil || isZombie(string(st)) {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		rest := string(st)[strings.LastIndexByte(string(st), ')')+1:]
		f := strings.Fields(rest)
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		parents[p] = pp
	}
	out := map[int]string{}
	for p := range parents {
		for q, depth := parents[p], 0; q > 1 && depth < 8; q, depth = parents[q], depth+1 {
			if q == node {
				args := strings.Fields(cmdline(p))
				name := "child"
				if i := slices.Index(args, "plugin"); i >= 0 && i+1 < len(args) {
					name = args[i+1]
				}
				out[p] = name
				break
			}
		}
	}
	return out
}

func cmdline(p int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
	return strings.ReplaceAll(string(b), "\x00", " ")
}

func isZombie(stat string) bool {
	rest := stat[strings.LastIndexByte(stat, ')')+1:]
	f := strings.Fields(rest)
	return len(f) > 0 && f[0] == "Z"
}

// versionsOf returns the versions a cell routes to, as celctl reports
// them; unlike proc.versions it returns errors instead of failing the test,
// for use off the test's goroutine.
func versionsOf(n *proc, cell string) ([]versionJSON, error) {
	out, err := n.celctl("cells", "-o", "json")
	if err != nil {
		return nil, fmt.Errorf("celctl cells: %w: %s", err, out)
	}
	var list []struct {
		Name     string        `json:"name"`
		Versions []versionJSON `json:"versions"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, err
	}
	for _, c := range list {
		if c.Name == cell {
			return c.Versions, nil
		}
	}
	return nil, nil
}

// sleepCtx waits d or until ctx ends; it reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// waitCtx polls cond every 100ms until it holds, limit passes or ctx ends.
func waitCtx(ctx context.Context, limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if cond() {
			return true
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	return false
}
