package instrument

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"
)

// goModule is testdata/gomod compiled for wasip1/wasm, built once per test
// process.
var goModule struct {
	once sync.Once
	wasm []byte
	err  error
	skip string
}

// buildGoModule returns testdata/gomod compiled by the go tool for
// GOOS=wasip1 GOARCH=wasm (about 2.8 MB), skipping the test if there is no
// go binary.
func buildGoModule(tb testing.TB) []byte {
	tb.Helper()
	goModule.once.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			goModule.skip = fmt.Sprintf("no go binary to build the Go test module: %v", err)
			return
		}
		dir, err := os.MkdirTemp("", "instrument-gomod-")
		if err != nil {
			goModule.err = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "gomod.wasm")
		cmd := exec.Command(gobin, "build", "-o", out, "main.go")
		cmd.Dir = filepath.Join("testdata", "gomod")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			goModule.err = fmt.Errorf("go build testdata/gomod: %v\n%s", err, b)
			return
		}
		goModule.wasm, goModule.err = os.ReadFile(out)
	})
	if goModule.skip != "" {
		tb.Skip(goModule.skip)
	}
	if goModule.err != nil {
		tb.Fatal(goModule.err)
	}
	return goModule.wasm
}

// syncBuffer is a bytes.Buffer safe for a guest writing and a test reading.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newWASIRuntime is a compiler-engine runtime with WASI.
func newWASIRuntime(t testing.TB) wazero.Runtime {
	t.Helper()
	r := newRuntime(t, api.CoreFeaturesV2)
	wasi_snapshot_preview1.MustInstantiate(context.Background(), r)
	return r
}

// runGo compiles and runs a Go wasip1 module to completion and returns what
// it printed.
func runGo(t *testing.T, r wazero.Runtime, wasm []byte, name string) string {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	cm, err := r.CompileModule(ctx, wasm)
	if err != nil {
		t.Fatalf("compile %s: %v", name, err)
	}
	compiled := time.Since(start)
	var out syncBuffer
	cfg := wazero.NewModuleConfig().WithName(name).WithArgs("gomod").WithStdout(&out).WithStderr(&out)
	start = time.Now()
	mod, err := r.InstantiateModule(ctx, cm, cfg)
	if err != nil {
		t.Fatalf("run %s: %v\noutput:\n%s", name, err, out.String())
	}
	t.Logf("%s: compiled in %v, ran in %v", name, compiled, time.Since(start))
	mod.Close(ctx)
	return out.String()
}

// TestGoModuleRunsUnchanged instruments a real Go-compiled module and checks
// that wazero compiles it and that it prints exactly what the original does.
func TestGoModuleRunsUnchanged(t *testing.T) {
	orig := buildGoModule(t)
	start := time.Now()
	wasm := mustInstrument(t, orig, Options{InterruptGlobal: irq, YieldInterval: 1000, MaxMemoryPages: 16384})
	t.Logf("instrumented the %d-byte Go module in %v: %d bytes (+%.1f%%)",
		len(orig), time.Since(start), len(wasm), 100*float64(len(wasm)-len(orig))/float64(len(orig)))

	r := newWASIRuntime(t)
	want := runGo(t, r, orig, "original")
	if !strings.Contains(want, "primes below 100000: 9592") {
		t.Fatalf("the original Go module printed:\n%s", want)
	}
	if got := runGo(t, r, wasm, "instrumented"); got != want {
		t.Errorf("instrumented Go module printed\n%s\nwant\n%s", got, want)
	}
	// The merged form, with loop counters added to every function with a
	// loop, as the node uses it.
	merged := mustInstrument(t, orig, Options{InterruptGlobal: irq, YieldInterval: 1000, CountdownGlobal: "cd", MaxMemoryPages: 16384})
	if got := runGo(t, r, merged, "merged"); got != want {
		t.Errorf("Go module instrumented in merged form printed\n%s\nwant\n%s", got, want)
	}
}

// TestGoModuleInterrupted runs the Go module in its spinning mode (an endless
// for loop in main) and stops it with the interrupt global, collecting
// garbage in the host meanwhile.
func TestGoModuleInterrupted(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("no go binary to build the Go test module: %v", err)
	}
	if !inChild(t, 3*childTimeout) {
		return
	}
	ctx := context.Background()
	wasm := mustInstrument(t, buildGoModule(t), Options{InterruptGlobal: irq, YieldInterval: 1000})
	r := newWASIRuntime(t)
	var out syncBuffer
	// No start functions: _start is called below, so that the module (and
	// its interrupt global) is at hand while it runs.
	cfg := wazero.NewModuleConfig().WithArgs("gomod", "spin").WithStdout(&out).WithStderr(&out).WithStartFunctions()
	mod, err := r.InstantiateWithConfig(ctx, wasm, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := callAsync(mod, "_start")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "spinning") {
		select {
		case res := <-done:
			t.Fatalf("_start returned before spinning: %v; output:\n%s", res.err, out.String())
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Go module did not start spinning; output:\n%s", out.String())
		}
	}
	time.Sleep(20 * time.Millisecond)
	for i := 0; i < 3; i++ {
		start := time.Now()
		runtime.GC()
		t.Logf("host GC with the Go guest spinning took %v", time.Since(start))
	}
	setInterrupt(t, mod, 1)
	res := <-done
	var exit *sys.ExitError
	if res.err == nil || errors.As(res.err, &exit) || !strings.Contains(res.err.Error(), "unreachable") {
		t.Fatalf("_start after the interrupt: %v; want the unreachable trap", res.err)
	}
}

// BenchmarkInstrument measures Instrument on the Go-compiled module.
func BenchmarkInstrument(b *testing.B) {
	wasm := buildGoModule(b)
	for _, bc := range []struct {
		name string
		opts Options
	}{
		{"interrupt", Options{InterruptGlobal: irq}},
		{"interrupt+yield+memcap", Options{InterruptGlobal: irq, YieldInterval: 1000, MaxMemoryPages: 16384}},
		{"memcap-only", Options{MaxMemoryPages: 16384}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(wasm)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Instrument(wasm, bc.opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGoModule runs the Go module in its "bench" mode (a prime sieve
// up to 3e6 and fib(30), tens of milliseconds), uninstrumented and
// instrumented, for the cost of the checks on real code.
func BenchmarkGoModule(b *testing.B) {
	ctx := context.Background()
	orig := buildGoModule(b)
	for _, v := range []struct {
		name string
		opts *Options
	}{
		{"plain", nil},
		{"interrupt", &Options{InterruptGlobal: irq}},
		{"interrupt+yield", &Options{InterruptGlobal: irq, YieldInterval: 1000}},
	} {
		wasm := orig
		if v.opts != nil {
			var err error
			if wasm, err = Instrument(orig, *v.opts); err != nil {
				b.Fatal(err)
			}
		}
		r := newWASIRuntime(b)
		cm, err := r.CompileModule(ctx, wasm)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(v.name, func(b *testing.B) {
			for b.Loop() {
				var out bytes.Buffer
				mod, err := r.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName("").WithArgs("gomod", "bench").WithStdout(&out))
				if err != nil {
					b.Fatal(err)
				}
				mod.Close(ctx)
			}
		})
	}
}
