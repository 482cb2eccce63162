//go:build linux

package wasm

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/celluster/celluster/core/testbuild"
)

// threadsAtNice counts this process's threads whose nice value is nice,
// from /proc/self/task/*/stat.
func threadsAtNice(t testing.TB, nice int) int {
	t.Helper()
	stats, err := filepath.Glob("/proc/self/task/*/stat")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread ended
		}
		// Fields after the command's closing parenthesis; nice is field 19
		// of the line, the 17th after it.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if v, err := strconv.Atoi(f[16]); err == nil && v == nice {
			n++
		}
	}
	return n
}

// A background compile runs on a thread at nice 10, whose priority is put
// back when it is done; the module it makes serves like any other.
func TestBackgroundCompileRunsAtLowerPriority(t *testing.T) {
	if n := threadsAtNice(t, backgroundNice); n != 0 {
		t.Fatalf("%d threads at nice %d before the compile", n, backgroundNice)
	}
	e, _ := newEngine(t, Config{})
	src := testbuild.Cell(t, "hello")
	var seen atomic.Bool
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if threadsAtNice(t, backgroundNice) > 0 {
				seen.Store(true)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	m, err := e.Compile(t.Context(), src, CompileOptions{Background: true})
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	defer m.Release()
	if !seen.Load() {
		t.Fatalf("no thread at nice %d while the background compile ran (%s)", backgroundNice, m.CompileTime)
	}
	if os.Geteuid() == 0 { // raising a priority back needs CAP_SYS_NICE
		if n := threadsAtNice(t, backgroundNice); n != 0 {
			t.Fatalf("%d threads still at nice %d after the background compile", n, backgroundNice)
		}
	}
	fg, err := e.Compile(t.Context(), src, CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer fg.Release()
	if fg != m || m.ABI != ABIReactor {
		t.Fatalf("foreground compile after the background one: %p (abi %v), want the same module %p, a reactor", fg, m.ABI, m)
	}
}

// A foreground Compile that finds a background compile of the same module
// in progress raises that compile's thread to nice 0: a request waiting
// for a take-over is not held back by a priority meant for work nobody
// waited for.
func TestForegroundWaiterRaisesBackgroundCompile(t *testing.T) {
	heavy(t)
	if os.Geteuid() != 0 {
		t.Skip("raising a thread's priority needs CAP_SYS_NICE (run as root)")
	}
	e, _ := newEngine(t, Config{})
	src := testbuild.Cell(t, "counter")
	bg := make(chan error, 1)
	go func() {
		m, err := e.Compile(t.Context(), src, CompileOptions{Background: true})
		if err == nil {
			defer m.Release()
		}
		bg <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for threadsAtNice(t, backgroundNice) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the background compile never ran at nice 10")
		}
		time.Sleep(time.Millisecond)
	}
	fg := make(chan error, 1)
	go func() {
		m, err := e.Compile(t.Context(), src, CompileOptions{})
		if err == nil {
			m.Release()
		}
		fg <- err
	}()
	// The compile takes about a second on one worker: well before it
	// ends, no thread is left at nice 10.
	raised := false
	for !raised {
		select {
		case err := <-bg:
			t.Fatalf("the background compile ended (%v) with its thread still at nice 10", err)
		default:
		}
		raised = threadsAtNice(t, backgroundNice) == 0
		time.Sleep(time.Millisecond)
	}
	if err := <-fg; err != nil {
		t.Fatal(err)
	}
	if err := <-bg; err != nil {
		t.Fatal(err)
	}
}
