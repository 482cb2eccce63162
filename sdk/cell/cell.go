package cell

import (
	"fmt"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
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
	// Header holds the request header fields with canonical keys.
	Header Header
	// Body is the complete request body; nil when empty.
	Body []byte
}

// Query parses RawQuery and returns the values it holds, ignoring
// malformed pairs, like net/url.URL.Query.
func (r *Request) Query() url.Values {
	v, _ := url.ParseQuery(r.RawQuery)
	return v
}

// A ResponseWriter is used by a Handler to build the response. Unlike
// net/http's, it buffers everything: the response is sent when the handler
// returns.
type ResponseWriter interface {
	// Header returns the header map that WriteHeader (or the first Write)
	// will send. Changing it after that has no effect.
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

// A Handler responds to a request. The handler must not keep w or r after
// ServeCell returns.
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
func ServeEnvelope(dst []byte, h Handler, req []byte) []byte {
	in, err := cellabi.DecodeRequest(req)
	if err != nil {
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
	x := &exchange{
		req: Request{
			Method:   in.Method,
			Path:     in.Path,
			RawQuery: in.Query,
			Header:   make(Header, len(in.Headers)),
			Body:     in.Body,
		},
		w: responseWriter{header: make(Header)},
	}
	// All single-valued headers share one backing array.
	vals := make([]string, len(in.Headers))
	for i, hd := range in.Headers {
		k := CanonicalHeaderKey(hd.Name)
		if v, ok := x.req.Header[k]; ok {
			x.req.Header[k] = append(v, hd.Value)
			continue
		}
		vals[i] = hd.Value
		x.req.Header[k] = vals[i : i+1 : i+1]
	}
	if msg, ok := serve(h, &x.w, &x.req); !ok {
		return appendError(dst, msg)
	}
	if !x.w.wroteHeader {
		x.w.WriteHeader(200)
	}
	return cellabi.AppendResponse(dst, &cellabi.Response{Status: x.w.status, Headers: x.w.sent, Body: x.w.body})
}

// exchange is one request and its response, allocated together.
type exchange struct {
	req Request
	w   responseWriter
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

// responseWriter buffers a response.
type responseWriter struct {
	header      Header
	wroteHeader bool
	status      int
	sent        []cellabi.Header // header as of WriteHeader, sorted by name
	body        []byte
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
	// Snapshot the header now, as net/http does: later changes are not
	// sent.
	var buf [16]string
	keys := buf[:0]
	n := 0
	for k, v := range w.header {
		keys = append(keys, k)
		n += len(v)
	}
	slices.Sort(keys)
	w.sent = make([]cellabi.Header, 0, n)
	for _, k := range keys {
		for _, v := range w.header[k] {
			w.sent = append(w.sent, cellabi.Header{Name: k, Value: v})
		}
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(200)
	}
	w.body = append(w.body, p...)
	return len(p), nil
}

// WriteString is Write for a string; io.WriteString uses it.
func (w *responseWriter) WriteString(s string) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(200)
	}
	w.body = append(w.body, s...)
	return len(s), nil
}
