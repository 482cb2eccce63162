package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/celluster/celluster/core/testbuild"
	"github.com/celluster/celluster/pluginapi/cellabi"
)

// whoamiReply is what examples/cells/whoami answers.
type whoamiReply struct {
	Method     string      `json:"method"`
	Path       string      `json:"path"`
	Query      string      `json:"query"`
	Host       string      `json:"host"`
	RemoteAddr string      `json:"remote_addr"`
	Scheme     string      `json:"scheme"`
	Proto      string      `json:"proto"`
	URL        string      `json:"url"`
	Headers    [][2]string `json:"headers"`
}

// TestRequestMetadata: ABI v1.1's request metadata (host, client address,
// scheme, protocol, URL) reaches a reactor that declares v1.1 and a CGI
// cell alike; headers reach a reactor sorted by name, values in order,
// with no Host and Content-Length the body's length; a reactor that does
// not declare v1.1 gets the v1 envelope and serves as before; --limit-body
// caps request bodies.
func TestRequestMetadata(t *testing.T) {
	t.Parallel() // one node of its own; waits more than it computes
	n := startNode(t, "", "--limit-body", "1KiB")
	who := testbuild.Cell(t, "whoami")
	// The same cell without the v1.1 declaration: its export renamed (same
	// length, so the module stays valid) is a v1 cell.
	v1 := bytes.Replace(who, []byte(cellabi.Minor1Export), []byte("cel_abi_version_x_x"), 1)
	if bytes.Equal(v1, who) {
		t.Fatalf("whoami.wasm does not export %s", cellabi.Minor1Export)
	}
	n.drop("whoami", who)
	n.drop("whoami1", v1)
	n.drop("echo", testbuild.Cell(t, "echo"))
	n.waitStatus("/whoami", 200)
	n.waitStatus("/whoami1", 200)
	n.waitStatus("/echo", 200)

	send := func(path, body string) []byte {
		t.Helper()
		method := "GET"
		if body != "" {
			method = "POST"
		}
		req, err := http.NewRequest(method, n.base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "shop.example:81"
		req.Header.Add("X-B", "2")
		req.Header.Add("X-A", "1")
		req.Header.Add("X-A", "3")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		return b
	}
	var got whoamiReply
	if err := json.Unmarshal(send("/whoami/x?q=1", "ping"), &got); err != nil {
		t.Fatal(err)
	}
	if got.Host != "shop.example:81" || !strings.HasPrefix(got.RemoteAddr, "127.0.0.1:") || got.Scheme != "http" ||
		got.Proto != "HTTP/1.1" || got.URL != "http://shop.example:81/whoami/x?q=1" || got.Path != "/whoami/x" || got.Query != "q=1" {
		t.Errorf("v1.1 metadata: %+v", got)
	}
	var names []string
	for _, h := range got.Headers {
		names = append(names, h[0]+"="+h[1])
	}
	if want := "Accept-Encoding=gzip,Content-Length=4,User-Agent=Go-http-client/1.1,X-A=1,X-A=3,X-B=2"; strings.Join(names, ",") != want {
		t.Errorf("headers %v, want %s", names, want)
	}

	// --limit-body: a body of the limit passes, one byte more is 413.
	if r, err := n.do("POST", "/whoami", strings.Repeat("x", 1024)); err != nil || r.status != 200 {
		t.Fatalf("a 1 KiB body with --limit-body 1KiB: %d, %v", r.status, err)
	}
	if r, err := n.do("POST", "/whoami", strings.Repeat("x", 1025)); err != nil || r.status != 413 {
		t.Fatalf("a body over --limit-body: %d, %v", r.status, err)
	}

	var old whoamiReply
	if err := json.Unmarshal(send("/whoami1", ""), &old); err != nil {
		t.Fatal(err)
	}
	if old.Host != "" || old.RemoteAddr != "" || old.Scheme != "" || old.URL != "" || old.Path != "/whoami1" {
		t.Errorf("a v1 cell got metadata: %+v", old)
	}

	var echo struct {
		Meta map[string]string `json:"meta"`
	}
	if err := json.Unmarshal(send("/echo", ""), &echo); err != nil {
		t.Fatal(err)
	}
	if m := echo.Meta; m["server_name"] != "shop.example" || m["server_port"] != "81" || m["server_protocol"] != "HTTP/1.1" || m["remote_addr"] != "127.0.0.1" {
		t.Errorf("CGI metadata: %v", m)
	}
}
