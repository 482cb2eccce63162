// Package testbuild builds what end-to-end tests run for real: the example
// cells (Go ones with the Go toolchain, GOOS=wasip1; C ones with clang and
// wasi-libc) and the node's binaries. Builds
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

// IsReactor reports whether the example cell is a reactor: a Go cell that
// imports sdk/cell (built c-shared), or a C cell whose sources include
// sdk/c/cel.h (built with -mexec-model=reactor).
func IsReactor(name string) (bool, error) {
	root, err := Root()
	if err != nil {
		return false, err
	}
	srcs, err := CSources(name)
	if err != nil {
		return false, err
	}
	if srcs != nil {
		for _, s := range srcs {
			b, err := os.ReadFile(s)
			if err != nil {
				return false, err
			}
			if bytes.Contains(b, []byte("cel.h")) {
				return true, nil
			}
		}
		return false, nil
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

// CSources returns the .c files of examples/cells/<name> when it is a C
// cell (it holds .c files and no .go files), and nil when it is not.
func CSources(name string) ([]string, error) {
	root, err := Root()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, "examples", "cells", name)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var cs []string
	for _, e := range ents {
		switch filepath.Ext(e.Name()) {
		case ".go":
			return nil, nil
		case ".c":
			cs = append(cs, filepath.Join(dir, e.Name()))
		}
	}
	return cs, nil
}

// The C toolchain, as the Makefile's cells rule uses it: clang for
// wasm32-wasi against Debian's wasi-libc (sysroot /usr: headers in
// include/wasm32-wasi, libraries in lib/wasm32-wasi), wasm-ld from lld and
// compiler-rt's wasm32 builtins. WASM_CC and WASI_SYSROOT override them.
var (
	cPackages = "clang-16 lld-16 wasi-libc libclang-rt-16-dev-wasm32"
	cFlags    = []string{"-O2", "-Wall", "-Wextra", "-Werror"}
)

func cCompiler() string {
	if cc := os.Getenv("WASM_CC"); cc != "" {
		return cc
	}
	return "clang-16"
}

func wasiSysroot() string {
	if s := os.Getenv("WASI_SYSROOT"); s != "" {
		return s
	}
	return "/usr"
}

var (
	cProbeOnce sync.Once
	cProbeErr  error
)

// CToolchain reports what is missing to build C cells, or nil when clang
// can compile and link a wasm32-wasi reactor (the probe links an empty
// one, so a missing wasm-ld, libc or compiler-rt shows too). The answer is
// kept for the life of the process.
func CToolchain() error {
	cProbeOnce.Do(func() { cProbeErr = probeC() })
	return cProbeErr
}

func probeC() error {
	cc, sysroot := cCompiler(), wasiSysroot()
	if _, err := exec.LookPath(cc); err != nil {
		return fmt.Errorf("%s not found (Debian: apt-get install %s, or make deps)", cc, cPackages)
	}
	if _, err := os.Stat(filepath.Join(sysroot, "lib", "wasm32-wasi", "libc.a")); err != nil {
		return fmt.Errorf("no wasi-libc in the sysroot %s (Debian: apt-get install %s, or make deps)", sysroot, cPackages)
	}
	cmd := exec.Command(cc, "--target=wasm32-wasi", "--sysroot="+sysroot, "-mexec-model=reactor", "-x", "c", "-", "-o", os.DevNull)
	cmd.Stdin = strings.NewReader("int cel_probe;\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s cannot link a wasm32-wasi reactor (Debian: apt-get install %s, or make deps): %v\n%s", cc, cPackages, err, out)
	}
	return nil
}

// RequireCToolchain skips tb naming what is missing to build C cells, or,
// under CI=true (where make deps installs it), fails it.
func RequireCToolchain(tb testing.TB) {
	tb.Helper()
	if err := CToolchain(); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("C cells cannot be built: %v", err)
		}
		tb.Skipf("C cells cannot be built: %v", err)
	}
}

// buildC compiles a C cell's sources into out with the Makefile's command.
func buildC(srcs []string, reactor bool, out string) error {
	root, err := Root()
	if err != nil {
		return err
	}
	model := "command"
	if reactor {
		model = "reactor"
	}
	args := append([]string{"--target=wasm32-wasi", "--sysroot=" + wasiSysroot()}, cFlags...)
	args = append(args, "-mexec-model="+model, "-I"+filepath.Join(root, "sdk", "c"), "-o", out)
	cmd := exec.Command(cCompiler(), append(args, srcs...)...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", cCompiler(), strings.Join(cmd.Args[1:], " "), err, stderr.String())
	}
	return nil
}

// CellFile builds examples/cells/<name> for wasip1 and returns the .wasm
// path: a Go cell with the Go toolchain, a C cell (a directory of .c files,
// no Go) with clang and wasi-libc, as make does. ldflags, if given, are
// passed to the Go linker (for example "-X main.version=v2" to make a
// different module of the same cell); a C cell takes none. A C cell without
// its toolchain skips the test (fails it under CI=true).
func CellFile(tb testing.TB, name string, ldflags ...string) string {
	tb.Helper()
	lf := strings.Join(ldflags, " ")
	srcs, err := CSources(name)
	if err != nil {
		tb.Fatalf("cell %s: %v", name, err)
	}
	if srcs != nil {
		if lf != "" {
			tb.Fatalf("cell %s is a C cell: no Go ldflags (%s)", name, lf)
		}
		RequireCToolchain(tb)
	}
	p, err := cached("cell "+name+" "+lf, func(out string) error {
		reactor, err := IsReactor(name)
		if err != nil {
			return err
		}
		if srcs != nil {
			return buildC(srcs, reactor, out+".wasm")
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
