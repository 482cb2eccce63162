// Command badversion is a test plugin speaking only API version 99.
package main

import "github.com/celluster/celluster/core/pluginhost/testdata/plugins/tplug"

func main() {
	info := tplug.Info(tplug.KindVerb, "badversion")
	info.ApiVersions = []uint32{99}
	tplug.Main(&tplug.Plugin{
		Info:     info,
		Versions: []int{99},
		Verb:     &tplug.Verber{Names: []string{"version"}},
	})
}
