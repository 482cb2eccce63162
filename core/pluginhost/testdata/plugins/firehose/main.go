// Command firehose is a test telemetry plugin streaming batches of 1000
// samples as fast as it can (settings as for tplug.Ticker).
package main

import "github.com/celluster/celluster/core/pluginhost/testdata/plugins/tplug"

func main() {
	tplug.Main(&tplug.Plugin{
		Info:      tplug.Info(tplug.KindTelemetry, "firehose"),
		Telemetry: &tplug.Ticker{Signal: "test.firehose", Size: 1000},
	})
}
