package wasm

import (
	"bytes"
	"log/slog"
	"sync"
)

// logWriter turns a guest's stdout or stderr into log lines, one per line,
// each bounded to maxLogLine bytes.
type logWriter struct {
	log    *slog.Logger
	cell   string
	stream string
	mu     sync.Mutex
	buf    []byte
}

func newLogWriter(log *slog.Logger, cell, stream string) *logWriter {
	return &logWriter{log: log, cell: cell, stream: stream}
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxLogLine - len(w.buf)
			if len(p) > room {
				w.buf = append(w.buf, p[:room]...)
				w.flush()
				p = p[room:]
				continue
			}
			w.buf = append(w.buf, p...)
			break
		}
		w.buf = append(w.buf, p[:i]...)
		if len(w.buf) > maxLogLine {
			w.buf = w.buf[:maxLogLine]
		}
		w.flush()
		p = p[i+1:]
	}
	return n, nil
}

func (w *logWriter) flush() {
	w.log.Info(string(w.buf), "cell", w.cell, "stream", w.stream)
	w.buf = w.buf[:0]
}
