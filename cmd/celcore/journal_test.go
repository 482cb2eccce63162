package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/celluster/celluster/core/journal"
)

// TestJournalLargerThanOneMessage: `celctl journal --limit 0` reads a
// journal whose entries exceed gRPC's 4 MiB message limit whole, oldest
// first, and `celctl journal` still prints the newest.
func TestJournalLargerThanOneMessage(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	j, err := journal.Open(filepath.Join(data, "journal"), journal.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	const entries = 600
	msg := strings.Repeat("m", 10000)
	var bytes int64
	for i := range entries {
		e, err := j.Append(journal.Entry{Cell: "big", Verb: "clone", Outcome: journal.Done, Message: fmt.Sprintf("%05d %s", i, msg)})
		if err != nil {
			t.Fatal(err)
		}
		bytes += int64(len(e.Message))
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if bytes < 5<<20 {
		t.Fatalf("wrote %d bytes of messages, want more than 4 MiB", bytes)
	}

	n := startNode(t, data)
	// A loaded machine may take a while to send 12 MiB of JSON; the
	// limit under test is the message size, not the time.
	out, err := n.celctl("--timeout", "5m", "journal", "-o", "json", "--limit", "0", "big")
	if err != nil {
		t.Fatalf("celctl journal --limit 0 on a %d MiB journal: %v\n%.2000s", bytes>>20, err, out)
	}
	var es []journalEntry
	if err := json.Unmarshal([]byte(out), &es); err != nil {
		t.Fatalf("celctl journal -o json: %v", err)
	}
	if len(es) != entries {
		t.Fatalf("celctl journal --limit 0 returned %d entries, want %d", len(es), entries)
	}
	for i, e := range es {
		if want := fmt.Sprintf("%05d ", i); !strings.HasPrefix(e.Message, want) {
			t.Fatalf("entry %d has message %.20q, want it to start %q (oldest first, none missing)", i, e.Message, want)
		}
	}

	out, err = n.celctl("journal", "--limit", "3", "big")
	if err != nil {
		t.Fatalf("celctl journal --limit 3: %v\n%s", err, out)
	}
	if lines := strings.Count(strings.TrimSpace(out), "\n"); lines != 3 || !strings.Contains(out, fmt.Sprintf("%05d ", entries-1)) {
		t.Fatalf("celctl journal --limit 3 printed %d lines, want a header and the 3 newest:\n%.1000s", lines, out)
	}

	// The node's journal files are readable by its user only.
	matches, _ := filepath.Glob(filepath.Join(data, "journal", journal.FileName+"*"))
	for _, p := range matches {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != journal.FileMode {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode().Perm(), journal.FileMode)
		}
	}
}
