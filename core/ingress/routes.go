package ingress

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
)

// Route sends the requests for Host under Prefix to Cell.
//
// Host is lowercase and without a port; "*.example.com" stands for any one
// label before example.com (a.example.com, not a.b.example.com nor
// example.com); "" is any host. Prefix starts with "/" and matches whole
// segments: "/api" matches /api and /api/x, not /apix. Prefix "/" matches
// every path: on any host, that makes Cell the default cell.
type Route struct {
	Host   string
	Prefix string
	Cell   string
}

// String renders the route as HOST PREFIX -> CELL, with "*" for any host.
func (r Route) String() string {
	h := r.Host
	if h == "" {
		h = "*"
	}
	return fmt.Sprintf("%s%s -> %s", h, r.Prefix, r.Cell)
}

// Conflict is a host and prefix that more than one cell claims. The cell
// whose name sorts first takes it (Route.Cell); Losers do not get it.
type Conflict struct {
	Route  Route
	Losers []string
}

// Table is an immutable route table: host and path prefix to cell. A
// request is looked up in this order, most specific first:
//
//  1. routes of the request's exact host, then of its wildcard
//     (*.parent), each by longest prefix;
//  2. routes of any host, by longest prefix, "/" aside;
//  3. the cell named by the first path segment (/hello → hello), unless
//     that cell has routes of its own (a routed cell is served only
//     where its routes say);
//  4. the default cell: the route of any host with prefix "/".
//
// Step 3 is the caller's (Server.ServeHTTP asks Cells, which knows the
// cells of this node and of its peers); the table says whether it
// applies.
type Table struct {
	exact   map[string]*prefixes // host → its routes
	wild    map[string]*prefixes // ".example.com" of *.example.com → its routes
	any     prefixes             // any host, "/" aside (any.root stays "")
	def     string               // any host, "/"
	claimed map[string]bool      // cells with routes: not served by name
	routes  []Route              // in force, sorted
}

// prefixes are one host's routes: by prefix, and the route of "/".
// A path is matched by looking its own prefixes up, longest first, at
// most depth of them: a cost bounded by the routes' depth, whatever their
// number or the path's length.
type prefixes struct {
	byPrefix map[string]string
	depth    int // segments of the deepest prefix
	root     string
}

func (ps *prefixes) add(prefix, cell string) {
	if prefix == "/" {
		ps.root = cell
		return
	}
	if ps.byPrefix == nil {
		ps.byPrefix = map[string]string{}
	}
	ps.byPrefix[prefix] = cell
	ps.depth = max(ps.depth, strings.Count(prefix, "/"))
}

// match returns the cell of the longest prefix of path, or "".
func (ps *prefixes) match(path string) string {
	if len(ps.byPrefix) > 0 && len(path) > 1 {
		// Only path's first depth segments can match.
		p, n := path, 0
		for i := 1; i < len(p); i++ {
			if p[i] == '/' {
				if n++; n == ps.depth {
					p = p[:i]
					break
				}
			}
		}
		for len(p) > 1 {
			if c, ok := ps.byPrefix[p]; ok {
				return c
			}
			i := strings.LastIndexByte(p, '/')
			if i <= 0 {
				break
			}
			p = p[:i]
		}
	}
	return ps.root
}

// CleanPrefix is the form of a path prefix a Table keeps: a trailing "/"
// dropped, "/" itself kept.
func CleanPrefix(p string) string {
	if len(p) > 1 {
		p = strings.TrimRight(p, "/")
		if p == "" {
			return "/"
		}
	}
	return p
}

// NewTable builds a table from routes (any order). A host and prefix
// claimed by more than one cell goes to the cell whose name sorts first,
// whatever order the routes came in, and is reported in the conflicts.
func NewTable(routes []Route) (*Table, []Conflict) {
	rs := make([]Route, 0, len(routes))
	for _, r := range routes {
		r.Host = strings.ToLower(r.Host)
		r.Prefix = CleanPrefix(r.Prefix)
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b Route) int {
		if c := strings.Compare(a.Host, b.Host); c != 0 {
			return c
		}
		if c := strings.Compare(a.Prefix, b.Prefix); c != 0 {
			return c
		}
		return strings.Compare(a.Cell, b.Cell)
	})
	rs = slices.Compact(rs)
	t := &Table{exact: map[string]*prefixes{}, wild: map[string]*prefixes{}, claimed: map[string]bool{}}
	var conflicts []Conflict
	for i, r := range rs {
		t.claimed[r.Cell] = true
		if i > 0 && rs[i-1].Host == r.Host && rs[i-1].Prefix == r.Prefix {
			// Taken by the first cell of this host and prefix, which
			// opened the conflict (sorted: it is the last one).
			conflicts[len(conflicts)-1].Losers = append(conflicts[len(conflicts)-1].Losers, r.Cell)
			continue
		}
		if i+1 < len(rs) && rs[i+1].Host == r.Host && rs[i+1].Prefix == r.Prefix {
			conflicts = append(conflicts, Conflict{Route: r})
		}
		t.routes = append(t.routes, r)
		var ps *prefixes
		switch {
		case r.Host == "" && r.Prefix == "/":
			t.def = r.Cell
			continue
		case r.Host == "":
			ps = &t.any
		case strings.HasPrefix(r.Host, "*."):
			ps = t.wild[r.Host[1:]]
			if ps == nil {
				ps = new(prefixes)
				t.wild[r.Host[1:]] = ps
			}
		default:
			ps = t.exact[r.Host]
			if ps == nil {
				ps = new(prefixes)
				t.exact[r.Host] = ps
			}
		}
		ps.add(r.Prefix, r.Cell)
	}
	return t, conflicts
}

// Routes returns the routes in force (each conflict's winner), sorted by
// host, prefix and cell.
func (t *Table) Routes() []Route {
	if t == nil {
		return nil
	}
	return slices.Clone(t.routes)
}

// Claimed reports whether cell has routes of its own, and so is not
// served at /<cell> by name.
func (t *Table) Claimed(cell string) bool { return t != nil && t.claimed[cell] }

// Default returns the default cell, or "".
func (t *Table) Default() string {
	if t == nil {
		return ""
	}
	return t.def
}

// Match returns the cell routed for a request to host (as in the Host
// header: a port and case do not matter) and path, steps 1 and 2 of the
// lookup order. When no route takes the request, byName says whether the
// first path segment may name the cell (step 3): it does not when that
// cell has routes. The default cell (step 4) is left to the caller, for
// when the name finds no cell.
func (t *Table) Match(host, path string) (cell string, byName bool) {
	if len(t.exact) > 0 || len(t.wild) > 0 {
		h := HostOnly(host)
		if ps := t.exact[h]; ps != nil {
			if c := ps.match(path); c != "" {
				return c, false
			}
		}
		if i := strings.IndexByte(h, '.'); i > 0 && len(t.wild) > 0 {
			if ps := t.wild[h[i:]]; ps != nil {
				if c := ps.match(path); c != "" {
					return c, false
				}
			}
		}
	}
	if c := t.any.match(path); c != "" {
		return c, false
	}
	name := CellName(path)
	if name == "" || t.claimed[name] {
		return "", false
	}
	return name, true
}

// HostOnly returns a Host header's host: lowercase, without its port,
// brackets or a final dot. It allocates only for a host with upper case.
func HostOnly(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if c := host[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(host)
		}
	}
	return host
}

// Router holds the table in force; the zero value routes by first segment
// alone. Safe for concurrent use.
type Router struct {
	t atomic.Pointer[Table]
}

// Set puts t in force (nil: route by first segment alone).
func (r *Router) Set(t *Table) { r.t.Store(t) }

// Table returns the table in force, or nil.
func (r *Router) Table() *Table { return r.t.Load() }
