package node

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/celluster/celluster/core/identity"
)

func TestRenewalDue(t *testing.T) {
	issued := time.Unix(1000, 0)
	leaf := &x509.Certificate{NotBefore: issued.Add(-identity.Backdate), NotAfter: issued.Add(6 * time.Second)}
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{{0, false}, {3999 * time.Millisecond, false}, {4 * time.Second, true}, {10 * time.Second, true}} {
		if got := renewalDue(leaf, issued.Add(tc.at)); got != tc.want {
			t.Errorf("renewalDue at issue+%s = %v, want %v", tc.at, got, tc.want)
		}
	}
	if !renewalDue(nil, issued) {
		t.Error("no certificate: renewal not due")
	}
}

func TestChoosePeer(t *testing.T) {
	ms := []Member{
		{Name: "self", State: "alive", Self: true},
		{Name: "busy", State: "alive", Load: 9},
		{Name: "idle", State: "alive", Load: 1},
		{Name: "has", State: "alive", Cells: []string{"web"}},
		{Name: "gone", State: "dead"},
	}
	pick := func(pol callPolicy) string {
		if m := choosePeer(ms, "web", pol); m != nil {
			return m.Name
		}
		return ""
	}
	if got := pick(callPolicy{}); got != "idle" {
		t.Errorf("no hints: %q, want the least loaded peer without the cell", got)
	}
	if got := pick(callPolicy{prefer: []string{"busy"}}); got != "busy" {
		t.Errorf("prefer busy: %q", got)
	}
	if got := pick(callPolicy{avoid: []string{"idle"}}); got != "busy" {
		t.Errorf("avoid idle: %q", got)
	}
	if got := pick(callPolicy{avoid: []string{"idle", "busy"}}); got != "" {
		t.Errorf("all avoided: %q", got)
	}
	if got := pick(callPolicy{prefer: []string{"gone", "has"}}); got != "idle" {
		t.Errorf("preferred nodes dead or serving already: %q", got)
	}
}
