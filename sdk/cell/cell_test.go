package cell_test

import (
	"bytes"
	"io"
	"net/textproto"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/celluster/celluster/pluginapi/cellabi"
	"github.com/celluster/celluster/sdk/cell"
	"github.com/celluster/celluster/sdk/cell/celltest"
)

func TestCanonicalHeaderKey(t *testing.T) {
	for _, s := range []string{
		"", "a", "A", "content-type", "Content-Type", "CONTENT-TYPE", "x-forwarded-for",
		"-a", "a-", "a--b", "www-authenticate", "X_Under", "1abc", "a b", "a:b",
		"\xff", "é", "a\x00", "set-cookie", "ETAG", "te", "x.y-z",
	} {
		if got, want := cell.CanonicalHeaderKey(s), textproto.CanonicalMIMEHeaderKey(s); got != want {
			t.Errorf("CanonicalHeaderKey(%q) = %q, want %q (net/textproto)", s, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { cell.CanonicalHeaderKey("Content-Type") }); n != 0 {
		t.Errorf("%v allocations for an already canonical key", n)
	}
}

func TestHeader(t *testing.T) {
	h := cell.Header{}
	h.Set("content-type", "text/plain")
	h.Add("x-a", "1")
	h.Add("X-A", "2")
	if got := h.Get("Content-Type"); got != "text/plain" {
		t.Errorf("Get = %q", got)
	}
	if got := h.Values("x-a"); !reflect.DeepEqual(got, []string{"1", "2"}) {
		t.Errorf("Values = %q", got)
	}
	if got := h.Get("missing"); got != "" {
		t.Errorf("Get(missing) = %q", got)
	}
	c := h.Clone()
	c.Add("X-A", "3")
	if len(h["X-A"]) != 2 {
		t.Error("Clone shares value slices")
	}
	h.Del("X-a")
	if _, ok := h["X-A"]; ok {
		t.Error("Del left the key")
	}
	if cell.Header(nil).Clone() != nil {
		t.Error("nil Clone not nil")
	}
	if cell.Header(nil).Get("a") != "" {
		t.Error("nil Get")
	}
}

func TestQuery(t *testing.T) {
	r := &cell.Request{RawQuery: "name=a%20b&x=1&x=2&bad=%zz"}
	q := r.Query()
	if q.Get("name") != "a b" || !reflect.DeepEqual(q["x"], []string{"1", "2"}) {
		t.Errorf("Query = %v", q)
	}
	if (&cell.Request{}).Query() == nil {
		t.Error("Query of empty RawQuery is nil")
	}
}

func TestRequestFields(t *testing.T) {
	var got *cell.Request
	h := cell.HandlerFunc(func(w cell.ResponseWriter, r *cell.Request) {
		// r and r.Header are reused after the handler returns: copy them.
		c := *r
		c.Header = r.Header.Clone()
		got = &c
	})
	celltest.DoRequest(h, &cell.Request{
		Method:   "PUT",
		Path:     "/c/a%2Fb",
		RawQuery: "q=1",
		Header:   cell.Header{"Accept": {"a", "b"}, "x-lower": {"v"}},
		Body:     []byte("body"),
	})
	want := &cell.Request{
		Method:   "PUT",
		Path:     "/c/a%2Fb",
		RawQuery: "q=1",
		Header:   cell.Header{"Accept": {"a", "b"}, "X-Lower": {"v"}},
		Body:     []byte("body"),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("request\n got %+v\nwant %+v", got, want)
	}
}

func TestResponseWriter(t *testing.T) {
	resp := celltest.Do(cell.HandlerFunc(func(w cell.ResponseWriter, r *cell.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		w.WriteHeader(201)
		w.Header().Set("X-After", "ignored") // after WriteHeader: not sent
		w.WriteHeader(500)                   // superfluous: ignored
		io.WriteString(w, "hello ")
		w.Write([]byte("world"))
	}), "GET", "/x", nil)
	if resp.Status != 201 {
		t.Errorf("status %d", resp.Status)
	}
	want := cell.Header{"Content-Type": {"text/plain"}, "Set-Cookie": {"a=1", "b=2"}}
	if !reflect.DeepEqual(resp.Header, want) {
		t.Errorf("header %v, want %v", resp.Header, want)
	}
	if string(resp.Body) != "hello world" {
		t.Errorf("body %q", resp.Body)
	}
}

func TestImplicitStatus(t *testing.T) {
	resp := celltest.Do(cell.HandlerFunc(func(w cell.ResponseWriter, r *cell.Request) {}), "GET", "/", nil)
	if resp.Status != 200 || resp.Body != nil || len(resp.Header) != 0 {
		t.Errorf("empty handler: %+v", resp)
	}
	resp = celltest.Do(cell.HandlerFunc(func(w cell.ResponseWriter, r *cell.Request) {
		w.Write([]byte("x"))
		w.Header().Set("X-Late", "1")
	}), "GET", "/", nil)
	if resp.Status != 200 || string(resp.Body) != "x" || resp.Header.Get("X-Late") != "" {
		t.Errorf("write without WriteHeader: %+v", resp)
	}
}

func TestPanicBecomes500(t *testing.T) {
	resp := celltest.Do(cell.HandlerFunc(func(w cell.ResponseWriter, r *cell.Request) {
		w.Header().Set("X-Partial", "1")
		w.WriteHeader(200)
		w.Write([]byte("partial"))
		panic("boom")
	}), "GET", "/p", nil)
	if resp.Status != 500 {
		t.Errorf("status %d", resp.Status)
	}
	if string(resp.Body) != "cell: panic: boom\n" {
		t.Errorf("body %q", resp.Body)
	}
	if resp.Header.Get("X-Partial") != "" || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Errorf("header %v", resp.Header)
	}

	var nilMap map[string]int
	resp = celltest.Do(cell.HandlerFunc(func(w cell.ResponseWriter, r *cell.Request) {
		nilMap["x"] = 1
	}), "GET", "/p", nil)
	if resp.Status != 500 || !strings.Contains(string(resp.Body), "assignment to entry in nil map") {
		t.Errorf("runtime error: %d %q", resp.Status, resp.Body)
	}

	resp = celltest.Do(cell.HandlerFunc(func(w cell.ResponseWriter, r *cell.Request) {
		w.WriteHeader(42)
	}), "GET", "/p", nil)
	if resp.Status != 500 || string(resp.Body) != "cell: panic: cell: invalid WriteHeader code 42\n" {
		t.Errorf("bad WriteHeader: %d %q", resp.Status, resp.Body)
	}
}

func TestServeEnvelopeBadRequest(t *testing.T) {
	out := cell.ServeEnvelope(nil, cell.HandlerFunc(func(cell.ResponseWriter, *cell.Request) {
		t.Error("handler called")
	}), []byte{2, 0, 0, 0})
	resp, err := cellabi.DecodeResponse(out)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 500 || !strings.Contains(string(resp.Body), "cellabi: request version") {
		t.Errorf("got %d %q", resp.Status, resp.Body)
	}
}

func TestServeEnvelopeAppends(t *testing.T) {
	req := cellabi.AppendRequest(nil, &cellabi.Request{Method: "GET", Path: "/"})
	h := cell.HandlerFunc(func(w cell.ResponseWriter, r *cell.Request) { w.Write([]byte("ok")) })
	out := cell.ServeEnvelope([]byte("pre"), h, req)
	if !bytes.HasPrefix(out, []byte("pre")) {
		t.Fatal("dst clobbered")
	}
	want := cellabi.AppendResponse(nil, &cellabi.Response{Status: 200, Body: []byte("ok")})
	if !bytes.Equal(out[3:], want) {
		t.Fatalf("got % x\nwant % x", out[3:], want)
	}
}

// TestDefaultHandler covers Handle/HandleFunc and the nil-handler 500. It
// is the only test that sets the package-level handler.
func TestDefaultHandler(t *testing.T) {
	req := cellabi.AppendRequest(nil, &cellabi.Request{Method: "GET", Path: "/"})
	resp, err := cellabi.DecodeResponse(cell.ServeEnvelope(nil, nil, req))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 500 || !strings.Contains(string(resp.Body), "no handler") {
		t.Errorf("no handler: %d %q", resp.Status, resp.Body)
	}

	cell.HandleFunc(func(w cell.ResponseWriter, r *cell.Request) { w.WriteHeader(204) })
	if got := celltest.Do(nil, "GET", "/", nil); got.Status != 204 {
		t.Errorf("HandleFunc: status %d", got.Status)
	}
	for _, f := range []func(){
		func() { cell.Handle(nil) },
		func() { cell.HandleFunc(nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("no panic for a nil handler")
				}
			}()
			f()
		}()
	}
}

func TestServeMux(t *testing.T) {
	mux := new(cell.ServeMux)
	reply := func(name string) func(cell.ResponseWriter, *cell.Request) {
		return func(w cell.ResponseWriter, r *cell.Request) { io.WriteString(w, name) }
	}
	mux.HandleFunc("/a", reply("exact /a"))
	mux.HandleFunc("/a/", reply("tree /a/"))
	mux.HandleFunc("/a/b", reply("exact /a/b"))
	mux.HandleFunc("/a/b/", reply("tree /a/b/"))
	mux.HandleFunc("/z/", reply("tree /z/"))

	for path, want := range map[string]string{
		"/a":       "exact /a",
		"/a/":      "tree /a/",
		"/a/x":     "tree /a/",
		"/a/b":     "exact /a/b",
		"/a/b/":    "tree /a/b/",
		"/a/b/c/d": "tree /a/b/",
		"/a/bc":    "tree /a/",
		"/z/q":     "tree /z/",
	} {
		resp := celltest.Do(mux, "GET", path+"?x=1", nil)
		if resp.Status != 200 || string(resp.Body) != want {
			t.Errorf("%s: %d %q, want %q", path, resp.Status, resp.Body, want)
		}
	}
	for _, path := range []string{"/", "/z", "/ab", "/b", ""} {
		resp := celltest.Do(mux, "GET", path, nil)
		if resp.Status != 404 || string(resp.Body) != "404 page not found\n" ||
			resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Errorf("%q: %d %q %v, want 404", path, resp.Status, resp.Body, resp.Header)
		}
	}
	if _, p := mux.Handler(&cell.Request{Path: "/a/b/c"}); p != "/a/b/" {
		t.Errorf("Handler pattern %q", p)
	}

	mux.HandleFunc("/", reply("root"))
	if resp := celltest.Do(mux, "GET", "/anything", nil); string(resp.Body) != "root" {
		t.Errorf("catch-all: %q", resp.Body)
	}

	for name, f := range map[string]func(){
		"no slash":    func() { mux.HandleFunc("a", reply("")) },
		"empty":       func() { mux.HandleFunc("", reply("")) },
		"dup exact":   func() { mux.HandleFunc("/a", reply("")) },
		"dup tree":    func() { mux.HandleFunc("/a/", reply("")) },
		"nil handler": func() { mux.Handle("/n", nil) },
		"nil func":    func() { mux.HandleFunc("/n", nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func TestLevelString(t *testing.T) {
	for l, want := range map[cell.Level]string{
		cell.LevelDebug: "debug", cell.LevelInfo: "info", cell.LevelWarn: "warn",
		cell.LevelError: "error", 7: "level(7)",
	} {
		if got := l.String(); got != want {
			t.Errorf("%d: %q, want %q", int(l), got, want)
		}
	}
}

func TestNowAndLog(t *testing.T) {
	if d := time.Since(cell.Now()); d < 0 || d > time.Minute {
		t.Errorf("Now is %v away", d)
	}
	cell.Logf(cell.LevelDebug, "log test %d", 1)
}

// TestWasmDependencies keeps net/http (and net) out of cells: the SDK's
// wasip1 dependency graph must not include them.
func TestWasmDependencies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	cmd := exec.Command(gobin, "list", "-deps", ".", "./celltest")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch dep {
		case "net", "net/http", "net/textproto", "crypto/tls", "mime":
			t.Errorf("the SDK depends on %s in wasip1 builds", dep)
		}
	}
}

func TestQueryValue(t *testing.T) {
	queries := []string{
		"", "name", "name=", "name=x", "name=a%20b&x=1&x=2&bad=%zz", "x=1&name=2&name=3",
		"na%6De=v", "name=%zz&name=ok", "name=a+b", "name;x=1&name=2", "&&name=v&",
		"%zz=1&name=2", "name=1;2&name=3", "a%41=1", "a+b=c", "name=%41%42", "=v&name",
		strings.Repeat("name=x&", 10001),
	}
	keys := []string{"name", "x", "bad", "", "aA", "a%41", "a b", "a+b", "missing"}
	for _, q := range queries {
		r := &cell.Request{RawQuery: q}
		for _, k := range keys {
			if got, want := r.QueryValue(k), r.Query().Get(k); got != want {
				t.Errorf("RawQuery %.40q: QueryValue(%q) = %q, want %q", q, k, got, want)
			}
		}
	}
	r := &cell.Request{RawQuery: "a=1&name=cell&b=2"}
	if n := testing.AllocsPerRun(100, func() { r.QueryValue("name") }); n != 0 {
		t.Errorf("QueryValue allocates %v times", n)
	}
}

func FuzzQueryValue(f *testing.F) {
	f.Add("name=a%20b&x=1&x=2&bad=%zz", "name")
	f.Add("a+b=c;d&a%20b=%41", "a b")
	f.Fuzz(func(t *testing.T, q, key string) {
		r := &cell.Request{RawQuery: q}
		if got, want := r.QueryValue(key), r.Query().Get(key); got != want {
			t.Errorf("RawQuery %q: QueryValue(%q) = %q, want %q", q, key, got, want)
		}
	})
}

// TestReuseKeepsStringsAndBody checks what a handler may keep after it
// returns: strings and Body survive later requests, which reuse the maps.
func TestReuseKeepsStringsAndBody(t *testing.T) {
	var path, accept string
	var body []byte
	keep := cell.HandlerFunc(func(w cell.ResponseWriter, r *cell.Request) {
		path, accept, body = r.Path, r.Header.Get("Accept"), r.Body
		w.Header().Set("X-First", "1")
	})
	celltest.DoRequest(keep, &cell.Request{Method: "POST", Path: "/first", Header: cell.Header{"Accept": {"a"}}, Body: []byte("one")})
	resp := celltest.DoRequest(cell.HandlerFunc(func(w cell.ResponseWriter, r *cell.Request) {
		if len(r.Header) != 1 || r.Header.Get("Accept") != "bbbbb" {
			t.Errorf("second request header %v", r.Header)
		}
		if len(w.Header()) != 0 {
			t.Errorf("response header not cleared: %v", w.Header())
		}
		w.Write(r.Body)
	}), &cell.Request{Method: "POST", Path: "/2nd/xx", Header: cell.Header{"Accept": {"bbbbb"}}, Body: []byte("two")})
	if string(resp.Body) != "two" || len(resp.Header) != 0 {
		t.Errorf("second response %+v", resp)
	}
	if path != "/first" || accept != "a" || string(body) != "one" {
		t.Errorf("kept values changed: %q %q %q", path, accept, body)
	}
}

func TestServeEnvelopeConcurrent(t *testing.T) {
	h := cell.HandlerFunc(func(w cell.ResponseWriter, r *cell.Request) {
		w.Header().Set("X-Path", r.Path)
		w.Write([]byte(r.Header.Get("X-N")))
	})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 200 {
				n := strconv.Itoa(i*1000 + j)
				resp := celltest.DoRequest(h, &cell.Request{Method: "GET", Path: "/" + n, Header: cell.Header{"X-N": {n}}})
				if string(resp.Body) != n || resp.Header.Get("X-Path") != "/"+n {
					t.Errorf("request %s: %q %v", n, resp.Body, resp.Header)
					return
				}
			}
		})
	}
	wg.Wait()
}
