package identity

import (
	"crypto/x509"
	"testing"
	"time"
)

func TestRenewalDue(t *testing.T) {
	issued := time.Unix(1000, 0)
	leaf := &x509.Certificate{NotBefore: issued.Add(-Backdate), NotAfter: issued.Add(6 * time.Second)}
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{{0, false}, {3999 * time.Millisecond, false}, {4 * time.Second, true}, {10 * time.Second, true}} {
		if got := RenewalDue(leaf, issued.Add(tc.at)); got != tc.want {
			t.Errorf("RenewalDue at issue+%s = %v, want %v", tc.at, got, tc.want)
		}
	}
	if !RenewalDue(nil, issued) {
		t.Error("no certificate: renewal not due")
	}
}
