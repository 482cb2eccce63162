package instrument

import (
	"context"
	"errors"
	"math"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
)

// interruptTimeout bounds how long a test waits for an interrupted call to
// return, so a broken check fails the test instead of hanging it.
const interruptTimeout = 5 * time.Second

// allFeatures is WebAssembly 2.0 plus the experimental features wazero has
// and features.wasm uses.
const allFeatures = api.CoreFeaturesV2 | experimental.CoreFeaturesTailCall | experimental.CoreFeaturesThreads

func newRuntime(t testing.TB, features api.CoreFeatures) wazero.Runtime {
	t.Helper()
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler().WithCoreFeatures(features))
	t.Cleanup(func() { r.Close(ctx) })
	return r
}

func instantiate(t testing.TB, r wazero.Runtime, wasm []byte, name string) api.Module {
	t.Helper()
	ctx := context.Background()
	mod, err := r.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().WithName(name))
	if err != nil {
		t.Fatalf("instantiate %s: %v", name, err)
	}
	return mod
}

func setInterrupt(t testing.TB, mod api.Module, v uint64) {
	t.Helper()
	g, ok := mod.ExportedGlobal(irq).(api.MutableGlobal)
	if !ok {
		t.Fatalf("module exports no mutable global %q", irq)
	}
	g.Set(v)
}

type callResult struct {
	results []uint64
	err     error
}

// callAsync calls fn in a goroutine and returns the channel its result
// arrives on.
func callAsync(mod api.Module, fn string, params ...uint64) <-chan callResult {
	done := make(chan callResult, 1)
	go func() {
		res, err := mod.ExportedFunction(fn).Call(context.Background(), params...)
		done <- callResult{res, err}
	}()
	return done
}

// expectInterrupted starts fn, checks that it is still running after a
// while, sets the interrupt global and waits for the unreachable trap.
func expectInterrupted(t *testing.T, mod api.Module, fn string, params ...uint64) {
	t.Helper()
	done := callAsync(mod, fn, params...)
	select {
	case res := <-done:
		t.Fatalf("%s returned before the interrupt: %v, %v", fn, res.results, res.err)
	case <-time.After(100 * time.Millisecond):
	}
	setAt := time.Now()
	setInterrupt(t, mod, 1)
	select {
	case res := <-done:
		if res.err == nil || !strings.Contains(res.err.Error(), "unreachable") {
			t.Fatalf("%s after the interrupt: results %v, error %v; want the unreachable trap", fn, res.results, res.err)
		}
		t.Logf("%s stopped %v after the interrupt was set", fn, time.Since(setAt))
	case <-time.After(interruptTimeout):
		// The goroutine keeps spinning; the test binary ends it on exit.
		t.Fatalf("%s still running %v after the interrupt was set", fn, interruptTimeout)
	}
}

// childEnv names the environment variable that tells a child process of the
// test binary which test to run in earnest.
const childEnv = "INSTRUMENT_TEST_CHILD"

// childTimeout bounds a child process running a spinning guest.
const childTimeout = 60 * time.Second

// inChild makes the calling test run in a child process of the test binary,
// killed after timeout: it returns true in the child, where the caller goes
// on with the test, and in the parent it waits for the child and reports
// its result.
//
// Every test that lets a guest spin runs this way, because a guest that
// never returns can freeze its whole process (see Options.YieldInterval):
// only a process boundary makes the timeout reliable.
func inChild(t *testing.T, timeout time.Duration) bool {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		return true
	}
	timedOut, out, err := runChild(t, timeout)
	if timedOut {
		t.Fatalf("child process still running after %v, killed; its output:\n%s", timeout, out)
	}
	if err != nil {
		t.Fatalf("child process: %v; its output:\n%s", err, out)
	}
	t.Logf("child process output:\n%s", out)
	return false
}

// runChild runs the calling test in a child process, killed after timeout.
func runChild(t *testing.T, timeout time.Duration) (timedOut bool, out []byte, err error) {
	t.Helper()
	parts := strings.Split(t.Name(), "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run="+strings.Join(parts, "/"), "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+t.Name())
	out, err = cmd.CombinedOutput()
	if ctx.Err() != nil {
		return true, out, nil
	}
	if err == nil && !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		err = errors.New("the child did not run the test")
	}
	return false, out, err
}

// TestInterruptStopsInfiniteLoops runs guests that loop forever and stops
// them by setting the interrupt global from another goroutine. With only the
// interrupt check injected (no yield) this also shows that wazero's compiler
// does not hoist the global's load out of the loop. The garbage collector is
// off in the child process, so no stop-the-world phase can wait for the
// spinning guest.
func TestInterruptStopsInfiniteLoops(t *testing.T) {
	if !inChild(t, childTimeout) {
		return
	}
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	wasm := mustInstrument(t, readTestdata(t, "basic.wasm"), Options{InterruptGlobal: irq})
	r := newRuntime(t, api.CoreFeaturesV2)
	for _, fn := range []string{
		"spin",  // the body is a loop: only the loop header check applies
		"spin2", // a loop after other code
	} {
		t.Run(fn, func(t *testing.T) {
			mod := instantiate(t, r, wasm, fn)
			expectInterrupted(t, mod, fn)

			// Clearing the flag lets the same instance run again.
			setInterrupt(t, mod, 0)
			res, err := mod.ExportedFunction("sum").Call(context.Background(), 100)
			if err != nil || res[0] != 5050 {
				t.Fatalf("sum(100) after clearing the interrupt: %v, %v", res, err)
			}
		})
	}
}

func TestInterruptStopsRecursion(t *testing.T) {
	ctx := context.Background()
	orig := readTestdata(t, "basic.wasm")
	wasm := mustInstrument(t, orig, Options{InterruptGlobal: irq})
	r := newRuntime(t, api.CoreFeaturesV2)

	// Uninstrumented, unbounded recursion ends in a stack overflow.
	plain := instantiate(t, r, orig, "plain")
	if _, err := plain.ExportedFunction("recurse").Call(ctx, 0); err == nil || !strings.Contains(err.Error(), "stack overflow") {
		t.Fatalf("uninstrumented recurse: %v, want a stack overflow", err)
	}

	// Instrumented, with the flag set before the call, the entry check
	// traps at once.
	mod := instantiate(t, r, wasm, "instrumented")
	setInterrupt(t, mod, 1)
	_, err := mod.ExportedFunction("recurse").Call(ctx, 0)
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("recurse with the interrupt set: %v, want the unreachable trap", err)
	}
}

func TestInterruptStopsTailCallsWithoutLoops(t *testing.T) {
	if !inChild(t, childTimeout) {
		return
	}
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	orig := readTestdata(t, "features.wasm")
	wasm := mustInstrument(t, orig, Options{InterruptGlobal: irq})
	r := newRuntime(t, allFeatures)
	// tail runs forever through return_call, without a loop and without
	// growing the stack: only the function entry check can stop it.
	mod := instantiate(t, r, wasm, "features")
	expectInterrupted(t, mod, "tail", 0)
}

// TestYieldLetsGCFinish spins guests instrumented with YieldInterval while
// the garbage collector runs: every collection must finish, and the
// interrupt must still stop the guest.
func TestYieldLetsGCFinish(t *testing.T) {
	if !inChild(t, childTimeout) {
		return
	}
	opts := Options{InterruptGlobal: irq, YieldInterval: 1000}
	for _, tc := range []struct {
		file, fn string
		params   []uint64
	}{
		{"basic.wasm", "spin", nil},
		{"basic.wasm", "spin2", nil},
		{"features.wasm", "tail", []uint64{0}},
	} {
		t.Run(tc.fn, func(t *testing.T) {
			wasm := mustInstrument(t, readTestdata(t, tc.file), opts)
			mod := instantiate(t, newRuntime(t, allFeatures), wasm, tc.fn)
			done := callAsync(mod, tc.fn, tc.params...)
			for i := 0; i < 5; i++ {
				time.Sleep(10 * time.Millisecond)
				start := time.Now()
				runtime.GC()
				t.Logf("GC %d with %s spinning took %v", i, tc.fn, time.Since(start))
			}
			select {
			case res := <-done:
				t.Fatalf("%s returned before the interrupt: %v, %v", tc.fn, res.results, res.err)
			default:
			}
			setInterrupt(t, mod, 1)
			res := <-done
			if res.err == nil || !strings.Contains(res.err.Error(), "unreachable") {
				t.Fatalf("%s after the interrupt: %v, %v; want the unreachable trap", tc.fn, res.results, res.err)
			}
		})
	}
}

// TestWithoutYieldGCWaitsForTheGuest shows why YieldInterval exists: with
// only the interrupt check, a spinning guest holds its thread in compiled
// code that the Go scheduler cannot preempt, so runtime.GC never finishes
// its stop-the-world phase and the process freezes (it is run in a child
// process that is killed). If this test ever fails because the GC finished,
// wazero has learned to preempt compiled code and the yield is no longer
// needed.
func TestWithoutYieldGCWaitsForTheGuest(t *testing.T) {
	if os.Getenv(childEnv) == t.Name() {
		wasm := mustInstrument(t, readTestdata(t, "basic.wasm"), Options{InterruptGlobal: irq})
		mod := instantiate(t, newRuntime(t, api.CoreFeaturesV2), wasm, "spin")
		callAsync(mod, "spin")
		time.Sleep(50 * time.Millisecond)
		runtime.GC()
		t.Log("GC finished while the guest was spinning")
		os.Exit(0) // the guest still spins; don't wait for it
	}
	if testing.Short() {
		t.Skip("waits for a child process to time out")
	}
	timedOut, out, err := runChild(t, 5*time.Second)
	if !timedOut {
		t.Fatalf("the child process finished (error %v): the GC did not wait for the spinning guest; output:\n%s", err, out)
	}
}

// TestResultsUnchanged runs the same calls on the uninstrumented and the
// instrumented module and checks that the results agree.
func TestResultsUnchanged(t *testing.T) {
	ctx := context.Background()
	type call struct {
		fn     string
		params []uint64
	}
	tests := []struct {
		file     string
		features api.CoreFeatures
		calls    []call
	}{
		{"basic.wasm", api.CoreFeaturesV2, []call{
			{"sum", []uint64{0}},
			{"sum", []uint64{1}},
			{"sum", []uint64{100000}},
			{"nested", []uint64{1}},
			{"nested", []uint64{37}},
			{"multi", []uint64{12345}},
			{"brtable", []uint64{0}},
			{"brtable", []uint64{1}},
			{"brtable", []uint64{2}},
			{"brtable", []uint64{99}},
			{"simd", []uint64{1}},
			{"simd", []uint64{10}},
			{"bulk", []uint64{100}},
			{"indirect", []uint64{0, 21}},
			{"indirect", []uint64{1, 21}},
			{"refs", nil},
			{"convert", []uint64{api.EncodeF64(1e10)}},
			{"convert", []uint64{api.EncodeF64(-3.7)}},
			{"convert", []uint64{api.EncodeF64(math.NaN())}},
			{"get", nil},
			{"grow", []uint64{2}},
		}},
		{"imported.wasm", api.CoreFeaturesV2, []call{
			{"count", []uint64{1}},
			{"count", []uint64{1000}},
		}},
		{"features.wasm", allFeatures, []call{
			{"countdown", []uint64{1000000, 0}},
			{"atomics", []uint64{1000}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			orig := readTestdata(t, tc.file)
			wasm := mustInstrument(t, orig, Options{InterruptGlobal: irq})
			r := newRuntime(t, tc.features)
			if tc.file == "imported.wasm" {
				instantiate(t, r, readTestdata(t, "exporter.wasm"), "env")
			}
			plain := instantiate(t, r, orig, "plain")
			inst := instantiate(t, r, wasm, "instrumented")
			for _, c := range tc.calls {
				want, err := plain.ExportedFunction(c.fn).Call(ctx, c.params...)
				if err != nil {
					t.Fatalf("uninstrumented %s%v: %v", c.fn, c.params, err)
				}
				got, err := inst.ExportedFunction(c.fn).Call(ctx, c.params...)
				if err != nil {
					t.Fatalf("instrumented %s%v: %v", c.fn, c.params, err)
				}
				if len(got) != len(want) || (len(got) > 0 && got[0] != want[0]) {
					t.Errorf("%s%v = %v instrumented, %v uninstrumented", c.fn, c.params, got, want)
				}
			}
		})
	}
}

func TestMaxMemoryPagesWithWazero(t *testing.T) {
	ctx := context.Background()
	grow := func(t *testing.T, mod api.Module, pages uint64) int32 {
		t.Helper()
		res, err := mod.ExportedFunction("grow").Call(ctx, pages)
		if err != nil {
			t.Fatalf("grow(%d): %v", pages, err)
		}
		return int32(res[0])
	}
	maxOf := func(mod api.Module) uint32 {
		max, ok := mod.ExportedMemory("memory").Definition().Max()
		if !ok {
			return 0
		}
		return max
	}

	t.Run("no maximum", func(t *testing.T) {
		wasm := mustInstrument(t, readTestdata(t, "basic.wasm"), Options{InterruptGlobal: irq, MaxMemoryPages: 4})
		mod := instantiate(t, newRuntime(t, api.CoreFeaturesV2), wasm, "basic")
		if m := maxOf(mod); m != 4 {
			t.Errorf("memory maximum %d, want 4", m)
		}
		if got := grow(t, mod, 3); got != 1 {
			t.Errorf("grow(3) = %d, want 1 (the old size)", got)
		}
		if got := grow(t, mod, 1); got != -1 {
			t.Errorf("grow(1) at the cap = %d, want -1", got)
		}
		if got := grow(t, mod, 0); got != 4 {
			t.Errorf("grow(0) = %d, want 4", got)
		}
	})

	t.Run("larger maximum lowered", func(t *testing.T) {
		wasm := mustInstrument(t, readTestdata(t, "memmax.wasm"), Options{MaxMemoryPages: 4})
		mod := instantiate(t, newRuntime(t, api.CoreFeaturesV2), wasm, "memmax")
		if m := maxOf(mod); m != 4 {
			t.Errorf("memory maximum %d, want 4", m)
		}
		if got := grow(t, mod, 3); got != -1 {
			t.Errorf("grow(3) from 2 pages past the cap of 4 = %d, want -1", got)
		}
		if got := grow(t, mod, 2); got != 2 {
			t.Errorf("grow(2) = %d, want 2", got)
		}
	})

	t.Run("smaller maximum kept", func(t *testing.T) {
		wasm := mustInstrument(t, readTestdata(t, "memmax.wasm"), Options{MaxMemoryPages: 5000})
		mod := instantiate(t, newRuntime(t, api.CoreFeaturesV2), wasm, "memmax")
		if m := maxOf(mod); m != 1000 {
			t.Errorf("memory maximum %d, want 1000", m)
		}
	})

	t.Run("cap above the 32-bit limit", func(t *testing.T) {
		wasm := mustInstrument(t, readTestdata(t, "basic.wasm"), Options{MaxMemoryPages: 1 << 20})
		mod := instantiate(t, newRuntime(t, api.CoreFeaturesV2), wasm, "basic")
		if m := maxOf(mod); m != 65536 {
			t.Errorf("memory maximum %d, want 65536", m)
		}
	})

	t.Run("minimum above the cap", func(t *testing.T) {
		_, err := Instrument(readTestdata(t, "bigmin.wasm"), Options{MaxMemoryPages: 256})
		if !errors.Is(err, ErrMemoryCap) || !strings.Contains(err.Error(), "300") || !strings.Contains(err.Error(), "256") {
			t.Fatalf("error %v, want ErrMemoryCap naming 300 and 256", err)
		}
	})

	t.Run("imported memory left alone", func(t *testing.T) {
		wasm := mustInstrument(t, readTestdata(t, "imported.wasm"), Options{InterruptGlobal: irq, MaxMemoryPages: 4})
		r := newRuntime(t, api.CoreFeaturesV2)
		instantiate(t, r, readTestdata(t, "exporter.wasm"), "env")
		mod := instantiate(t, r, wasm, "imported")
		if got := grow(t, mod, 10); got != 1 {
			t.Errorf("grow(10) of the imported memory = %d, want 1: the cap must not apply", got)
		}
		// The interrupt global comes after the imported and the defined global.
		res, err := mod.ExportedFunction("count").Call(ctx, 10)
		if err != nil || res[0] != 1030 {
			t.Errorf("count(10) = %v, %v; want 1030", res, err)
		}
	})
}

func TestOutputValidatesInWazero(t *testing.T) {
	ctx := context.Background()
	r := newRuntime(t, allFeatures)
	for _, f := range testdataModules(t) {
		for _, opts := range []Options{
			{InterruptGlobal: irq},
			{InterruptGlobal: irq, MaxMemoryPages: 1000},
		} {
			out := mustInstrument(t, readTestdata(t, f), opts)
			cm, err := r.CompileModule(ctx, out)
			if err != nil {
				t.Errorf("%s instrumented with %+v: wazero rejects it: %v", f, opts, err)
				continue
			}
			cm.Close(ctx)
		}
	}
}
