// Package cellwatch watches the cells directory and reports, once a file has
// settled, which cell modules appeared, changed or disappeared.
//
// Writers should write a module under a temporary name (anything not ending
// in .wasm, or starting with a dot) and rename it into place: a rename is
// atomic, so the watcher only ever sees whole files. Files written in place
// are picked up once no event has touched them for the settle time; a file
// caught half-written fails to compile, is reported, and is loaded again
// when the write completes.
//
// Only regular files are cells (ReadFile): symbolic links are refused, even
// ones pointing inside the directory, so the directory never serves a file
// from elsewhere; FIFOs, devices and sockets are refused without blocking.
package cellwatch

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Ext is the extension of cell modules.
const Ext = ".wasm"

// IntentExt is the extension of intent files; a change to <name>.intent is
// reported as an event for cell <name>.
const IntentExt = ".intent"

// Op says what happened to a cell file.
type Op int

// Operations.
const (
	// Changed: the file exists and may have new content.
	Changed Op = iota + 1
	// Removed: the file is gone.
	Removed
)

func (o Op) String() string {
	if o == Removed {
		return "removed"
	}
	return "changed"
}

// Event reports a settled change to one cell file.
type Event struct {
	// Cell is the file name without its extension.
	Cell string
	// Path is the file's full path.
	Path string
	// Op is what happened.
	Op Op
}

// Watcher reports settled changes in a directory.
type Watcher struct {
	dir    string
	settle time.Duration
	log    *slog.Logger
}

// New returns a watcher for dir that reports a file once settle has passed
// without events for it.
func New(dir string, settle time.Duration, log *slog.Logger) *Watcher {
	return &Watcher{dir: dir, settle: settle, log: log}
}

// CellName returns the cell a file name belongs to, or "" when the file is
// neither a cell module nor an intent (wrong extension, hidden, or a
// directory name).
func CellName(file string) string {
	base := filepath.Base(file)
	if strings.HasPrefix(base, ".") {
		return ""
	}
	for _, ext := range []string{Ext, IntentExt} {
		if strings.HasSuffix(base, ext) && len(base) > len(ext) {
			return strings.TrimSuffix(base, ext)
		}
	}
	return ""
}

// Run reports every module already in the directory as Changed, then every
// settled change, calling fn from one goroutine at a time, until ctx ends.
func (w *Watcher) Run(ctx context.Context, fn func(Event)) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("cellwatch: %w", err)
	}
	defer fw.Close()
	if err := fw.Add(w.dir); err != nil {
		return fmt.Errorf("cellwatch: watching %s: %w", w.dir, err)
	}

	var (
		mu      sync.Mutex
		pending = map[string]*time.Timer{}
		ready   = make(chan string, 64)
	)
	schedule := func(path string) {
		mu.Lock()
		defer mu.Unlock()
		if t, ok := pending[path]; ok {
			t.Reset(w.settle)
			return
		}
		pending[path] = time.AfterFunc(w.settle, func() {
			mu.Lock()
			delete(pending, path)
			mu.Unlock()
			select {
			case ready <- path:
			case <-ctx.Done():
			}
		})
	}
	defer func() {
		mu.Lock()
		for _, t := range pending {
			t.Stop()
		}
		mu.Unlock()
	}()

	entries, err := os.ReadDir(w.dir)
	if err != nil {
		return fmt.Errorf("cellwatch: listing %s: %w", w.dir, err)
	}
	for _, e := range entries {
		if !e.IsDir() && CellName(e.Name()) != "" {
			fn(Event{Cell: CellName(e.Name()), Path: filepath.Join(w.dir, e.Name()), Op: Changed})
		}
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return nil
			}
			if CellName(ev.Name) != "" {
				schedule(ev.Name)
			}
		case err, ok := <-fw.Errors:
			if !ok {
				return nil
			}
			// An overflow loses events: rescan everything.
			w.log.Warn("watch error; rescanning", "dir", w.dir, "err", err)
			if entries, err := os.ReadDir(w.dir); err == nil {
				for _, e := range entries {
					if CellName(e.Name()) != "" {
						schedule(filepath.Join(w.dir, e.Name()))
					}
				}
			}
		case path := <-ready:
			ev := Event{Cell: CellName(path), Path: path, Op: Changed}
			// Lstat: a symlink or a FIFO is reported Changed, and refused
			// with its reason by ReadFile, rather than followed.
			if fi, err := os.Lstat(path); err != nil || fi.IsDir() {
				ev.Op = Removed
			}
			fn(ev)
		}
	}
}
