package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/celluster/celluster/core/admin"
)

// intentNode is an admin.Node that knows one intent; its other methods are
// not called.
type intentNode struct {
	admin.Node
	in admin.Intent
}

func (n intentNode) Intent(cell string) (admin.Intent, bool) { return n.in, cell == n.in.Cell }

// serveAdmin serves node on a fresh admin socket and returns its path.
func serveAdmin(t *testing.T, node admin.Node) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "celctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "admin.sock")
	l, err := admin.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	s := admin.New(node)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return path
}

// TestIntentKeepState: celctl intent shows keep state and its replication
// interval, as text and as JSON, and says nothing of state when not kept.
func TestIntentKeepState(t *testing.T) {
	in := admin.Intent{
		Cell: "kv", Origin: "file", Source: "kv.intent", Text: "cell kv\nkeep state replicated every 1s\n", Parser: "intent",
		Applied: time.Now(), Min: 1, Max: 8, Warm: 1, DecayIdle: 5 * time.Minute,
		KeepState: true, StateEvery: time.Second,
	}
	sock := serveAdmin(t, intentNode{in: in})
	out, err := run(t, "--admin", sock, "intent", "kv")
	if err != nil {
		t.Fatalf("intent: %v\n%s", err, out)
	}
	if want := "replicas 1..8, warm 1, decay to zero after 5m0s idle, state kept and replicated every 1s\n"; !strings.Contains(out, want) {
		t.Errorf("intent output lacks %q:\n%s", want, out)
	}
	out, err = run(t, "--admin", sock, "-o", "json", "intent", "kv")
	if err != nil {
		t.Fatalf("intent -o json: %v\n%s", err, out)
	}
	var got struct {
		KeepState   bool    `json:"keep_state"`
		StateEvery  float64 `json:"state_every_s"`
		DecayIdle   float64 `json:"decay_after_idle_s"`
		Cell, Error string
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if !got.KeepState || got.StateEvery != 1 || got.DecayIdle != 300 || got.Cell != "kv" {
		t.Errorf("json = %+v\n%s", got, out)
	}

	in.StateEvery = 0
	sock = serveAdmin(t, intentNode{in: in})
	if out, err := run(t, "--admin", sock, "intent", "kv"); err != nil || !strings.Contains(out, "idle, state kept\n") {
		t.Errorf("kept, not replicated: %v\n%s", err, out)
	}
	in.KeepState = false
	sock = serveAdmin(t, intentNode{in: in})
	if out, err := run(t, "--admin", sock, "intent", "kv"); err != nil || !strings.Contains(out, "decay to zero after 5m0s idle\n") || strings.Contains(out, "state kept") {
		t.Errorf("not kept: %v\n%s", err, out)
	}
	out, err = run(t, "--admin", sock, "-o", "json", "intent", "kv")
	if err != nil || !strings.Contains(out, `"keep_state": false`) || !strings.Contains(out, `"state_every_s": 0`) {
		t.Errorf("not kept, json: %v\n%s", err, out)
	}
}
