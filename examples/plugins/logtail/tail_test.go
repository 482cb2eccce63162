package main

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/celluster/celluster/sdk/plugin"
	"github.com/celluster/celluster/sdk/plugin/plugintest"
)

func TestTailerFollowsAppendsTruncationAndRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	tl := newTailer(path, regexp.MustCompile(`ERROR`))
	if err := tl.poll(); err != nil {
		t.Fatalf("missing file: %v", err)
	}
	write := func(s string, flag int) {
		t.Helper()
		f, err := os.OpenFile(path, flag|os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	check := func(lines, matches uint64) {
		t.Helper()
		if err := tl.poll(); err != nil {
			t.Fatal(err)
		}
		if tl.lines != lines || tl.matches != matches {
			t.Fatalf("lines %d matches %d, want %d %d", tl.lines, tl.matches, lines, matches)
		}
	}
	write("ok\nERROR one\npart", os.O_APPEND)
	check(2, 1) // the unterminated line is not counted yet
	write("ial ERROR\n", os.O_APPEND)
	check(3, 2)
	write("ERROR after truncate\n", os.O_TRUNC)
	check(4, 3)
	// Rotation: the file is moved away and a new one created.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	write("fresh\nERROR x\nERROR y\n", os.O_EXCL)
	check(7, 5)
}

func TestSettings(t *testing.T) {
	if _, err := parseSettings(map[string]string{}); err == nil {
		t.Fatal("missing file accepted")
	}
	if _, err := parseSettings(map[string]string{"file": "x", "pattern": "("}); err == nil {
		t.Fatal("bad pattern accepted")
	}
	if _, err := parseSettings(map[string]string{"file": "x", "signal": "Bad Name"}); err == nil {
		t.Fatal("bad signal name accepted")
	}
	s, err := parseSettings(map[string]string{"file": "x"})
	if err != nil || s.signal != defaultSignal || !s.pattern.MatchString("an error") {
		t.Fatalf("defaults: %+v %v", s, err)
	}
}

// TestConformance runs the plugin through the SDK's conformance suite across
// the real gRPC boundary, following a file that gains a matching line.
func TestConformance(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	if err := os.WriteFile(path, []byte("ERROR boot\nok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	plugintest.TelemetrySuite(t, plugin.Info{Name: "logtail", Version: version}, &Source{},
		plugintest.WithSettings(map[string]string{"file": path, "pattern": "ERROR"}))
}
