package main

import (
	"os"
	"strings"
	"testing"

	"github.com/celluster/celluster/core/testbuild"
)

// TestCellSignal: a cell publishes its own signal with cel.signal
// (examples/cells/jobs: jobs.pending, the queue's length); the node lists
// it labelled with the cell, and the cell's intent rule on it fires a
// clone, journaled with the reading. Without `grant signal` the same cell
// serves, but its signal is refused and the log says why.
func TestCellSignal(t *testing.T) {
	t.Parallel() // one node of its own; waits more than it computes
	intent, err := os.ReadFile("../../examples/cells/jobs/jobs.intent")
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, "", "--telemetry-interval", "200ms")
	n.writeIntent("jobs", string(intent))
	jobs := testbuild.Cell(t, "jobs")
	n.drop("jobs", jobs)
	n.waitStatus("/jobs", 204)
	if r, err := n.do("POST", "/jobs?n=10", ""); err != nil || r.status != 200 || strings.TrimSpace(r.body) != "10" {
		t.Fatalf("POST /jobs?n=10: %+v, %v", r, err)
	}
	eventually(t, "jobs.pending{cell=jobs} = 10 in celctl signals", func() bool {
		for _, s := range n.listSignals() {
			if s.Name == "jobs.pending" && s.Labels["cell"] == "jobs" && s.Value == 10 {
				return true
			}
		}
		return false
	})
	var clone *journalEntry
	eventually(t, "the rule on jobs.pending to clone jobs", func() bool {
		clone = find(n.journal("jobs"), func(e journalEntry) bool { return e.Verb == "clone" && e.Outcome == "done" })
		return clone != nil
	})
	if len(clone.Values) == 0 || clone.Values[len(clone.Values)-1].Signal != "jobs.pending" || clone.Values[len(clone.Values)-1].Value != 10 {
		t.Fatalf("clone journaled without the reading that fired it: %+v", clone)
	}

	// Without the grant: refused, logged, the cell serves on.
	n.writeIntent("other", "cell other\nkeep replicas 1..2\n")
	n.drop("other", jobs)
	n.waitStatus("/other", 204)
	if r, err := n.do("POST", "/other?n=3", ""); err != nil || r.status != 200 {
		t.Fatalf("POST /other: %+v, %v", r, err)
	}
	eventually(t, "the refused signal logged", func() bool {
		return strings.Contains(n.Logs(), "cel.signal refused: the cell's intent does not grant signal")
	})
	for _, s := range n.listSignals() {
		if s.Name == "jobs.pending" && s.Labels["cell"] == "other" {
			t.Fatalf("a cell without grant signal published %+v", s)
		}
	}
}
