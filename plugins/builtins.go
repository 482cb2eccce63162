// Package plugins holds Celluster's first-party plugins. Each is built only
// against sdk and pluginapi, runs out of process, and ships inside the
// celcore binary: the node starts it by re-executing itself as
// `celcore plugin NAME`.
package plugins

import (
	"fmt"
	"sort"

	"github.com/celluster/celluster/plugins/host"
	"github.com/celluster/celluster/plugins/intent"
	"github.com/celluster/celluster/plugins/verbs"
	"github.com/celluster/celluster/sdk/plugin"
)

// builtins maps each first-party plugin's name to the function that serves it.
var builtins = map[string]func(){
	"host":   func() { plugin.Serve(host.Info, host.New()) },
	"intent": func() { plugin.Serve(intent.Info, intent.New()) },
	"verbs":  func() { plugin.Serve(verbs.Info, verbs.New()) },
}

// Names lists the first-party plugins.
func Names() []string {
	names := make([]string, 0, len(builtins))
	for n := range builtins {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Serve runs the named first-party plugin (including its `describe`
// answer); it returns only on error.
func Serve(name string) error {
	fn, ok := builtins[name]
	if !ok {
		return fmt.Errorf("no built-in plugin named %q (have %v)", name, Names())
	}
	fn()
	return nil
}
