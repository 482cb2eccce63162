package plugin

import (
	"io"
	"log/slog"
	"os"
)

// stderr is the process's standard error as it was at start: go-plugin's
// Serve later points os.Stderr at a pipe the host may discard, while the
// host reads and logs what the real standard error carries.
var stderr io.Writer = os.Stderr

// NewLogger returns a logger for plugin code. It writes JSON lines in
// hclog's format to the process's original standard error, which the host
// reads, parses and logs under the plugin's name with the right level.
// level may be nil for slog.LevelInfo.
//
// Use it (or any logger writing to the original standard error, such as
// the log package's default) rather than fmt.Print*: once [Serve] has
// started, standard output belongs to go-plugin and os.Stdout and
// os.Stderr point at pipes.
func NewLogger(level slog.Leveler) *slog.Logger {
	return newLogger(stderr, level)
}

func newLogger(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level:       level,
		ReplaceAttr: hclogAttr,
	}))
}

// hclogAttr renames slog's built-in keys to hclog's (@timestamp, @level,
// @message) and formats time and level as hclog does.
func hclogAttr(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		return slog.String("@timestamp", a.Value.Time().Format("2006-01-02T15:04:05.000000Z07:00"))
	case slog.LevelKey:
		l, _ := a.Value.Any().(slog.Level)
		name := "trace"
		switch {
		case l >= slog.LevelError:
			name = "error"
		case l >= slog.LevelWarn:
			name = "warn"
		case l >= slog.LevelInfo:
			name = "info"
		case l >= slog.LevelDebug:
			name = "debug"
		}
		return slog.String("@level", name)
	case slog.MessageKey:
		return slog.String("@message", a.Value.String())
	}
	return a
}
