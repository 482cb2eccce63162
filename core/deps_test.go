// Package core_test holds checks that span the core's packages.
package core_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/celluster/celluster"

// TestDependencyDirection: no core package imports (even indirectly) a
// plugin, the SDK or an example, and no plugin or example imports the core,
// not even from its tests — the rule that keeps the core mechanism and the
// plugins policy.
func TestDependencyDirection(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command: %v", err)
	}
	cmd := exec.Command(goBin, "list", "-deps=false", "-json=ImportPath,Deps,TestImports,XTestImports", module+"/core/...", module+"/plugins/...", module+"/examples/...")
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	type pkg struct {
		ImportPath                      string
		Deps, TestImports, XTestImports []string
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	var core, plugins int
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(p.ImportPath, module+"/")
		switch {
		case strings.HasPrefix(rel, "core/"):
			core++
			for _, d := range p.Deps {
				for _, banned := range []string{"plugins", "sdk", "examples"} {
					if d == module+"/"+banned || strings.HasPrefix(d, module+"/"+banned+"/") {
						t.Errorf("%s imports %s: the core never depends on %s", rel, strings.TrimPrefix(d, module+"/"), banned)
					}
				}
			}
		case strings.HasPrefix(rel, "plugins/"), strings.HasPrefix(rel, "examples/"):
			if strings.HasPrefix(rel, "plugins/") {
				plugins++
			}
			for _, d := range slices.Concat(p.Deps, p.TestImports, p.XTestImports) {
				if d == module+"/core" || strings.HasPrefix(d, module+"/core/") {
					t.Errorf("%s imports %s: plugins and examples use only sdk and pluginapi", rel, strings.TrimPrefix(d, module+"/"))
				}
			}
		}
	}
	if core < 10 || plugins < 3 {
		t.Fatalf("go list found %d core and %d plugin packages: the check saw too little", core, plugins)
	}
}
