package cell

import (
	"fmt"
	"strings"
)

// route is one version of a cell and its weight.
type route struct {
	v      *version
	weight uint32
}

// routeTable is an immutable snapshot of how a cell's requests are shared
// among its versions; changes build a new table.
type routeTable struct {
	routes []route // in load order, oldest first
	total  uint64
}

func newRouteTable(routes []route) *routeTable {
	t := &routeTable{routes: routes}
	for _, r := range routes {
		t.total += uint64(r.weight)
	}
	return t
}

// stride spreads consecutive requests across the weight space: n*stride
// mod total visits every slot once per total requests (stride is prime, so
// coprime with any total it does not divide), interleaving the versions
// instead of serving them in blocks.
const stride = 1_000_003

// pick returns the version for the n-th request: a weighted round robin,
// deterministic and free of locks.
func (t *routeTable) pick(n uint64) *version {
	if len(t.routes) == 1 || t.total == 0 {
		return t.primary()
	}
	k := n % t.total
	if t.total%stride != 0 {
		k = (n % t.total) * (stride % t.total) % t.total
	}
	for _, r := range t.routes {
		if k < uint64(r.weight) {
			return r.v
		}
		k -= uint64(r.weight)
	}
	return t.primary()
}

// primary is the version with the most weight, the newest among equals.
func (t *routeTable) primary() *version {
	var best *version
	var w uint32
	for _, r := range t.routes {
		if best == nil || r.weight >= w {
			best, w = r.v, r.weight
		}
	}
	return best
}

// find resolves a version by its sha256 or a unique prefix of at least 8
// hex digits.
func (t *routeTable) find(sha string) (int, error) {
	sha = strings.ToLower(sha)
	if len(sha) < 8 {
		return -1, fmt.Errorf("version %q: give a sha256 or a prefix of at least 8 hex digits", sha)
	}
	at := -1
	for i, r := range t.routes {
		if strings.HasPrefix(r.v.mod.SHA256, sha) {
			if at >= 0 {
				return -1, fmt.Errorf("version prefix %q is ambiguous", sha)
			}
			at = i
		}
	}
	if at < 0 {
		return -1, fmt.Errorf("%w: no version %s", ErrUnknownVersion, sha)
	}
	return at, nil
}

// String lists the versions and weights, e.g. "3f2a9c01ab12=10 9e8d7c6b5a41=90".
func (t *routeTable) String() string {
	var b strings.Builder
	for i, r := range t.routes {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", r.v.mod.SHA256[:12], r.weight)
	}
	return b.String()
}
