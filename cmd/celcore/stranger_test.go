package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/celluster/celluster/core/testbuild"
	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/zip"
)

// sdkModules are the modules of this tree a cell or plugin author depends
// on (directories, relative to the repository root).
var sdkModules = []string{"pluginapi/cellabi", "pluginapi", "sdk/cell", "sdk/plugin"}

// nodeOnly are modules the node needs and an SDK user must never be made
// to download: the runtime, the fabric, the kernel, the metrics.
var nodeOnly = []string{
	"github.com/celluster/celluster ", // the root module itself (the space ends the path)
	"github.com/tetratelabs/wazero", "github.com/quic-go/quic-go", "github.com/cilium/ebpf",
	"github.com/hashicorp/memberlist", "github.com/prometheus/", "go.opentelemetry.io/",
	"github.com/spf13/cobra", "github.com/fsnotify/fsnotify",
}

// moduleProxy writes a GOPROXY directory (the file:// layout of the
// module proxy protocol) serving each SDK module as it is in this tree, at
// the version the root go.mod requires (the version its release tag
// carries, e.g. sdk/cell/v0.1.0), and returns it with that version.
func moduleProxy(t *testing.T, root string) (dir string, versions map[string]string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	rootMod, err := modfile.ParseLax("go.mod", data, nil)
	if err != nil {
		t.Fatal(err)
	}
	required := map[string]string{}
	for _, r := range rootMod.Require {
		required[r.Mod.Path] = r.Mod.Version
	}
	dir = t.TempDir()
	versions = map[string]string{}
	for _, rel := range sdkModules {
		gomod, err := os.ReadFile(filepath.Join(root, rel, "go.mod"))
		if err != nil {
			t.Fatalf("module %s: %v", rel, err)
		}
		path := modfile.ModulePath(gomod)
		v, ok := required[path]
		if !ok {
			t.Fatalf("the root go.mod does not require %s", path)
		}
		versions[path] = v
		at := filepath.Join(dir, filepath.FromSlash(path), "@v")
		if err := os.MkdirAll(at, 0o755); err != nil {
			t.Fatal(err)
		}
		var zb bytes.Buffer
		if err := zip.CreateFromDir(&zb, module.Version{Path: path, Version: v}, filepath.Join(root, rel)); err != nil {
			t.Fatalf("zipping %s: %v", rel, err)
		}
		files := map[string][]byte{
			"list":      []byte(v + "\n"),
			v + ".info": fmt.Appendf(nil, `{"Version":%q,"Time":"2026-01-01T00:00:00Z"}`, v),
			v + ".mod":  gomod,
			v + ".zip":  zb.Bytes(),
		}
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(at, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir, versions
}

// strangerModule copies the Go files of the example at src (relative to
// the repository root) into a fresh module named path outside the tree,
// runs go mod tidy there against proxy alone (and the third-party modules
// already downloaded, served from the module cache as a proxy: no
// network), and returns the module's directory, go.mod and go.sum.
func strangerModule(t *testing.T, root, proxy, src, path string, env []string) (dir, gomod, gosum string) {
	t.Helper()
	dir = t.TempDir()
	files, err := filepath.Glob(filepath.Join(root, src, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files in %s: %v", src, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module "+path+"\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	goCmd(t, dir, env, "mod", "tidy")
	m, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.ReadFile(filepath.Join(dir, "go.sum"))
	if err != nil {
		t.Fatalf("go mod tidy wrote no go.sum: %v", err)
	}
	return dir, string(m), string(s)
}

// goCmd runs the go command in dir with env and fails the test with its
// output if it fails.
func goCmd(t *testing.T, dir string, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
	}
}

// TestSDKModulesForStrangers: a cell and a plugin written outside this
// tree, in modules of their own, depend on the SDK exactly as a stranger
// would — through a module proxy serving the SDK's modules as released
// (here, a local file:// proxy built from the tree; nothing replaced) —
// and `go mod tidy` needs nothing else: the cell's module requires only
// the cell SDK and the envelope codec, the plugin's only the plugin SDK,
// the plugin API and what they import (never the node, the runtime or the
// fabric). Both are then built and run by a real node.
func TestSDKModulesForStrangers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds modules and binaries")
	}
	t.Parallel()
	root, err := testbuild.Root()
	if err != nil {
		t.Fatal(err)
	}
	proxy, versions := moduleProxy(t, root)
	cache := strings.TrimSpace(string(must(exec.Command("go", "env", "GOMODCACHE").Output())))
	env := []string{
		"GOFLAGS=-mod=mod -modcacherw",
		"GOPROXY=file://" + proxy + ",file://" + filepath.Join(cache, "cache", "download"),
		"GOMODCACHE=" + filepath.Join(t.TempDir(), "modcache"), // a stranger's cache: empty
		"GOSUMDB=off", // the SDK modules come from the local proxy, in no checksum database
		"GOWORK=off", "GOTOOLCHAIN=local",
	}

	cellDir, cellMod, cellSum := strangerModule(t, root, proxy, "examples/cells/hello", "example.com/strangers/greeter", env)
	var cellRequires []string
	mf, err := modfile.Parse("go.mod", []byte(cellMod), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range mf.Require {
		cellRequires = append(cellRequires, r.Mod.Path+"@"+r.Mod.Version)
	}
	slices.Sort(cellRequires)
	want := []string{
		"github.com/celluster/celluster/pluginapi/cellabi@" + versions["github.com/celluster/celluster/pluginapi/cellabi"],
		"github.com/celluster/celluster/sdk/cell@" + versions["github.com/celluster/celluster/sdk/cell"],
	}
	if !slices.Equal(cellRequires, want) {
		t.Fatalf("the cell's go.mod requires %v, want exactly %v:\n%s", cellRequires, want, cellMod)
	}
	for line := range strings.Lines(cellSum) {
		if !strings.HasPrefix(line, "github.com/celluster/celluster/sdk/cell ") && !strings.HasPrefix(line, "github.com/celluster/celluster/pluginapi/cellabi ") {
			t.Fatalf("the cell's go.sum holds more than the SDK: %q", line)
		}
	}
	wasm := filepath.Join(t.TempDir(), "greeter.wasm")
	goCmd(t, cellDir, append(env, "GOOS=wasip1", "GOARCH=wasm"), "build", "-buildmode=c-shared", "-o", wasm, ".")

	plugDir, plugMod, plugSum := strangerModule(t, root, proxy, "examples/plugins/logtail", "example.com/strangers/logtail", env)
	for _, bad := range nodeOnly {
		if strings.Contains(plugMod+"\n"+plugSum, bad) {
			t.Fatalf("the plugin's module pulls in %s, which only the node needs:\n%s", strings.TrimSpace(bad), plugMod)
		}
	}
	for _, need := range []string{"github.com/celluster/celluster/sdk/plugin ", "github.com/celluster/celluster/pluginapi "} {
		if !strings.Contains(plugMod, need) {
			t.Fatalf("the plugin's go.mod does not require %s:\n%s", strings.TrimSpace(need), plugMod)
		}
	}
	plugBin := filepath.Join(t.TempDir(), "logtail")
	goCmd(t, plugDir, env, "build", "-o", plugBin, ".")
	// The plugin's own tests use the conformance suite (sdk/plugin/plugintest).
	goCmd(t, plugDir, env, "vet", "./...")

	// Both run in a real node.
	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(filepath.Join(data, "plugins"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "plugins", "logtail"), must(os.ReadFile(plugBin)), 0o755); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(t.TempDir(), "app.log")
	if err := os.WriteFile(logFile, []byte("ERROR one\nfine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, data, "--plugin-setting", "logtail.file="+logFile, "--plugin-setting", "logtail.pattern=ERROR")
	n.drop("greeter", must(os.ReadFile(wasm)))
	if r := n.waitStatus("/greeter?name=stranger", 200); !strings.Contains(r.body, "Hello, stranger!") {
		t.Fatalf("the stranger's cell answered %q", r.body)
	}
	eventually(t, "the stranger's plugin to report logtail.matches = 1", func() bool {
		for _, s := range n.listSignals() {
			if s.Name == "logtail.matches" && s.Labels["file"] == logFile && s.Source == "logtail" {
				return s.Value == 1
			}
		}
		return false
	})
}

// must returns v, panicking on err (for setup steps that cannot fail
// unless the machine is broken).
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
