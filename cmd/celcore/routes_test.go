package main

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/celluster/celluster/core/testbuild"
)

// TestRoutes: intents route by host name and path prefix, over every
// protocol of the ingress, with a default cell and per-cell body limits:
//
//   - shop (serve host shop.example, *.shop.example) answers every path of
//     its hosts, port and case aside, and nothing of another host, not
//     even /shop;
//   - shop2 claims shop.example too and loses it to shop (the first by
//     name), which celctl cells says;
//   - api (serve http /api/v2, a command cell) answers under its prefix by
//     whole segments and sees the whole path;
//   - home (serve http /) answers / and what no other route or name takes;
//   - counter, with no serve statement, is served by name as before;
//   - small (limit body 1KiB) and big (limit body 64KiB) cap bodies below
//     and above the node's --limit-body 4KiB: 413 over, 200 under;
//   - the same requests route alike over h2c, HTTPS (HTTP/2) and HTTP/3.
func TestRoutes(t *testing.T) {
	t.Parallel() // one node of its own; waits more than it computes
	tt := newTestTLS(t)
	n := startNode(t, "", "--limit-body", "4KiB", "--https", "127.0.0.1:0", "--tls-cert", tt.cert, "--tls-key", tt.key)
	who, echo, hello, counter := testbuild.Cell(t, "whoami"), testbuild.Cell(t, "echo"), testbuild.Cell(t, "hello"), testbuild.Cell(t, "counter")
	for name, c := range map[string]struct {
		intent string
		wasm   []byte
	}{
		"shop":    {"cell shop\nserve host shop.example, *.Shop.example\n", who},
		"shop2":   {"cell shop2\nserve host shop.example\n", counter},
		"api":     {"cell api\nserve http /api/v2\n", echo},
		"home":    {"cell home\nserve http /   # the default cell\n", hello},
		"counter": {"", counter},
		"small":   {"cell small\nlimit body 1KiB\n", who},
		"big":     {"cell big\nlimit body 64 KiB\n", who},
	} {
		if c.intent != "" {
			n.writeIntent(name, c.intent)
		}
		n.drop(name, c.wasm)
	}

	type answer struct {
		status int
		body   string
		proto  string
	}
	send := func(rt http.RoundTripper, base, method, host, path, body string) answer {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := (&http.Client{Transport: rt, Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("%s %s%s: %v", method, host, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return answer{resp.StatusCode, string(b), resp.Proto}
	}
	get := func(host, path string) answer { return send(http.DefaultTransport, n.base, "GET", host, path, "") }
	// Which cell answered: whoami (shop, small, big) says its host and
	// path in JSON, echo (api) its path and body, hello (home) hello, and
	// counter counts.
	whoami := func(a answer) (r whoamiReply) {
		t.Helper()
		if a.status != 200 || json.Unmarshal([]byte(a.body), &r) != nil || r.Proto == "" {
			t.Fatalf("want whoami's answer, got %d %q", a.status, a.body)
		}
		return r
	}
	isHome := func(a answer) bool { return a.status == 200 && a.body == "Hello, world!\n" }

	eventually(t, "the default cell to answer /", func() bool { return isHome(get("other.example", "/")) })
	eventually(t, "shop to answer shop.example", func() bool { a := get("shop.example", "/"); return a.status == 200 && strings.HasPrefix(a.body, "{") })
	eventually(t, "api to answer /api/v2", func() bool { return get("x", "/api/v2").status == 200 })
	n.waitStatus("/counter", 200)
	n.waitStatus("/small", 200)
	n.waitStatus("/big", 200)

	// shop: every path of its hosts (port, case and a wildcard label
	// aside); the full URL and path as sent.
	for _, tc := range []struct{ host, path string }{
		{"shop.example", "/"},
		{"shop.example", "/cart/items?id=3"},
		{"SHOP.Example:8080", "/shop"},
		{"a.shop.example", "/counter"},  // a host route before a name
		{"shop.example", "/api/v2/x"},   // and before any host's prefix
		{"shop.example", "/nosuchcell"}, // and before the default cell
	} {
		r := whoami(get(tc.host, tc.path))
		path, query, _ := strings.Cut(tc.path, "?")
		if r.Host != tc.host || r.Path != path || r.Query != query || r.URL != "http://"+tc.host+tc.path {
			t.Errorf("%s%s reached shop as %+v", tc.host, tc.path, r)
		}
	}
	// ...and nothing of another host: /shop there is the default cell's.
	for _, host := range []string{"other.example", "b.a.shop.example", "shop.example.org", "127.0.0.1"} {
		if a := get(host, "/shop"); !isHome(a) {
			t.Errorf("%s/shop: %d %q, want the default cell", host, a.status, a.body)
		}
	}
	// shop2 lost shop.example to shop, and says so.
	if a := get("shop.example", "/shop2"); a.status != 200 || !strings.HasPrefix(a.body, "{") {
		t.Errorf("shop.example/shop2: %d %q, want shop", a.status, a.body)
	}
	eventually(t, "celctl cells to note shop2's lost route", func() bool {
		return strings.Contains(n.listCells()["shop2"].Error, "route shop.example/ is claimed by cells shop and shop2: shop takes it")
	})
	if e := n.listCells()["shop"].Error; e != "" {
		t.Errorf("shop, which took its route, has an error: %s", e)
	}

	// api: its prefix by whole segments; the cell sees the whole path.
	for _, path := range []string{"/api/v2", "/api/v2/", "/api/v2/users"} {
		a := get("other.example", path+"?q=1")
		var r struct {
			Path  string            `json:"path"`
			Query string            `json:"query"`
			Meta  map[string]string `json:"meta"`
		}
		if a.status != 200 || json.Unmarshal([]byte(a.body), &r) != nil || r.Path != path || r.Query != "q=1" || r.Meta["server_name"] != "other.example" {
			t.Errorf("%s: %d %q", path, a.status, a.body)
		}
	}
	for _, path := range []string{"/api/v2x", "/api", "/api/v3", "/api/x/v2"} {
		if a := get("other.example", path); !isHome(a) {
			t.Errorf("%s: %d %q, want the default cell", path, a.status, a.body)
		}
	}
	// home: / and whatever nothing else takes; counter by name.
	for _, path := range []string{"/", "/nosuchcell", "/nosuchcell/a/b", "/home/x"} {
		if a := get("other.example", path); !isHome(a) {
			t.Errorf("%s: %d %q, want the default cell", path, a.status, a.body)
		}
	}
	if a := get("other.example", "/counter"); a.status != 200 || strings.TrimSpace(a.body) == "" || strings.HasPrefix(a.body, "Hello") {
		t.Errorf("/counter: %d %q, want a count", a.status, a.body)
	}

	// Body limits: the cell's own, below and above the node's 4KiB.
	post := func(path string, size int) answer {
		return send(http.DefaultTransport, n.base, "POST", "other.example", path, strings.Repeat("x", size))
	}
	for _, tc := range []struct {
		path   string
		size   int
		status int
	}{
		{"/small", 1024, 200},
		{"/small", 1025, 413},
		{"/big", 32 << 10, 200}, // over --limit-body: the cell's limit holds
		{"/big", 64 << 10, 200},
		{"/big", 64<<10 + 1, 413},
		{"/api/v2", 4 << 10, 200}, // no limit body: --limit-body
		{"/api/v2", 4<<10 + 1, 413},
	} {
		a := post(tc.path, tc.size)
		if a.status != tc.status {
			t.Errorf("POST %s with %d bytes: %d %q, want %d", tc.path, tc.size, a.status, a.body, tc.status)
		}
		if a.status == 413 && (!strings.HasPrefix(a.body, "celluster: ") || strings.Contains(a.body, n.cellsDir) || len(a.body) > 200) {
			t.Errorf("413 reason %q: want a short generic one", a.body)
		}
	}

	// Every protocol routes alike.
	addr := n.httpsAddr()
	tlsConf := &tls.Config{RootCAs: tt.pool}
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	h2 := &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true}
	h3 := &http3.Transport{TLSClientConfig: tlsConf}
	defer h2c.CloseIdleConnections()
	defer h2.CloseIdleConnections()
	defer h3.Close()
	for _, tc := range []struct {
		name, base, proto string
		rt                http.RoundTripper
	}{
		{"h2c", n.base, "HTTP/2.0", h2c},
		{"HTTPS, HTTP/2", "https://" + addr, "HTTP/2.0", h2},
		{"HTTP/3", "https://" + addr, "HTTP/3.0", h3},
	} {
		a := send(tc.rt, tc.base, "GET", "a.shop.example", "/x", "")
		if a.proto != tc.proto {
			t.Errorf("%s: answered over %s", tc.name, a.proto)
		}
		if r := whoami(a); r.Host != "a.shop.example" || r.Proto != tc.proto || r.Path != "/x" {
			t.Errorf("%s: a.shop.example/x reached shop as %+v", tc.name, r)
		}
		if a := send(tc.rt, tc.base, "GET", "other.example", "/shop", ""); !isHome(a) {
			t.Errorf("%s: other.example/shop: %d %q, want the default cell", tc.name, a.status, a.body)
		}
		if a := send(tc.rt, tc.base, "GET", "other.example", "/api/v2/z", ""); a.status != 200 || !strings.Contains(a.body, `"path":"/api/v2/z"`) {
			t.Errorf("%s: /api/v2/z: %d %q", tc.name, a.status, a.body)
		}
	}
}
