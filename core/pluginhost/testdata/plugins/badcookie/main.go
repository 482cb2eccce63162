// Command badcookie is a test plugin built with the wrong magic cookie.
package main

import "github.com/celluster/celluster/core/pluginhost/testdata/plugins/tplug"

func main() {
	tplug.Main(&tplug.Plugin{
		Info:   tplug.Info(tplug.KindVerb, "badcookie"),
		Cookie: "not-the-celluster-cookie",
		Verb:   &tplug.Verber{Names: []string{"cookie"}},
	})
}
