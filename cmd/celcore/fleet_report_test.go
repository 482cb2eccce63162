//go:build fleet

package main

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// fleetLoadRec is one idempotent fleetRequest (GET) through the forwarding node, as
// a well-behaved client makes it: a 503 with Retry-After is retried after
// that many seconds (at most 1 s) until 10 s have passed since the first
// try; any other answer is final.
type fleetLoadRec struct {
	cell       string
	start, end time.Time
	status     int // final; 0 when the fleetRequest got no answer
	attempts   int
	saw503     bool
}

// fleetLoadGen sends requests for each cell, two at a time, until stopped.
type fleetLoadGen struct {
	mu   sync.Mutex
	recs []fleetLoadRec
	done chan struct{}
	wg   sync.WaitGroup
}

const fleetLoadBudget = 10 * time.Second

func fleetStartLoad(c *http.Client, base string, cells []string) *fleetLoadGen {
	g := &fleetLoadGen{done: make(chan struct{})}
	for _, cell := range cells {
		for range 2 {
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				for {
					select {
					case <-g.done:
						return
					default:
					}
					r := fleetRequest(c, base, cell)
					g.mu.Lock()
					g.recs = append(g.recs, r)
					g.mu.Unlock()
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}
	}
	return g
}

func fleetRequest(c *http.Client, base, cell string) fleetLoadRec {
	r := fleetLoadRec{cell: cell, start: time.Now()}
	for {
		r.attempts++
		resp, err := c.Get(base + "/" + cell)
		if err != nil {
			r.status = 0
			break
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		r.status = resp.StatusCode
		ra := resp.Header.Get("Retry-After")
		if resp.StatusCode != http.StatusServiceUnavailable || ra == "" || time.Since(r.start) >= fleetLoadBudget {
			break
		}
		r.saw503 = true
		wait := time.Second
		if s, err := strconv.Atoi(ra); err == nil && s >= 0 && time.Duration(s)*time.Second < wait {
			wait = time.Duration(s) * time.Second
		}
		time.Sleep(max(wait, 50*time.Millisecond))
	}
	r.end = time.Now()
	return r
}

func (g *fleetLoadGen) stop() {
	select {
	case <-g.done:
	default:
		close(g.done)
	}
	g.wg.Wait()
}

// fleetLoadSummary counts one cell's requests started in a window.
type fleetLoadSummary struct {
	total, ok, failed                  int
	s404, s503, s502, s5xx, sErr, sOth int
	retriedOK                          int // got 503 + Retry-After, then 200
	slowestOK                          time.Duration
}

func (s fleetLoadSummary) String() string {
	return fmt.Sprintf("%d sent, %d failed", s.total, s.failed)
}

func (g *fleetLoadGen) summary(from, to time.Time) map[string]fleetLoadSummary {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]fleetLoadSummary{}
	for _, r := range g.recs {
		if r.start.Before(from) || r.start.After(to) {
			continue
		}
		s := out[r.cell]
		s.total++
		switch {
		case r.status == 200:
			s.ok++
			if r.saw503 {
				s.retriedOK++
			}
			s.slowestOK = max(s.slowestOK, r.end.Sub(r.start))
		case r.status == 404:
			s.s404++
		case r.status == 503:
			s.s503++
		case r.status == 502:
			s.s502++
		case r.status >= 500:
			s.s5xx++
		case r.status == 0:
			s.sErr++
		default:
			s.sOth++
		}
		if r.status != 200 {
			s.failed++
		}
		out[r.cell] = s
	}
	return out
}

type fleetStepResult struct {
	n, added        int
	ready, converge time.Duration
}

type fleetIdleResult struct {
	n                    int
	window               time.Duration
	cpu, mainCPU, tx, rx []float64            // per node, per second
	wait                 []float64            // ms/s the node's threads waited for a CPU
	hostIdle             float64              // the host's idle share of CPU time in the window
	fabric               map[string][]float64 // node-reported counters, per node, per second
	load                 string               // the host's load average at the end
	// bpfMS and bpfRuns are the run time (ms/s) and runs per second of
	// every node's cel_* BPF programs together, on the whole host; 0
	// when the kernel's statistics could not be enabled.
	bpfMS, bpfRuns float64
}

type fleetHogResult struct {
	what                       string
	d                          time.Duration
	logDeaths                  map[string]int
	logDeathTotal, logSuspects int
	polledDead, polledSuspect  int
	copies                     map[string][]string
}

type fleetDetection struct {
	node      string
	d         time.Duration // until every survivor saw it; -1: not within the bound
	survivors int
	saw       int           // survivors that saw it dead within the bound
	first     time.Duration // the first survivor to see it dead
	median    time.Duration // half the survivors saw it dead by then
}

type fleetHeal struct {
	what   string
	d      time.Duration
	ok     bool
	spread bool // a "spread restored" measurement
}

type fleetFaultResult struct {
	name        string
	victims     []string
	start, end  time.Time
	healed      []fleetHeal
	mid         map[string][]string
	midWhat     string
	catalog     map[string][]string // n00's view of where each cell is served, at the end
	everyHolder string              // the cell whose every holder the fault killed
	note        string
	copies      map[string][]string
	load        map[string]fleetLoadSummary
	err         string
}

type fleetReport struct {
	cfg        fleetConfig
	started    time.Time
	steps      []fleetStepResult
	idle       []fleetIdleResult
	hog        *fleetHogResult
	detections []fleetDetection
	faults     []*fleetFaultResult
	initial    map[string][]string
	notes      []string
	aborted    string
	version    string // git describe of the code under test

	loadStart, loadEnd string // the host's load average
	runFalseDeaths     int    // deaths of members not killed or cut off, whole run
	runFalsePairs      map[string]int
}

func fleetMean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func fleetMaxOf(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

func fleetSecs(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func fleetFmtCopies(c map[string][]string) string {
	if c == nil {
		return "-"
	}
	return fmt.Sprintf("counter %d %v, hello %d %v", len(c["counter"]), c["counter"], len(c["hello"]), c["hello"])
}

// render writes the report and counts the aims missed.
func (r *fleetReport) render() (string, int) {
	var b strings.Builder
	cfg := r.cfg
	mode := ""
	if cfg.quick {
		mode = " (FLEET_QUICK)"
	}
	fmt.Fprintf(&b, "\nCelluster fleet report%s: %d nodes on 127.0.0.1 in one network namespace, %d CPUs, started %s, took %s\n",
		mode, cfg.n, runtime.NumCPU(), r.started.Format(time.RFC3339), time.Since(r.started).Round(time.Second))
	fmt.Fprintf(&b, "Host load average (1/5/15 min) at the start: %s; at the end: %s (the machine is shared: CPU figures include contention)\n", r.loadStart, r.loadEnd)
	if r.version != "" {
		fmt.Fprintf(&b, "Code: %s\n", r.version)
	}
	fmt.Fprintf(&b, "Sizes %v; idle windows %s; CPU hog %s; partition %s; hello placed on %d nodes, counter on one.\n",
		cfg.steps, cfg.idle, cfg.hog, cfg.partition, cfg.spread)
	if r.aborted != "" {
		fmt.Fprintf(&b, "\nABORTED: %s (what follows is what was measured before)\n", r.aborted)
	}
	tw := func() *tabwriter.Writer { return tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight) }

	b.WriteString("\n1. Convergence (from the first new node's start until every node sees every node alive)\n")
	w := tw()
	fmt.Fprintln(w, "nodes\tadded\tall ready\tall see all alive\t")
	for _, s := range r.steps {
		conv := fleetSecs(s.converge)
		if s.converge < 0 {
			conv = "not within 120 s"
		}
		fmt.Fprintf(w, "%d\t%d\t%s\t%s\t\n", s.n, s.added, fleetSecs(s.ready), conv)
	}
	w.Flush()

	b.WriteString("\n2. Idle cost per node (CPU of celcore and its plugin processes from /proc/PID/stat;\n" +
		"   fabric UDP packets sent+received per node, counted by nftables on the node's port)\n")
	w = tw()
	fmt.Fprintln(w, "nodes\tCPU ms/s mean\tmax\tcelcore alone\twaited for CPU\tfleet total\tpackets/s mean\tmax\tcluster packets/s\thost load\thost idle\t")
	for _, x := range r.idle {
		pk := make([]float64, len(x.tx))
		for i := range pk {
			pk[i] = x.tx[i] + x.rx[i]
		}
		total := 0.0
		for _, v := range x.tx {
			total += v
		}
		fmt.Fprintf(w, "%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.0f\t%.1f\t%.1f\t%.0f\t%s\t%s\t\n", x.n, fleetMean(x.cpu), fleetMaxOf(x.cpu), fleetMean(x.mainCPU), fleetMean(x.wait), fleetMean(x.cpu)*float64(len(x.cpu)), fleetMean(pk), fleetMaxOf(pk), total, strings.Fields(x.load + " ?")[0], fmt.Sprintf("%.0f%%", 100*x.hostIdle))
	}
	w.Flush()
	fmt.Fprintf(&b, "   (the host has %d CPUs = %d ms/s. \"waited for CPU\": run-queue wait of the node's threads, from schedstat;\n"+
		"    when the host has no idle CPU left, a node's CPU figure is what it got, not what it asked for)\n", runtime.NumCPU(), runtime.NumCPU()*1000)
	b.WriteString("   Kernel telemetry of all the nodes together (their cel_* BPF programs, kernel run-time statistics): every node\n" +
		"   attaches its own programs to the scheduler's tracepoints, so on one host each context switch runs N of them,\n" +
		"   charged to whichever process switches: a cost of co-hosting that grows with N, absent when each node has its host.\n")
	w = tw()
	fmt.Fprintln(w, "nodes\tBPF ms/s (host)\truns/s\tper node\tCPU per node without it\t")
	for _, x := range r.idle {
		if x.bpfMS == 0 && x.bpfRuns == 0 {
			fmt.Fprintf(w, "%d\t(not measured)\t\t\t\t\n", x.n)
			continue
		}
		per := x.bpfMS / float64(max(len(x.cpu), 1))
		fmt.Fprintf(w, "%d\t%.1f\t%.0f\t%.1f\t%.1f\t\n", x.n, x.bpfMS, x.bpfRuns, per, fleetMean(x.cpu)-per)
	}
	w.Flush()
	var fams []string
	for _, x := range r.idle {
		for k := range x.fabric {
			if !slices.Contains(fams, k) {
				fams = append(fams, k)
			}
		}
	}
	sort.Strings(fams)
	if len(fams) == 0 {
		b.WriteString("   (the nodes export no celluster_fabric_*_total counters: packets from nftables only)\n")
	} else {
		b.WriteString("   Node-reported counters, per node per second (fleetMean):\n")
		w = tw()
		fmt.Fprint(w, "nodes\t")
		for _, k := range fams {
			fmt.Fprintf(w, "%s\t", strings.TrimSuffix(strings.TrimPrefix(k, "celluster_fabric_"), "_total"))
		}
		fmt.Fprintln(w)
		for _, x := range r.idle {
			fmt.Fprintf(w, "%d\t", x.n)
			for _, k := range fams {
				fmt.Fprintf(w, "%.1f\t", fleetMean(x.fabric[k]))
			}
			fmt.Fprintln(w)
		}
		w.Flush()
	}

	b.WriteString("\n3. False deaths with a CPU hog on the host (every node alive throughout)\n")
	if h := r.hog; h != nil {
		fmt.Fprintf(&b, "   hog: %s for %s\n", h.what, h.d)
		fmt.Fprintf(&b, "   members declared dead in the nodes' logs (memberlist \"Marking X as failed\"): %d; suspicions started: %d\n", h.logDeathTotal, h.logSuspects)
		fmt.Fprintf(&b, "   alive→dead transitions seen by polling every node each second: %d (suspect: %d)\n", h.polledDead, h.polledSuspect)
		var keys []string
		for k := range h.logDeaths {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			if i == 12 {
				fmt.Fprintf(&b, "     … and %d more pairs\n", len(keys)-12)
				break
			}
			fmt.Fprintf(&b, "     %s ×%d\n", k, h.logDeaths[k])
		}
		fmt.Fprintf(&b, "   copies after the hog: %s\n", fleetFmtCopies(h.copies))
	} else {
		b.WriteString("   not measured\n")
	}
	fmt.Fprintf(&b, "   Over the whole run, members declared dead while neither side was killed or cut off on purpose: %d\n", r.runFalseDeaths)
	var fp []string
	for k := range r.runFalsePairs {
		fp = append(fp, k)
	}
	sort.Strings(fp)
	for i, k := range fp {
		if i == 12 {
			fmt.Fprintf(&b, "     … and %d more pairs\n", len(fp)-12)
			break
		}
		fmt.Fprintf(&b, "     %s ×%d\n", k, r.runFalsePairs[k])
	}

	b.WriteString("\n4. Failure detection of kill -9 (until every survivor sees the node dead; polled every ~100 ms)\n")
	w = tw()
	fmt.Fprintln(w, "node\tsurvivors\tsaw it within 60 s\tfirst\tmedian\tevery survivor\t")
	for _, d := range r.detections {
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%s\t%s\t\n", d.node, d.survivors, d.saw, fleetSecs(d.first), fleetSecs(d.median), fleetSecs(d.d))
	}
	w.Flush()

	b.WriteString("\n5. Requests through a forwarding node (n00, which serves neither cell) during each fault\n" +
		"   GET, paced 2×20/s per cell; a 503 with Retry-After is retried (≤1 s waits, ≤10 s in all); failed = final answer not 200\n")
	w = tw()
	fmt.Fprintln(w, "fault\tcell\tsent\tfailed\t404\t503\t502\tother 5xx\tno answer\tok after 503\tslowest ok\t")
	for i, fr := range r.faults {
		for _, cell := range []string{"counter", "hello"} {
			s := fr.load[cell]
			fmt.Fprintf(w, "%c\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t\n", 'a'+i, cell, s.total, s.failed, s.s404, s.s503, s.s502, s.s5xx+s.sOth, s.sErr, s.retriedOK, fleetSecs(s.slowestOK))
		}
	}
	w.Flush()
	for i, fr := range r.faults {
		fmt.Fprintf(&b, "   %c: %s; victims %v\n", 'a'+i, fr.name, fr.victims)
		for _, h := range fr.healed {
			res := "after " + fleetSecs(h.d)
			if !h.ok {
				res = "NOT within the bound (" + fleetSecs(h.d) + ")"
			}
			fmt.Fprintf(&b, "      %s: %s\n", h.what, res)
		}
		if fr.note != "" {
			fmt.Fprintf(&b, "      note: %s\n", fr.note)
		}
		if fr.err != "" {
			fmt.Fprintf(&b, "      error: %s\n", fr.err)
		}
	}

	b.WriteString("\n6. Copies of each cell (nodes whose admin API says serving)\n")
	fmt.Fprintf(&b, "   placed:   %s\n", fleetFmtCopies(r.initial))
	for i, fr := range r.faults {
		if fr.mid != nil {
			fmt.Fprintf(&b, "   %c %s: %s\n", 'a'+i, fr.midWhat, fleetFmtCopies(fr.mid))
		}
		fmt.Fprintf(&b, "   %c after:  %s\n", 'a'+i, fleetFmtCopies(fr.copies))
		if fr.catalog != nil {
			fmt.Fprintf(&b, "     n00's catalog then: %s\n", fleetFmtCopies(fr.catalog))
		}
	}

	if len(r.notes) > 0 {
		b.WriteString("\nNotes\n")
		for _, n := range r.notes {
			fmt.Fprintf(&b, "   %s\n", n)
		}
	}

	missed := 0
	b.WriteString("\n7. Aims\n")
	aim := func(ok bool, what, got string) {
		mark := "MET   "
		if !ok {
			mark = "MISSED"
			missed++
		}
		fmt.Fprintf(&b, "   %s  %s: %s\n", mark, what, got)
	}
	if h := r.hog; h != nil {
		n := max(h.logDeathTotal, h.polledDead)
		aim(n == 0 && r.runFalseDeaths == 0, "0 false deaths", fmt.Sprintf("%d during the CPU hog, %d in the whole run", n, r.runFalseDeaths))
	} else {
		aim(false, "0 false deaths", fmt.Sprintf("hog phase not run; %d in the whole run", r.runFalseDeaths))
	}
	if len(r.idle) >= 2 {
		lo, hi := r.idle[0], r.idle[len(r.idle)-1]
		pk := func(x fleetIdleResult) float64 { return fleetMean(x.tx) + fleetMean(x.rx) }
		// Flat: at the largest size at most 25% (plus 2 units of noise)
		// above the smallest.
		flat := func(a, z float64) bool { return z <= a*1.25+2 }
		got := fmt.Sprintf("%.1f ms/s at %d, %.1f ms/s at %d (%.2f×)", fleetMean(lo.cpu), lo.n, fleetMean(hi.cpu), hi.n, fleetMean(hi.cpu)/max(fleetMean(lo.cpu), 0.01))
		if lo.hostIdle < 0.1 || hi.hostIdle < 0.1 {
			// On a host with no CPU to spare a node's CPU is capped by
			// what it got: flatness cannot be shown.
			aim(false, "per-node idle CPU flat in N", got+fmt.Sprintf("; NOT SHOWN: the host was %.0f%% and %.0f%% idle (under 10%%): the nodes got less CPU than they asked for", 100*lo.hostIdle, 100*hi.hostIdle))
		} else {
			aim(flat(fleetMean(lo.cpu), fleetMean(hi.cpu)), "per-node idle CPU flat in N", got)
		}
		aim(flat(pk(lo), pk(hi)), "per-node idle packets flat in N",
			fmt.Sprintf("%.1f/s at %d, %.1f/s at %d (%.2f×)", pk(lo), lo.n, pk(hi), hi.n, pk(hi)/max(pk(lo), 0.01)))
	} else {
		aim(false, "per-node idle cost flat in N", "fewer than two sizes measured")
	}
	if len(r.faults) == 0 {
		aim(false, "0 failed idempotent requests in every fault", "no fault run")
	} else {
		var parts []string
		failed := 0
		for i, fr := range r.faults {
			n, excused := 0, 0
			for cell, s := range fr.load {
				if cell == fr.everyHolder {
					excused += s.failed
					continue
				}
				n += s.failed
			}
			failed += n
			p := fmt.Sprintf("%c %d", 'a'+i, n)
			if fr.everyHolder != "" {
				p += fmt.Sprintf(" (+%d for %s, whose every holder it killed: excepted)", excused, fr.everyHolder)
			}
			parts = append(parts, p)
		}
		aim(failed == 0 && len(r.faults) == 4, "0 failed idempotent requests in every fault except a double kill of every holder", strings.Join(parts, ", "))
		var bad []string
		for i, fr := range r.faults {
			if len(fr.copies["counter"]) != 1 {
				bad = append(bad, fmt.Sprintf("%c: %d copies", 'a'+i, len(fr.copies["counter"])))
			}
			for _, h := range fr.healed {
				if strings.Contains(h.what, "counter") && !h.ok {
					bad = append(bad, fmt.Sprintf("%c: %s not reached", 'a'+i, h.what))
				}
			}
		}
		aim(len(bad) == 0 && len(r.faults) == 4, "exactly one copy of the single-copy cell after every heal", fleetOrOK(bad))
		bad = nil
		for i, fr := range r.faults {
			measured := false
			for _, h := range fr.healed {
				measured = measured || h.spread
			}
			if (i == 1 || i == 2) && !measured {
				bad = append(bad, fmt.Sprintf("%c: not measured", 'a'+i))
			}
			for _, h := range fr.healed {
				if h.spread && (!h.ok || h.d > 5*time.Second) {
					bad = append(bad, fmt.Sprintf("%c: %s %s", 'a'+i, fleetSecs(h.d), map[bool]string{true: "", false: "(never within 30 s)"}[h.ok]))
				}
			}
			if len(fr.copies["hello"]) < cfg.spread {
				bad = append(bad, fmt.Sprintf("%c: hello on %d nodes at the end", 'a'+i, len(fr.copies["hello"])))
			}
		}
		aim(len(bad) == 0 && len(r.faults) == 4, fmt.Sprintf("spread (hello on ≥%d nodes) restored within 5 s", cfg.spread), fleetOrOK(bad))
	}
	var det []string
	slow := false
	for _, d := range r.detections {
		det = append(det, d.node+" "+fleetSecs(d.d))
		slow = slow || d.d < 0 || d.d > 2*time.Second
	}
	mark := "ok"
	if slow {
		mark = "over 2 s"
	}
	fmt.Fprintf(&b, "   (info)  detection of a real death ≤ 2 s: %s: %s\n", mark, strings.Join(det, ", "))
	if r.aborted != "" {
		missed++
	}
	fmt.Fprintf(&b, "\n%d aims missed.\n", missed)
	return b.String(), missed
}

func fleetOrOK(bad []string) string {
	if len(bad) == 0 {
		return "yes"
	}
	return strings.Join(bad, "; ")
}
