package cell

import (
	"encoding/binary"
	"fmt"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/celluster/celluster/pluginapi/cellabi"
)

// Request is an HTTP request as a cell sees it. The body has been read in
// full by the host.
type Request struct {
	// Method is the HTTP method, e.g. "GET".
	Method string
	// Path is the full request path as received by the node, including
	// the cell's mount point: a cell named hello sees "/hello" or
	// "/hello/anything/below". It is not cleaned or unescaped further.
	Path string
	// RawQuery is the query string without the leading '?', still
	// encoded.
	RawQuery string
	// Header holds the request header fields with canonical keys. The map
	// is reused for later requests: it is valid only until the handler
	// returns (see Handler).
	Header Header
	// Body is the complete request body; nil when empty. It is the
	// handler's to keep.
	Body []byte

	// Host is the host the client asked for (Host header, or :authority in
	// HTTP/2 and HTTP/3), RemoteAddr the client's "IP:port" as the node
	// that received the request saw it, Scheme "http" or "https", Proto
	// "HTTP/1.1", "HTTP/2.0" or "HTTP/3.0", and URL the full URL. They are
	// ABI v1.1's request metadata; all are empty when the node sent none
	// (an older node). A cel.call from another cell has Scheme "cel",
	// Proto "cel.call", Host the called cell and RemoteAddr the caller's
	// SPIFFE ID.
	Host, RemoteAddr, Scheme, Proto, URL string
}

// Query parses RawQuery and returns the values it holds, ignoring
// malformed pairs, like net/url.URL.Query.
func (r *Request) Query() url.Values {
	v, _ := url.ParseQuery(r.RawQuery)
	return v
}

// QueryValue returns the first value for key in RawQuery, unescaped, or ""
// if there is none: the same as r.Query().Get(key), but without building
// the map, so it allocates nothing unless the value is percent-encoded or
// contains '+'. Prefer it when reading one or two parameters.
func (r *Request) QueryValue(key string) string {
	q := r.RawQuery
	if len(q) >= 10000 {
		// Long enough to hit net/url's limit on the number of
		// parameters; let it apply its rules.
		return r.Query().Get(key)
	}
	for q != "" {
		var pair string
		pair, q, _ = strings.Cut(q, "&")
		if pair == "" || strings.IndexByte(pair, ';') >= 0 {
			continue // url.ParseQuery skips these too
		}
		k, v, _ := strings.Cut(pair, "=")
		if k != key {
			if !needsUnescape(k) {
				continue
			}
			if uk, err := url.QueryUnescape(k); err != nil || uk != key {
				continue
			}
		} else if needsUnescape(k) {
			// k == key but the raw key is escaped, so its unescaped
			// form differs from key (or is invalid).
			continue
		}
		if !needsUnescape(v) {
			return v
		}
		if uv, err := url.QueryUnescape(v); err == nil {
			return uv
		}
		// An invalid value: url.ParseQuery drops the pair.
	}
	return ""
}

// needsUnescape reports whether url.QueryUnescape would change s (or
// reject it).
func needsUnescape(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '%' || s[i] == '+' {
			return true
		}
	}
	return false
}

// A ResponseWriter is used by a Handler to build the response. Unlike
// net/http's, it buffers everything: the response is sent when the handler
// returns.
type ResponseWriter interface {
	// Header returns the header map that WriteHeader (or the first Write)
	// will send. Changing it after that has no effect. The map is reused
	// for later requests: it is valid only until the handler returns.
	Header() Header
	// WriteHeader sets the status code, 100..999; it panics for any
	// other code, as net/http does. Only the first call counts; later
	// calls are logged at LevelWarn and ignored. A 1xx code is sent as
	// the final status: there are no interim responses.
	WriteHeader(statusCode int)
	// Write appends to the body, calling WriteHeader(200) first if
	// WriteHeader has not been called. It always succeeds.
	Write(p []byte) (int, error)
}

// A Handler responds to a request.
//
// The handler must not keep w or r, nor r.Header, w.Header() or the slices
// in them, after ServeCell returns: the SDK reuses them for the next request
// (a reactor serves one request at a time) and clears them in between. Use
// Header.Clone, or copy the Request, to keep them. Strings (Method, Path,
// RawQuery, header names and values) stay valid, and r.Body is a fresh copy
// for each request that the handler may keep.
type Handler interface {
	ServeCell(w ResponseWriter, r *Request)
}

// HandlerFunc adapts an ordinary function to the Handler interface.
type HandlerFunc func(ResponseWriter, *Request)

// ServeCell calls f(w, r).
func (f HandlerFunc) ServeCell(w ResponseWriter, r *Request) { f(w, r) }

// handler is the cell's handler, set by Handle.
var handler Handler

// Handle sets the handler for every request the cell receives, replacing
// any set before. Call it from an init function: in a reactor module
// (-buildmode=c-shared) main never runs. It panics if h is nil.
func Handle(h Handler) {
	if h == nil {
		panic("cell: Handle called with a nil handler")
	}
	handler = h
}

// HandleFunc sets f as the handler for every request the cell receives;
// see Handle.
func HandleFunc(f func(ResponseWriter, *Request)) {
	if f == nil {
		panic("cell: HandleFunc called with a nil function")
	}
	Handle(HandlerFunc(f))
}

// Level is a log level of the cel.log host import.
type Level int32

// The log levels, with their values on the wire.
const (
	LevelDebug Level = 0
	LevelInfo  Level = 1
	LevelWarn  Level = 2
	LevelError Level = 3
)

// String returns "debug", "info", "warn" or "error", or "level(N)".
func (l Level) String() string {
	switch l {
	case LevelDebug:
		return "debug"
	case LevelInfo:
		return "info"
	case LevelWarn:
		return "warn"
	case LevelError:
		return "error"
	}
	return "level(" + strconv.Itoa(int(l)) + ")"
}

// Log sends msg to the host's log at the given level. In a wasm cell it
// calls the cel.log host import; in a native build it writes a line to
// standard error.
func Log(level Level, msg string) { hostLog(level, msg) }

// Logf formats its arguments as fmt.Sprintf does and calls Log.
func Logf(level Level, format string, args ...any) {
	hostLog(level, fmt.Sprintf(format, args...))
}

// Now returns the current wall-clock time as the host sees it (the cel.now
// host import); in a native build it is time.Now.
func Now() time.Time { return hostNow() }

// ServeEnvelope decodes the request envelope req, serves it with h, and
// appends the encoded response envelope to dst, returning the extended
// slice. It is what the cel_handle export runs; package celltest uses it to
// exercise the same path natively. If h is nil the handler set by Handle is
// used, and if that is nil too the response is a 500.
//
// ServeEnvelope always produces a valid response envelope: a request
// envelope that does not decode, and a handler that panics, both give a 500
// with the error as a text/plain body, and are logged at LevelError.
//
// The Request, its Header map, the ResponseWriter and its Header map are
// reused by later calls; see [Handler] for what a handler may keep.
// ServeEnvelope may be called concurrently.
func ServeEnvelope(dst []byte, h Handler, req []byte) []byte {
	// A reactor serves one request at a time, so one exchange is nearly
	// always enough; Swap hands it to one caller at a time when
	// ServeEnvelope is called concurrently (natively, in tests) or from a
	// handler.
	x := spare.Swap(nil)
	if x == nil {
		x = &exchange{reqHeader: make(Header), w: responseWriter{header: make(Header)}}
	}
	dst = x.serve(dst, h, req)
	x.reset()
	spare.Store(x)
	return dst
}

// spare is the exchange ServeEnvelope reuses.
var spare atomic.Pointer[exchange]

// maxKeptHeaders is the most headers whose storage is kept for reuse.
const maxKeptHeaders = 64

// exchange is one request and its response, reused from call to call.
type exchange struct {
	in        cellabi.Request // decoded envelope; Headers is reused
	req       Request
	reqHeader Header   // req.Header, kept here in case the handler replaces it
	vals      []string // backing array of the single-valued request headers
	w         responseWriter
}

func (x *exchange) serve(dst []byte, h Handler, req []byte) []byte {
	if err := cellabi.DecodeRequestInto(&x.in, req); err != nil {
		Log(LevelError, "bad request envelope: "+err.Error())
		return appendError(dst, "bad request envelope: "+err.Error())
	}
	if h == nil {
		h = handler
	}
	if h == nil {
		Log(LevelError, "no handler: call cell.Handle or cell.HandleFunc from an init function")
		return appendError(dst, "no handler: call cell.Handle or cell.HandleFunc from an init function")
	}
	hdr := x.reqHeader
	if cap(x.vals) < len(x.in.Headers) {
		x.vals = make([]string, len(x.in.Headers))
	}
	vals := x.vals[:len(x.in.Headers)]
	hs := x.in.Headers
	for i := range hs {
		k := CanonicalHeaderKey(hs[i].Name)
		hs[i].Name = k
		// A repeated name: with few headers, comparing with the earlier
		// names is much cheaper in wasm than a map lookup.
		repeated := false
		if len(hs) <= 8 {
			for j := range i {
				if hs[j].Name == k {
					repeated = true
					break
				}
			}
		} else {
			_, repeated = hdr[k]
		}
		if repeated {
			hdr[k] = append(hdr[k], hs[i].Value)
			continue
		}
		vals[i] = hs[i].Value
		hdr[k] = vals[i : i+1 : i+1]
	}
	m := &x.in.Meta
	x.req = Request{
		Method:     x.in.Method,
		Path:       x.in.Path,
		RawQuery:   x.in.Query,
		Header:     hdr,
		Body:       x.in.Body,
		Host:       m.Host,
		RemoteAddr: m.RemoteAddr,
		Scheme:     m.Scheme,
		Proto:      m.Proto,
		URL:        m.URL,
	}
	w := &x.w
	w.out = dst
	w.start = len(dst)
	if msg, ok := serve(h, w, &x.req); !ok {
		return appendError(dst, msg)
	}
	if !w.wroteHeader {
		w.WriteHeader(200)
	}
	out := w.out
	binary.LittleEndian.PutUint32(out[w.bodyLen:], u32len(len(out)-w.bodyLen-4))
	return out
}

// reset drops everything the last request left in x, so that it pins no
// memory and the next request starts afresh.
func (x *exchange) reset() {
	if cap(x.in.Headers) > maxKeptHeaders {
		x.in.Headers, x.vals = nil, nil
	}
	clear(x.in.Headers)
	x.in = cellabi.Request{Headers: x.in.Headers[:0]}
	clear(x.vals)
	x.req = Request{}
	if len(x.reqHeader) > maxKeptHeaders {
		x.reqHeader = make(Header)
	} else {
		clear(x.reqHeader)
	}
	if len(x.w.header) > maxKeptHeaders {
		x.w.header = make(Header)
	} else {
		clear(x.w.header)
	}
	x.w = responseWriter{header: x.w.header}
}

// serve runs h, recovering a panic. On panic it returns the message for
// the 500 response and false.
func serve(h Handler, w ResponseWriter, r *Request) (msg string, ok bool) {
	defer func() {
		if v := recover(); v != nil {
			msg = fmt.Sprint("panic: ", v)
			Log(LevelError, fmt.Sprintf("panic serving %s %s: %v\n%s", r.Method, r.Path, v, debug.Stack()))
			ok = false
		}
	}()
	h.ServeCell(w, r)
	return "", true
}

// appendError appends a 500 text/plain response envelope carrying msg.
func appendError(dst []byte, msg string) []byte {
	return cellabi.AppendResponse(dst, &cellabi.Response{
		Status:  500,
		Headers: []cellabi.Header{{Name: "Content-Type", Value: "text/plain; charset=utf-8"}},
		Body:    []byte("cell: " + msg + "\n"),
	})
}

// responseWriter encodes a response envelope straight into out: the status
// and header at WriteHeader, then the body as it is written, and the body
// length when the handler returns.
type responseWriter struct {
	header      Header
	wroteHeader bool
	status      int
	out         []byte // the caller's dst, with the response appended
	start       int    // len(dst) on entry: where the response starts
	bodyLen     int    // offset in out of the body's u32 length
}

// headerEntry is one key of a Header and its values.
type headerEntry struct {
	name   string
	values []string
}

func (w *responseWriter) Header() Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
	if code < cellabi.MinStatus || code > cellabi.MaxStatus {
		panic("cell: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if w.wroteHeader {
		Log(LevelWarn, "superfluous WriteHeader("+strconv.Itoa(code)+"), status is already "+strconv.Itoa(w.status))
		return
	}
	w.wroteHeader = true
	w.status = code
	// Encode the header now, sorted by name, as net/http snapshots it:
	// later changes are not sent. One pass over the map and an insertion
	// sort: headers are few, and map lookups are slow in wasm.
	var buf [16]headerEntry
	hs := buf[:0]
	for k, v := range w.header {
		hs = append(hs, headerEntry{k, v})
	}
	for i := 1; i < len(hs); i++ {
		for j := i; j > 0 && hs[j].name < hs[j-1].name; j-- {
			hs[j], hs[j-1] = hs[j-1], hs[j]
		}
	}
	out := append(w.out, cellabi.Version, 0, byte(code), byte(code>>8), 0, 0, 0, 0)
	nAt := len(out) - 4
	n := 0
	for _, e := range hs {
		for _, v := range e.values {
			out = appendStr(out, e.name)
			out = appendStr(out, v)
		}
		n += len(e.values)
	}
	binary.LittleEndian.PutUint32(out[nAt:], u32len(n))
	w.bodyLen = len(out)
	w.out = append(out, 0, 0, 0, 0)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(200)
	}
	w.out = append(w.out, p...)
	return len(p), nil
}

// WriteString is Write for a string; io.WriteString uses it.
func (w *responseWriter) WriteString(s string) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(200)
	}
	w.out = append(w.out, s...)
	return len(s), nil
}

// appendStr appends s as an envelope str: its u32 length, then its bytes.
func appendStr(dst []byte, s string) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, u32len(len(s)))
	return append(dst, s...)
}

// u32len returns n as a u32 length, panicking if it does not fit, as the
// cellabi encoders do.
func u32len(n int) uint32 {
	if uint64(n) > 0xFFFFFFFF {
		panic("cell: length " + strconv.Itoa(n) + " does not fit in a u32")
	}
	return uint32(n)
}
