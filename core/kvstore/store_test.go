package kvstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestKVStoreGetPutDelete(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir())
	if _, err := s.Get("a", []byte("k")); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `cell a key "k"`) {
		t.Fatalf("get of a missing key: %v", err)
	}
	if err := s.Put("a", []byte("k"), []byte("v1"), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Put("b", []byte("k"), []byte("other"), 0); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get("a", []byte("k")); err != nil || string(v) != "v1" {
		t.Fatalf("get: %q, %v", v, err)
	}
	if v, err := s.Get("b", []byte("k")); err != nil || string(v) != "other" {
		t.Fatalf("cells share keys: %q, %v", v, err)
	}
	if err := s.Put("a", []byte("k"), []byte("v22"), 0); err != nil {
		t.Fatal(err)
	}
	if got := s.Usage("a"); got != 4 {
		t.Fatalf("usage after an overwrite: %d, want 4", got)
	}
	if err := s.Delete("a", []byte("k")); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("a", []byte("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if got := s.Usage("a"); got != 0 {
		t.Fatalf("usage after delete: %d", got)
	}
	for _, k := range [][]byte{nil, bytes.Repeat([]byte("k"), MaxKey+1)} {
		if err := s.Put("a", k, []byte("v"), 0); !errors.Is(err, ErrKey) {
			t.Fatalf("put with a key of %d bytes: %v", len(k), err)
		}
	}
	if err := s.Put("a", bytes.Repeat([]byte("k"), MaxKey), nil, 0); err != nil {
		t.Fatalf("put with a key of MaxKey bytes and an empty value: %v", err)
	}
	if v, err := s.Get("a", bytes.Repeat([]byte("k"), MaxKey)); err != nil || v == nil || len(v) != 0 {
		t.Fatalf("an empty value reads back as %v, %v", v, err)
	}
	if err := s.Put("a", []byte("big"), make([]byte, MaxValue+1), 0); !errors.Is(err, ErrValue) {
		t.Fatalf("put of a value over MaxValue: %v", err)
	}
}

func TestKVStoreQuota(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir())
	v := make([]byte, 100)
	for i := range 9 {
		if err := s.Put("q", fmt.Appendf(nil, "k%d", i), v, 1000); err != nil {
			t.Fatal(err)
		}
	}
	// 9 × 102 = 918 bytes: one more key of 102 bytes goes over 1000.
	err := s.Put("q", []byte("k9"), v, 1000)
	if !errors.Is(err, ErrQuota) || !strings.Contains(err.Error(), "918 bytes used + 102 > quota 1000") {
		t.Fatalf("put over the quota: %v", err)
	}
	if _, err := s.Get("q", []byte("k9")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused put was stored: %v", err)
	}
	// Replacing a value by a smaller one, or deleting, is always allowed.
	if err := s.Put("q", []byte("k0"), v[:10], 1000); err != nil {
		t.Fatal(err)
	}
	if err := s.Put("q", []byte("k9"), v[:50], 1000); err != nil {
		t.Fatalf("put within the room freed: %v", err)
	}
	if got := s.Usage("q"); got != 918-90+52 {
		t.Fatalf("usage %d, want %d", got, 918-90+52)
	}
	// Other cells have their own quota.
	if err := s.Put("other", []byte("k"), v, 1000); err != nil {
		t.Fatal(err)
	}
}

func TestKVStoreList(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir())
	for _, k := range []string{"a", "notes/1", "notes/2", "notes/3", "notes0", "z"} {
		if err := s.Put("l", []byte(k), []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
	}
	str := func(keys [][]byte) string {
		var out []string
		for _, k := range keys {
			out = append(out, string(k))
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		prefix, after string
		limit         int
		want          string
		more          bool
	}{
		{"notes/", "", 0, "notes/1,notes/2,notes/3", false},
		{"notes/", "", 2, "notes/1,notes/2", true},
		{"notes/", "notes/2", 2, "notes/3", false},
		{"notes/", "notes/", 0, "notes/1,notes/2,notes/3", false},
		{"notes/", "a", 0, "notes/1,notes/2,notes/3", false},
		{"", "", 0, "a,notes/1,notes/2,notes/3,notes0,z", false},
		{"", "notes0", 0, "z", false},
		{"x", "", 0, "", false},
	} {
		keys, more, err := s.List("l", []byte(tc.prefix), []byte(tc.after), tc.limit)
		if err != nil || str(keys) != tc.want || more != tc.more {
			t.Errorf("List(%q, after %q, %d) = %s, more %v, %v; want %s, more %v", tc.prefix, tc.after, tc.limit, str(keys), more, err, tc.want, tc.more)
		}
	}
	if keys, more, err := s.List("nobody", nil, nil, 0); err != nil || len(keys) != 0 || more {
		t.Fatalf("list of a cell that stored nothing: %v %v %v", keys, more, err)
	}
}

// TestKVStoreReopen: what was put is there after closing and opening the
// file again, and the usage is counted back from it.
func TestKVStoreReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := s.Put(fmt.Sprint("c", i%3), fmt.Appendf(nil, "key%02d", i), bytes.Repeat([]byte{byte(i)}, i), 0); err != nil {
			t.Fatal(err)
		}
	}
	usage := []int64{s.Usage("c0"), s.Usage("c1"), s.Usage("c2")}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	for i, want := range usage {
		if got := s.Usage(fmt.Sprint("c", i)); got != want {
			t.Fatalf("usage of c%d after reopening: %d, want %d", i, got, want)
		}
	}
	if v, err := s.Get("c1", []byte("key49")); err != nil || !bytes.Equal(v, bytes.Repeat([]byte{49}, 49)) {
		t.Fatalf("key49 after reopening: %v, %v", v, err)
	}
	// A second store on the same file waits for the lock, then fails.
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, File)) {
		t.Fatalf("a second Open of a file in use: %v", err)
	}
}

func TestKVStoreUnavailable(t *testing.T) {
	t.Parallel()
	s := Unavailable(errors.New("opening /data/kv/kv.db: read-only file system"))
	for _, err := range []error{
		s.Put("a", []byte("k"), []byte("v"), 0),
		func() error { _, err := s.Get("a", []byte("k")); return err }(),
		s.Delete("a", []byte("k")),
		func() error { _, _, err := s.List("a", nil, nil, 0); return err }(),
	} {
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "read-only file system") || !strings.Contains(err.Error(), "cell a") {
			t.Fatalf("a call on an unavailable store: %v", err)
		}
	}
}

// TestKVStoreDiskFull: on a full file system a put fails with
// ErrUnavailable, what was stored still reads, and a put fits again once
// room is made.
func TestKVStoreDiskFull(t *testing.T) {
	t.Parallel()
	if os.Getuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Put("d", []byte("first"), []byte("kept"), 0); err != nil {
		t.Fatal(err)
	}
	v := make([]byte, 256<<10)
	var full error
	for i := range 64 {
		if err := s.Put("d", fmt.Appendf(nil, "k%d", i), v, 64<<20); err != nil {
			full = err
			break
		}
	}
	if !errors.Is(full, ErrUnavailable) || !strings.Contains(full.Error(), "cell d") {
		t.Fatalf("put on a full disk: %v", full)
	}
	if got, err := s.Get("d", []byte("first")); err != nil || string(got) != "kept" {
		t.Fatalf("get on a full disk: %q, %v", got, err)
	}
}
