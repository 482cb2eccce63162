// Command echo is a command cell: an ordinary WASI program, run in a fresh
// instance for every request, that talks CGI. It does not use the cell
// SDK. It answers with a JSON description of the request:
//
//	{"method":"POST","path":"/echo/a","query":"x=1","body":"...","headers":{"accept":"*/*"},
//	 "meta":{"server_name":"example.com","server_port":"8080","server_protocol":"HTTP/1.1","remote_addr":"127.0.0.1"}}
//
// path is SCRIPT_NAME+PATH_INFO; headers are the HTTP_* variables (plus
// CONTENT_TYPE and CONTENT_LENGTH) with lower-case, hyphenated names. A
// query parameter status=NNN (three digits, 100..999) sets the response
// status; any other value of it is ignored.
//
// Build it as a WASI command (no -buildmode):
//
//	GOOS=wasip1 GOARCH=wasm go build -o echo.wasm .
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
)

func main() {
	if err := run(os.Environ(), os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

// reply is the JSON document echo writes. Field order is the output order.
type reply struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Query   string            `json:"query"`
	Body    string            `json:"body"`
	Headers map[string]string `json:"headers"`
	// Meta holds where the request came from: SERVER_NAME, SERVER_PORT,
	// SERVER_PROTOCOL, REMOTE_ADDR and HTTPS, lower-cased.
	Meta map[string]string `json:"meta"`
}

// run reads the CGI request from environ (KEY=VALUE strings, as
// os.Environ returns) and stdin and writes the CGI response to stdout.
// It takes the whole environment rather than a lookup function because it
// has to list the HTTP_* variables.
func run(environ []string, stdin io.Reader, stdout io.Writer) error {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	body, err := io.ReadAll(stdin)
	if err != nil {
		return fmt.Errorf("reading the request body: %w", err)
	}
	rep := reply{
		Method:  env["REQUEST_METHOD"],
		Path:    env["SCRIPT_NAME"] + env["PATH_INFO"],
		Query:   env["QUERY_STRING"],
		Body:    string(body),
		Headers: map[string]string{},
		Meta:    map[string]string{},
	}
	for _, k := range []string{"SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR", "HTTPS"} {
		if v, ok := env[k]; ok {
			rep.Meta[strings.ToLower(k)] = v
		}
	}
	for k, v := range env {
		switch {
		case strings.HasPrefix(k, "HTTP_"):
			rep.Headers[headerName(k[len("HTTP_"):])] = v
		case k == "CONTENT_TYPE", k == "CONTENT_LENGTH":
			rep.Headers[headerName(k)] = v
		}
	}
	doc, err := json.Marshal(rep)
	if err != nil {
		return err
	}

	var out strings.Builder
	out.WriteString("Content-Type: application/json\n")
	q, _ := url.ParseQuery(rep.Query) // malformed pairs are skipped
	if code, ok := parseStatus(q.Get("status")); ok {
		fmt.Fprintf(&out, "Status: %d %s\n", code, statusText(code))
	}
	out.WriteString("\n")
	out.Write(doc)
	out.WriteString("\n")
	_, err = io.WriteString(stdout, out.String())
	return err
}

// headerName turns an environment variable suffix such as X_FORWARDED_FOR
// into a header name such as x-forwarded-for.
func headerName(s string) string {
	return strings.ReplaceAll(strings.ToLower(s), "_", "-")
}

// parseStatus accepts exactly three digits, 100..999.
func parseStatus(s string) (int, bool) {
	if len(s) != 3 {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 100 || s[0] == '+' || s[0] == '-' {
		return 0, false
	}
	return n, true
}

// statusText returns the reason phrase for common codes (net/http is not
// imported, to keep the module small). The host drops reason phrases
// anyway.
func statusText(code int) string {
	switch code {
	case 200:
		return "OK"
	case 201:
		return "Created"
	case 202:
		return "Accepted"
	case 204:
		return "No Content"
	case 301:
		return "Moved Permanently"
	case 302:
		return "Found"
	case 304:
		return "Not Modified"
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 418:
		return "I'm a teapot"
	case 429:
		return "Too Many Requests"
	case 500:
		return "Internal Server Error"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	}
	return "Status " + strconv.Itoa(code)
}
