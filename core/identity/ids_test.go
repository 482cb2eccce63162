package identity

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestNodeAndCellIDs(t *testing.T) {
	for _, name := range []string{"a", "node-1", "n1.rack2", "a_b", strings.Repeat("a", 63)} {
		id, err := NodeID(testTD, name)
		if err != nil {
			t.Errorf("NodeID(%q): %v", name, err)
			continue
		}
		if want := "spiffe://example.test/node/" + name; id.String() != want {
			t.Errorf("NodeID(%q) = %s, want %s", name, id, want)
		}
		if got, err := ParseNodeID(id, testTD); err != nil || got != name {
			t.Errorf("ParseNodeID(%s) = %q, %v", id, got, err)
		}
	}
	for _, name := range []string{"", "A", "a/b", "-a", "a.", ".", "..", "a b", "é", strings.Repeat("a", 64)} {
		if _, err := NodeID(testTD, name); err == nil {
			t.Errorf("NodeID(%q) accepted an invalid name", name)
		}
	}
	if _, err := NodeID(spiffeid.TrustDomain{}, "a"); err == nil {
		t.Error("NodeID without a trust domain accepted")
	}

	id, err := CellID(testTD, "web")
	if err != nil || id.String() != "spiffe://example.test/cell/web" {
		t.Errorf("CellID = %s, %v", id, err)
	}
	for _, name := range []string{"", "Web", "a.b", "a/b"} {
		if _, err := CellID(testTD, name); err == nil {
			t.Errorf("CellID(%q) accepted an invalid name", name)
		}
	}
}

func TestParseNodeIDRefuses(t *testing.T) {
	for _, c := range []struct {
		id   string
		kind error
		says string
	}{
		{"spiffe://other.test/node/a", ErrTrustDomain, "trust domain other.test, want example.test"},
		{"spiffe://example.test/cell/a", ErrNotNodeID, "not a node ID"},
		{"spiffe://example.test/node/a/b", ErrNotNodeID, "not a node ID"},
		{"spiffe://example.test/node", ErrNotNodeID, "not a node ID"},
		{"spiffe://example.test", ErrNotNodeID, "not a node ID"},
		{"spiffe://example.test/node/A", ErrNotNodeID, "not a node ID"},
	} {
		_, err := ParseNodeID(spiffeid.RequireFromString(c.id), testTD)
		wantErr(t, err, c.kind, c.says)
	}
	_, err := ParseNodeID(spiffeid.ID{}, testTD)
	wantErr(t, err, ErrNotNodeID)
}
