// Command parser is a test intent plugin accepting .intent files.
package main

import "github.com/celluster/celluster/core/pluginhost/testdata/plugins/tplug"

func main() {
	tplug.Main(&tplug.Plugin{Info: tplug.Info(tplug.KindIntent, "parser"), Intent: tplug.Parser{}})
}
