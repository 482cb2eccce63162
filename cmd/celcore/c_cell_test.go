package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/celluster/celluster/core/testbuild"
)

// TestCCellServe: the C example cell (examples/cells/greet, sdk/c/cel.h,
// built with clang for wasm32-wasi) served by a real node: it greets, sees
// ABI v1.1's metadata — host, scheme, client address, protocol, URL — over
// HTTP/1.1 and over HTTPS with HTTP/2, keeps its count across requests,
// logs through cel.log, calls hello through cel.call (granted by its
// intent, allowed by hello's), and answers a request with hundreds of
// headers, a large body, an odd path or a badly escaped name without
// failing.
func TestCCellServe(t *testing.T) {
	t.Parallel() // one node of its own; waits more than it computes
	greet := testbuild.Cell(t, "greet")
	intent, err := os.ReadFile("../../examples/cells/greet/greet.intent")
	if err != nil {
		t.Fatal(err)
	}
	tt := newTestTLS(t)
	n := startNode(t, "", "--https", "127.0.0.1:0", "--tls-cert", tt.cert, "--tls-key", tt.key)
	n.writeIntent("greet", string(intent))
	n.writeIntent("hello", "cell hello\nallow from cell:greet\n")
	n.drop("hello", testbuild.Cell(t, "hello"))
	n.drop("greet", greet)
	n.waitStatus("/greet", 200)
	n.waitStatus("/hello", 200)

	send := func(rt http.RoundTripper, method, url, host string, header http.Header, body string) reply {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		for k, vs := range header {
			req.Header[k] = vs
		}
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return reply{status: resp.StatusCode, body: string(b), header: resp.Header}
	}
	has := func(what string, r reply, status int, wants ...string) {
		t.Helper()
		if r.status != status {
			t.Fatalf("%s: %d %q, want %d", what, r.status, r.body, status)
		}
		for _, w := range wants {
			if !strings.Contains(r.body, w) {
				t.Fatalf("%s: body %q lacks %q", what, r.body, w)
			}
		}
	}

	// HTTP/1.1 on the plain port, asking for another host.
	plain := &http.Transport{}
	defer plain.CloseIdleConnections()
	r := send(plain, "GET", n.base+"/greet?name=C%20cell", "shop.example:81", nil, "")
	has("GET /greet", r, 200, "Hello, C cell!\n", "method: GET\n", "path: /greet\n", "query: name=C%20cell\n",
		"host: shop.example:81\n", "scheme: http\n", "client: 127.0.0.1:", "proto: HTTP/1.1\n",
		"url: http://shop.example:81/greet?name=C%20cell\n", "user-agent: Go-http-client/1.1\n")
	if ct := r.header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Fatalf("Content-Type %q", ct)
	}
	first := r.header.Get("X-Greet-Served")
	r = send(plain, "GET", n.base+"/greet", "", nil, "")
	has("GET /greet again", r, 200, "Hello, world!\n", "host: "+n.http+"\n")
	if first == "" || r.header.Get("X-Greet-Served") == first {
		t.Fatalf("X-Greet-Served %q then %q: the instance's count did not go on", first, r.header.Get("X-Greet-Served"))
	}

	// HTTPS with HTTP/2: the scheme and protocol the cell sees follow.
	_, port, _ := net.SplitHostPort(n.httpsAddr())
	h2 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tt.pool}, ForceAttemptHTTP2: true}
	defer h2.CloseIdleConnections()
	r = send(h2, "GET", "https://localhost:"+port+"/greet/sub?name=tls", "", nil, "")
	has("GET /greet over HTTPS", r, 200, "Hello, tls!\n", "path: /greet/sub\n", "host: localhost:"+port+"\n",
		"scheme: https\n", "proto: HTTP/2.0\n", "client: 127.0.0.1:", "url: https://localhost:"+port+"/greet/sub?name=tls\n")

	// Many headers and a large body reach it whole.
	many := http.Header{}
	for i := range 300 {
		many.Set(fmt.Sprintf("X-Many-%03d", i), strings.Repeat("v", 50))
	}
	body := strings.Repeat("b", 200<<10)
	r = send(plain, "POST", n.base+"/greet/upload", "", many, body)
	has("POST with 300 headers and a 200 KiB body", r, 200, "method: POST\n", fmt.Sprintf("body: %d bytes\n", len(body)))
	var nh int
	if _, err := fmt.Sscanf(r.body[strings.Index(r.body, "headers: "):], "headers: %d", &nh); err != nil || nh < 300 {
		t.Fatalf("headers seen: %d, %v (want 300 and more)", nh, err)
	}

	// Odd paths and queries: escaped bytes, doubled slashes, a bad escape,
	// a name too long. None is a crash; the cell says what it got.
	r = send(plain, "GET", n.base+"/greet/%E2%98%83//a%2Fb?name=%E2%98%83&&x", "", nil, "")
	has("odd path", r, 200, "Hello, \u2603!\n", "query: name=%E2%98%83&&x\n")
	r = send(plain, "GET", n.base+"/greet?name=%zz", "", nil, "")
	has("bad escape", r, 400, "name: badly escaped")
	r = send(plain, "GET", n.base+"/greet?name="+strings.Repeat("n", 300), "", nil, "")
	has("long name", r, 400, "over 256 bytes")

	// cel.call: greet asks hello, as itself.
	eventually(t, "greet to reach hello through cel.call", func() bool {
		r = send(plain, "GET", n.base+"/greet/hello?name=caller", "", nil, "")
		return r.status == 200 && r.body == "hello said (200): Hello, caller!\n"
	})
	// hello stops allowing greet: the refusal comes back through greet.
	n.writeIntent("hello", "cell hello\nallow from cell:front\n")
	eventually(t, "hello's refusal to reach greet's client", func() bool {
		r = send(plain, "GET", n.base+"/greet/hello", "", nil, "")
		return r.status == 403 && strings.Contains(r.body, "does not allow calls from cell:greet")
	})

	// cel.log: every request logged, labelled with the cell.
	eventually(t, "greet's cel.log lines", func() bool {
		for line := range strings.SplitSeq(n.Logs(), "\n") {
			if strings.Contains(line, `"msg":"greet: GET /greet from 127.0.0.1:`) && strings.Contains(line, `"cell":"greet"`) {
				return true
			}
		}
		return false
	})
	cells := n.listCells()
	if c := cells["greet"]; c.ABI != "reactor" || c.Errors != 0 {
		t.Fatalf("greet in celctl cells: %+v", c)
	}
}
