package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	cilium "github.com/cilium/ebpf"
)

// bpfStatus is the bpf part of `celctl status -o json`.
type bpfStatus struct {
	Available bool   `json:"available"`
	Error     string `json:"error"`
	PinPath   string `json:"pin_path"`
	Programs  []struct {
		Name string `json:"name"`
		ID   uint32 `json:"id"`
	} `json:"programs"`
}

func (n *proc) bpfStatus() bpfStatus {
	n.t.Helper()
	out, err := n.celctl("status", "-o", "json")
	if err != nil {
		n.t.Fatalf("celctl status: %v\n%s", err, out)
	}
	var st struct {
		BPF bpfStatus `json:"bpf"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		n.t.Fatalf("celctl status -o json: %v\n%s", err, out)
	}
	return st.BPF
}

// TestSameNameNodesKeepEachOthersPrograms: a second node given the name of
// a live node on the same host gets no eBPF — it says why, naming the pin
// directory — and neither its start nor its stop touches the first node's
// pinned, attached programs.
func TestSameNameNodesKeepEachOthersPrograms(t *testing.T) {
	requireRoot(t)
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := "twin-" + hex.EncodeToString(b)
	n1 := startNode(t, "", "--node", name)
	var first bpfStatus
	eventually(t, "the first node's kernel programs", func() bool {
		first = n1.bpfStatus()
		return len(first.Programs) >= 8
	})
	pins := filepath.Join("/sys/fs/bpf/celluster", name)
	before, err := os.ReadDir(filepath.Join(pins, "kernel"))
	if err != nil || len(before) == 0 {
		t.Fatalf("the first node's pins under %s: %v %v", pins, before, err)
	}
	intact := func(when string) {
		t.Helper()
		for _, p := range first.Programs {
			prog, err := cilium.NewProgramFromID(cilium.ProgramID(p.ID))
			if err != nil {
				t.Fatalf("%s: the first node's program %s (id %d) is gone: %v", when, p.Name, p.ID, err)
			}
			prog.Close()
		}
		now, err := os.ReadDir(filepath.Join(pins, "kernel"))
		if err != nil || len(now) != len(before) {
			t.Fatalf("%s: the first node's pins: %v %v, want %d objects", when, now, err, len(before))
		}
		if st := n1.bpfStatus(); len(st.Programs) != len(first.Programs) {
			t.Fatalf("%s: the first node lists %d programs, had %d", when, len(st.Programs), len(first.Programs))
		}
	}

	n2 := startNode(t, "", "--node", name)
	st := n2.bpfStatus()
	if st.Available || !strings.Contains(st.Error, "pin directory in use") || !strings.Contains(st.Error, pins) {
		t.Fatalf("the second node's eBPF status: %+v, want unavailable saying %s is in use", st, pins)
	}
	if !strings.Contains(n2.Logs(), "pin directory in use") {
		t.Error("the second node did not log why it has no eBPF")
	}
	intact("after the second node started")
	n2.stop()
	intact("after the second node stopped")
}
