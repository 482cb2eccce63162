package cgi

import (
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

func envMap(t *testing.T, env []string) map[string]string {
	t.Helper()
	m := make(map[string]string)
	for i, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("entry %q has no '='", kv)
		}
		if _, dup := m[k]; dup {
			t.Fatalf("duplicate key %q", k)
		}
		if i > 0 && env[i-1] > kv {
			t.Fatalf("not sorted: %q before %q", env[i-1], kv)
		}
		m[k] = v
	}
	return m
}

func TestEnv(t *testing.T) {
	r := httptest.NewRequest("POST", "http://node.example:8080/echo/a/b%20c?x=1&y=%2F", strings.NewReader("hello"))
	r.RemoteAddr = "192.0.2.7:51234"
	r.Header.Set("Content-Type", "text/plain")
	r.Header.Add("Accept", "a/b")
	r.Header.Add("Accept", "c/d")
	r.Header.Add("Cookie", "a=1")
	r.Header.Add("Cookie", "b=2")
	r.Header.Set("X-Forwarded-For", "10.0.0.1")
	r.Header.Set("Proxy", "http://evil")
	r.Header.Set("Content-Length", "5")

	got := envMap(t, Env(r, "echo", "/a/b c"))
	want := map[string]string{
		"GATEWAY_INTERFACE":    "CGI/1.1",
		"SERVER_SOFTWARE":      "celluster",
		"SERVER_PROTOCOL":      "HTTP/1.1",
		"SERVER_NAME":          "node.example",
		"SERVER_PORT":          "8080",
		"REQUEST_METHOD":       "POST",
		"REQUEST_URI":          "/echo/a/b%20c?x=1&y=%2F",
		"SCRIPT_NAME":          "/echo",
		"PATH_INFO":            "/a/b c",
		"QUERY_STRING":         "x=1&y=%2F",
		"CONTENT_LENGTH":       "5",
		"CONTENT_TYPE":         "text/plain",
		"REMOTE_ADDR":          "192.0.2.7",
		"REMOTE_PORT":          "51234",
		"HTTP_HOST":            "node.example:8080",
		"HTTP_ACCEPT":          "a/b, c/d",
		"HTTP_COOKIE":          "a=1; b=2",
		"HTTP_X_FORWARDED_FOR": "10.0.0.1",
	}
	if !reflect.DeepEqual(got, want) {
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %q, want %q", k, got[k], v)
			}
		}
		for k, v := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("unexpected %s=%q", k, v)
			}
		}
	}
}

func TestEnvDefaults(t *testing.T) {
	r := httptest.NewRequest("GET", "/hello", nil)
	r.Host = "localhost"
	r.RemoteAddr = "@unix"
	r.Proto = ""
	got := envMap(t, Env(r, "hello", ""))
	for k, v := range map[string]string{
		"SERVER_NAME":     "localhost",
		"SERVER_PORT":     "80",
		"SERVER_PROTOCOL": "HTTP/1.1",
		"PATH_INFO":       "",
		"QUERY_STRING":    "",
		"REQUEST_URI":     "/hello",
		"REMOTE_ADDR":     "@unix",
	} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	for _, k := range []string{"CONTENT_LENGTH", "CONTENT_TYPE", "REMOTE_PORT", "HTTPS"} {
		if v, ok := got[k]; ok {
			t.Errorf("%s = %q, want unset", k, v)
		}
	}

	r.TLS = &tls.ConnectionState{}
	r.Proto = "HTTP/2.0"
	r.Host = "[::1]:9443"
	r.RemoteAddr = "[2001:db8::1]:443"
	got = envMap(t, Env(r, "hello", "/x"))
	for k, v := range map[string]string{
		"SERVER_NAME":     "::1",
		"SERVER_PORT":     "9443",
		"SERVER_PROTOCOL": "HTTP/2.0",
		"HTTPS":           "on",
		"REMOTE_ADDR":     "2001:db8::1",
		"REMOTE_PORT":     "443",
	} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	r.Host = "secure.example"
	if got := envMap(t, Env(r, "hello", "")); got["SERVER_PORT"] != "443" {
		t.Errorf("TLS without port: SERVER_PORT = %q, want 443", got["SERVER_PORT"])
	}
}

func TestEnvDropsNUL(t *testing.T) {
	r := httptest.NewRequest("GET", "/c", nil)
	r.Header["X-Bad"] = []string{"a\x00b"}
	r.Header["X-Good"] = []string{"ok"}
	got := envMap(t, Env(r, "c", ""))
	if _, ok := got["HTTP_X_BAD"]; ok {
		t.Error("a value with NUL was kept")
	}
	if got["HTTP_X_GOOD"] != "ok" {
		t.Error("HTTP_X_GOOD missing")
	}
}

func TestParseResponse(t *testing.T) {
	tests := []struct {
		name   string
		out    string
		status int
		header http.Header
		body   string
	}{
		{"plain", "Content-Type: text/plain\n\nhello\n", 200,
			http.Header{"Content-Type": {"text/plain"}}, "hello\n"},
		{"crlf", "Content-Type: text/plain\r\nX-A: 1\r\n\r\nbody\r\n", 200,
			http.Header{"Content-Type": {"text/plain"}, "X-A": {"1"}}, "body\r\n"},
		{"mixed endings", "Content-Type: a/b\r\nX-A: 1\n\r\nz", 200,
			http.Header{"Content-Type": {"a/b"}, "X-A": {"1"}}, "z"},
		{"empty body", "Content-Type: text/plain\n\n", 200,
			http.Header{"Content-Type": {"text/plain"}}, ""},
		{"status", "Status: 404 Not Found\nContent-Type: text/plain\n\nnope", 404,
			http.Header{"Content-Type": {"text/plain"}}, "nope"},
		{"status code only", "Status: 201\n\n", 201, http.Header{}, ""},
		{"status tab reason", "Status:\t204\tNo Content\n\n", 204, http.Header{}, ""},
		{"status lower-case name", "status: 418 I'm a teapot\n\n", 418, http.Header{}, ""},
		{"status 999", "Status: 999\n\n", 999, http.Header{}, ""},
		{"status without content-type", "Status: 500\n\nboom", 500, http.Header{}, "boom"},
		{"location", "Location: https://example.com/\n\n", 302,
			http.Header{"Location": {"https://example.com/"}}, ""},
		{"local location", "Location: /other\n\n", 302,
			http.Header{"Location": {"/other"}}, ""},
		{"location with status", "Status: 301 Moved\nLocation: /x\n\n", 301,
			http.Header{"Location": {"/x"}}, ""},
		{"location empty value", "Location:\nContent-Type: a/b\n\n", 200,
			http.Header{"Location": {""}, "Content-Type": {"a/b"}}, ""},
		{"canonical names and order", "content-type: a/b\nset-cookie: 1\nSET-COOKIE: 2\n\n", 200,
			http.Header{"Content-Type": {"a/b"}, "Set-Cookie": {"1", "2"}}, ""},
		{"trimmed values", "Content-Type: \t a/b \t\nX-Empty:\n\n", 200,
			http.Header{"Content-Type": {"a/b"}, "X-Empty": {""}}, ""},
		{"colon in value", "Content-Type: a/b\nX-Url: http://h:1/p\n\n", 200,
			http.Header{"Content-Type": {"a/b"}, "X-Url": {"http://h:1/p"}}, ""},
		{"content-length matches", "Content-Type: a/b\nContent-Length: 3\n\nabc", 200,
			http.Header{"Content-Type": {"a/b"}, "Content-Length": {"3"}}, "abc"},
		{"body looks like headers", "Content-Type: a/b\n\nStatus: 500\n\n", 200,
			http.Header{"Content-Type": {"a/b"}}, "Status: 500\n\n"},
		{"big body", "Content-Type: a/b\n\n" + strings.Repeat("x", 100<<10), 200,
			http.Header{"Content-Type": {"a/b"}}, strings.Repeat("x", 100<<10)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := ParseResponse([]byte(tc.out))
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != tc.status {
				t.Errorf("status %d, want %d", resp.Status, tc.status)
			}
			if !reflect.DeepEqual(resp.Header, tc.header) {
				t.Errorf("header %v, want %v", resp.Header, tc.header)
			}
			if string(resp.Body) != tc.body {
				t.Errorf("body %q, want %q", resp.Body, tc.body)
			}
			if tc.body == "" && resp.Body != nil {
				t.Errorf("empty body is %#v, want nil", resp.Body)
			}
		})
	}
}

func TestParseResponseErrors(t *testing.T) {
	tests := []struct {
		name string
		out  string
		line int
		msg  string
	}{
		{"empty", "", 0, "cgi: no headers: the output is empty"},
		{"no newline", "hello world", 0, "cgi: no headers: the output has no line break, so no header block"},
		{"blank first", "\nhello", 1, "cgi: line 1: no headers: the output starts with a blank line"},
		{"blank first crlf", "\r\nhello", 1, "cgi: line 1: no headers: the output starts with a blank line"},
		{"no blank line", "Content-Type: a/b\n", 2, "cgi: line 2: no headers: the header block ends without a blank line"},
		{"no blank line eof", "Content-Type: a/b\nX: y", 2, "cgi: line 2: no headers: the header block ends without a blank line"},
		{"no colon", "Content-Type: a/b\nhello\n\n", 2, `cgi: line 2: header line "hello" has no colon`},
		{"plain text output", "hello world\n", 1, `cgi: line 1: header line "hello world" has no colon`},
		{"empty name", ": x\n\n", 1, `cgi: line 1: invalid header name ""`},
		{"space in name", "Content Type: a/b\n\n", 1, `cgi: line 1: invalid header name "Content Type"`},
		{"space before colon", "Content-Type : a/b\n\n", 1, `cgi: line 1: invalid header name "Content-Type "`},
		{"folded line", "Content-Type: a/b\n  continued: x\n\n", 2, `cgi: line 2: invalid header name "  continued"`},
		{"non-ascii name", "X-\xc3\xa9: 1\n\n", 1, `cgi: line 1: invalid header name "X-é"`},
		{"control in value", "Content-Type: a\x01b\n\n", 1, "cgi: line 1: header Content-Type value has control character 0x1"},
		{"cr in value", "X: a\rb\nContent-Type: a/b\n\n", 1, "cgi: line 1: header X value has control character 0xd"},
		{"status short", "Status: 20\n\n", 1, `cgi: line 1: invalid Status "20": want a 3-digit code 100..999, optionally followed by a reason phrase`},
		{"status empty", "Status:\n\n", 1, `cgi: line 1: invalid Status "": want a 3-digit code 100..999, optionally followed by a reason phrase`},
		{"status letters", "Status: abc\n\n", 1, `cgi: line 1: invalid Status "abc": want a 3-digit code 100..999, optionally followed by a reason phrase`},
		{"status sign", "Status: +20\n\n", 1, `cgi: line 1: invalid Status "+20": want a 3-digit code 100..999, optionally followed by a reason phrase`},
		{"status glued reason", "Status: 200OK\n\n", 1, `cgi: line 1: invalid Status "200OK": want a 3-digit code 100..999, optionally followed by a reason phrase`},
		{"status four digits", "Status: 2000\n\n", 1, `cgi: line 1: invalid Status "2000": want a 3-digit code 100..999, optionally followed by a reason phrase`},
		{"status below 100", "Status: 099\n\n", 1, `cgi: line 1: invalid Status "099": want a 3-digit code 100..999, optionally followed by a reason phrase`},
		{"two statuses", "Status: 200\nContent-Type: a/b\nStatus: 404\n\n", 3, "cgi: line 3: more than one Status header"},
		{"missing content-type", "X-Foo: bar\n\nbody", 0, "cgi: missing required Content-Type header (needed when there is neither a Status nor a Location)"},
		{"empty content-type", "Content-Type:\n\nbody", 0, "cgi: missing required Content-Type header (needed when there is neither a Status nor a Location)"},
		{"content-length mismatch", "Content-Type: a/b\nContent-Length: 10\n\nabc", 0, "cgi: Content-Length 10 does not match the body length 3"},
		{"content-length invalid", "Content-Type: a/b\nContent-Length: -1\n\n", 0, `cgi: invalid Content-Length "-1"`},
		{"content-length twice", "Content-Type: a/b\nContent-Length: 0\nContent-Length: 0\n\n", 0, "cgi: more than one Content-Length header"},
		{"header block too big", "Content-Type: a/b\nX: " + strings.Repeat("y", MaxHeaderBytes) + "\n\n", 2, "cgi: line 2: header block is larger than 64 KiB"},
		{"huge single line", strings.Repeat("y", MaxHeaderBytes+1), 0, "cgi: header block is larger than 64 KiB"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := ParseResponse([]byte(tc.out))
			if err == nil {
				t.Fatalf("accepted: %+v", resp)
			}
			if resp != nil {
				t.Errorf("non-nil response with error")
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not a *ParseError", err)
			}
			if pe.Line != tc.line || err.Error() != tc.msg {
				t.Errorf("got line %d %q\nwant line %d %q", pe.Line, err.Error(), tc.line, tc.msg)
			}
		})
	}
}

// TestParseResponseHeaderLimitBoundary checks that a header block of
// exactly MaxHeaderBytes is accepted and one byte more is not.
func TestParseResponseHeaderLimitBoundary(t *testing.T) {
	prefix := "Content-Type: a/b\nX: "
	fill := MaxHeaderBytes - len(prefix) - 2 // "\n" ending the line, "\n" blank line
	out := prefix + strings.Repeat("v", fill) + "\n\nbody"
	resp, err := ParseResponse([]byte(out))
	if err != nil {
		t.Fatalf("exactly %d bytes of headers: %v", MaxHeaderBytes, err)
	}
	if string(resp.Body) != "body" {
		t.Fatalf("body %q", resp.Body)
	}
	out = prefix + strings.Repeat("v", fill+1) + "\n\nbody"
	if _, err := ParseResponse([]byte(out)); err == nil {
		t.Fatalf("%d bytes of headers accepted", MaxHeaderBytes+1)
	}
}
