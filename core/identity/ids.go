package identity

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Path prefixes of the SPIFFE IDs Celluster hands out.
const (
	// NodePrefix starts the path of a node ID: spiffe://TD/node/NAME.
	NodePrefix = "/node/"
	// CellPrefix starts the path of a cell ID: spiffe://TD/cell/NAME.
	CellPrefix = "/cell/"
)

// nodeNameRE is what a node name may look like: host-name-like, one SPIFFE
// path segment. Dots are allowed (node names are often host names); leading
// and trailing characters must be letters or digits, so "." and ".." (which
// SPIFFE forbids as segments) cannot occur.
var nodeNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)

// cellNameRE matches core/cell.ValidName, which this package cannot import.
var cellNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$`)

// ValidNodeName reports whether name can name a node, and why not: 1-63
// lowercase letters, digits, '.', '-' or '_', starting and ending with a
// letter or digit.
func ValidNodeName(name string) error {
	if !nodeNameRE.MatchString(name) {
		return fmt.Errorf("identity: invalid node name %q: use 1-63 lowercase letters, digits, '.', '-' or '_', starting and ending with a letter or digit", name)
	}
	return nil
}

// NodeID returns the SPIFFE ID of node name in td: spiffe://TD/node/NAME.
func NodeID(td spiffeid.TrustDomain, name string) (spiffeid.ID, error) {
	if td.IsZero() {
		return spiffeid.ID{}, fmt.Errorf("identity: node ID for %q: no trust domain", name)
	}
	if err := ValidNodeName(name); err != nil {
		return spiffeid.ID{}, err
	}
	id, err := spiffeid.FromPath(td, NodePrefix+name)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: node ID for %q: %w", name, err)
	}
	return id, nil
}

// CellID returns the SPIFFE ID of cell name in td: spiffe://TD/cell/NAME.
// Cell names follow the rule of core/cell.ValidName.
func CellID(td spiffeid.TrustDomain, name string) (spiffeid.ID, error) {
	if td.IsZero() {
		return spiffeid.ID{}, fmt.Errorf("identity: cell ID for %q: no trust domain", name)
	}
	if !cellNameRE.MatchString(name) {
		return spiffeid.ID{}, fmt.Errorf("identity: invalid cell name %q: use 1-63 lowercase letters, digits, '-' or '_', starting and ending with a letter or digit", name)
	}
	id, err := spiffeid.FromPath(td, CellPrefix+name)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: cell ID for %q: %w", name, err)
	}
	return id, nil
}

// ParseNodeID returns the node name of id, which must be a node ID of td
// (spiffe://TD/node/NAME with a valid NAME). Its errors match ErrTrustDomain
// or ErrNotNodeID under errors.Is.
func ParseNodeID(id spiffeid.ID, td spiffeid.TrustDomain) (string, error) {
	if id.IsZero() {
		return "", kindErr(ErrNotNodeID, "identity: empty SPIFFE ID: not a node ID")
	}
	if !id.MemberOf(td) {
		return "", kindErr(ErrTrustDomain, "identity: %s: trust domain %s, want %s", id, id.TrustDomain(), td)
	}
	name, ok := strings.CutPrefix(id.Path(), NodePrefix)
	if !ok || ValidNodeName(name) != nil {
		return "", kindErr(ErrNotNodeID, "identity: %s: not a node ID (want spiffe://%s/node/NAME)", id, td)
	}
	return name, nil
}
