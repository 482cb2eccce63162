package pluginhost

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
)

const levelTrace = slog.LevelDebug - 4

// hcLogger adapts go-plugin's hclog.Logger to the node's slog.Logger (which
// carries plugin=<name>). Lines the plugin writes to stderr (hclog JSON or
// plain) arrive through a logger Named after the executable's base name, at
// their own level. go-plugin's own chatter (the unnamed root) is logged at
// debug: the manager logs every meaningful event itself.
type hcLogger struct {
	log  *slog.Logger
	name string
	args []any
}

// newHCLogger returns an hclog.Logger writing to l.
func newHCLogger(l *slog.Logger) hclog.Logger { return &hcLogger{log: l} }

// toSlog maps an hclog level to slog; false for Off.
func toSlog(l hclog.Level) (slog.Level, bool) {
	switch l {
	case hclog.Trace:
		return levelTrace, true
	case hclog.Debug:
		return slog.LevelDebug, true
	case hclog.Warn:
		return slog.LevelWarn, true
	case hclog.Error:
		return slog.LevelError, true
	case hclog.Off:
		return 0, false
	default:
		return slog.LevelInfo, true
	}
}

// Log implements hclog.Logger.
func (h *hcLogger) Log(level hclog.Level, msg string, args ...any) {
	sl, ok := toSlog(level)
	if !ok {
		return
	}
	if h.name == "" && sl > slog.LevelDebug {
		sl = slog.LevelDebug
	}
	ctx := context.Background()
	if !h.log.Enabled(ctx, sl) {
		return
	}
	all := make([]any, 0, 2+len(h.args)+len(args))
	if h.name != "" {
		all = append(all, "logger", h.name)
	}
	all = append(all, h.args...)
	all = append(all, args...)
	if h.name == "" {
		// go-plugin's own "plugin" attribute is the executable path; keep
		// "plugin" for the plugin's name.
		for i := 0; i+1 < len(all); i += 2 {
			if all[i] == "plugin" {
				all[i] = "path"
			}
		}
	}
	h.log.Log(ctx, sl, msg, all...)
}

// Trace, Debug, Info, Warn and Error implement hclog.Logger.
func (h *hcLogger) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hcLogger) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hcLogger) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hcLogger) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hcLogger) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

// enabled reports whether the slog handler takes level l.
func (h *hcLogger) enabled(l slog.Level) bool { return h.log.Enabled(context.Background(), l) }

// IsTrace and the other Is* methods implement hclog.Logger from the slog handler's level.
func (h *hcLogger) IsTrace() bool { return h.enabled(levelTrace) }
func (h *hcLogger) IsDebug() bool { return h.enabled(slog.LevelDebug) }
func (h *hcLogger) IsInfo() bool  { return h.enabled(slog.LevelInfo) }
func (h *hcLogger) IsWarn() bool  { return h.enabled(slog.LevelWarn) }
func (h *hcLogger) IsError() bool { return h.enabled(slog.LevelError) }

// ImpliedArgs implements hclog.Logger.
func (h *hcLogger) ImpliedArgs() []any { return h.args }

// With implements hclog.Logger.
func (h *hcLogger) With(args ...any) hclog.Logger {
	c := *h
	c.args = append(append([]any(nil), h.args...), args...)
	return &c
}

// Name implements hclog.Logger.
func (h *hcLogger) Name() string { return h.name }

// Named implements hclog.Logger.
func (h *hcLogger) Named(name string) hclog.Logger {
	c := *h
	if c.name != "" {
		c.name += "." + name
	} else {
		c.name = name
	}
	return &c
}

// ResetNamed implements hclog.Logger.
func (h *hcLogger) ResetNamed(name string) hclog.Logger {
	c := *h
	c.name = name
	return &c
}

// SetLevel is a no-op: the slog handler decides.
func (h *hcLogger) SetLevel(hclog.Level) {}

// GetLevel implements hclog.Logger: the lowest level the slog handler takes.
func (h *hcLogger) GetLevel() hclog.Level {
	switch {
	case h.IsTrace():
		return hclog.Trace
	case h.IsDebug():
		return hclog.Debug
	case h.IsInfo():
		return hclog.Info
	case h.IsWarn():
		return hclog.Warn
	case h.IsError():
		return hclog.Error
	}
	return hclog.Off
}

// StandardLogger implements hclog.Logger.
func (h *hcLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

// StandardWriter implements hclog.Logger: lines logged at info.
func (h *hcLogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return newLineLogger(h.log, "log")
}

// lineLogger logs each line written to it at info, with stream=<name>: a
// plugin's stdout and stderr as go-plugin forwards them (SyncStdout/Stderr).
type lineLogger struct {
	log    *slog.Logger
	stream string
	mu     sync.Mutex
	buf    []byte
}

// newLineLogger returns a lineLogger for stream.
func newLineLogger(l *slog.Logger, stream string) *lineLogger {
	return &lineLogger{log: l, stream: stream}
}

const maxLogLine = 64 << 10

// Write implements io.Writer, logging each complete line.
func (w *lineLogger) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) > maxLogLine {
				w.emit(w.buf)
				w.buf = w.buf[:0]
			}
			return len(p), nil
		}
		w.emit(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

// emit logs one line.
func (w *lineLogger) emit(line []byte) {
	s := strings.TrimRight(string(line), "\r")
	if s != "" {
		w.log.Info(s, "stream", w.stream)
	}
}

// tail keeps the last max bytes written to it: a plugin's raw stderr, for
// error messages.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

// newTail returns a tail keeping max bytes.
func newTail(max int) *tail { return &tail{max: max} }

// Write implements io.Writer.
func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// String returns what is kept.
func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// crashSummary picks what explains a crash from a plugin's raw stderr: the
// Go panic or fatal error line if there is one, else the last three lines,
// hclog JSON lines reduced to their level and message.
func crashSummary(stderr string) string {
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "panic: ") || strings.HasPrefix(lines[i], "fatal error: ") {
			return lines[i]
		}
	}
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	for i, l := range lines {
		var e struct {
			Level   string `json:"@level"`
			Message string `json:"@message"`
		}
		if json.Unmarshal([]byte(l), &e) == nil && e.Message != "" {
			lines[i] = "[" + strings.ToUpper(e.Level) + "] " + e.Message
		}
	}
	return strings.Join(lines, "\n")
}
