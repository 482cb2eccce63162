package wasm

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func testdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newEngine(t testing.TB, cfg Config) (*Engine, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e, err := NewEngine(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(context.Background()) })
	return e, logs
}

func TestClassifyRejects(t *testing.T) {
	e, _ := newEngine(t, Config{})
	cases := []struct {
		file string
		want string
	}{
		{"noexports.wasm", "exports neither cel_alloc/cel_handle (reactor ABI) nor _start (command ABI)"},
		{"badimport.wasm", "imports cel.kv_get, env.foo, which this node does not provide"},
		{"badsig.wasm", "export cel_handle has signature (i32) -> (i32), want (i32, i32) -> (i64)"},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			_, err := e.Compile(context.Background(), testdata(t, c.file), CompileOptions{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Compile error = %v, want it to contain %q", err, c.want)
			}
		})
	}
	_, err := e.Compile(context.Background(), []byte("\x00asm\x01\x00\x00\x00\x01\xff"), CompileOptions{})
	if err == nil || !strings.Contains(err.Error(), "not a usable WebAssembly module") {
		t.Fatalf("truncated module: error = %v", err)
	}
	_, err = e.Compile(context.Background(), []byte("#!/bin/sh\necho hi\n"), CompileOptions{})
	if err == nil {
		t.Fatal("a shell script compiled")
	}
}

func TestCompileOncePerContent(t *testing.T) {
	e, _ := newEngine(t, Config{})
	src := testdata(t, "tiny.wasm")
	var wg sync.WaitGroup
	mods := make([]*Module, 8)
	for i := range mods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := e.Compile(context.Background(), src, CompileOptions{MemoryLimit: 1 << 20})
			if err != nil {
				t.Error(err)
				return
			}
			mods[i] = m
		}()
	}
	wg.Wait()
	if n := e.Compilations(); n != 1 {
		t.Fatalf("8 concurrent compiles of one module ran %d compilations, want 1", n)
	}
	for _, m := range mods[1:] {
		if m != mods[0] {
			t.Fatal("concurrent compiles returned different modules")
		}
	}
	if mods[0].ABI != ABIReactor || len(mods[0].SHA256) != 64 {
		t.Fatalf("module = %+v", mods[0])
	}
	// A different memory limit is a different compiled module.
	m2, err := e.Compile(context.Background(), src, CompileOptions{MemoryLimit: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if m2 == mods[0] || e.Compilations() != 2 {
		t.Fatalf("memory limit not part of the compile key (compilations %d)", e.Compilations())
	}
	for _, m := range mods {
		m.Release()
	}
	m2.Release()
	// Released modules are retained: compiling again is a memory hit.
	m3, err := e.Compile(context.Background(), src, CompileOptions{MemoryLimit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer m3.Release()
	if e.Compilations() != 2 {
		t.Fatalf("retained module compiled again (compilations %d)", e.Compilations())
	}
}

func TestReactorHandle(t *testing.T) {
	e, logs := newEngine(t, Config{})
	m, err := e.Compile(context.Background(), testdata(t, "tiny.wasm"), CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Release()
	r, err := m.NewReactor(context.Background(), InstanceConfig{Cell: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	want := []byte("\x01\x00\xc8\x00\x00\x00\x00\x00\x02\x00\x00\x00ok")
	for i := 0; i < 3; i++ {
		out, err := r.Handle(context.Background(), time.Second, []byte("request"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, want) {
			t.Fatalf("response %q, want %q", out, want)
		}
	}
	// A big request makes the guest call cel.log.
	if _, err := r.Handle(context.Background(), time.Second, make([]byte, 2000)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "big request") || !strings.Contains(logs.String(), "cell=tiny") {
		t.Fatalf("guest log line missing from logs:\n%s", logs.String())
	}
}

func TestReactorBadPointers(t *testing.T) {
	e, logs := newEngine(t, Config{})
	m, err := e.Compile(context.Background(), testdata(t, "badptr.wasm"), CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Release()
	r, err := m.NewReactor(context.Background(), InstanceConfig{Cell: "badptr"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	_, err = r.Handle(context.Background(), time.Second, []byte("x"))
	var te *TrapError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "outside memory") {
		t.Fatalf("Handle error = %v, want a TrapError about a response outside memory", err)
	}
	if !strings.Contains(logs.String(), "cel.log: message out of bounds") {
		t.Fatalf("out-of-bounds cel.log not reported:\n%s", logs.String())
	}
}

func TestTimeLimitStopsLoop(t *testing.T) {
	for _, mode := range []InterruptMode{InterruptEpoch, InterruptContext} {
		t.Run(mode.String(), func(t *testing.T) {
			e, _ := newEngine(t, Config{Interrupt: mode})
			m, err := e.Compile(context.Background(), testdata(t, "loop.wasm"), CompileOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Release()
			r, err := m.NewReactor(context.Background(), InstanceConfig{Cell: "loop"})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close(context.Background())
			done := make(chan error, 1)
			go func() {
				_, err := r.Handle(context.Background(), 50*time.Millisecond, []byte("x"))
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, ErrTimeout) {
					t.Fatalf("Handle error = %v, want ErrTimeout", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("a looping guest was not stopped by its time limit")
			}
		})
	}
}

func TestCancelStopsLoop(t *testing.T) {
	e, _ := newEngine(t, Config{})
	m, err := e.Compile(context.Background(), testdata(t, "loop.wasm"), CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Release()
	r, err := m.NewReactor(context.Background(), InstanceConfig{Cell: "loop"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := r.Handle(ctx, 0, []byte("x"))
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, ErrCanceled) {
			t.Fatalf("Handle error = %v, want ErrCanceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a looping guest was not stopped when its context ended")
	}
}

func TestMemoryLimit(t *testing.T) {
	e, _ := newEngine(t, Config{})
	// 4 MiB cap: the guest starts with one 64 KiB page and grows 1 MiB a call.
	m, err := e.Compile(context.Background(), testdata(t, "grow.wasm"), CompileOptions{MemoryLimit: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Release()
	r, err := m.NewReactor(context.Background(), InstanceConfig{Cell: "grow"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	var calls int
	for calls = 0; calls < 10; calls++ {
		if _, err = r.Handle(context.Background(), time.Second, []byte("x")); err != nil {
			break
		}
	}
	var te *TrapError
	if !errors.As(err, &te) {
		t.Fatalf("after %d calls: error = %v, want a trap once memory.grow fails", calls, err)
	}
	if calls != 3 {
		t.Fatalf("guest grew %d times before failing, want 3 (1 page + 3 MiB fits in 4 MiB)", calls)
	}
	if r.MemorySize() > 4<<20 {
		t.Fatalf("memory grew to %d bytes, past the 4 MiB limit", r.MemorySize())
	}
}

func TestDiskCacheReused(t *testing.T) {
	dir := t.TempDir()
	src := testdata(t, "tiny.wasm")
	var first string
	for i := 0; i < 2; i++ {
		e, _ := newEngine(t, Config{CacheDir: dir})
		m, err := e.Compile(context.Background(), src, CompileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m.Release()
		e.Close(context.Background())
		files := cacheFiles(t, dir)
		if len(files) == 0 {
			t.Fatal("compilation cache directory is empty after a compile")
		}
		if i == 0 {
			first = strings.Join(files, ",")
		} else if got := strings.Join(files, ","); got != first {
			t.Fatalf("second engine wrote new cache entries:\nfirst  %s\nsecond %s", first, got)
		}
	}
}

func cacheFiles(t testing.TB, dir string) []string {
	var out []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			out = append(out, strings.TrimPrefix(p, dir)+"@"+fi.ModTime().String())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCacheWriteFailureServesUncached: when the disk cache cannot be
// written (here its directory is replaced by a file, as a full or
// read-only disk would refuse it), the module still compiles and serves,
// and says why it is not cached; a bad module still fails with its own
// error.
func TestCacheWriteFailureServesUncached(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	e, logs := newEngine(t, Config{CacheDir: dir})
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, mem := range []uint64{0, 1 << 20} { // the second goes straight to the uncached runtime
		m, err := e.Compile(context.Background(), testdata(t, "tiny.wasm"), CompileOptions{MemoryLimit: mem})
		if err != nil {
			t.Fatalf("compile %d with a broken cache: %v", i, err)
		}
		if !strings.Contains(m.CacheError, "uncached") || !strings.Contains(m.CacheError, "not a directory") {
			t.Fatalf("CacheError = %q, want the cache's failure", m.CacheError)
		}
		r, err := m.NewReactor(context.Background(), InstanceConfig{Cell: "tiny"})
		if err != nil {
			t.Fatal(err)
		}
		out, err := r.Handle(context.Background(), time.Second, []byte("request"))
		if err != nil || !bytes.HasSuffix(out, []byte("ok")) {
			t.Fatalf("uncached module answered %q, %v", out, err)
		}
		r.Close(context.Background())
		m.Release()
	}
	if !strings.Contains(logs.String(), "compile cache write failed") {
		t.Fatalf("no log of the cache failure:\n%s", logs.String())
	}
	if _, err := e.Compile(context.Background(), testdata(t, "badimport.wasm"), CompileOptions{}); err == nil || strings.Contains(err.Error(), "cache") {
		t.Fatalf("bad module with a broken cache: %v, want its own error", err)
	}
}
