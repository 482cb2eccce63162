package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
)

const defaultSignal = "logtail.matches"

type settings struct {
	file    string
	pattern *regexp.Regexp
	signal  string
}

var signalName = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$`)

func parseSettings(m map[string]string) (settings, error) {
	s := settings{file: m["file"], signal: m["signal"]}
	if s.file == "" {
		return s, errors.New("setting file is required (the log file to follow)")
	}
	if s.signal == "" {
		s.signal = defaultSignal
	}
	if !signalName.MatchString(s.signal) {
		return s, fmt.Errorf("setting signal %q: want dotted lowercase words like %s", s.signal, defaultSignal)
	}
	pat := m["pattern"]
	if pat == "" {
		pat = "error"
	}
	re, err := regexp.Compile(pat)
	if err != nil {
		return s, fmt.Errorf("setting pattern: %w", err)
	}
	s.pattern = re
	return s, nil
}

// tailer follows a file by polling: it reads what was appended since the
// last poll, starts over when the file shrinks or is replaced, and counts
// complete lines only.
type tailer struct {
	path    string
	pattern *regexp.Regexp
	f       *os.File
	ino     uint64
	off     int64
	partial []byte
	lines   uint64
	matches uint64
}

func newTailer(path string, pattern *regexp.Regexp) *tailer {
	return &tailer{path: path, pattern: pattern}
}

// poll reads new complete lines. A missing file is not an error: it may
// appear later.
func (t *tailer) poll() error {
	fi, err := os.Stat(t.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("logtail: %w", err)
	}
	if t.f == nil || inode(fi) != t.ino || fi.Size() < t.off {
		if t.f != nil {
			t.f.Close()
		}
		f, err := os.Open(t.path)
		if err != nil {
			return fmt.Errorf("logtail: %w", err)
		}
		t.f, t.ino, t.off, t.partial = f, inode(fi), 0, nil
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := t.f.ReadAt(buf, t.off)
		t.off += int64(n)
		t.consume(buf[:n])
		if err == io.EOF || n == 0 {
			return nil
		}
		if err != nil {
			return fmt.Errorf("logtail: reading %s: %w", t.path, err)
		}
	}
}

func (t *tailer) consume(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			t.partial = append(t.partial, b...)
			return
		}
		line := b[:i]
		if len(t.partial) > 0 {
			line = append(t.partial, line...)
			t.partial = nil
		}
		t.lines++
		if t.pattern.Match(line) {
			t.matches++
		}
		b = b[i+1:]
	}
}
