package cell

import (
	"sort"
	"strings"
)

// ServeMux is a request router. Patterns are paths; remember that a cell
// sees the full path including its mount point, so a cell named hello
// registers "/hello", "/hello/" and so on.
//
// A pattern ending in "/" names a subtree and matches every path that
// starts with it ("/hello/" matches "/hello/" and "/hello/a/b", but not
// "/hello"); any other pattern matches only that exact path. When several
// patterns match, the longest wins, so an exact pattern beats a subtree
// containing it and "/" is a catch-all. A request no pattern matches is
// answered 404 with a text/plain body. Paths are compared byte for byte,
// without cleaning, unescaping or host matching, and the method is not
// considered.
//
// The zero value is ready to use. A ServeMux is not safe for concurrent
// registration and serving, which a cell never needs: register in init.
type ServeMux struct {
	exact   map[string]Handler
	subtree []muxEntry // sorted by pattern length, longest first
}

type muxEntry struct {
	pattern string
	h       Handler
}

// NewServeMux returns a new, empty ServeMux.
func NewServeMux() *ServeMux { return new(ServeMux) }

// Handle registers h for pattern. It panics if pattern does not start with
// "/", if h is nil, or if pattern is already registered.
func (m *ServeMux) Handle(pattern string, h Handler) {
	if !strings.HasPrefix(pattern, "/") {
		panic("cell: ServeMux pattern " + quote(pattern) + " does not start with /")
	}
	if h == nil {
		panic("cell: nil handler for ServeMux pattern " + quote(pattern))
	}
	if strings.HasSuffix(pattern, "/") {
		for _, e := range m.subtree {
			if e.pattern == pattern {
				panic("cell: ServeMux pattern " + quote(pattern) + " registered twice")
			}
		}
		m.subtree = append(m.subtree, muxEntry{pattern, h})
		sort.SliceStable(m.subtree, func(i, j int) bool {
			return len(m.subtree[i].pattern) > len(m.subtree[j].pattern)
		})
		return
	}
	if _, dup := m.exact[pattern]; dup {
		panic("cell: ServeMux pattern " + quote(pattern) + " registered twice")
	}
	if m.exact == nil {
		m.exact = make(map[string]Handler)
	}
	m.exact[pattern] = h
}

// HandleFunc registers f for pattern; see Handle.
func (m *ServeMux) HandleFunc(pattern string, f func(ResponseWriter, *Request)) {
	if f == nil {
		panic("cell: nil function for ServeMux pattern " + quote(pattern))
	}
	m.Handle(pattern, HandlerFunc(f))
}

// Handler returns the handler for r.Path and the pattern that matched, or
// a 404 handler and "" when none does.
func (m *ServeMux) Handler(r *Request) (h Handler, pattern string) {
	if h, ok := m.exact[r.Path]; ok {
		return h, r.Path
	}
	for _, e := range m.subtree {
		if strings.HasPrefix(r.Path, e.pattern) {
			return e.h, e.pattern
		}
	}
	return HandlerFunc(NotFound), ""
}

// ServeCell dispatches r to the handler whose pattern matches r.Path best.
func (m *ServeMux) ServeCell(w ResponseWriter, r *Request) {
	h, _ := m.Handler(r)
	h.ServeCell(w, r)
}

// NotFound replies with a 404 and a text/plain body "404 page not found".
func NotFound(w ResponseWriter, _ *Request) {
	Error(w, "404 page not found", 404)
}

// Error replies with the given status code and msg (plus a newline) as a
// text/plain body, like net/http.Error.
func Error(w ResponseWriter, msg string, code int) {
	h := w.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write([]byte(msg + "\n"))
}

func quote(s string) string { return `"` + s + `"` }
