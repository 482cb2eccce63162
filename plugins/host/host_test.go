package host

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/celluster/celluster/sdk/plugin"
	"github.com/celluster/celluster/sdk/plugin/plugintest"
)

// TestSampleFixture reads a fixed proc tree, then advances its CPU counters.
func TestSampleFixture(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata/proc")); err != nil {
		t.Fatal(err)
	}
	s := NewAt(dir)
	sigs, err := s.Signals(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, sg := range sigs {
		names[sg.Name] = true
	}
	// The fixture has cpu and memory pressure files but no io one.
	for _, want := range []string{"host.cpu", "host.memory", "host.memory.available", "host.load1", "host.psi.cpu", "host.psi.memory"} {
		if !names[want] {
			t.Errorf("signal %s not offered", want)
		}
	}
	if names["host.psi.io"] {
		t.Error("host.psi.io offered without /proc/pressure/io")
	}

	first, err := s.Sample(time.Unix(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	got := values(first)
	if _, ok := got["host.cpu"]; ok {
		t.Error("host.cpu reported without a previous sample")
	}
	want := map[string]float64{"host.memory": 75, "host.memory.available": 250 * 1024, "host.load1": 0.5, "host.psi.cpu": 5.4, "host.psi.memory": 1.25}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	// 100 more busy jiffies (user) and 300 more idle: 25 % busy.
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte("cpu  200 0 100 1000 100 0 0 0 0 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	second, err := s.Sample(time.Unix(2, 0))
	if err != nil {
		t.Fatal(err)
	}
	if v := values(second)["host.cpu"]; v != 25 {
		t.Fatalf("host.cpu = %v, want 25", v)
	}
}

func TestBrokenProc(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte("intr 1 2 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewAt(dir).Sample(time.Now()); err == nil {
		t.Fatal("a stat file without the cpu line was accepted")
	}
}

// TestConformance runs the real /proc source through the SDK's plugin
// conformance suite, across the real gRPC boundary.
func TestConformance(t *testing.T) {
	plugintest.TelemetrySuite(t, Info, New())
}

func values(samples []plugin.Sample) map[string]float64 {
	m := map[string]float64{}
	for _, s := range samples {
		m[s.Signal] = s.Value
	}
	return m
}
