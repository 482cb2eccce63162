// Command hang is a test plugin that never completes the handshake.
package main

import "github.com/celluster/celluster/core/pluginhost/testdata/plugins/tplug"

func main() {
	tplug.Main(&tplug.Plugin{Info: tplug.Info(tplug.KindVerb, "hang"), Hang: true})
}
