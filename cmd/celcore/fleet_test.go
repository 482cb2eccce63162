//go:build fleet

package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/celluster/celluster/core/testbuild"
	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// fleetConfig is what the environment asks of a fleet run.
type fleetConfig struct {
	n         int           // nodes at full size (FLEET_N, default 24; 6 quick)
	quick     bool          // FLEET_QUICK: short windows for a try
	steps     []int         // sizes idle cost is measured at
	idle      time.Duration // each idle measurement (FLEET_IDLE_TIME)
	hog       time.Duration // the CPU hog's duration (FLEET_HOG_TIME)
	partition time.Duration // the partition's duration (FLEET_PARTITION_TIME)
	spread    int           // nodes hello is placed on
	report    string        // where the report is written (FLEET_REPORT)
	logs      string        // where the node logs are kept (FLEET_LOGS)

	helloIntent   string // FLEET_HELLO_INTENT: the replicated cell's intent
	counterIntent string // FLEET_COUNTER_INTENT: the single-copy cell's intent
}

func loadFleetConfig(t *testing.T) fleetConfig {
	c := fleetConfig{n: 24, idle: 30 * time.Second, hog: 5 * time.Minute, partition: 20 * time.Second}
	if v := os.Getenv("FLEET_QUICK"); v != "" && v != "0" && v != "false" {
		c.quick = true
		c.n, c.idle, c.hog = 6, 8*time.Second, 20*time.Second
	}
	if v := os.Getenv("FLEET_N"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 5 {
			t.Fatalf("FLEET_N=%q: want a whole number of nodes, at least 5", v)
		}
		c.n = n
	}
	dur := func(env string, d *time.Duration) {
		if v := os.Getenv(env); v != "" {
			x, err := time.ParseDuration(v)
			if err != nil || x <= 0 {
				t.Fatalf("%s=%q: want a duration such as 30s or 5m", env, v)
			}
			*d = x
		}
	}
	dur("FLEET_IDLE_TIME", &c.idle)
	dur("FLEET_HOG_TIME", &c.hog)
	dur("FLEET_PARTITION_TIME", &c.partition)
	for _, s := range []int{4, 12, 24} {
		if s < c.n {
			c.steps = append(c.steps, s)
		}
	}
	c.steps = append(c.steps, c.n)
	c.spread = 3
	c.report = os.Getenv("FLEET_REPORT")
	c.logs = os.Getenv("FLEET_LOGS")
	c.helloIntent = fmt.Sprintf("cell hello\nspread across %d nodes\n", c.spread)
	if v, ok := os.LookupEnv("FLEET_HELLO_INTENT"); ok {
		c.helloIntent = strings.ReplaceAll(v, `\n`, "\n")
	}
	c.counterIntent = os.Getenv("FLEET_COUNTER_INTENT")
	c.counterIntent = strings.ReplaceAll(c.counterIntent, `\n`, "\n")
	return c
}

// fleet is N real celcore processes in the harness's namespace.
type fleet struct {
	t      *testing.T
	cfg    fleetConfig
	tag    string
	dir    string
	ca     string
	bin    string
	celctl string
	net    *fleetNet
	nodes  []*fleetNode
	client *http.Client // dials inside the namespace
	shas   map[string]string
	rep    *fleetReport

	cleanOnce sync.Once
	disturbed []fleetWindow // when a node was killed or cut off on purpose
}

// fleetWindow is a time a node was down or cut off on purpose: deaths it
// declares or suffers then are not false.
type fleetWindow struct {
	node     string
	from, to time.Time
}

// countFalseDeaths counts, over the whole run, the members a node's log
// declares dead while neither was killed or cut off on purpose.
func (f *fleet) countFalseDeaths() {
	n, pairs := 0, map[string]int{}
	for _, o := range f.nodes {
		for _, d := range o.deathsSince(f.rep.started) {
			if d.suspect {
				continue
			}
			m := f.shortOf(d.member)
			excused := false
			for _, w := range f.disturbed {
				if (w.node == m || w.node == o.short()) && !d.at.Before(w.from) && !d.at.After(w.to) {
					excused = true
				}
			}
			if !excused {
				n++
				pairs[o.short()+" declared "+m+" dead"]++
			}
		}
	}
	f.rep.runFalseDeaths, f.rep.runFalsePairs = n, pairs
}

// TestFleet runs the fleet and prints the report (make fleet). It is
// bounded by its own timeouts and always prints what it measured; it fails
// when an aim is missed.
func TestFleet(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the fleet needs root: a network namespace, nftables counters and drop rules")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required (make deps): %v", tool, err)
		}
	}
	cfg := loadFleetConfig(t)
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	f := &fleet{t: t, cfg: cfg, tag: hex.EncodeToString(b), shas: map[string]string{}}
	f.rep = &fleetReport{cfg: cfg, started: time.Now(), loadStart: fleetLoadavg()}
	if root, err := testbuild.Root(); err == nil {
		if out, err := exec.Command("git", "-C", root, "describe", "--always", "--dirty").Output(); err == nil {
			f.rep.version = strings.TrimSpace(string(out))
		}
	}
	defer f.finish()

	var err error
	if f.dir, err = os.MkdirTemp("", "celfleet-"); err != nil {
		t.Fatal(err)
	}
	if f.net, err = newFleetNet(f.tag); err != nil {
		t.Fatal(err)
	}
	// Interrupted (Ctrl-C, go test's timeout): still stop the nodes and
	// delete the namespace.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGQUIT)
	go func() {
		if s, ok := <-sig; ok {
			fmt.Fprintf(os.Stderr, "fleet: %v: cleaning up\n", s)
			f.cleanup()
			os.Exit(2)
		}
	}()
	defer signal.Stop(sig)

	f.client = &http.Client{Transport: &http.Transport{DialContext: f.net.dial, MaxIdleConnsPerHost: 16}, Timeout: 10 * time.Second}
	f.logf("building celcore, celctl and the cells")
	f.bin = testbuild.Binary(t, "./cmd/celcore", raceBinaries)
	f.celctl = testbuild.Binary(t, "./cmd/celctl", false)
	hello, counter := testbuild.Cell(t, "hello"), testbuild.Cell(t, "counter")
	f.ca = filepath.Join(f.dir, "ca")
	if out, err := exec.Command(f.celctl, "ca", "init", "--trust-domain", "fleet.local", "--out", f.ca).CombinedOutput(); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	ports := make([]int, cfg.n)
	for i := range ports {
		ports[i] = fleetFabricBase + i
	}
	if err := f.net.countPorts(ports); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	for si, size := range cfg.steps {
		if err := f.grow(ctx, size); err != nil {
			f.abort("growing to %d nodes: %v", size, err)
			return
		}
		if si == 0 {
			if err := f.deploy(ctx, hello, counter); err != nil {
				f.abort("placing the cells: %v", err)
				return
			}
		}
		if si == len(cfg.steps)-1 {
			if err := f.spreadHello(ctx); err != nil {
				f.abort("placing hello on %d nodes: %v", cfg.spread, err)
				return
			}
		}
		f.awaitPrefetch(ctx, size)
		f.measureIdle(ctx, size)
	}
	f.hogPhase(ctx)
	f.faults(ctx)
}

// fleetLoadavg is the host's load average (1, 5, 15 min) as the kernel
// shows it.
func fleetLoadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func (f *fleet) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "fleet %s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func (f *fleet) abort(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	f.rep.aborted = msg
	f.logf("ABORTED: %s", msg)
	f.t.Errorf("fleet aborted: %s", msg)
}

// finish prints and writes the report, stops everything and fails the test
// when an aim was missed.
func (f *fleet) finish() {
	f.countFalseDeaths()
	f.rep.loadEnd = fleetLoadavg()
	text, missed := f.rep.render()
	fmt.Println(text)
	if f.cfg.report != "" {
		_ = os.MkdirAll(filepath.Dir(f.cfg.report), 0o755)
		if err := os.WriteFile(f.cfg.report, []byte(text), 0o644); err != nil {
			f.t.Errorf("writing the report: %v", err)
		}
	}
	f.cleanup()
	if missed > 0 {
		f.t.Errorf("%d fleet aims missed (see the report)", missed)
	}
}

func (f *fleet) cleanup() {
	f.cleanOnce.Do(func() {
		var wg sync.WaitGroup
		for _, n := range f.nodes {
			wg.Add(1)
			go func() { defer wg.Done(); n.stop() }()
		}
		wg.Wait()
		for _, n := range f.nodes {
			if n.conn != nil {
				n.conn.Close()
			}
		}
		if f.net != nil {
			f.net.close()
		}
		if f.cfg.logs != "" && f.dir != "" {
			_ = os.RemoveAll(f.cfg.logs)
			_ = os.MkdirAll(f.cfg.logs, 0o755)
			for _, n := range f.nodes {
				if b, err := os.ReadFile(filepath.Join(n.dir, "node.log")); err == nil {
					_ = os.WriteFile(filepath.Join(f.cfg.logs, n.short()+".log"), b, 0o644)
				}
			}
		}
		if f.dir != "" {
			_ = os.RemoveAll(f.dir)
		}
	})
}

// short is the node's name in the report.
func (n *fleetNode) short() string { return fmt.Sprintf("n%02d", n.idx) }

// newNode prepares node i (not started).
func (f *fleet) newNode(i int) (*fleetNode, error) {
	n := &fleetNode{idx: i, name: fmt.Sprintf("fl%s-n%02d", f.tag, i), bin: f.bin, net: f.net, fabricP: fleetFabricBase + i}
	n.dir = filepath.Join(f.dir, n.short())
	for _, d := range []string{n.cellsDir(), n.dataDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	n.httpURL = fmt.Sprintf("http://127.0.0.1:%d", fleetHTTPBase+i)
	n.metrics = fmt.Sprintf("http://127.0.0.1:%d", fleetMetricsBase+i)
	n.args = []string{
		"--cells", n.cellsDir(), "--data", n.dataDir(), "--node", n.name,
		"--http", fmt.Sprintf("127.0.0.1:%d", fleetHTTPBase+i),
		"--metrics", fmt.Sprintf("127.0.0.1:%d", fleetMetricsBase+i),
		"--fabric", fmt.Sprintf("127.0.0.1:%d", n.fabricP),
		"--ca", f.ca, "--trust-domain", "fleet.local",
		"--log-format", "json", "--log-level", "info", "--settle", "100ms",
	}
	if i > 0 {
		n.args = append(n.args, "--join", fmt.Sprintf("127.0.0.1:%d", fleetFabricBase))
	}
	var err error
	if n.conn, n.admin, err = fleetDialAdmin(filepath.Join(n.dataDir(), "admin.sock")); err != nil {
		return nil, err
	}
	return n, nil
}

// live returns the nodes whose process runs.
func (f *fleet) live() []*fleetNode {
	var out []*fleetNode
	for _, n := range f.nodes {
		if n.alive() {
			out = append(out, n)
		}
	}
	return out
}

// grow starts nodes up to size and records the time until every node sees
// every node alive.
func (f *fleet) grow(ctx context.Context, size int) error {
	from := len(f.nodes)
	f.logf("starting nodes %d..%d", from, size-1)
	t0 := time.Now()
	for i := from; i < size; i++ {
		n, err := f.newNode(i)
		if err != nil {
			return err
		}
		if err := n.start(); err != nil {
			return err
		}
		f.nodes = append(f.nodes, n)
		if i == 0 {
			if err := n.awaitReady(90 * time.Second); err != nil {
				return err
			}
		}
	}
	for _, n := range f.nodes[from:] {
		if err := n.awaitReady(120 * time.Second); err != nil {
			return err
		}
	}
	ready := time.Since(t0)
	conv, err := f.awaitConverged(ctx, 120*time.Second)
	if err != nil {
		// A fleet that does not converge is a finding, not the end of
		// the run: say so and measure the rest.
		f.rep.steps = append(f.rep.steps, fleetStepResult{n: size, added: size - from, ready: ready, converge: -1})
		f.rep.notes = append(f.rep.notes, fmt.Sprintf("growing to %d nodes: %v", size, err))
		f.logf("%d nodes: %v", size, err)
		return nil
	}
	f.rep.steps = append(f.rep.steps, fleetStepResult{n: size, added: size - from, ready: ready, converge: time.Since(t0)})
	f.logf("%d nodes: all ready after %s, all see all alive after %s (%s after the last was ready)", size, ready.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond), conv.Round(time.Millisecond))
	return nil
}

// awaitConverged waits until every live node sees every live node alive.
func (f *fleet) awaitConverged(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	t0 := time.Now()
	var why string
	for {
		ok, w := f.converged(ctx)
		if ok {
			return time.Since(t0), nil
		}
		why = w
		if time.Since(t0) > timeout {
			return 0, fmt.Errorf("not converged after %s: %s", timeout, why)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (f *fleet) converged(ctx context.Context) (bool, string) {
	live := f.live()
	views := f.views(ctx, live)
	for _, o := range live {
		v, ok := views[o.name]
		if !ok {
			return false, o.short() + " does not answer"
		}
		for _, m := range live {
			if v[m.name] != "alive" {
				return false, fmt.Sprintf("%s sees %s %q", o.short(), m.short(), v[m.name])
			}
		}
	}
	return true, ""
}

// views asks nodes, in parallel, what they see of the members.
func (f *fleet) views(ctx context.Context, nodes []*fleetNode) map[string]map[string]string {
	var mu sync.Mutex
	out := map[string]map[string]string{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if v, err := n.view(ctx); err == nil {
				mu.Lock()
				out[n.name] = v
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// copies lists the live nodes serving each cell.
func (f *fleet) copies(ctx context.Context) map[string][]string {
	var mu sync.Mutex
	out := map[string][]string{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, n := range f.live() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			cells, err := n.serving(ctx)
			if err != nil {
				return
			}
			mu.Lock()
			for c := range cells {
				out[c] = append(out[c], n.short())
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}

// awaitCopies polls until cond holds of the copies, and says how long that
// took; ok is false on timeout.
func (f *fleet) awaitCopies(ctx context.Context, timeout time.Duration, cond func(map[string][]string) bool) (time.Duration, bool) {
	t0 := time.Now()
	for {
		if cond(f.copies(ctx)) {
			return time.Since(t0), true
		}
		if time.Since(t0) > timeout {
			return time.Since(t0), false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (f *fleet) writeFile(n *fleetNode, name string, data []byte) error {
	tmp := filepath.Join(n.cellsDir(), "."+name+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(n.cellsDir(), name))
}

// deploy places counter (single copy) on n01 and hello on n02.
func (f *fleet) deploy(ctx context.Context, hello, counter []byte) error {
	n1, n2 := f.nodes[1], f.nodes[2]
	if f.cfg.counterIntent != "" {
		if err := f.writeFile(n1, "counter.intent", []byte(f.cfg.counterIntent)); err != nil {
			return err
		}
	}
	if f.cfg.helloIntent != "" {
		if err := f.writeFile(n2, "hello.intent", []byte(f.cfg.helloIntent)); err != nil {
			return err
		}
	}
	if err := f.writeFile(n1, "counter.wasm", counter); err != nil {
		return err
	}
	if err := f.writeFile(n2, "hello.wasm", hello); err != nil {
		return err
	}
	if _, ok := f.awaitCopies(ctx, 120*time.Second, func(c map[string][]string) bool {
		return slices.Contains(c["counter"], n1.short()) && slices.Contains(c["hello"], n2.short())
	}); !ok {
		return fmt.Errorf("counter on n01 and hello on n02 not serving after 120s: %v", f.copies(ctx))
	}
	for _, p := range []struct {
		n    *fleetNode
		cell string
	}{{n1, "counter"}, {n2, "hello"}} {
		sha, err := p.n.sha(ctx, p.cell)
		if err != nil {
			return err
		}
		f.shas[p.cell] = sha
	}
	f.logf("counter serves on n01, hello on n02")
	return nil
}

// spreadHello clones hello from n02 onto n03, n04, ... up to cfg.spread
// nodes (the nodes it is not on yet).
func (f *fleet) spreadHello(ctx context.Context) error {
	// A fleet that keeps "spread across nodes" places the copies itself.
	if _, ok := f.awaitCopies(ctx, 10*time.Second, func(c map[string][]string) bool { return len(c["hello"]) >= f.cfg.spread }); ok {
		f.rep.initial = f.copies(ctx)
		f.rep.notes = append(f.rep.notes, fmt.Sprintf("hello was spread to %v by the fleet itself (no clone verb needed)", f.rep.initial["hello"]))
		f.logf("hello serves on %v", f.rep.initial["hello"])
		return nil
	}
	f.rep.notes = append(f.rep.notes, fmt.Sprintf("hello was not spread by the fleet within 10 s; placed on %d nodes with `celctl verb clone hello 1 on NODE`", f.cfg.spread))
	for i := 3; i < 2+f.cfg.spread; i++ {
		if len(f.copies(ctx)["hello"]) >= f.cfg.spread {
			break
		}
		n := f.nodes[i]
		if slices.Contains(f.copies(ctx)["hello"], n.short()) {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		out, err := exec.CommandContext(cctx, f.celctl, "--admin", filepath.Join(f.nodes[2].dataDir(), "admin.sock"), "verb", "clone", "hello", "1", "on", n.name).CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("clone hello on %s: %v: %s", n.short(), err, out)
		}
	}
	if _, ok := f.awaitCopies(ctx, 60*time.Second, func(c map[string][]string) bool { return len(c["hello"]) >= f.cfg.spread }); !ok {
		return fmt.Errorf("hello on %v after the clones", f.copies(ctx)["hello"])
	}
	f.rep.initial = f.copies(ctx)
	f.logf("hello serves on %v", f.rep.initial["hello"])
	return nil
}

// topUpHello clones hello onto nodes that serve neither cell until it is
// on cfg.spread nodes again, so that a double kill leaves one copy; it
// says on which nodes it placed copies.
func (f *fleet) topUpHello(ctx context.Context) ([]string, error) {
	c := f.copies(ctx)
	if len(c["hello"]) == 0 {
		return nil, fmt.Errorf("hello serves nowhere")
	}
	from := f.node(c["hello"][0])
	var placed []string
	for _, n := range f.live()[1:] {
		if len(c["hello"])+len(placed) >= f.cfg.spread {
			break
		}
		if slices.Contains(c["hello"], n.short()) || slices.Contains(c["counter"], n.short()) {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		out, err := exec.CommandContext(cctx, f.celctl, "--admin", filepath.Join(from.dataDir(), "admin.sock"), "verb", "clone", "hello", "1", "on", n.name).CombinedOutput()
		cancel()
		if err != nil {
			return placed, fmt.Errorf("clone hello on %s: %v: %s", n.short(), err, out)
		}
		placed = append(placed, n.short())
	}
	if _, ok := f.awaitCopies(ctx, 30*time.Second, func(c map[string][]string) bool { return len(c["hello"]) >= f.cfg.spread }); !ok {
		return placed, fmt.Errorf("hello on %v after cloning onto %v", f.copies(ctx)["hello"], placed)
	}
	return placed, nil
}

// awaitPrefetch waits (bounded) until every node keeps both modules, so
// that compiling them does not count as idle cost.
func (f *fleet) awaitPrefetch(ctx context.Context, size int) {
	deadline := time.Now().Add(120 * time.Second)
	for {
		missing := 0
		for _, n := range f.nodes {
			for _, sha := range f.shas {
				if _, err := os.Stat(filepath.Join(n.dataDir(), "modules", sha+".wasm")); err != nil {
					missing++
				}
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			f.rep.notes = append(f.rep.notes, fmt.Sprintf("at %d nodes, %d node×module pairs were still not prefetched after 120s; idle measured anyway", size, missing))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// fleetClockTicks is the kernel's USER_HZ, the unit of /proc/PID/stat times.
const fleetClockTicks = 100

// measureIdle measures each node's CPU (with its plugins) and fabric
// packets while nothing is asked of the fleet.
func (f *fleet) measureIdle(ctx context.Context, size int) {
	f.logf("%d nodes: settling 5s, then measuring idle cost for %s", size, f.cfg.idle)
	time.Sleep(5 * time.Second)
	// Each measure has its own start and end: one scan of /proc for the
	// CPU of every node, one read of the packet counters, and each node's
	// metrics with their own timestamps.
	type scrape struct {
		at  time.Time
		fab map[string]float64
	}
	scrapeAll := func() []scrape {
		out := make([]scrape, len(f.nodes))
		for i, n := range f.nodes {
			out[i] = scrape{time.Now(), n.fabricCounters(ctx, f.client)}
		}
		return out
	}
	fab0 := scrapeAll()
	tx0, rx0, err := f.net.portPackets()
	if err != nil {
		f.rep.notes = append(f.rep.notes, "packet counters: "+err.Error())
	}
	tp0 := time.Now()
	waits := func(scan map[int]fleetProc) map[int]uint64 {
		out := map[int]uint64{}
		for _, n := range f.nodes {
			pid := n.pid()
			for p, a := range scan {
				if p == pid || a.ppid == pid {
					out[p] = fleetSchedWait(p)
				}
			}
		}
		return out
	}
	stopStats := fleetBPFStats()
	bpf0, runs0 := fleetBPFTime()
	cpu0, tc0 := fleetProcScan(), time.Now()
	idle0, all0 := fleetHostCPU()
	wait0 := waits(cpu0)
	time.Sleep(f.cfg.idle)
	cpu1, tc1 := fleetProcScan(), time.Now()
	idle1, all1 := fleetHostCPU()
	bpf1, runs1 := fleetBPFTime()
	if stopStats != nil {
		stopStats()
	}
	wait1 := waits(cpu1)
	tx1, rx1, _ := f.net.portPackets()
	tp1 := time.Now()
	fab1 := scrapeAll()
	elCPU, elPkt := tc1.Sub(tc0).Seconds(), tp1.Sub(tp0).Seconds()
	res := fleetIdleResult{n: size, window: f.cfg.idle, fabric: map[string][]float64{}, load: fleetLoadavg()}
	if stopStats != nil {
		el := tc1.Sub(tc0).Seconds()
		res.bpfMS = (bpf1 - bpf0).Seconds() * 1000 / el
		res.bpfRuns = float64(runs1-runs0) / el
	}
	if all1 > all0 {
		res.hostIdle = float64(idle1-idle0) / float64(all1-all0)
	}
	for i, n := range f.nodes {
		pid := n.pid()
		var total, main, waited uint64
		for p, a := range cpu1 {
			if p != pid && a.ppid != pid {
				continue
			}
			waited += wait1[p] - min(wait1[p], wait0[p])
			b := cpu0[p] // a child born in the window counts from 0
			if b.ppid != a.ppid {
				b = fleetProc{}
			}
			d := a.ticks - min(a.ticks, b.ticks)
			total += d
			if p == pid {
				main = d
			}
		}
		res.cpu = append(res.cpu, float64(total)*1000/fleetClockTicks/elCPU)
		res.mainCPU = append(res.mainCPU, float64(main)*1000/fleetClockTicks/elCPU)
		res.wait = append(res.wait, float64(waited)/1e6/elCPU)
		p := n.fabricP
		res.tx = append(res.tx, float64(tx1[p]-tx0[p])/elPkt)
		res.rx = append(res.rx, float64(rx1[p]-rx0[p])/elPkt)
		el := fab1[i].at.Sub(fab0[i].at).Seconds()
		for k, v := range fab1[i].fab {
			res.fabric[k] = append(res.fabric[k], (v-fab0[i].fab[k])/el)
		}
	}
	f.rep.idle = append(f.rep.idle, res)
	f.logf("%d nodes: CPU %.1f ms/s per node (mean), packets %.1f/s per node (sent+received, mean)", size, fleetMean(res.cpu), fleetMean(res.tx)+fleetMean(res.rx))
}

// fleetStartHog loads the host's CPUs: stress-ng when installed, else busy
// shell loops. stop ends it.
func fleetStartHog(d time.Duration) (what string, stop func(), err error) {
	var cmds []*exec.Cmd
	if _, err := exec.LookPath("stress-ng"); err == nil {
		what = "stress-ng --cpu 2"
		cmds = append(cmds, exec.Command("stress-ng", "--cpu", "2", "--timeout", fmt.Sprintf("%ds", int(d.Seconds())+30), "--quiet"))
	} else {
		what = "2 busy shell loops (stress-ng not installed)"
		for range 2 {
			cmds = append(cmds, exec.Command("sh", "-c", "while :; do :; done"))
		}
	}
	for _, c := range cmds {
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := fleetStart(c); err != nil {
			return what, func() {}, err
		}
	}
	return what, func() {
		for _, c := range cmds {
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			_ = c.Wait()
		}
	}, nil
}

// hogPhase keeps the host's CPUs busy for cfg.hog while the fleet idles,
// and counts the members declared dead although their process runs.
func (f *fleet) hogPhase(ctx context.Context) {
	what, stop, err := fleetStartHog(f.cfg.hog)
	if err != nil {
		stop()
		f.rep.notes = append(f.rep.notes, "CPU hog: "+err.Error())
		return
	}
	f.logf("CPU hog (%s) for %s; watching for false deaths", what, f.cfg.hog)
	h := fleetHogResult{what: what, d: f.cfg.hog, logDeaths: map[string]int{}}
	t0 := time.Now()
	prev := map[[2]string]string{}
	for time.Since(t0) < f.cfg.hog {
		views := f.views(ctx, f.nodes)
		for o, v := range views {
			for m, st := range v {
				k := [2]string{o, m}
				if st != prev[k] && prev[k] != "" {
					switch st {
					case "dead":
						h.polledDead++
					case "suspect":
						h.polledSuspect++
					}
				}
				prev[k] = st
			}
		}
		time.Sleep(time.Second)
	}
	stop()
	for _, n := range f.nodes {
		for _, d := range n.deathsSince(t0) {
			if d.suspect {
				h.logSuspects++
				continue
			}
			h.logDeaths[n.short()+" declared "+f.shortOf(d.member)+" dead"]++
			h.logDeathTotal++
		}
	}
	h.copies = f.copies(ctx)
	f.rep.hog = &h
	f.logf("hog over: %d deaths in the logs, %d dead and %d suspect transitions polled", h.logDeathTotal, h.polledDead, h.polledSuspect)
	if _, err := f.awaitConverged(ctx, 60*time.Second); err != nil {
		f.rep.notes = append(f.rep.notes, "after the hog: "+err.Error())
	}
}

// shortOf maps a node name (or memberlist's name, possibly with an
// address) to the report's short name.
func (f *fleet) shortOf(name string) string {
	for _, n := range f.nodes {
		if strings.Contains(name, n.name) {
			return n.short()
		}
	}
	return name
}

func (f *fleet) node(short string) *fleetNode {
	for _, n := range f.nodes {
		if n.short() == short {
			return n
		}
	}
	return nil
}

// awaitDetected polls every survivor until each sees each killed node dead
// (or gone); it returns, per killed node, the time from t0 until the last
// survivor saw it.
func (f *fleet) awaitDetected(ctx context.Context, t0 time.Time, killed []*fleetNode, timeout time.Duration) map[string]time.Duration {
	out := map[string]time.Duration{}
	seen := map[[2]string]time.Duration{} // when a survivor first saw a killed node dead
	survivors := f.live()
	for time.Since(t0) < timeout && len(out) < len(killed) {
		views := f.views(ctx, survivors)
		now := time.Since(t0)
		for _, k := range killed {
			if _, done := out[k.short()]; done {
				continue
			}
			all := true
			for _, s := range survivors {
				key := [2]string{s.name, k.name}
				v, ok := views[s.name]
				if _, was := seen[key]; !was && ok && (v[k.name] == "dead" || v[k.name] == "") {
					seen[key] = now
				}
				if _, was := seen[key]; !was {
					all = false
				}
			}
			if all {
				out[k.short()] = now
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, k := range killed {
		if _, ok := out[k.short()]; !ok {
			out[k.short()] = -1
		}
		var ds []time.Duration
		for _, s := range survivors {
			if d, ok := seen[[2]string{s.name, k.name}]; ok {
				ds = append(ds, d)
			}
		}
		slices.Sort(ds)
		det := fleetDetection{node: k.short(), d: out[k.short()], survivors: len(survivors), saw: len(ds), first: -1, median: -1}
		if len(ds) > 0 {
			det.first, det.median = ds[0], ds[len(ds)/2]
		}
		f.rep.detections = append(f.rep.detections, det)
	}
	return out
}

// restart starts a killed node again on its directories and waits until
// the fleet has converged with it.
func (f *fleet) restart(ctx context.Context, fr *fleetFaultResult, nodes ...*fleetNode) error {
	for _, n := range nodes {
		if err := n.start(); err != nil {
			return err
		}
	}
	for _, n := range nodes {
		if err := n.awaitReady(120 * time.Second); err != nil {
			return err
		}
	}
	// A fleet that does not converge is measured as it is.
	t0 := time.Now()
	_, err := f.awaitConverged(ctx, 60*time.Second)
	fr.healed = append(fr.healed, fleetHeal{what: "all see all alive after the restart", d: time.Since(t0), ok: err == nil})
	return nil
}

// faults runs the four faults with requests flowing through n00, which
// serves neither cell, and records failed requests and copies after each.
func (f *fleet) faults(ctx context.Context) {
	fwd := f.nodes[0]
	load := fleetStartLoad(f.client, fwd.httpURL, []string{"counter", "hello"})
	defer load.stop()
	time.Sleep(3 * time.Second) // warm the forwarding path
	oneCounter := func(c map[string][]string) bool { return len(c["counter"]) == 1 }
	spreadOK := func(c map[string][]string) bool { return len(c["hello"]) >= f.cfg.spread }

	run := func(name string, fn func(fr *fleetFaultResult) error) {
		defer func() {
			fr := f.rep.faults[len(f.rep.faults)-1]
			for _, v := range fr.victims {
				f.disturbed = append(f.disturbed, fleetWindow{node: v, from: fr.start, to: fr.end.Add(5 * time.Second)})
			}
		}()
		fr := &fleetFaultResult{name: name, start: time.Now().Add(-500 * time.Millisecond)}
		f.logf("fault: %s", name)
		if err := fn(fr); err != nil {
			fr.err = err.Error()
			f.logf("fault %s: %v", name, err)
		}
		time.Sleep(5 * time.Second) // the tail: requests after the heal count too
		fr.end = time.Now()
		fr.copies = f.copies(ctx)
		if cat, err := fwd.catalog(ctx); err == nil {
			fr.catalog = map[string][]string{}
			for cell, on := range cat {
				for _, name := range on {
					fr.catalog[cell] = append(fr.catalog[cell], f.shortOf(name))
				}
				sort.Strings(fr.catalog[cell])
			}
		}
		fr.load = load.summary(fr.start, fr.end)
		f.rep.faults = append(f.rep.faults, fr)
		f.logf("fault %s: copies %v; requests %v", name, fr.copies, fr.load)
	}

	run("kill -9 of counter's owner, then restart it", func(fr *fleetFaultResult) error {
		on := f.copies(ctx)["counter"]
		if len(on) == 0 {
			return fmt.Errorf("counter serves nowhere")
		}
		owner := f.node(on[0])
		if len(on) > 1 && owner == fwd {
			owner = f.node(on[1])
		}
		if owner == nil || owner == fwd {
			return fmt.Errorf("counter is not on a node other than the forwarder")
		}
		fr.victims = []string{owner.short()}
		t0 := time.Now()
		owner.kill()
		f.awaitDetected(ctx, t0, []*fleetNode{owner}, 60*time.Second)
		d, ok := f.awaitCopies(ctx, 60*time.Second, oneCounter)
		fr.healed = append(fr.healed, fleetHeal{what: "counter taken over", d: time.Since(t0), ok: ok})
		_ = d
		time.Sleep(3 * time.Second)
		fr.mid = f.copies(ctx)
		fr.midWhat = "after the take-over"
		if err := f.restart(ctx, fr, owner); err != nil {
			return err
		}
		back := time.Now()
		_, ok = f.awaitCopies(ctx, 30*time.Second, oneCounter)
		fr.healed = append(fr.healed, fleetHeal{what: "one counter after the owner is back", d: time.Since(back), ok: ok})
		return nil
	})

	run("restart of a replica holder (kill -9, start again at once)", func(fr *fleetFaultResult) error {
		c := f.copies(ctx)
		holders := c["hello"]
		// A holder that got its copy from the fleet (not n02, whose cells
		// directory has the module) shows whether a restart keeps it.
		var victim *fleetNode
		for _, h := range holders {
			if n := f.node(h); n != fwd && !slices.Contains(c["counter"], h) && (victim == nil || victim == f.nodes[2]) {
				victim = n
			}
		}
		if victim == nil {
			return fmt.Errorf("no hello holder to restart among %v", holders)
		}
		fr.victims = []string{victim.short()}
		victim.kill()
		if err := f.restart(ctx, fr, victim); err != nil {
			return err
		}
		back := time.Now()
		_, ok := f.awaitCopies(ctx, 30*time.Second, spreadOK)
		fr.healed = append(fr.healed, fleetHeal{what: fmt.Sprintf("hello on ≥%d nodes after the holder is back", f.cfg.spread), d: time.Since(back), ok: ok, spread: true})
		return nil
	})

	run("double kill -9 of two of hello's holders, then restart them", func(fr *fleetFaultResult) error {
		if c := f.copies(ctx); len(c["hello"]) < f.cfg.spread {
			// The fleet did not keep the spread (see b): place the copies
			// again, so that the double kill leaves one.
			placed, err := f.topUpHello(ctx)
			if err != nil {
				return err
			}
			fr.note = fmt.Sprintf("hello was on %v only; cloned onto %v first so that one copy survives", c["hello"], placed)
			fr.start = time.Now().Add(-500 * time.Millisecond)
		}
		c := f.copies(ctx)
		var victims []*fleetNode
		for _, h := range c["hello"] {
			if n := f.node(h); n != fwd && !slices.Contains(c["counter"], h) && len(victims) < 2 {
				victims = append(victims, n)
			}
		}
		if len(victims) < 2 {
			return fmt.Errorf("fewer than two hello holders to kill among %v", c["hello"])
		}
		for _, v := range victims {
			fr.victims = append(fr.victims, v.short())
		}
		if len(c["hello"]) == len(victims) {
			fr.everyHolder = "hello"
		}
		t0 := time.Now()
		var wg sync.WaitGroup
		for _, v := range victims {
			wg.Add(1)
			go func() { defer wg.Done(); v.kill() }()
		}
		wg.Wait()
		det := f.awaitDetected(ctx, t0, victims, 60*time.Second)
		var last time.Duration
		for _, d := range det {
			last = max(last, d)
		}
		known := t0.Add(last)
		_, ok := f.awaitCopies(ctx, 30*time.Second, spreadOK)
		fr.healed = append(fr.healed, fleetHeal{what: fmt.Sprintf("hello on ≥%d nodes after both deaths are known", f.cfg.spread), d: time.Since(known), ok: ok, spread: true})
		fr.mid = f.copies(ctx)
		fr.midWhat = "before the restart"
		if err := f.restart(ctx, fr, victims...); err != nil {
			return err
		}
		back := time.Now()
		_, ok = f.awaitCopies(ctx, 30*time.Second, oneCounter)
		fr.healed = append(fr.healed, fleetHeal{what: "one counter after the restart", d: time.Since(back), ok: ok})
		return nil
	})

	run(fmt.Sprintf("%s partition of counter's node", f.cfg.partition), func(fr *fleetFaultResult) error {
		c := f.copies(ctx)
		if len(c["counter"]) == 0 {
			return fmt.Errorf("counter serves nowhere")
		}
		victim := f.node(c["counter"][0])
		if victim == fwd {
			victim = f.nodes[1]
		}
		fr.victims = []string{victim.short()}
		if err := f.net.partition(victim.fabricP); err != nil {
			return err
		}
		healErr := func() error {
			time.Sleep(f.cfg.partition)
			fr.mid = f.copies(ctx)
			fr.midWhat = "during the partition"
			return f.net.heal()
		}()
		if healErr != nil {
			// The namespace's deletion removes the rules in any case.
			return healErr
		}
		healed := time.Now()
		_, err := f.awaitConverged(ctx, 60*time.Second)
		fr.healed = append(fr.healed, fleetHeal{what: "all see all alive after the cut is lifted", d: time.Since(healed), ok: err == nil})
		_, ok := f.awaitCopies(ctx, 30*time.Second, oneCounter)
		fr.healed = append(fr.healed, fleetHeal{what: "one counter after the cut is lifted", d: time.Since(healed), ok: ok})
		return nil
	})
}

// fleetBPFTime sums the run time and runs of the host's BPF programs
// named cel_* (every node's kernel telemetry), which the kernel counts
// while statistics are enabled (fleetBPFStats).
func fleetBPFTime() (time.Duration, uint64) {
	var total time.Duration
	var runs uint64
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return total, runs
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		if info, err := p.Info(); err == nil && strings.HasPrefix(info.Name, "cel_") {
			if st, err := p.Stats(); err == nil {
				total += st.Runtime
				runs += st.RunCount
			}
		}
		p.Close()
	}
}

// fleetBPFStats turns the kernel's BPF run-time statistics on until the
// returned func is called (nil when they cannot be).
func fleetBPFStats() func() {
	c, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		return nil
	}
	return func() { c.Close() }
}
