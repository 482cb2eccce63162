package main

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"syscall"
	"testing"

	"github.com/celluster/celluster/core/testbuild"
)

// weightOf returns the weight of version sha in vs, or -1.
func weightOf(vs []versionJSON, sha string) int {
	for _, v := range vs {
		if v.SHA256 == sha {
			return int(v.Weight)
		}
	}
	return -1
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// waitOnly waits until the cell routes version sha alone and answers with
// the build's version header.
func (n *proc) waitOnly(cell, sha, version string) {
	n.t.Helper()
	eventually(n.t, cell+" to serve "+version+" ("+sha[:12]+") alone", func() bool {
		vs := n.versions(cell)
		if len(vs) != 1 || vs[0].SHA256 != sha {
			return false
		}
		r, err := n.do("GET", "/"+cell, "")
		return err == nil && r.status == 200 && r.header.Get("X-Cell-Version") == version
	})
}

// killVerbs kills the verbs plugin with SIGKILL and returns its pid.
func (n *proc) killVerbs() int {
	n.t.Helper()
	p := n.listPlugins()["verbs"]
	if p.PID <= 0 {
		n.t.Fatalf("no verbs plugin pid: %+v", p)
	}
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
		n.t.Fatal(err)
	}
	return p.PID
}

// TestUpgradeInterruptedConverges interrupts upgrades at several points and
// checks that the cell always ends up serving the module on disk, and that
// the journal says what happened.
func TestUpgradeInterruptedConverges(t *testing.T) {
	v1 := testbuild.Cell(t, "hello", "-X main.version=v1")
	v2 := testbuild.Cell(t, "hello", "-X main.version=v2")
	sha1, sha2 := sha256hex(v1), sha256hex(v2)

	// Steps long enough for a loaded machine's celctl to see each one.
	n := startNode(t, "", "--upgrade-step-time", "2500ms")
	n.writeIntent("hello", "cell hello\nkeep replicas 2..4\nkeep warm 2\n")
	n.drop("hello", v1)
	n.waitOnly("hello", sha1, "v1")
	l := startLoad(n, "/hello", 2)
	defer l.end()

	// 1. The verbs plugin is killed at the 100% step: the old version has
	// no traffic but still holds its replicas. The node retries once the
	// plugin is back, the upgrade resumes at 100% and retires v1.
	n.drop("hello", v2)
	eventually(t, "v2 to take all traffic", func() bool {
		vs := n.versions("hello")
		return len(vs) == 2 && weightOf(vs, sha2) == 100
	})
	pid := n.killVerbs()
	n.waitOnly("hello", sha2, "v2")
	es := n.journal("hello")
	if e := find(es, func(e journalEntry) bool { return e.Verb == "upgrade" && e.Outcome == "failed" }); e == nil {
		t.Fatalf("no failed upgrade journaled after the plugin (pid %d) was killed: %+v", pid, es)
	}
	if e := find(es, func(e journalEntry) bool {
		return e.Verb == "upgrade" && e.Outcome == "done" && len(e.Args) > 0 && e.Args[0] == sha2
	}); e == nil || !strings.Contains(e.Message, "resumed") {
		t.Fatalf("no resumed upgrade to v2 journaled: %+v", e)
	}

	// 2. Replacing the file again after that works (it was ignored).
	n.drop("hello", v1)
	n.waitOnly("hello", sha1, "v1")

	// 3. The plugin is killed at the 10% or 50% step and the file is put back to
	// the serving version before the plugin returns: the staged version
	// goes, the file's version serves alone.
	n.drop("hello", v2)
	eventually(t, "v2 to take its first steps", func() bool {
		w := weightOf(n.versions("hello"), sha2)
		return w >= 10 && w < 100
	})
	n.killVerbs()
	n.drop("hello", v1)
	n.waitOnly("hello", sha1, "v1")

	// 4. The file is replaced mid-upgrade (no kill): the node ends on the
	// file's version.
	n.drop("hello", v2)
	eventually(t, "v2 to take its first step", func() bool {
		return weightOf(n.versions("hello"), sha2) >= 10
	})
	n.drop("hello", v1)
	n.waitOnly("hello", sha1, "v1")

	st := l.end()
	// Requests in flight on the killed plugin's watch are fine; what the
	// clients saw must be answers, not failures.
	for code, count := range st {
		if code != 200 {
			t.Errorf("%d requests answered %d across the interrupted upgrades (all: %v)", count, code, st)
		}
	}
	for _, e := range n.journal("hello") {
		t.Logf("journal: %s %s %v %s: %s", e.Verb, e.Rule, e.Args, e.Outcome, e.Message)
	}
}

// TestUpgradeInterruptedByNodeKill kills the node in the middle of an
// upgrade; restarted, it serves the module on disk and journals that the
// upgrade it had staged did not end.
func TestUpgradeInterruptedByNodeKill(t *testing.T) {
	v1 := testbuild.Cell(t, "hello", "-X main.version=v1")
	v2 := testbuild.Cell(t, "hello", "-X main.version=v2")
	sha1, sha2 := sha256hex(v1), sha256hex(v2)

	n := startNode(t, "", "--upgrade-step-time", "2s")
	n.drop("hello", v1)
	n.waitOnly("hello", sha1, "v1")
	n.drop("hello", v2)
	eventually(t, "v2 to take traffic", func() bool {
		return weightOf(n.versions("hello"), sha2) >= 10
	})
	if err := n.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-n.exited

	m := launch(t, n.cellsDir, n.data)
	m.awaitReady()
	m.waitOnly("hello", sha2, "v2")
	var note *journalEntry
	eventually(t, "a note of the interrupted upgrade", func() bool {
		note = find(m.journal("hello"), func(e journalEntry) bool {
			return e.Outcome == "note" && strings.Contains(e.Message, "did not end before the node stopped")
		})
		return note != nil
	})
	if !strings.Contains(note.Message, sha2[:12]) {
		t.Fatalf("note %q does not name the upgrade's version %s", note.Message, sha2[:12])
	}
	// The restarted node upgrades normally.
	m.drop("hello", v1)
	m.waitOnly("hello", sha1, "v1")
}
