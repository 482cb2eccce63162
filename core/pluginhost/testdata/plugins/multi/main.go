// Command multi simulates celcore's built-in plugins: run as
// `multi plugin NAME [describe]` it is a verb plugin named NAME with the
// verbs NAME and echo-NAME.
package main

import (
	"fmt"
	"os"

	"github.com/celluster/celluster/core/pluginhost/testdata/plugins/tplug"
)

func main() {
	if len(os.Args) < 3 || os.Args[1] != "plugin" {
		fmt.Fprintln(os.Stderr, "usage: multi plugin NAME [describe]")
		os.Exit(2)
	}
	name := os.Args[2]
	tplug.Main(&tplug.Plugin{
		Info: tplug.Info(tplug.KindVerb, name),
		Verb: &tplug.Verber{Names: []string{name, "echo-" + name}},
	})
}
