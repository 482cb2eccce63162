// Package host is the first-party telemetry source for the node itself: CPU
// use, memory, load and pressure stall information (PSI) read from /proc, as
// the signals host.cpu, host.memory, host.memory.available, host.load1 and
// host.psi.{cpu,memory,io}.
package host

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/celluster/celluster/sdk/plugin"
)

// Info describes the plugin.
var Info = plugin.Info{
	Name:        "host",
	Version:     "0.1.0",
	Description: "CPU, memory, load and pressure stall information of the node, from /proc",
}

// Source reads host metrics from a proc filesystem.
type Source struct {
	proc string
	prev cpuTimes
}

// New returns a source reading /proc.
func New() *Source { return &Source{proc: "/proc"} }

// NewAt returns a source reading the proc filesystem mounted at dir.
func NewAt(dir string) *Source { return &Source{proc: dir} }

var psiResources = []string{"cpu", "memory", "io"}

// Signals implements plugin.TelemetrySource.
func (s *Source) Signals(context.Context) ([]plugin.Signal, error) {
	sigs := []plugin.Signal{
		{Name: "host.cpu", Unit: "percent", Kind: plugin.Gauge, Help: "CPU time spent busy since the previous sample, all CPUs"},
		{Name: "host.memory", Unit: "percent", Kind: plugin.Gauge, Help: "memory in use: 100 * (1 - MemAvailable/MemTotal)"},
		{Name: "host.memory.available", Unit: "bytes", Kind: plugin.Gauge, Help: "MemAvailable"},
		{Name: "host.load1", Unit: "1", Kind: plugin.Gauge, Help: "one-minute load average"},
	}
	for _, r := range psiResources {
		if _, err := os.Stat(filepath.Join(s.proc, "pressure", r)); err == nil {
			sigs = append(sigs, plugin.Signal{Name: "host.psi." + r, Unit: "percent", Kind: plugin.Gauge,
				Help: "share of the last 10s some task stalled on " + r + " (PSI some avg10)"})
		}
	}
	return sigs, nil
}

// Stream implements plugin.TelemetrySource: one batch per interval.
func (s *Source) Stream(ctx context.Context, interval time.Duration, send func([]plugin.Sample) error) error {
	if interval <= 0 {
		interval = time.Second
	}
	if t, err := readCPU(s.proc); err == nil {
		s.prev = t
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		batch, err := s.Sample(time.Now())
		if err != nil {
			return err
		}
		if err := send(batch); err != nil {
			return err
		}
	}
}

// Sample reads every signal once. CPU use is measured since the previous
// call (or since Stream started).
func (s *Source) Sample(now time.Time) ([]plugin.Sample, error) {
	var out []plugin.Sample
	add := func(name string, v float64) {
		out = append(out, plugin.Sample{Signal: name, Value: v, Time: now})
	}
	if t, err := readCPU(s.proc); err == nil {
		if busy, ok := t.busySince(s.prev); ok {
			add("host.cpu", busy)
		}
		s.prev = t
	} else {
		return nil, err
	}
	total, avail, err := readMem(s.proc)
	if err != nil {
		return nil, err
	}
	if total > 0 {
		add("host.memory", 100*(1-float64(avail)/float64(total)))
		add("host.memory.available", float64(avail))
	}
	if l, err := readLoad(s.proc); err == nil {
		add("host.load1", l)
	}
	for _, r := range psiResources {
		if v, err := readPSI(filepath.Join(s.proc, "pressure", r)); err == nil {
			add("host.psi."+r, v)
		}
	}
	return out, nil
}

type cpuTimes struct{ busy, total uint64 }

func (t cpuTimes) busySince(prev cpuTimes) (float64, bool) {
	if prev.total == 0 || t.total <= prev.total {
		return 0, false
	}
	return 100 * float64(t.busy-prev.busy) / float64(t.total-prev.total), true
}

// readCPU reads the aggregate "cpu" line of /proc/stat: user nice system
// idle iowait irq softirq steal ...; idle and iowait are not busy.
func readCPU(proc string) (cpuTimes, error) {
	b, err := os.ReadFile(filepath.Join(proc, "stat"))
	if err != nil {
		return cpuTimes{}, fmt.Errorf("host: %w", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return cpuTimes{}, fmt.Errorf("host: %s/stat: first line %q is not the cpu line", proc, line)
	}
	var t cpuTimes
	for i, s := range f[1:] {
		if i >= 8 { // guest times are already counted in user/nice
			break
		}
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("host: %s/stat: field %d %q: %w", proc, i+1, s, err)
		}
		t.total += v
		if i != 3 && i != 4 {
			t.busy += v
		}
	}
	return t, nil
}

func readMem(proc string) (total, avail uint64, err error) {
	f, err := os.Open(filepath.Join(proc, "meminfo"))
	if err != nil {
		return 0, 0, fmt.Errorf("host: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		n, err := strconv.ParseUint(fs[0], 10, 64)
		if err != nil {
			continue
		}
		if len(fs) > 1 && fs[1] == "kB" {
			n *= 1024
		}
		switch k {
		case "MemTotal":
			total = n
		case "MemAvailable":
			avail = n
		}
	}
	if total == 0 {
		return 0, 0, fmt.Errorf("host: %s/meminfo has no MemTotal", proc)
	}
	return total, avail, sc.Err()
}

func readLoad(proc string) (float64, error) {
	b, err := os.ReadFile(filepath.Join(proc, "loadavg"))
	if err != nil {
		return 0, fmt.Errorf("host: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("host: %s/loadavg is empty", proc)
	}
	return strconv.ParseFloat(f[0], 64)
}

// readPSI returns avg10 of the "some" line of a /proc/pressure file.
func readPSI(path string) (float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "some" {
			continue
		}
		for _, kv := range f[1:] {
			if v, ok := strings.CutPrefix(kv, "avg10="); ok {
				return strconv.ParseFloat(v, 64)
			}
		}
	}
	return 0, fmt.Errorf("host: %s has no some avg10", path)
}
