package identity

import (
	"crypto/x509"
	"sync"
	"testing"
	"time"
)

func TestCredentialsRenewal(t *testing.T) {
	clk := newFakeClock()
	ca := testCA(t, testTD, clk.Now)
	key, _ := NewKey()
	chain, err := ca.IssueNode("a", key.Public(), 3*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := NewCredentials(key, chain)
	if !c.NotAfter().Equal(chain[0].NotAfter) {
		t.Errorf("NotAfter %s, want %s", c.NotAfter(), chain[0].NotAfter)
	}
	// Lifetime: NotBefore (now-1m) to NotAfter (now+3h), 181 minutes; two
	// thirds of it end 120m40s after NotBefore.
	start := chain[0].NotBefore
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{
		{0, false},
		{2 * time.Hour, false},
		{2*time.Hour + 40*time.Second - time.Nanosecond, false},
		{2*time.Hour + 40*time.Second, true},
		{181 * time.Minute, true},
	} {
		if got := c.NeedsRenewal(start.Add(tc.at)); got != tc.want {
			t.Errorf("NeedsRenewal(NotBefore+%s) = %v, want %v", tc.at, got, tc.want)
		}
	}

	got, err := c.GetCertificate(nil)
	if err != nil || got.Leaf != chain[0] || got.PrivateKey != key {
		t.Fatalf("GetCertificate = %v, %v", got, err)
	}

	clk.Advance(2*time.Hour + 30*time.Minute)
	fresh, err := ca.IssueNode("a", key.Public(), 3*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Renew(fresh); err != nil {
		t.Fatal(err)
	}
	if c.NeedsRenewal(clk.Now()) {
		t.Error("needs renewal right after Renew")
	}
	for name, get := range map[string]func() (*x509.Certificate, error){
		"GetCertificate":       func() (*x509.Certificate, error) { tc, err := c.GetCertificate(nil); return tc.Leaf, err },
		"GetClientCertificate": func() (*x509.Certificate, error) { tc, err := c.GetClientCertificate(nil); return tc.Leaf, err },
	} {
		if l, err := get(); err != nil || !l.Equal(fresh[0]) {
			t.Errorf("%s after Renew: serial %x, %v; want the new certificate", name, l.SerialNumber, err)
		}
	}
}

func TestCredentialsRefuseAnotherKey(t *testing.T) {
	clk := newFakeClock()
	ca := testCA(t, testTD, clk.Now)
	key, _ := NewKey()
	otherKey, _ := NewKey()
	good, _ := ca.IssueNode("a", key.Public(), 0)
	bad, _ := ca.IssueNode("a", otherKey.Public(), 0)

	c := NewCredentials(key, good)
	err := c.Renew(bad)
	wantErr(t, err, nil, "for another key")
	if !c.Leaf().Equal(good[0]) {
		t.Error("a refused Renew replaced the certificate")
	}
	wantErr(t, c.Renew(nil), nil, "no certificate")

	// A mismatched start makes handshakes fail with the reason, until a good
	// chain comes.
	m := NewCredentials(key, bad)
	_, err = m.GetCertificate(nil)
	wantErr(t, err, nil, "for another key")
	_, err = m.GetClientCertificate(nil)
	wantErr(t, err, nil, "for another key")
	if !m.NeedsRenewal(clk.Now()) || !m.NotAfter().IsZero() || m.Leaf() != nil {
		t.Error("unusable credentials do not ask for renewal")
	}
	if err := m.Renew(good); err != nil {
		t.Fatal(err)
	}
	if _, err := m.GetCertificate(nil); err != nil {
		t.Errorf("GetCertificate after a good Renew: %v", err)
	}
}

func TestCredentialsConcurrentRenew(t *testing.T) {
	clk := newFakeClock()
	ca := testCA(t, testTD, clk.Now)
	c := nodeCreds(t, ca, "a", 0)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				if tc, err := c.GetCertificate(nil); err != nil || tc.Leaf == nil {
					t.Errorf("GetCertificate: %v", err)
					return
				}
				_ = c.NeedsRenewal(clk.Now())
			}
		})
	}
	for range 20 {
		chain, err := ca.IssueNode("a", c.Key().Public(), 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Renew(chain); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}
