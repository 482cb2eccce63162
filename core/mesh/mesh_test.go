package mesh

import (
	"bytes"
	"slices"
	"testing"
)

func TestChoosePeer(t *testing.T) {
	ms := []Member{
		{Name: "self", State: "alive", Self: true},
		{Name: "busy", State: "alive", Load: 9},
		{Name: "idle", State: "alive", Load: 1},
		{Name: "has", State: "alive", Cells: []string{"web"}},
		{Name: "gone", State: "dead"},
	}
	pick := func(prefer, avoid []string) string {
		if m := ChoosePeer(ms, "web", prefer, avoid); m != nil {
			return m.Name
		}
		return ""
	}
	if got := pick(nil, nil); got != "idle" {
		t.Errorf("no hints: %q, want the least loaded peer without the cell", got)
	}
	if got := pick([]string{"busy"}, nil); got != "busy" {
		t.Errorf("prefer busy: %q", got)
	}
	if got := pick(nil, []string{"idle"}); got != "busy" {
		t.Errorf("avoid idle: %q", got)
	}
	if got := pick(nil, []string{"idle", "busy"}); got != "" {
		t.Errorf("all avoided: %q", got)
	}
	if got := pick([]string{"gone", "has"}, nil); got != "idle" {
		t.Errorf("preferred nodes dead or serving already: %q", got)
	}
}

// TestRendezvous: every node ranks the same candidates the same way
// whatever order it lists them in, and removing a node keeps the others'
// order (so the next in line is known to all).
func TestRendezvous(t *testing.T) {
	a := Rendezvous("counter", []string{"n1", "n2", "n3", "n4"})
	b := Rendezvous("counter", []string{"n4", "n2", "n1", "n3"})
	if !slices.Equal(a, b) || len(a) != 4 {
		t.Fatalf("rankings differ: %v vs %v", a, b)
	}
	rest := Rendezvous("counter", slices.DeleteFunc(slices.Clone(a), func(s string) bool { return s == a[0] }))
	if !slices.Equal(rest, a[1:]) {
		t.Fatalf("without the winner %v, want %v", rest, a[1:])
	}
}

func TestRequestFrame(t *testing.T) {
	env := []byte("envelope")
	b := appendRequestFrame(nil, "hello", "front", env)
	cellName, caller, got, err := decodeRequestFrame(b)
	if err != nil || cellName != "hello" || caller != "front" || !bytes.Equal(got, env) {
		t.Fatalf("round trip: %q %q %q %v", cellName, caller, got, err)
	}
	for _, bad := range [][]byte{nil, {2}, {1, 200}, {1, 3, 'a'}, appendRequestFrame(nil, "../x", "", nil), appendRequestFrame(nil, "a", "B!", nil)} {
		if _, _, _, err := decodeRequestFrame(bad); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}

func FuzzDecodeRequestFrame(f *testing.F) {
	f.Add(appendRequestFrame(nil, "hello", "", []byte("x")))
	f.Add(appendRequestFrame(nil, "hello", "front", nil))
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		cellName, caller, env, err := decodeRequestFrame(b)
		if err != nil {
			return
		}
		again := appendRequestFrame(nil, cellName, caller, env)
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding %q gives %q", b, again)
		}
	})
}

// TestTwoChoices: equal loads spread the picks over every replica; with
// two replicas the less loaded always wins; none gives nil.
func TestTwoChoices(t *testing.T) {
	if twoChoices(nil) != nil {
		t.Fatal("a pick among none")
	}
	even := []Member{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	got := map[string]int{}
	for range 600 {
		got[twoChoices(even).Name]++
	}
	for _, mb := range even {
		if got[mb.Name] < 100 {
			t.Fatalf("equal loads: picks %v, want each replica well represented", got)
		}
	}
	uneven := []Member{{Name: "busy", Load: 10}, {Name: "idle", Load: 1}}
	for range 100 {
		if p := twoChoices(uneven); p.Name != "idle" {
			t.Fatalf("picked %s over the idle replica", p.Name)
		}
	}
}
