// Command ticker is a test telemetry plugin: signal test.ticks, a batch
// every 10ms.
package main

import (
	"time"

	"github.com/celluster/celluster/core/pluginhost/testdata/plugins/tplug"
)

func main() {
	tplug.Log.Info("ticker starting")
	tplug.Main(&tplug.Plugin{
		Info:      tplug.Info(tplug.KindTelemetry, "ticker"),
		Telemetry: &tplug.Ticker{Signal: "test.ticks", Every: 10 * time.Millisecond},
	})
}
