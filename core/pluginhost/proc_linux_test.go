package pluginhost

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Linux sends the parent-death signal when the thread that forked exits,
// and the Go runtime ends a thread whose goroutine exits while locked to
// it. A plugin started from such a goroutine must survive the thread: it
// was forked from the forker thread, which never exits.
func TestPluginSurvivesTheThreadThatStartedIt(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skipf("needs sleep(1) on PATH: %v", err)
	}
	type started struct {
		pid, tid int
		m0       bool
		err      error
	}
	// Holding this goroutine's thread keeps the one below off it (it may be
	// the main thread).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var r started
	for range 100 {
		res := make(chan started, 1)
		go func() {
			runtime.LockOSThread()
			if unix.Gettid() == os.Getpid() {
				// The main thread is never ended (the runtime parks it
				// instead): try another.
				runtime.UnlockOSThread()
				res <- started{m0: true}
				return
			}
			// Never unlocked: the runtime ends this thread.
			g := &groupProc{cmd: exec.Command(sleep, "60")}
			err := g.start()
			pid := 0
			if err == nil {
				pid = g.pid
				go func() { _ = g.wait() }()
			}
			res <- started{pid: pid, tid: unix.Gettid(), err: err}
		}()
		if r = <-res; !r.m0 {
			break
		}
	}
	if r.m0 {
		t.Fatal("every goroutine ran on the main thread")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { _ = syscall.Kill(r.pid, syscall.SIGKILL) })
	task := fmt.Sprintf("/proc/self/task/%d", r.tid)
	waitFor(t, 10*time.Second, "the locked thread to exit", func() bool {
		_, err := os.Stat(task)
		return os.IsNotExist(err)
	})
	// A parent-death signal is sent as the thread exits; give a wrongly
	// forked child the time to die of it.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if !alive(r.pid) {
			t.Fatalf("the process %d died with the thread that asked for it", r.pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A pinned executable runs from the file that was hashed: replacing the path
// between the hash and the start (here: another plugin renamed over it)
// does not get the replacement run. The replacement is then refused at
// launch, its sum named.
func TestPinnedBytesAreTheBytesRun(t *testing.T) {
	dir := t.TempDir()
	path := install(t, dir, "parser", "p")
	pin, err := sha256File(path)
	if err != nil {
		t.Fatal(err)
	}
	other := install(t, t.TempDir(), "ticker", "ticker")
	otherSum, _ := sha256File(other)
	var once sync.Once
	afterHash = func(string) {
		once.Do(func() {
			if err := os.Rename(other, path); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(func() { afterHash = nil })

	m, _ := startManager(t, Config{Dir: dir, Pins: map[string]string{"p": pin}})
	s := statusOf(t, m, "parser") // what describe said: the hashed binary ran
	if s.Kind != "dev.celluster.intent.v1" {
		t.Fatalf("described as %+v: the replacement ran", s)
	}
	want := fmt.Sprintf("sha256 mismatch: %s has %s, pinned %s", path, otherSum, pin)
	if s.State != StateFailed || !strings.Contains(s.LastError, want) || s.PID != 0 {
		t.Fatalf("launch of the replaced file: %+v, want refused with %q", s, want)
	}
}

// BenchmarkProcessStart times starting one process (fork and exec of
// true(1), up to exec.Cmd.Start returning; reaping is outside the timed
// span) as a plugin is started — from the forker thread, in a group of its
// own, with a parent-death signal — beside a plain exec.Cmd.Start from the
// calling goroutine.
func BenchmarkProcessStart(b *testing.B) {
	tru, err := exec.LookPath("true")
	if err != nil {
		b.Skipf("needs true(1) on PATH: %v", err)
	}
	b.Run("plain", func(b *testing.B) {
		for b.Loop() {
			cmd := exec.Command(tru)
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			_ = cmd.Wait()
			b.StartTimer()
		}
	})
	b.Run("plugin", func(b *testing.B) {
		for b.Loop() {
			g := &groupProc{cmd: exec.Command(tru)}
			if err := g.start(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			_ = g.wait()
			b.StartTimer()
		}
	})
}
