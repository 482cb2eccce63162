//go:build !wasip1

package cell

import (
	"os"
	"time"
)

// hostLog writes one line per message to standard error in native builds.
func hostLog(level Level, msg string) {
	os.Stderr.WriteString("cell: " + level.String() + ": " + msg + "\n")
}

func hostNow() time.Time { return time.Now() }

// hostCall has no node to call through in native builds.
func hostCall(string, []byte) ([]byte, error) { return nil, errNoHost }

// hostSignal has no node to publish to in native builds.
func hostSignal(string, float64) int32 { return 0 }
