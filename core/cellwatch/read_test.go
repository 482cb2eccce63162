package cellwatch

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReadFileRegular(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.wasm")
	if err := os.WriteFile(p, []byte("module"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := ReadFile(p, 6)
	if err != nil || string(b) != "module" {
		t.Fatalf("ReadFile = %q, %v", b, err)
	}
	if _, err := ReadFile(p, 5); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), p) {
		t.Fatalf("over the limit: %v, want ErrTooLarge naming the file", err)
	}
	if _, err := ReadFile(filepath.Join(dir, "absent.wasm"), 10); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v, want fs.ErrNotExist", err)
	}
}

// TestReadFileFIFO: a FIFO is refused at once; a reader would otherwise
// block in open for ever.
func TestReadFileFIFO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f.wasm")
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := ReadFile(p, 1<<20); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), "FIFO") || !strings.Contains(err.Error(), p) {
			t.Fatalf("FIFO: %v, want ErrNotRegular naming a FIFO and the path", err)
		}
	case <-time.After(10 * time.Second):
		// Unblock the open so the goroutine ends.
		if w, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		t.Fatal("ReadFile blocked on a FIFO")
	}
}

// TestReadFileSymlinks: symbolic links are refused, whether they point out
// of the directory or inside it, and the target's bytes never appear in
// the error.
func TestReadFileSymlinks(t *testing.T) {
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("root:SECRETBYTES"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	inside := filepath.Join(dir, "real.wasm")
	if err := os.WriteFile(inside, []byte("\x00asm"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"out.wasm": secret, "in.wasm": inside, "dir.wasm": outside} {
		p := filepath.Join(dir, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		b, err := ReadFile(p, 1<<20)
		if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), "symbolic link") || b != nil {
			t.Fatalf("%s -> %s: %q, %v; want ErrNotRegular for a symbolic link", name, target, b, err)
		}
		if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "root") {
			t.Fatalf("error carries the target's bytes: %v", err)
		}
	}
}

// TestReadFileHugeNotRead: a file above the limit is refused from its size,
// before any of it is read: reading a sparse 600 MiB file allocates next
// to nothing.
func TestReadFileHugeNotRead(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.wasm")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(600 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = ReadFile(p, 256<<20)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "629145600 bytes") {
		t.Fatalf("600 MiB file: %v, want ErrTooLarge with its size", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Fatalf("refusing a 600 MiB file allocated %d bytes: it was read", alloc)
	}
}

func TestReadFileDirectory(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.wasm")
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(p, 10); !errors.Is(err, ErrNotRegular) {
		t.Fatalf("directory: %v", err)
	}
}
