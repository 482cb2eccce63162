// Package testbuild builds what end-to-end tests run for real: the example
// cells (with the Go toolchain, GOOS=wasip1) and the node's binaries. Builds
// are cached for the life of the test process; call Main from TestMain to
// remove them afterwards.
package testbuild

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	dirOnce sync.Once
	dir     string
	dirErr  error

	mu     sync.Mutex
	builds = map[string]*build{}
)

type build struct {
	once sync.Once
	path string
	err  error
}

// Main runs the tests, removes the build directory, then runs cleanups.
func Main(m *testing.M, cleanups ...func()) {
	code := m.Run()
	if dir != "" {
		os.RemoveAll(dir)
	}
	for _, c := range cleanups {
		c()
	}
	os.Exit(code)
}

// Root returns the repository root (the directory holding go.mod).
func Root() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the module")
	}
	return filepath.Dir(mod), nil
}

func workDir() (string, error) {
	dirOnce.Do(func() { dir, dirErr = os.MkdirTemp("", "celluster-testbuild-") })
	return dir, dirErr
}

func cached(key string, fn func(out string) error) (string, error) {
	mu.Lock()
	b, ok := builds[key]
	if !ok {
		b = &build{}
		builds[key] = b
	}
	mu.Unlock()
	b.once.Do(func() {
		d, err := workDir()
		if err != nil {
			b.err = err
			return
		}
		sum := sha256.Sum256([]byte(key))
		b.path = filepath.Join(d, sanitize(key)[:min(40, len(sanitize(key)))]+"-"+hex.EncodeToString(sum[:4]))
		b.err = fn(b.path)
	})
	return b.path, b.err
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			return r
		}
		return '_'
	}, s)
}

func goBuild(env []string, args ...string) error {
	return goBuildIn("", env, args...)
}

// goBuildIn runs go build in dir, relative to the repository root.
func goBuildIn(dir string, env []string, args ...string) error {
	root, err := Root()
	if err != nil {
		return err
	}
	cmd := exec.Command("go", append([]string{"build"}, args...)...)
	cmd.Dir = filepath.Join(root, dir)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return nil
}

// IsReactor reports whether the example cell imports sdk/cell (and so is
// built as a c-shared reactor).
func IsReactor(name string) (bool, error) {
	root, err := Root()
	if err != nil {
		return false, err
	}
	cmd := exec.Command("go", "list", "-f", "{{join .Imports \" \"}}", "./examples/cells/"+name)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	out, err := cmd.Output()
	if err != nil {
		return false, fmt.Errorf("go list examples/cells/%s: %w", name, err)
	}
	return strings.Contains(string(out), "celluster/sdk/cell"), nil
}

// CellFile builds examples/cells/<name> for wasip1 and returns the .wasm
// path. ldflags, if given, are passed to the linker (for example
// "-X main.version=v2" to make a different module of the same cell).
func CellFile(tb testing.TB, name string, ldflags ...string) string {
	tb.Helper()
	lf := strings.Join(ldflags, " ")
	p, err := cached("cell "+name+" "+lf, func(out string) error {
		reactor, err := IsReactor(name)
		if err != nil {
			return err
		}
		args := []string{"-o", out + ".wasm"}
		if reactor {
			args = append(args, "-buildmode=c-shared")
		}
		if lf != "" {
			args = append(args, "-ldflags", lf)
		}
		return goBuild([]string{"GOOS=wasip1", "GOARCH=wasm"}, append(args, "./examples/cells/"+name)...)
	})
	if err != nil {
		tb.Fatalf("building cell %s: %v", name, err)
	}
	return p + ".wasm"
}

// Cell returns the bytes of the example cell built by CellFile.
func Cell(tb testing.TB, name string, ldflags ...string) []byte {
	tb.Helper()
	b, err := os.ReadFile(CellFile(tb, name, ldflags...))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// uninstrumented are the packages a race-enabled binary is built without
// the detector's instrumentation: wazero, the WebAssembly runtime (a
// dependency, race-tested upstream). Instrumented, its compiler runs about
// 8x slower (a Go cell took 26 s to compile instead of 3 s) and every call
// into a cell slows alike, enough for requests to time out on a loaded
// machine. Every package of this repository stays instrumented.
var uninstrumented = []string{
	"github.com/tetratelabs/wazero/...",
}

// Binary builds the command package pkg (e.g. "./cmd/celcore") for the host,
// with the race detector when race is true (pass Race to follow the test
// binary), and returns its path.
func Binary(tb testing.TB, pkg string, race bool) string {
	tb.Helper()
	p, err := cached(fmt.Sprintf("bin %s race=%v", pkg, race), func(out string) error {
		args := []string{"-o", out}
		if race {
			args = append(args, "-race")
			for _, p := range uninstrumented {
				args = append(args, "-gcflags="+p+"=-race=false")
			}
		}
		return goBuild(nil, append(args, pkg)...)
	})
	if err != nil {
		tb.Fatalf("building %s: %v", pkg, err)
	}
	return p
}

// ModuleBinary builds the main package of the Go module in dir (relative to
// the repository root, e.g. "examples/plugins/logtail": a module of its own)
// and returns the executable's path.
func ModuleBinary(tb testing.TB, dir string) string {
	tb.Helper()
	p, err := cached("module "+dir, func(out string) error {
		return goBuildIn(dir, nil, "-o", out, ".")
	})
	if err != nil {
		tb.Fatalf("building %s: %v", dir, err)
	}
	return p
}
