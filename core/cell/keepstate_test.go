package cell

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/celluster/celluster/core/testbuild"
	"github.com/celluster/celluster/core/wasm"
)

// counterCell loads the Go counter example as a cell of a registry of its
// own, with keep state set as the node sets it (before the first load).
func counterCell(t *testing.T, eng *wasm.Engine, keep bool, pol Policy) (*Cell, *Registry) {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	reg := NewRegistry(eng, log, Limits{})
	t.Cleanup(func() { reg.Close(ctx) })
	if err := reg.Declare("counter"); err != nil {
		t.Fatal(err)
	}
	c := reg.Lookup("counter")
	c.SetKeepState(keep)
	if err := c.Load(ctx, testbuild.Cell(t, "counter"), "counter.wasm"); err != nil {
		t.Fatal(err)
	}
	pol.KeepState = keep
	if err := c.SetPolicy(pol); err != nil {
		t.Fatal(err)
	}
	return c, reg
}

// testEngine is an engine for one test; its cells share compiled modules.
func testEngine(t *testing.T) *wasm.Engine {
	t.Helper()
	eng, err := wasm.NewEngine(context.Background(), wasm.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close(context.Background()) })
	return eng
}

func count(t *testing.T, c *Cell) string {
	t.Helper()
	code, body := call(c, "")
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	return strings.TrimSpace(body)
}

// TestKeepStateAcrossDecayAndWake: with keep state, a cell decayed to
// zero wakes with the count its last replica had; without, from 1.
func TestKeepStateAcrossDecayAndWake(t *testing.T) {
	eng := testEngine(t)
	for _, keep := range []bool{true, false} {
		c, _ := counterCell(t, eng, keep, Policy{Min: 1, Max: 4, Warm: 1, DecayIdle: time.Nanosecond})
		for i := 1; i <= 3; i++ {
			count(t, c)
		}
		if n, err := c.DrainReplicas(context.Background(), 8); err != nil || n != 0 {
			t.Fatalf("drain to zero: %d replicas, %v", n, err)
		}
		want := "4"
		if !keep {
			want = "1"
		}
		if got := count(t, c); got != want {
			t.Fatalf("keep=%v: after decay and wake the count is %s, want %s", keep, got, want)
		}
		in := c.Info().Snapshot
		if in.Kept != keep || (keep && (in.How != "decay" || in.State == 0 || in.ID == "")) || in.Init == 0 {
			t.Fatalf("keep=%v: snapshot info %+v", keep, in)
		}
	}
}

// TestKeepStateClonesFork: new replicas continue from the state of the
// replica that served last, and then count on their own.
func TestKeepStateClonesFork(t *testing.T) {
	c, _ := counterCell(t, testEngine(t), true, Policy{Min: 1, Max: 4, Warm: 1})
	for i := 1; i <= 5; i++ {
		count(t, c)
	}
	if n, err := c.SpawnReplicas(context.Background(), 1); err != nil || n != 2 {
		t.Fatalf("clone: %d replicas, %v", n, err)
	}
	if in := c.Info().Snapshot; in.How != "fork" {
		t.Fatalf("state taken by %q, want fork", in.How)
	}
	// Both replicas continue from 5: the source and the fork answer 6
	// (which one serves is the pool's choice: take both at once).
	a, b := goCall(c, ""), goCall(c, "")
	got := []string{strings.TrimSpace((<-a).body), strings.TrimSpace((<-b).body)}
	for _, g := range got {
		if g != "6" && g != "7" {
			t.Fatalf("after the clone the replicas answered %v, want counts past 5", got)
		}
	}
}

// TestKeepStateNotAcrossModules: an upgrade to another module starts
// fresh; a reload of the same module (a new memory limit) goes on.
func TestKeepStateNotAcrossModules(t *testing.T) {
	c, _ := counterCell(t, testEngine(t), true, Policy{Min: 1, Max: 2, Warm: 1})
	for i := 1; i <= 3; i++ {
		count(t, c)
	}
	if reload, err := c.SetLimits(Limits{Memory: 64 << 20}); err != nil || !reload {
		t.Fatalf("SetLimits: reload %v, %v", reload, err)
	}
	if err := c.Load(context.Background(), testbuild.Cell(t, "counter"), "counter.wasm"); err != nil {
		t.Fatal(err)
	}
	if got := count(t, c); got != "4" {
		t.Fatalf("after a reload with a new memory limit: %s, want 4", got)
	}
	v2 := testbuild.Cell(t, "counter", "-X main.version=v2")
	if err := c.Load(context.Background(), v2, "counter.wasm"); err != nil {
		t.Fatal(err)
	}
	if got := count(t, c); got != "1" {
		t.Fatalf("after an upgrade: %s, want 1 (state never crosses modules)", got)
	}
}
