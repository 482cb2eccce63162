// Package cgi implements the host side of the command cell ABI: a cell that
// is an ordinary WASI preview1 program (it exports _start) is run once per
// request in a fresh instance, CGI style (RFC 3875, as WAGI does). [Env]
// builds the program's environment from the HTTP request and
// [ParseResponse] turns what the program wrote on stdout into a response.
//
// The request body is the program's stdin and argv[0] is the cell name;
// both are the caller's business. The package uses only the standard
// library.
//
// # Output rules
//
// ParseResponse follows net/http/cgi's Handler (which follows RFC 3875),
// with the differences listed on [ParseResponse].
package cgi

import (
	"bytes"
	"net"
	"net/http"
	"net/textproto"
	"sort"
	"strconv"
	"strings"
)

// MaxHeaderBytes is the largest header block, including line terminators
// and the blank line, that ParseResponse accepts.
const MaxHeaderBytes = 64 << 10

// Env returns the CGI/1.1 environment, as KEY=VALUE strings, for running
// the command cell named cell on request r. pathInfo is the part of the
// request path below the cell's mount point "/"+cell (for "/echo/a/b" it is
// "/a/b"; for "/echo" it is ""). A cell reached by a route of its intent
// (a host or another path) has no mount point in the path: cell is then
// "", SCRIPT_NAME is empty and pathInfo the whole path. The list is sorted
// by key, with no duplicate keys.
//
// Variables:
//
//	GATEWAY_INTERFACE  CGI/1.1
//	SERVER_SOFTWARE    celluster
//	SERVER_PROTOCOL    r.Proto ("HTTP/1.1", "HTTP/2.0"; HTTP/1.1 if empty)
//	SERVER_NAME        host part of r.Host (r.URL.Host if r.Host is empty)
//	SERVER_PORT        port of r.Host, else 443 with TLS, else 80
//	REQUEST_METHOD     r.Method (GET if empty)
//	REQUEST_URI        r.URL.RequestURI(): escaped path plus "?query"
//	SCRIPT_NAME        "/" + cell, or "" when cell is ""
//	PATH_INFO          pathInfo, possibly empty
//	QUERY_STRING       r.URL.RawQuery, possibly empty
//	CONTENT_LENGTH     r.ContentLength, only when it is > 0
//	CONTENT_TYPE       the Content-Type header, only when present
//	REMOTE_ADDR        IP of r.RemoteAddr (all of it if it has no port)
//	REMOTE_PORT        port of r.RemoteAddr, only when it has one
//	HTTPS              "on", only when r.TLS is set
//	HTTP_HOST          r.Host, when not empty
//	HTTP_<NAME>        every other header: the name upper-cased with '-'
//	                   (and '=') turned into '_'; repeated values joined
//	                   with ", " ("; " for Cookie)
//
// Content-Type and Content-Length are given only as CONTENT_*, never as
// HTTP_*. A Proxy header is dropped (httpoxy, CVE-2016-5385), as
// net/http/cgi does. A variable whose value contains a NUL byte is left out,
// since no process environment can carry it (wazero's WithEnv rejects it).
//
// CONTENT_LENGTH comes from r.ContentLength, so a host that reads a body of
// unknown length (chunked, r.ContentLength == -1) into memory before running
// the cell should set r.ContentLength to the buffered length first.
func Env(r *http.Request, cell, pathInfo string) []string {
	vars := map[string]string{
		"GATEWAY_INTERFACE": "CGI/1.1",
		"SERVER_SOFTWARE":   "celluster",
		"SERVER_PROTOCOL":   "HTTP/1.1",
		"REQUEST_METHOD":    "GET",
		"SCRIPT_NAME":       "/" + cell,
		"PATH_INFO":         pathInfo,
		"QUERY_STRING":      "",
		"REQUEST_URI":       "/",
	}
	if cell == "" {
		vars["SCRIPT_NAME"] = ""
	}
	if r.Proto != "" {
		vars["SERVER_PROTOCOL"] = r.Proto
	}
	if r.Method != "" {
		vars["REQUEST_METHOD"] = r.Method
	}
	if r.URL != nil {
		vars["QUERY_STRING"] = r.URL.RawQuery
		vars["REQUEST_URI"] = r.URL.RequestURI()
	}

	host := r.Host
	if host == "" && r.URL != nil {
		host = r.URL.Host
	}
	port := "80"
	if r.TLS != nil {
		port = "443"
		vars["HTTPS"] = "on"
	}
	name := host
	if h, p, err := net.SplitHostPort(host); err == nil {
		name = h
		if p != "" {
			port = p
		}
	}
	vars["SERVER_NAME"] = name
	vars["SERVER_PORT"] = port

	if ip, p, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		vars["REMOTE_ADDR"] = ip
		vars["REMOTE_PORT"] = p
	} else if r.RemoteAddr != "" {
		vars["REMOTE_ADDR"] = r.RemoteAddr
	}

	if r.ContentLength > 0 {
		vars["CONTENT_LENGTH"] = strconv.FormatInt(r.ContentLength, 10)
	}
	for k, vv := range r.Header {
		if len(vv) == 0 {
			continue
		}
		switch textproto.CanonicalMIMEHeaderKey(k) {
		case "Content-Type":
			vars["CONTENT_TYPE"] = vv[0]
			continue
		case "Content-Length", "Proxy":
			continue
		}
		key := "HTTP_" + strings.Map(envKeyChar, k)
		sep := ", "
		if key == "HTTP_COOKIE" {
			sep = "; "
		}
		if old, ok := vars[key]; ok {
			// Two spellings of the same name (only possible in a
			// hand-built http.Header): keep both values.
			vars[key] = old + sep + strings.Join(vv, sep)
		} else {
			vars[key] = strings.Join(vv, sep)
		}
	}
	if host != "" {
		vars["HTTP_HOST"] = host
	}

	env := make([]string, 0, len(vars))
	for k, v := range vars {
		if strings.IndexByte(v, 0) >= 0 {
			continue
		}
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
}

// envKeyChar maps a header name byte to an environment variable name byte,
// as net/http/cgi does.
func envKeyChar(r rune) rune {
	switch {
	case r >= 'a' && r <= 'z':
		return r - ('a' - 'A')
	case r == '-', r == '=':
		return '_'
	}
	return r
}

// Response is a command cell's parsed CGI output.
type Response struct {
	// Status is the HTTP status code, 100..999.
	Status int
	// Header holds the response headers, canonicalised, without Status.
	Header http.Header
	// Body is everything after the blank line that ends the header block;
	// nil when empty. It is a subslice of the output given to
	// ParseResponse, not a copy.
	Body []byte
}

// ParseError is the error ParseResponse returns. Its Error method returns
// "cgi: line N: " + Msg, or "cgi: " + Msg when Line is 0.
type ParseError struct {
	// Line is the 1-based header line the problem was found on, or 0 when
	// it concerns the output as a whole.
	Line int
	// Msg says what was wrong.
	Msg string
}

// Error implements the error interface.
func (e *ParseError) Error() string {
	if e.Line == 0 {
		return "cgi: " + e.Msg
	}
	return "cgi: line " + strconv.Itoa(e.Line) + ": " + e.Msg
}

// ParseResponse parses the complete stdout of a command cell: CGI header
// lines, a blank line, then the body. Lines end in "\n" or "\r\n".
//
// Rules, as in net/http/cgi's Handler:
//
//   - The output must start with at least one header line and the header
//     block must end with a blank line; otherwise it is malformed ("no
//     headers": this includes empty output and output starting with a blank
//     line).
//   - "Status: NNN reason" sets the status; the reason phrase is dropped
//     (net/http cannot send a custom one).
//   - A non-empty Location without Status means 302 Found.
//   - Otherwise, no Status means 200, and then a Content-Type header is
//     required.
//   - Header values are trimmed of surrounding spaces and tabs; names are
//     canonicalised; repeated headers are kept in order.
//
// Differences from net/http/cgi, all stricter and all errors rather than a
// logged line:
//
//   - A header line without a colon is an error (net/http/cgi skips it).
//   - A header name that is not an RFC 9110 token (including one with
//     leading white space, that is an obsolete line folding) is an error
//     (net/http/cgi skips it). A value containing a control character
//     other than tab is an error.
//   - Status must be exactly three digits, 100..999, alone or followed by
//     a space or tab and a reason phrase (net/http/cgi reads the first three
//     bytes with Atoi, so it takes "+20" or "200OK"). The Status name is
//     matched case-insensitively, as RFC 3875 field names are (net/http/cgi
//     only recognises "Status" exactly). More than one Status is an error
//     (net/http/cgi keeps the last).
//   - The header block may be up to MaxHeaderBytes (64 KiB) in all, with
//     no limit per line (net/http/cgi limits each line to about 1 KiB).
//   - A Content-Length header must be a decimal number equal to the body
//     length (net/http/cgi passes it on and net/http then truncates or
//     fails the response).
//   - A local redirect (Location starting with "/" and no Status) is not
//     followed internally, as net/http/cgi can with PathLocationHandler: it
//     is answered 302 with that Location like any other.
func ParseResponse(out []byte) (*Response, error) {
	resp := &Response{Header: make(http.Header)}
	rest := out
	line := 0
	sawStatus := false
	for {
		line++
		i := bytes.IndexByte(rest, '\n')
		consumed := len(out) - len(rest)
		if i < 0 {
			if consumed+len(rest) > MaxHeaderBytes {
				return nil, perr(0, "header block is larger than 64 KiB")
			}
			if line == 1 {
				if len(rest) == 0 {
					return nil, perr(0, "no headers: the output is empty")
				}
				return nil, perr(0, "no headers: the output has no line break, so no header block")
			}
			return nil, perr(line, "no headers: the header block ends without a blank line")
		}
		if consumed+i+1 > MaxHeaderBytes {
			return nil, perr(line, "header block is larger than 64 KiB")
		}
		l := rest[:i]
		rest = rest[i+1:]
		if n := len(l); n > 0 && l[n-1] == '\r' {
			l = l[:n-1]
		}
		if len(l) == 0 {
			if line == 1 {
				return nil, perr(1, "no headers: the output starts with a blank line")
			}
			break
		}
		name, value, ok := bytes.Cut(l, []byte{':'})
		if !ok {
			return nil, perr(line, "header line "+quote(l)+" has no colon")
		}
		if len(name) == 0 || !isToken(name) {
			return nil, perr(line, "invalid header name "+quote(name))
		}
		value = bytes.Trim(value, " \t")
		if c := badValueByte(value); c >= 0 {
			return nil, perr(line, "header "+string(name)+" value has control character 0x"+strconv.FormatUint(uint64(c), 16))
		}
		key := textproto.CanonicalMIMEHeaderKey(string(name))
		if key == "Status" {
			if sawStatus {
				return nil, perr(line, "more than one Status header")
			}
			sawStatus = true
			code, err := parseStatus(value)
			if err != "" {
				return nil, perr(line, err)
			}
			resp.Status = code
			continue
		}
		resp.Header[key] = append(resp.Header[key], string(value))
	}
	if len(rest) > 0 {
		resp.Body = rest
	}

	if cl, ok := resp.Header["Content-Length"]; ok {
		if len(cl) != 1 {
			return nil, perr(0, "more than one Content-Length header")
		}
		n, err := strconv.ParseUint(cl[0], 10, 63)
		if err != nil {
			return nil, perr(0, "invalid Content-Length "+strconv.Quote(cl[0]))
		}
		if n != uint64(len(resp.Body)) {
			return nil, perr(0, "Content-Length "+cl[0]+" does not match the body length "+strconv.Itoa(len(resp.Body)))
		}
	}
	if resp.Status == 0 && resp.Header.Get("Location") != "" {
		resp.Status = http.StatusFound
	}
	if resp.Status == 0 {
		if resp.Header.Get("Content-Type") == "" {
			return nil, perr(0, "missing required Content-Type header (needed when there is neither a Status nor a Location)")
		}
		resp.Status = http.StatusOK
	}
	return resp, nil
}

func perr(line int, msg string) error { return &ParseError{Line: line, Msg: msg} }

// quote quotes b for an error message, shortening it if long.
func quote(b []byte) string {
	const max = 64
	if len(b) > max {
		return strconv.Quote(string(b[:max])) + "..."
	}
	return strconv.Quote(string(b))
}

// parseStatus parses a Status value: three digits 100..999, optionally
// followed by white space and a reason phrase. It returns a message on
// error.
func parseStatus(v []byte) (int, string) {
	bad := "invalid Status " + quote(v) + ": want a 3-digit code 100..999, optionally followed by a reason phrase"
	if len(v) < 3 || (len(v) > 3 && v[3] != ' ' && v[3] != '\t') {
		return 0, bad
	}
	code := 0
	for _, c := range v[:3] {
		if c < '0' || c > '9' {
			return 0, bad
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return 0, bad
	}
	return code, ""
}

// isToken reports whether b is an RFC 9110 token.
func isToken(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 || !tokenChar[c] {
			return false
		}
	}
	return true
}

var tokenChar = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// badValueByte returns the first control character other than tab in v
// (including DEL), or -1.
func badValueByte(v []byte) int {
	for _, c := range v {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return int(c)
		}
	}
	return -1
}
