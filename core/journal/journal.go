package journal

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FileName is the name of the file entries are appended to; rotated files
// add ".1", ".2", ... (the higher, the older).
const FileName = "journal.log"

// Defaults for Options.
const (
	// DefaultMaxFileBytes is the default Options.MaxFileBytes (4 MiB).
	DefaultMaxFileBytes = 4 << 20
	// DefaultMaxFiles is the default Options.MaxFiles.
	DefaultMaxFiles = 4
)

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("journal: closed")

// Options configure a Journal. The zero value uses the defaults.
type Options struct {
	// MaxFileBytes is the size journal.log may reach before it is rotated
	// (default DefaultMaxFileBytes).
	MaxFileBytes int64
	// MaxFiles is how many files are kept, journal.log included (default
	// DefaultMaxFiles).
	MaxFiles int
	// Logger receives warnings about torn and corrupt lines (default
	// slog.Default()).
	Logger *slog.Logger
}

// Query selects entries. The zero value selects every kept entry.
type Query struct {
	// Cell keeps only the entries of this cell ("" keeps all).
	Cell string
	// Limit keeps only the most recent Limit matching entries (0 keeps all).
	Limit int
	// Since keeps only entries whose Time is not before Since (zero keeps all).
	Since time.Time
}

// Journal is an append-only, rotated decision log in a directory. It is
// safe for concurrent use.
type Journal struct {
	dir  string
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	f       *os.File // journal.log, nil after Close or a failed rotation
	size    int64    // bytes of whole entries in journal.log
	seq     uint64   // last Seq written
	corrupt int
	closed  bool
}

// Open opens the journal in dir, creating the directory if needed, and
// continues its numbering. What it finds in the files never makes it fail:
// see the package documentation.
func Open(dir string, opts Options) (*Journal, error) {
	if opts.MaxFileBytes <= 0 {
		opts.MaxFileBytes = DefaultMaxFileBytes
	}
	if opts.MaxFiles <= 0 {
		opts.MaxFiles = DefaultMaxFiles
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("journal: creating %s: %w", dir, err)
	}
	j := &Journal{dir: dir, opts: opts, log: opts.Logger}
	if err := j.removeExtra(); err != nil {
		return nil, err
	}
	if err := j.restrict(); err != nil {
		return nil, err
	}
	for i := opts.MaxFiles - 1; i >= 1; i-- {
		if err := j.recover(j.path(i), false); err != nil {
			return nil, err
		}
	}
	if err := j.recover(j.path(0), true); err != nil {
		return nil, err
	}
	if err := j.openActive(); err != nil {
		return nil, err
	}
	return j, nil
}

// path returns the name of the i-th file: 0 is journal.log.
func (j *Journal) path(i int) string {
	if i == 0 {
		return filepath.Join(j.dir, FileName)
	}
	return filepath.Join(j.dir, FileName+"."+strconv.Itoa(i))
}

// removeExtra deletes rotated files beyond MaxFiles (left by a run with a
// larger MaxFiles).
func (j *Journal) removeExtra() error {
	des, err := os.ReadDir(j.dir)
	if err != nil {
		return fmt.Errorf("journal: listing %s: %w", j.dir, err)
	}
	for _, de := range des {
		suffix, ok := strings.CutPrefix(de.Name(), FileName+".")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(suffix); err == nil && n >= j.opts.MaxFiles {
			p := filepath.Join(j.dir, de.Name())
			if err := os.Remove(p); err != nil {
				return fmt.Errorf("journal: removing %s beyond %d files: %w", p, j.opts.MaxFiles, err)
			}
			j.log.Info("journal: removed file beyond MaxFiles", "file", p, "max_files", j.opts.MaxFiles)
		}
	}
	return nil
}

// FileMode is the mode of the journal's files: the entries name cells,
// rules and signal values, so only the node's user reads them.
const FileMode fs.FileMode = 0o600

// restrict gives every kept file FileMode, whatever mode an earlier version
// created it with.
func (j *Journal) restrict() error {
	for i := range j.opts.MaxFiles {
		p := j.path(i)
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("journal: %w", err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm() == FileMode {
			continue
		}
		if err := os.Chmod(p, FileMode); err != nil {
			return fmt.Errorf("journal: restricting %s to mode %v: %w", p, FileMode, err)
		}
		j.log.Info("journal: restricted file mode", "file", p, "was", fi.Mode().Perm(), "now", FileMode)
	}
	return nil
}

// recover reads one file on Open: it raises j.seq to the highest Seq found,
// counts corrupt lines and, for journal.log, repairs a torn last line.
func (j *Journal) recover(path string, active bool) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("journal: opening %s: %w", path, err)
	}
	defer f.Close()
	var (
		off, cut  int64 = 0, -1
		terminate bool
		corrupt   int
	)
	err = eachLine(f, func(line []byte, terminated bool) {
		start := off
		off += int64(len(line))
		e, derr := decode(line)
		switch {
		case derr == nil:
			j.seq = max(j.seq, e.Seq)
			terminate = active && !terminated
		case active && !terminated:
			cut = start
		case len(bytes.TrimSpace(line)) > 0:
			corrupt++
		}
	})
	if err != nil {
		return fmt.Errorf("journal: reading %s: %w", path, err)
	}
	if corrupt > 0 {
		j.corrupt += corrupt
		j.log.Warn("journal: skipped corrupt lines", "file", path, "lines", corrupt)
	}
	switch {
	case cut >= 0:
		j.log.Warn("journal: cut off a torn last line", "file", path, "offset", cut, "bytes", off-cut)
		if err := os.Truncate(path, cut); err != nil {
			return fmt.Errorf("journal: cutting torn line off %s: %w", path, err)
		}
	case terminate:
		j.log.Warn("journal: terminated a last line missing its newline", "file", path)
		if err := appendFile(path, []byte("\n")); err != nil {
			return fmt.Errorf("journal: terminating last line of %s: %w", path, err)
		}
	}
	return nil
}

func appendFile(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// openActive opens journal.log for appending. j.mu is held or j is not yet
// shared.
func (j *Journal) openActive() error {
	p := j.path(0)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, FileMode)
	if err != nil {
		return fmt.Errorf("journal: opening %s: %w", p, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("journal: %w", err)
	}
	j.f, j.size = f, fi.Size()
	return nil
}

// Append numbers e, sets its Time when zero, writes it and returns it as
// written. On error nothing was written and the returned entry has Seq 0.
func (j *Journal) Append(e Entry) (Entry, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	e.Seq = 0
	if j.closed {
		return e, ErrClosed
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Seq = j.seq + 1
	line, err := encode(e)
	if err != nil {
		e.Seq = 0
		return e, fmt.Errorf("journal: encoding %s on %s: %w", e.Verb, e.Cell, err)
	}
	if j.f != nil && j.size > 0 && j.size+int64(len(line)) > j.opts.MaxFileBytes {
		if err := j.rotate(); err != nil {
			e.Seq = 0
			return e, err
		}
	}
	if j.f == nil {
		// A rotation failed half-way; start a journal.log again.
		if err := j.openActive(); err != nil {
			e.Seq = 0
			return e, err
		}
	}
	n, err := j.f.Write(line)
	if err != nil {
		if n > 0 {
			// Leave no partial line for the next entry to follow.
			_ = j.f.Truncate(j.size)
		}
		e.Seq = 0
		return e, fmt.Errorf("journal: writing %s: %w", j.f.Name(), err)
	}
	j.size += int64(n)
	j.seq = e.Seq
	return e, nil
}

// rotate shifts the files up by one, dropping the oldest, and starts a new
// journal.log. j.mu is held.
func (j *Journal) rotate() error {
	f := j.f
	j.f = nil
	syncErr := f.Sync()
	if err := f.Close(); err != nil && syncErr == nil {
		syncErr = err
	}
	if syncErr != nil {
		return fmt.Errorf("journal: closing %s to rotate it: %w", f.Name(), syncErr)
	}
	n := j.opts.MaxFiles
	if err := os.Remove(j.path(n - 1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("journal: removing oldest file: %w", err)
	}
	for i := n - 2; i >= 0; i-- {
		if err := os.Rename(j.path(i), j.path(i+1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("journal: rotating: %w", err)
		}
	}
	if err := j.openActive(); err != nil {
		return err
	}
	if d, err := os.Open(j.dir); err == nil {
		_ = d.Sync() // make the renames durable; best effort
		d.Close()
	}
	return nil
}

// Query returns the entries q selects, oldest first, reading rotated files
// as well as journal.log. Unreadable files and corrupt lines are skipped.
// Appends are not held up while the files are read.
func (j *Journal) Query(q Query) []Entry {
	// Open every file under the lock: open descriptors stay valid through
	// a rotation, and rotated files no longer change. journal.log is read
	// only up to the entries written so far.
	j.mu.Lock()
	files := make([]*os.File, 0, j.opts.MaxFiles) // newest first
	for i := 0; i < j.opts.MaxFiles; i++ {
		f, err := os.Open(j.path(i))
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				j.log.Warn("journal: cannot read file", "file", j.path(i), "err", err)
			}
			files = append(files, nil)
			continue
		}
		files = append(files, f)
	}
	activeSize := j.size
	j.mu.Unlock()
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()

	var (
		chunks [][]Entry // newest file first
		total  int
	)
	for i, f := range files {
		if f == nil {
			continue
		}
		var r io.Reader = f
		if i == 0 {
			r = io.LimitReader(f, activeSize)
		}
		var got []Entry
		err := eachLine(r, func(line []byte, _ bool) {
			e, err := decode(line)
			if err != nil || (q.Cell != "" && e.Cell != q.Cell) || (!q.Since.IsZero() && e.Time.Before(q.Since)) {
				return
			}
			got = append(got, e)
		})
		if err != nil {
			j.log.Warn("journal: reading file", "file", f.Name(), "err", err)
		}
		chunks = append(chunks, got)
		total += len(got)
		if q.Limit > 0 && total >= q.Limit {
			break
		}
	}
	out := make([]Entry, 0, total)
	for i := len(chunks) - 1; i >= 0; i-- {
		out = append(out, chunks[i]...)
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[len(out)-q.Limit:]
	}
	return out
}

// LastSeq returns the Seq of the last entry written (0 if none). It reads
// no file: a watcher calls it to learn whether Query has anything new.
func (j *Journal) LastSeq() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.seq
}

// Corrupt returns how many lines Open skipped because they did not decode
// (a torn last line is not counted).
func (j *Journal) Corrupt() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.corrupt
}

// Close flushes journal.log to disk and closes it. Append fails afterwards;
// Query still reads the files. Close is idempotent.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil
	}
	j.closed = true
	if j.f == nil {
		return nil
	}
	f := j.f
	j.f = nil
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("journal: closing %s: %w", f.Name(), err)
	}
	return nil
}

// eachLine calls fn with every line of r, its newline included; the last
// line may lack one (terminated is false).
func eachLine(r io.Reader, fn func(line []byte, terminated bool)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			fn(line, line[len(line)-1] == '\n')
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
