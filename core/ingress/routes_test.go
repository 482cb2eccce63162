package ingress

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// shopRoutes is a table exercising every kind of route.
var shopRoutes = []Route{
	{Host: "shop.example", Prefix: "/", Cell: "shop"},
	{Host: "shop.example", Prefix: "/api/", Cell: "shopapi"},
	{Host: "*.shop.example", Prefix: "/", Cell: "tenant"},
	{Host: "Admin.Example", Prefix: "/", Cell: "admin"},
	{Prefix: "/api/v2", Cell: "apiv2"},
	{Prefix: "/api", Cell: "api"},
	{Prefix: "/", Cell: "fallback"},
	{Host: "narrow.example", Prefix: "/only", Cell: "narrow"},
}

func TestTableMatch(t *testing.T) {
	tab, conflicts := NewTable(shopRoutes)
	if len(conflicts) != 0 {
		t.Fatalf("conflicts: %v", conflicts)
	}
	for _, tc := range []struct {
		host, path string
		cell       string
		byName     bool
	}{
		{"shop.example", "/", "shop", false},
		{"shop.example", "/hello", "shop", false},                // a host route takes every path of its host
		{"SHOP.example:8443", "/x", "shop", false},               // case and port do not matter
		{"shop.example.", "/x", "shop", false},                   // nor a final dot
		{"shop.example", "/api", "shopapi", false},               // longest prefix of the host
		{"shop.example", "/api/v2/x", "shopapi", false},          // the host's routes before any host's
		{"shop.example", "/apix", "shop", false},                 // whole segments
		{"a.shop.example", "/hello", "tenant", false},            // wildcard: one label
		{"a.b.shop.example", "/hello", "hello", true},            // not two
		{"other.example", "/api/v2", "apiv2", false},             // any host, longest prefix
		{"other.example", "/api/v2/users", "apiv2", false},       //
		{"other.example", "/api/v20", "api", false},              // segment boundary
		{"other.example", "/apix", "apix", true},                 // not /api: by name
		{"other.example", "/hello/x", "hello", true},             // by name
		{"other.example", "/shop", "", false},                    // a routed cell is not served by name
		{"other.example", "/", "", false},                        // nothing names a cell: the default is the caller's
		{"admin.example", "/anything", "admin", false},           // a host given in upper case
		{"narrow.example", "/only/x", "narrow", false},           //
		{"narrow.example", "/api", "api", false},                 // falls through to any host's routes
		{"narrow.example", "/hello", "hello", true},              // and to names
		{"[::1]:8080", "/api", "api", false},                     //
		{"", "/api/v2", "apiv2", false},                          // no Host (HTTP/1.0)
		{"shop.example", "/api/../secret", "shopapi", false},     // as written: the cell sees the path
		{"other.example", "/narrow", "", false},                  // narrow is routed
		{"other.example", "/fallback", "", false},                // so is the default cell
		{"x.example", "/tenant", "", false},                      //
		{"x.example", "/admin/../api/v2", "", false},             // admin is routed
		{"x.example", "/shopapi-not", "shopapi-not", true},       //
		{"other.example", "/api/v2/../../hello", "apiv2", false}, //
	} {
		cell, byName := tab.Match(tc.host, tc.path)
		if cell != tc.cell || byName != tc.byName {
			t.Errorf("Match(%q, %q) = %q, %v; want %q, %v", tc.host, tc.path, cell, byName, tc.cell, tc.byName)
		}
	}
	// A path of many segments costs lookups of the routes' depth only.
	deep := "/api/v2" + strings.Repeat("/x", 30000)
	if n := testing.AllocsPerRun(10, func() {
		if c, _ := tab.Match("other.example", deep); c != "apiv2" {
			t.Fatalf("deep path went to %q", c)
		}
	}); n != 0 {
		t.Errorf("Match allocates %v times", n)
	}
	if d := tab.Default(); d != "fallback" {
		t.Errorf("Default = %q", d)
	}
	if !tab.Claimed("tenant") || tab.Claimed("hello") {
		t.Error("Claimed is wrong")
	}
}

// TestTableConflicts: two cells claiming one host and prefix: the one
// whose name sorts first takes it, whatever the order the routes arrive
// in, and the conflict names both.
func TestTableConflicts(t *testing.T) {
	routes := []Route{
		{Host: "shop.example", Prefix: "/", Cell: "shop-b"},
		{Host: "shop.example", Prefix: "/", Cell: "shop-a"},
		{Host: "SHOP.example", Prefix: "/", Cell: "shop-c"},
		{Prefix: "/api/", Cell: "api2"},
		{Prefix: "/api", Cell: "api1"},
		{Prefix: "/api", Cell: "api1"}, // the same cell twice is no conflict
		{Prefix: "/solo", Cell: "solo"},
	}
	want := []Conflict{
		{Route: Route{Prefix: "/api", Cell: "api1"}, Losers: []string{"api2"}},
		{Route: Route{Host: "shop.example", Prefix: "/", Cell: "shop-a"}, Losers: []string{"shop-b", "shop-c"}},
	}
	wantRoutes := []Route{{Prefix: "/api", Cell: "api1"}, {Prefix: "/solo", Cell: "solo"}, {Host: "shop.example", Prefix: "/", Cell: "shop-a"}}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		r.Shuffle(len(routes), func(i, j int) { routes[i], routes[j] = routes[j], routes[i] })
		tab, conflicts := NewTable(routes)
		if !reflect.DeepEqual(conflicts, want) {
			t.Fatalf("conflicts %v, want %v", conflicts, want)
		}
		if got := tab.Routes(); !reflect.DeepEqual(got, wantRoutes) {
			t.Fatalf("routes %v, want %v", got, wantRoutes)
		}
		if c, _ := tab.Match("shop.example", "/"); c != "shop-a" {
			t.Fatalf("shop.example / went to %q", c)
		}
		if c, _ := tab.Match("x", "/api/1"); c != "api1" {
			t.Fatalf("/api/1 went to %q", c)
		}
		// A loser is still routed (it claimed a route), so not by name.
		if c, byName := tab.Match("x", "/shop-b"); c != "" || byName {
			t.Fatalf("/shop-b went to %q (by name %v)", c, byName)
		}
	}
}

func TestHostOnly(t *testing.T) {
	for in, want := range map[string]string{
		"shop.example":      "shop.example",
		"Shop.Example:8080": "shop.example",
		"shop.example.":     "shop.example",
		"shop.example.:80":  "shop.example",
		"[::1]:8080":        "::1",
		"[::1]":             "::1",
		"127.0.0.1:80":      "127.0.0.1",
		"":                  "",
	} {
		if got := HostOnly(in); got != want {
			t.Errorf("HostOnly(%q) = %q, want %q", in, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = HostOnly("shop.example:8080") }); n != 0 {
		t.Errorf("HostOnly of a lowercase host allocates %v times", n)
	}
}

func TestCleanPrefix(t *testing.T) {
	for in, want := range map[string]string{"/": "/", "//": "/", "/api/": "/api", "/api": "/api", "/a/b//": "/a/b"} {
		if got := CleanPrefix(in); got != want {
			t.Errorf("CleanPrefix(%q) = %q, want %q", in, got, want)
		}
	}
}

// namedCells are cells that answer with their name.
type namedCells map[string]http.Handler

func newCells(names ...string) namedCells {
	c := namedCells{}
	for _, n := range names {
		c.add(n)
	}
	return c
}

func (c namedCells) add(name string) {
	c[name] = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })
}

func (c namedCells) Handler(name string) http.Handler {
	if h, ok := c[name]; ok {
		return h
	}
	return nil
}

// TestServeHTTPRoutes: the server consults the table, then names, then
// the default cell; a name the table withholds or no cell answers falls to
// the default cell, and without one is 404.
func TestServeHTTPRoutes(t *testing.T) {
	cells := newCells("shop", "shopapi", "tenant", "admin", "apiv2", "api", "fallback", "narrow", "hello")
	s := New(cells, slog.New(slog.DiscardHandler), Options{})
	get := func(host, path string) (int, string) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "http://"+host+path, nil)
		s.ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}
	// No table: by name only.
	if code, body := get("shop.example", "/hello"); code != 200 || body != "hello" {
		t.Errorf("no table: %d %q", code, body)
	}
	if code, _ := get("shop.example", "/"); code != 404 {
		t.Errorf("no table, /: %d", code)
	}
	tab, _ := NewTable(shopRoutes)
	s.SetRoutes(tab)
	for _, tc := range []struct{ host, path, want string }{
		{"shop.example", "/hello", "shop"},
		{"other.example", "/hello", "hello"},
		{"other.example", "/", "fallback"},
		{"other.example", "/nosuchcell/x", "fallback"}, // no cell by that name
		{"other.example", "/shop", "fallback"},         // withheld from names
		{"a.shop.example", "/", "tenant"},
		{"other.example", "/api/v2/x", "apiv2"},
	} {
		if code, body := get(tc.host, tc.path); code != 200 || body != tc.want {
			t.Errorf("%s%s: %d %q, want %q", tc.host, tc.path, code, body, tc.want)
		}
	}
	// Without a default cell, what no route takes is 404.
	tab, _ = NewTable(shopRoutes[:6])
	s.SetRoutes(tab)
	for _, tc := range []struct{ host, path, want string }{
		{"other.example", "/", "no cell is routed"},
		{"other.example", "/shop", "no cell is routed"},
		{"other.example", "/nosuchcell", `no cell named "nosuchcell"`},
	} {
		if code, body := get(tc.host, tc.path); code != 404 || !strings.Contains(body, tc.want) {
			t.Errorf("%s%s: %d %q, want 404 ~%q", tc.host, tc.path, code, body, tc.want)
		}
	}
	s.SetRoutes(nil)
	if code, body := get("shop.example", "/shop"); code != 200 || body != "shop" {
		t.Errorf("table removed: %d %q", code, body)
	}
}

// discard is a ResponseWriter that keeps nothing, so a benchmark measures
// the routing and not a recorder.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header               { return d.h }
func (d *discard) Write(b []byte) (int, error)       { return len(b), nil }
func (d *discard) WriteString(s string) (int, error) { return len(s), nil }
func (d *discard) WriteHeader(int)                   {}

// BenchmarkRoute measures ServeHTTP's routing of one request in process
// (no sockets; the cell is a handler that writes nothing), so the cost is
// the lookup alone. peer=first-segment is /hello with no table: the node
// with no routed cell, as before routes existed. The others run with a
// table of 1000 routes (hosts, wildcards, prefixes, a default): /hello by
// name through the table, a host route, a wildcard host, a prefix and the
// default cell. Aim: the plain /hello with a table within 100 ns of the
// peer, and no allocation in any.
func BenchmarkRoute(b *testing.B) {
	cells := newCells("hello", "fallback")
	var routes []Route
	for i := range 250 {
		c := fmt.Sprintf("c%d", i)
		cells.add(c)
		routes = append(routes,
			Route{Host: fmt.Sprintf("host%d.example", i), Prefix: "/", Cell: c},
			Route{Host: fmt.Sprintf("*.tenant%d.example", i), Prefix: "/", Cell: c},
			Route{Prefix: fmt.Sprintf("/api/v%d", i), Cell: c},
			Route{Host: fmt.Sprintf("host%d.example", i), Prefix: "/admin", Cell: c},
		)
	}
	routes = append(routes, Route{Prefix: "/", Cell: "fallback"})
	tab, _ := NewTable(routes)
	none := New(cells, slog.New(slog.DiscardHandler), Options{})
	routed := New(cells, slog.New(slog.DiscardHandler), Options{})
	routed.SetRoutes(tab)
	for _, bc := range []struct {
		name string
		s    *Server
		host string
		path string
	}{
		{"peer=first-segment", none, "127.0.0.1:8080", "/hello/x"},
		{"table/by-name", routed, "127.0.0.1:8080", "/hello/x"},
		{"table/host", routed, "host200.example:8080", "/hello/x"},
		{"table/wildcard", routed, "a.tenant200.example", "/hello/x"},
		{"table/prefix", routed, "127.0.0.1:8080", "/api/v200/users"},
		{"table/default", routed, "127.0.0.1:8080", "/"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := httptest.NewRequest("GET", "http://"+bc.host+bc.path, nil)
			w := &discard{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				bc.s.ServeHTTP(w, r)
			}
		})
	}
}
