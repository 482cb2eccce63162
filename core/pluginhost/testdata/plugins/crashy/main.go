// Command crashy is a test telemetry plugin that exits (status 2) after
// crash_after batches (default 3).
package main

import (
	"time"

	"github.com/celluster/celluster/core/pluginhost/testdata/plugins/tplug"
)

func main() {
	tplug.Main(&tplug.Plugin{
		Info:      tplug.Info(tplug.KindTelemetry, "crashy"),
		Telemetry: &tplug.Ticker{Signal: "test.crash", Every: 10 * time.Millisecond, CrashAfter: 3},
	})
}
