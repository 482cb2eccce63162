package journal

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

var quiet = slog.New(slog.DiscardHandler)

func open(t *testing.T, dir string, opts Options) *Journal {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	j, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func mustAppend(t *testing.T, j *Journal, e Entry) Entry {
	t.Helper()
	got, err := j.Append(e)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func seqs(es []Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

func files(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	sort.Strings(names)
	return names
}

func TestAppendNumbersAndStamps(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	before := time.Now()
	e1 := mustAppend(t, j, Entry{Cell: "a", Verb: "clone", Rule: "r", Outcome: Done})
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	e2 := mustAppend(t, j, Entry{Cell: "a", Verb: "decay", Rule: "r", Outcome: Done, Time: at, Seq: 99})
	if e1.Seq != 1 || e2.Seq != 2 {
		t.Fatalf("seqs %d, %d; want 1, 2 (a caller's Seq is ignored)", e1.Seq, e2.Seq)
	}
	if e1.Time.Before(before) {
		t.Errorf("zero Time not set to now: %v", e1.Time)
	}
	if !e2.Time.Equal(at) {
		t.Errorf("given Time changed: %v", e2.Time)
	}
	got := j.Query(Query{})
	if len(got) != 2 || got[0].Verb != "clone" || got[1].Verb != "decay" || !got[1].Time.Equal(at) {
		t.Fatalf("Query = %+v", got)
	}
}

func TestReopenContinuesSeq(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{})
	if s := j.LastSeq(); s != 0 {
		t.Fatalf("LastSeq of an empty journal = %d, want 0", s)
	}
	for range 3 {
		mustAppend(t, j, Entry{Cell: "a", Verb: "clone", Outcome: Done})
	}
	if s := j.LastSeq(); s != 3 {
		t.Fatalf("LastSeq = %d, want 3", s)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Append(Entry{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}
	if err := j.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if got := j.Query(Query{}); len(got) != 3 {
		t.Fatalf("Query after Close returned %d entries, want 3", len(got))
	}

	j2 := open(t, dir, Options{})
	if s := j2.LastSeq(); s != 3 {
		t.Fatalf("LastSeq after reopen = %d, want 3", s)
	}
	if e := mustAppend(t, j2, Entry{Cell: "a", Verb: "decay", Outcome: Done}); e.Seq != 4 {
		t.Fatalf("Seq after reopen = %d, want 4", e.Seq)
	}
	if got := seqs(j2.Query(Query{})); fmt.Sprint(got) != "[1 2 3 4]" {
		t.Fatalf("seqs after reopen %v", got)
	}
}

func TestRotation(t *testing.T) {
	dir := t.TempDir()
	opts := Options{MaxFileBytes: 2000, MaxFiles: 3}
	j := open(t, dir, opts)
	const n = 60
	for i := 1; i <= n; i++ {
		mustAppend(t, j, Entry{Cell: fmt.Sprintf("c%d", i%2), Verb: "clone", Args: []string{"1"}, Rule: "r", Outcome: Done})
	}
	if got, want := files(t, dir), []string{"journal.log", "journal.log.1", "journal.log.2"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("files %v, want %v", got, want)
	}
	for _, name := range files(t, dir) {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > opts.MaxFileBytes {
			t.Errorf("%s is %d bytes, over %d", name, fi.Size(), opts.MaxFileBytes)
		}
	}

	check := func(j *Journal, last uint64) {
		t.Helper()
		got := j.Query(Query{})
		if len(got) == 0 || len(got) >= n {
			t.Fatalf("kept %d of %d entries; want some, not all", len(got), n)
		}
		for i, e := range got {
			if want := last - uint64(len(got)-1-i); e.Seq != want {
				t.Fatalf("entry %d has seq %d, want %d (contiguous, oldest first): %v", i, e.Seq, want, seqs(got))
			}
		}
		// The kept entries are every line of all three files.
		lines, active := 0, 0
		for _, name := range files(t, dir) {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			lines += bytes.Count(b, []byte("\n"))
			if name == FileName {
				active = bytes.Count(b, []byte("\n"))
			}
		}
		if len(got) != lines || len(got) <= active {
			t.Fatalf("Query returned %d entries; the files hold %d, journal.log %d", len(got), lines, active)
		}
		lim := j.Query(Query{Limit: 20})
		if len(lim) != 20 || lim[19].Seq != last || lim[0].Seq != last-19 {
			t.Fatalf("Limit 20 across files: %v", seqs(lim))
		}
		c1 := j.Query(Query{Cell: "c1", Limit: 15})
		if len(c1) != 15 {
			t.Fatalf("Cell c1 Limit 15: %d entries", len(c1))
		}
		for i, e := range c1 {
			if e.Cell != "c1" || (i > 0 && e.Seq <= c1[i-1].Seq) {
				t.Fatalf("Cell c1 Limit 15: %v", c1)
			}
		}
	}
	check(j, n)

	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j2 := open(t, dir, opts)
	if e := mustAppend(t, j2, Entry{Cell: "c0", Verb: "decay", Outcome: Done}); e.Seq != n+1 {
		t.Fatalf("seq after reopen = %d, want %d", e.Seq, n+1)
	}
	check(j2, n+1)
}

func TestRotationSingleFile(t *testing.T) {
	dir := t.TempDir()
	opts := Options{MaxFileBytes: 200, MaxFiles: 1}
	j := open(t, dir, opts)
	for range 20 {
		mustAppend(t, j, Entry{Cell: "a", Verb: "clone", Outcome: Done})
	}
	if got := files(t, dir); fmt.Sprint(got) != "[journal.log]" {
		t.Fatalf("files %v", got)
	}
	j.Close()
	j2 := open(t, dir, opts)
	if e := mustAppend(t, j2, Entry{Cell: "a", Verb: "clone", Outcome: Done}); e.Seq != 21 {
		t.Fatalf("seq after reopen = %d, want 21", e.Seq)
	}
}

func TestOversizedEntryGetsOwnFile(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{MaxFileBytes: 100, MaxFiles: 2})
	mustAppend(t, j, Entry{Cell: "a", Verb: "clone", Outcome: Done})
	big := mustAppend(t, j, Entry{Cell: "a", Verb: "note", Outcome: Note, Message: strings.Repeat("x", 500)})
	got := j.Query(Query{})
	if len(got) != 2 || got[1].Seq != big.Seq || len(got[1].Message) != 500 {
		t.Fatalf("Query = %v", seqs(got))
	}
}

func TestFewerMaxFilesRemovesOld(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{MaxFileBytes: 150, MaxFiles: 4})
	for range 30 {
		mustAppend(t, j, Entry{Cell: "a", Verb: "clone", Outcome: Done})
	}
	j.Close()
	if len(files(t, dir)) != 4 {
		t.Fatalf("files %v", files(t, dir))
	}
	j2 := open(t, dir, Options{MaxFileBytes: 150, MaxFiles: 2})
	if got := files(t, dir); fmt.Sprint(got) != "[journal.log journal.log.1]" {
		t.Fatalf("files %v", got)
	}
	if e := mustAppend(t, j2, Entry{Cell: "a", Verb: "clone", Outcome: Done}); e.Seq != 31 {
		t.Fatalf("seq %d, want 31", e.Seq)
	}
}

// logBuffer captures a logger's output.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestTornLastLine(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{})
	for range 3 {
		mustAppend(t, j, Entry{Cell: "a", Verb: "clone", Outcome: Done})
	}
	j.Close()
	path := filepath.Join(dir, FileName)
	if err := appendFile(path, []byte(`{"seq":4,"time":"2026-01-0`)); err != nil {
		t.Fatal(err)
	}

	var logs logBuffer
	j2 := open(t, dir, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if !strings.Contains(logs.String(), "torn") {
		t.Errorf("no warning about the torn line; log:\n%s", logs.String())
	}
	if j2.Corrupt() != 0 {
		t.Errorf("torn line counted as corrupt: %d", j2.Corrupt())
	}
	if got := seqs(j2.Query(Query{})); fmt.Sprint(got) != "[1 2 3]" {
		t.Fatalf("after torn line: %v", got)
	}
	if e := mustAppend(t, j2, Entry{Cell: "a", Verb: "decay", Outcome: Done}); e.Seq != 4 {
		t.Fatalf("seq after torn line = %d, want 4", e.Seq)
	}
	got := j2.Query(Query{})
	if fmt.Sprint(seqs(got)) != "[1 2 3 4]" || got[3].Verb != "decay" {
		t.Fatalf("new entry not readable after the cut: %+v", got)
	}
}

func TestWholeLastLineWithoutNewlineKept(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{})
	mustAppend(t, j, Entry{Cell: "a", Verb: "clone", Outcome: Done})
	j.Close()
	path := filepath.Join(dir, FileName)
	if err := appendFile(path, []byte(`{"seq":2,"cell":"a","verb":"decay","rule":"r","outcome":"done","time":"2026-01-01T00:00:00Z","duration_ns":5}`)); err != nil {
		t.Fatal(err)
	}
	j2 := open(t, dir, Options{})
	mustAppend(t, j2, Entry{Cell: "a", Verb: "spawn", Outcome: Done})
	got := j2.Query(Query{})
	if len(got) != 3 || got[1].Verb != "decay" || got[1].Duration != 5 || got[2].Seq != 3 || got[2].Verb != "spawn" {
		t.Fatalf("Query = %+v", got)
	}
}

func TestCorruptLinesSkippedAndCounted(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{})
	mustAppend(t, j, Entry{Cell: "a", Verb: "clone", Outcome: Done})
	j.Close()
	path := filepath.Join(dir, FileName)
	if err := appendFile(path, []byte("not json\n{}\n\n")); err != nil {
		t.Fatal(err)
	}
	j2 := open(t, dir, Options{})
	mustAppend(t, j2, Entry{Cell: "a", Verb: "decay", Outcome: Done})
	if j2.Corrupt() != 2 {
		t.Errorf("Corrupt() = %d, want 2 (blank lines are not corrupt)", j2.Corrupt())
	}
	if got := seqs(j2.Query(Query{})); fmt.Sprint(got) != "[1 2]" {
		t.Fatalf("Query = %v", got)
	}
}

func TestQuerySelects(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for i := range 10 {
		cell := "a"
		if i%3 == 0 {
			cell = "b"
		}
		mustAppend(t, j, Entry{Time: t0.Add(time.Duration(i) * time.Second), Cell: cell, Verb: "clone", Outcome: Done})
	}
	// b: seqs 1 4 7 10; a: 2 3 5 6 8 9.
	for _, tc := range []struct {
		q    Query
		want string
	}{
		{Query{}, "[1 2 3 4 5 6 7 8 9 10]"},
		{Query{Cell: "b"}, "[1 4 7 10]"},
		{Query{Cell: "a", Limit: 3}, "[6 8 9]"},
		{Query{Limit: 2}, "[9 10]"},
		{Query{Limit: 50}, "[1 2 3 4 5 6 7 8 9 10]"},
		{Query{Since: t0.Add(7 * time.Second)}, "[8 9 10]"},
		{Query{Cell: "a", Since: t0.Add(4 * time.Second), Limit: 2}, "[8 9]"},
		{Query{Cell: "nobody"}, "[]"},
	} {
		if got := fmt.Sprint(seqs(j.Query(tc.q))); got != tc.want {
			t.Errorf("Query(%+v) = %s, want %s", tc.q, got, tc.want)
		}
	}
}

func TestConcurrentAppendAndQuery(t *testing.T) {
	j := open(t, t.TempDir(), Options{MaxFileBytes: 2000, MaxFiles: 3})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for range 100 {
				if _, err := j.Append(Entry{Cell: fmt.Sprint("c", w), Verb: "clone", Outcome: Done}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for range 50 {
				got := j.Query(Query{})
				for i := 1; i < len(got); i++ {
					if got[i].Seq != got[i-1].Seq+1 {
						t.Errorf("query saw a gap or disorder: %v", seqs(got))
						return
					}
				}
			}
		})
	}
	wg.Wait()
	got := j.Query(Query{})
	if len(got) == 0 || got[len(got)-1].Seq != 400 {
		t.Fatalf("last seq %v, want 400", seqs(got))
	}
}

func TestValuesRoundTrip(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	in := []Value{
		{Signal: "latency.p99", Labels: map[string]string{"cell": "a"}, Value: 0.031, Time: at},
		{Signal: "x", Value: math.NaN(), Time: at},
		{Signal: "y", Value: math.Inf(1)},
		{Signal: "z", Value: math.Inf(-1)},
	}
	mustAppend(t, j, Entry{Cell: "a", Verb: "clone", Values: in, Outcome: Done})
	got := j.Query(Query{})[0].Values
	if len(got) != 4 || got[0].Value != 0.031 || got[0].Labels["cell"] != "a" || !got[0].Time.Equal(at) ||
		!math.IsNaN(got[1].Value) || !math.IsInf(got[2].Value, 1) || !math.IsInf(got[3].Value, -1) {
		t.Fatalf("values %+v", got)
	}
}

// TestFilesReadableByOwnerOnly: a new journal's files, rotated ones
// included, are created 0600 whatever the umask, and files left 0644 by an
// earlier version are restricted on Open.
func TestFilesReadableByOwnerOnly(t *testing.T) {
	modes := func(dir string) map[string]os.FileMode {
		t.Helper()
		des, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]os.FileMode{}
		for _, de := range des {
			fi, err := de.Info()
			if err != nil {
				t.Fatal(err)
			}
			out[de.Name()] = fi.Mode().Perm()
		}
		return out
	}

	dir := t.TempDir()
	j := open(t, dir, Options{MaxFileBytes: 512, MaxFiles: 3})
	for i := range 20 {
		mustAppend(t, j, Entry{Cell: "hello", Verb: "clone", Message: strings.Repeat("x", 40) + fmt.Sprint(i)})
	}
	got := modes(dir)
	if len(got) != 3 {
		t.Fatalf("files %v, want journal.log and 2 rotated", got)
	}
	for name, m := range got {
		if m != FileMode {
			t.Errorf("%s has mode %v, want %v", name, m, FileMode)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	// Files an earlier version created world-readable.
	for name := range got {
		if err := os.Chmod(filepath.Join(dir, name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	j2 := open(t, dir, Options{MaxFileBytes: 512, MaxFiles: 3})
	for name, m := range modes(dir) {
		if m != FileMode {
			t.Errorf("after reopening, %s has mode %v, want %v", name, m, FileMode)
		}
	}
	if n := len(j2.Query(Query{})); n == 0 {
		t.Error("no entries read back after the modes were restricted")
	}
}
