package cellwatch

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCellName(t *testing.T) {
	for in, want := range map[string]string{
		"hello.wasm":       "hello",
		"/x/y/echo.wasm":   "echo",
		".hello.wasm":      "",
		"hello.wasm.tmp":   "",
		"hello.wat":        "",
		"dir/.tmp-a.wasm":  "",
		"a.b.wasm":         "a.b",
		"noext":            "",
		"/cells/spin.wasm": "spin",
	} {
		if got := CellName(in); got != want {
			t.Errorf("CellName(%q) = %q, want %q", in, got, want)
		}
	}
}

// seen is an event with the size its file had when the event was
// delivered (-1: no file).
type seen struct {
	Event
	size int64
}

// watch runs a watcher on dir and returns its events, each with the size
// of its file read inside the callback, at the moment the watcher reported
// it: what a consumer reading the file then would get.
func watch(t *testing.T, dir string, settle time.Duration) <-chan seen {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan seen, 64)
	w := New(dir, settle, slog.New(slog.NewTextHandler(io.Discard, nil)))
	done := make(chan error, 1)
	go func() {
		done <- w.Run(ctx, func(ev Event) {
			s := seen{Event: ev, size: -1}
			if b, err := os.ReadFile(ev.Path); err == nil {
				s.size = int64(len(b))
			}
			events <- s
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return events
}

func next(t *testing.T, events <-chan seen) seen {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return seen{}
}

func none(t *testing.T, events <-chan seen, d time.Duration) {
	t.Helper()
	select {
	case ev := <-events:
		t.Fatalf("unexpected event %+v", ev)
	case <-time.After(d):
	}
}

func TestWatcher(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "old.wasm"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	settle := 150 * time.Millisecond
	events := watch(t, dir, settle)

	// Modules present at start are reported once.
	if ev := next(t, events); ev.Cell != "old" || ev.Op != Changed {
		t.Fatalf("initial scan: %+v", ev)
	}
	none(t, events, 2*settle)

	// A file written in place in pieces, each write well inside the settle
	// time, is reported once, after the last write: the size read when the
	// event is delivered (not after the writer finished) is the whole file.
	path := filepath.Join(dir, "slow.wasm")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	early := make(chan seen, 1)
	for i := 0; i < 8; i++ {
		if _, err := f.Write([]byte("chunk")); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-events:
			early <- ev
		case <-time.After(settle / 3):
		}
		if len(early) > 0 {
			break
		}
	}
	f.Close()
	if len(early) > 0 {
		ev := <-early
		t.Fatalf("reported while the file was still being written: %+v (%d of 40 bytes)", ev.Event, ev.size)
	}
	ev := next(t, events)
	if ev.Cell != "slow" || ev.Op != Changed || ev.Path != path {
		t.Fatalf("in-place write: %+v", ev)
	}
	if ev.size != 40 {
		t.Fatalf("reported with %d of 40 bytes written", ev.size)
	}
	none(t, events, 2*settle)

	// Write-then-rename: the temporary name is ignored, the rename reported.
	tmp := filepath.Join(dir, ".new.wasm.tmp")
	if err := os.WriteFile(tmp, []byte("whole"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "new.wasm")); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, events); ev.Cell != "new" || ev.Op != Changed {
		t.Fatalf("rename into place: %+v", ev)
	}

	// Removal.
	if err := os.Remove(filepath.Join(dir, "old.wasm")); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, events); ev.Cell != "old" || ev.Op != Removed {
		t.Fatalf("removal: %+v", ev)
	}

	// Other files never produce events.
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	none(t, events, 2*settle)
}

func TestWatcherMissingDir(t *testing.T) {
	w := New(filepath.Join(t.TempDir(), "absent"), time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := w.Run(context.Background(), func(Event) {}); err == nil {
		t.Fatal("watching a missing directory succeeded")
	}
}
