// Command verber is a test verb plugin: poke, echo, block, crash.
package main

import "github.com/celluster/celluster/core/pluginhost/testdata/plugins/tplug"

func main() {
	tplug.Main(&tplug.Plugin{
		Info: tplug.Info(tplug.KindVerb, "verber"),
		Verb: &tplug.Verber{Names: []string{"poke", "echo", "block", "crash"}},
	})
}
