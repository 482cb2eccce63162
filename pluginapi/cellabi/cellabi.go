package cellabi

import (
	"encoding/binary"
	"fmt"
	"strconv"
)

// Version is the envelope version this package encodes and the only one it
// decodes. It is the first byte of every request and response envelope.
const Version = 1

// Minor is the newest minor version of the ABI this package speaks: 1.1
// adds the request metadata ([Meta]). A cell declares that it reads v1.1
// requests by exporting a function named [Minor1Export]; the host then sets
// [FlagMeta] and appends the metadata after the body. A cell that does not
// export it gets exactly the v1 envelope.
const Minor = 1

// Minor1Export is the name of the (never called) function export by which a
// reactor declares that it reads v1.1 request envelopes.
const Minor1Export = "cel_abi_version_1_1"

// FlagMeta is bit 0 of a request envelope's flags: the v1.1 metadata
// follows the body. No other flag is defined; responses carry none.
const FlagMeta = 0x01

// MinStatus and MaxStatus bound the status code a response envelope may
// carry.
const (
	MinStatus = 100
	MaxStatus = 999
)

// Header is one header field. Name is kept as sent (the celcore host sends
// canonical MIME names such as "Content-Type"); a message may carry several
// Headers with the same Name, in order.
type Header struct {
	Name, Value string
}

// Request is the decoded form of a request envelope.
type Request struct {
	// Method is the HTTP method, e.g. "GET".
	Method string
	// Path is the full request path as received by the node, including the
	// cell's mount point, e.g. "/hello/world".
	Path string
	// Query is the raw query string without the leading '?'.
	Query string
	// Headers are the request header fields in the order sent.
	Headers []Header
	// Body is the complete request body; nil when empty.
	Body []byte
	// HasMeta says Meta is present (v1.1; flags bit [FlagMeta]).
	HasMeta bool
	// Meta is the v1.1 request metadata, when HasMeta.
	Meta Meta
}

// Meta is what a v1.1 request carries besides the method, path, query,
// headers and body: where it came from and how.
type Meta struct {
	// Host is the host the client asked for (the Host header or the
	// :authority of HTTP/2 and HTTP/3), e.g. "example.com:8080".
	Host string
	// RemoteAddr is the client's address, "IP:port", as the node that
	// received the request saw it; for a cel.call, the calling cell's
	// SPIFFE ID.
	RemoteAddr string
	// Scheme is "http" or "https"; "cel" for a cel.call.
	Scheme string
	// Proto is the protocol, e.g. "HTTP/1.1", "HTTP/2.0", "HTTP/3.0";
	// "cel.call" for a call from another cell.
	Proto string
	// URL is the full URL: scheme://host/path?query.
	URL string
}

// Response is the decoded form of a response envelope.
type Response struct {
	// Status is the HTTP status code, 100..999.
	Status int
	// Headers are the response header fields in order.
	Headers []Header
	// Body is the complete response body; nil when empty.
	Body []byte
}

// DecodeError describes why an envelope was rejected. Its Error method
// returns "cellabi: " + Field + ": " + Detail, for example
//
//	cellabi: response header 3 value: length 4000 at offset 120 exceeds the 20 bytes left
type DecodeError struct {
	// Field names the field being decoded, e.g. "request path" or
	// "response header 3 value".
	Field string
	// Offset is the byte offset in the envelope where the offending field
	// (for a str or bytes, its length prefix) starts.
	Offset int
	// Detail says what was wrong, including the offset.
	Detail string
}

// Error implements the error interface.
func (e *DecodeError) Error() string {
	return "cellabi: " + e.Field + ": " + e.Detail
}

// AppendRequest appends the envelope encoding of r to dst and returns the
// extended slice. It panics if a string or the body is longer than
// 4 GiB - 1 bytes, which a u32 length cannot describe.
func AppendRequest(dst []byte, r *Request) []byte {
	var flags byte
	if r.HasMeta {
		flags = FlagMeta
	}
	dst = append(dst, Version, flags, 0, 0)
	dst = appendStr(dst, r.Method)
	dst = appendStr(dst, r.Path)
	dst = appendStr(dst, r.Query)
	dst = appendHeaders(dst, r.Headers)
	dst = appendBytes(dst, r.Body)
	if r.HasMeta {
		m := &r.Meta
		dst = appendStr(dst, m.Host)
		dst = appendStr(dst, m.RemoteAddr)
		dst = appendStr(dst, m.Scheme)
		dst = appendStr(dst, m.Proto)
		dst = appendStr(dst, m.URL)
	}
	return dst
}

// AppendResponse appends the envelope encoding of r to dst and returns the
// extended slice. It panics if r.Status is outside 100..999 (no decoder
// would accept the result) or if a string or the body is longer than
// 4 GiB - 1 bytes.
func AppendResponse(dst []byte, r *Response) []byte {
	if r.Status < MinStatus || r.Status > MaxStatus {
		panic("cellabi: AppendResponse: status " + strconv.Itoa(r.Status) + " is outside 100..999")
	}
	dst = append(dst, Version, 0)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(r.Status))
	dst = appendHeaders(dst, r.Headers)
	return appendBytes(dst, r.Body)
}

func appendHeaders(dst []byte, hs []Header) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, u32len(len(hs)))
	for i := range hs {
		dst = appendStr(dst, hs[i].Name)
		dst = appendStr(dst, hs[i].Value)
	}
	return dst
}

func appendStr(dst []byte, s string) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, u32len(len(s)))
	return append(dst, s...)
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, u32len(len(b)))
	return append(dst, b...)
}

func u32len(n int) uint32 {
	if uint64(n) > 0xFFFFFFFF {
		panic("cellabi: length " + strconv.Itoa(n) + " does not fit in a u32")
	}
	return uint32(n)
}

// DecodeRequest decodes a complete request envelope. The returned Request
// shares no memory with b: its strings are substrings of a single copy of
// the envelope up to the body, and Body is a separate copy.
func DecodeRequest(b []byte) (Request, error) {
	var r Request
	if err := DecodeRequestInto(&r, b); err != nil {
		return Request{}, err
	}
	return r, nil
}

// DecodeRequestInto is DecodeRequest decoding into *r, for callers that
// decode many requests: it reuses the backing array of r.Headers when it is
// large enough, so that decoding allocates only the copy of the strings
// and, when not empty, of the body. Every field of *r is overwritten. As
// with DecodeRequest, the result shares no memory with b, but r.Headers may
// share its array with the r.Headers passed in (and is r.Headers[:0] when
// there are no headers). On error *r is left unchanged.
func DecodeRequestInto(r *Request, b []byte) error {
	if err := checkPrefix(b, "request"); err != nil {
		return err
	}
	if v := binary.LittleEndian.Uint16(b[2:]); v != 0 {
		return &DecodeError{Field: "request reserved", Offset: 2,
			Detail: fmt.Sprintf("reserved 0x%04x at offset 2 must be 0 in version %d", v, Version)}
	}
	layout := requestFields
	if b[1] == FlagMeta {
		layout = requestMetaFields
	}
	strEnd, nh, err := scan(b, layout)
	if err != nil {
		return err
	}
	// One copy holds every string; the fields are substrings of it. scan
	// has validated every length, so the loops below cannot run past
	// strEnd. They are written out, without a closure, because calls are
	// expensive in Go's wasm code.
	strs := string(b[:strEnd])
	off := 4
	var fs [3]string
	for i := range fs {
		n := int(binary.LittleEndian.Uint32(b[off:]))
		off += 4 + n
		fs[i] = strs[off-n : off]
	}
	r.Method, r.Path, r.Query = fs[0], fs[1], fs[2]
	off += 4 // nheaders
	hs := r.Headers[:0]
	if cap(hs) < nh {
		hs = make([]Header, nh)
	}
	hs = hs[:nh]
	for i := range hs {
		n := int(binary.LittleEndian.Uint32(b[off:]))
		off += 4 + n
		hs[i].Name = strs[off-n : off]
		n = int(binary.LittleEndian.Uint32(b[off:]))
		off += 4 + n
		hs[i].Value = strs[off-n : off]
	}
	r.Headers = hs
	bodyEnd := strEnd + 4 + int(binary.LittleEndian.Uint32(b[strEnd:]))
	r.Body = copyBody(b[:bodyEnd], strEnd)
	r.HasMeta, r.Meta = layout.meta, Meta{}
	if layout.meta {
		meta := string(b[bodyEnd:])
		off, base := bodyEnd, bodyEnd
		var ms [metaFields]string
		for i := range ms {
			n := int(binary.LittleEndian.Uint32(b[off:]))
			off += 4 + n
			ms[i] = meta[off-n-base : off-base]
		}
		r.Meta = Meta{Host: ms[0], RemoteAddr: ms[1], Scheme: ms[2], Proto: ms[3], URL: ms[4]}
	}
	return nil
}

// metaFields is the number of str fields of the v1.1 metadata.
const metaFields = 5

// DecodeResponse decodes a complete response envelope. The returned
// Response shares no memory with b: its strings are substrings of a single
// copy of the envelope up to the body, and Body is a separate copy.
func DecodeResponse(b []byte) (Response, error) {
	if err := checkPrefix(b, "response"); err != nil {
		return Response{}, err
	}
	status := int(binary.LittleEndian.Uint16(b[2:]))
	if status < MinStatus || status > MaxStatus {
		return Response{}, &DecodeError{Field: "response status", Offset: 2,
			Detail: fmt.Sprintf("status %d at offset 2 is outside %d..%d", status, MinStatus, MaxStatus)}
	}
	strEnd, nh, err := scan(b, responseFields)
	if err != nil {
		return Response{}, err
	}
	r := Response{Status: status}
	if nh > 0 {
		strs := string(b[:strEnd])
		off := 8
		next := func() string {
			n := int(binary.LittleEndian.Uint32(b[off:]))
			off += 4 + n
			return strs[off-n : off]
		}
		r.Headers = make([]Header, nh)
		for i := range r.Headers {
			r.Headers[i].Name = next()
			r.Headers[i].Value = next()
		}
	}
	r.Body = copyBody(b, strEnd)
	return r, nil
}

// copyBody returns a copy of the bytes field at off (already validated),
// or nil when it is empty.
func copyBody(b []byte, off int) []byte {
	if len(b) == off+4 {
		return nil
	}
	return append([]byte(nil), b[off+4:]...)
}

// checkPrefix validates the version and flags bytes and that the u16 at
// offset 2 is present.
func checkPrefix(b []byte, msg string) error {
	switch {
	case len(b) < 1:
		return &DecodeError{Field: msg + " version", Offset: 0,
			Detail: "need 1 bytes for the version at offset 0, have 0"}
	case b[0] != Version:
		return &DecodeError{Field: msg + " version", Offset: 0,
			Detail: fmt.Sprintf("version %d at offset 0 is not supported, want %d", b[0], Version)}
	case len(b) < 2:
		return &DecodeError{Field: msg + " flags", Offset: 1,
			Detail: "need 1 bytes for the flags at offset 1, have 0"}
	case b[1] != 0 && (msg != "request" || b[1] != FlagMeta):
		want := "0"
		if msg == "request" {
			want = "0 or 0x01 (metadata follows the body, v1.1)"
		}
		return &DecodeError{Field: msg + " flags", Offset: 1,
			Detail: fmt.Sprintf("flags 0x%02x at offset 1 must be %s in version %d", b[1], want, Version)}
	case len(b) < 4:
		name, what := " reserved", "reserved u16"
		if msg == "response" {
			name, what = " status", "status u16"
		}
		return &DecodeError{Field: msg + name, Offset: 2,
			Detail: fmt.Sprintf("need 2 bytes for the %s at offset 2, have %d", what, len(b)-2)}
	}
	return nil
}

// fields describes the layout after the 4-byte prefix: the str fields
// before nheaders.
type fields struct {
	msg  string   // "request" or "response"
	strs []string // names of the str fields before nheaders
	meta bool     // the v1.1 metadata strs follow the body
}

var (
	requestFields     = &fields{msg: "request", strs: []string{"method", "path", "query"}}
	requestMetaFields = &fields{msg: "request", strs: []string{"method", "path", "query"}, meta: true}
	responseFields    = &fields{msg: "response"}
	metaNames         = [metaFields]string{"host", "remote address", "scheme", "proto", "url"}
)

// minHeaderSize is the smallest encoding of one header: two empty strs.
const minHeaderSize = 8

// scan validates everything after the 4-byte prefix: the leading strs,
// nheaders and the headers, the body, and that nothing follows. It returns
// the offset of the body's length prefix (where the strings end) and the
// number of headers. It is written as straight-line loops, without a call
// per field, because function calls are expensive in Go's wasm code.
func scan(b []byte, fs *fields) (strEnd, nheaders int, err error) {
	off := 4
	for i := range fs.strs {
		// The check is written out (checkSpan only builds the error):
		// this runs for every field of every request.
		if len(b)-off < 4 || uint64(binary.LittleEndian.Uint32(b[off:])) > uint64(len(b)-off-4) {
			return 0, 0, fs.fail(i, -1, off, checkSpan(b, &off))
		}
		off += 4 + int(binary.LittleEndian.Uint32(b[off:]))
	}
	if len(b)-off < 4 {
		return 0, 0, fs.err("nheaders", off,
			fmt.Sprintf("need 4 bytes for the nheaders u32 at offset %d, have %d", off, len(b)-off))
	}
	n := binary.LittleEndian.Uint32(b[off:])
	max := 0
	if l := len(b) - off - 4 - 4; l > 0 { // the body length must follow
		max = l / minHeaderSize
	}
	if uint64(n) > uint64(max) {
		return 0, 0, fs.err("nheaders", off,
			fmt.Sprintf("nheaders %d at offset %d is more than the %d bytes left can hold (at most %d)", n, off, len(b)-off-4, max))
	}
	off += 4
	for i := range 2 * int(n) {
		if len(b)-off < 4 || uint64(binary.LittleEndian.Uint32(b[off:])) > uint64(len(b)-off-4) {
			return 0, 0, fs.fail(-1, i, off, checkSpan(b, &off))
		}
		off += 4 + int(binary.LittleEndian.Uint32(b[off:]))
	}
	strEnd = off
	if err := checkSpan(b, &off); err != "" {
		return 0, 0, fs.err("body", off, err)
	}
	if fs.meta {
		for i := range metaFields {
			if err := checkSpan(b, &off); err != "" {
				return 0, 0, fs.err("meta "+metaNames[i], off, err)
			}
		}
	}
	if off != len(b) {
		last := "body"
		if fs.meta {
			last = "metadata"
		}
		return 0, 0, &DecodeError{Field: fs.msg, Offset: off,
			Detail: fmt.Sprintf("%d trailing bytes at offset %d after the %s", len(b)-off, off, last)}
	}
	return strEnd, int(n), nil
}

// checkSpan checks the length-prefixed field at *off and advances *off
// past it. On error it leaves *off at the length prefix and returns a
// description; "" means success.
func checkSpan(b []byte, off *int) string {
	o := *off
	if len(b)-o < 4 {
		return "need 4 bytes for the length at offset " + strconv.Itoa(o) + ", have " + strconv.Itoa(len(b)-o)
	}
	n := binary.LittleEndian.Uint32(b[o:])
	if uint64(n) > uint64(len(b)-o-4) {
		return "length " + strconv.FormatUint(uint64(n), 10) + " at offset " + strconv.Itoa(o) +
			" exceeds the " + strconv.Itoa(len(b)-o-4) + " bytes left"
	}
	*off = o + 4 + int(n)
	return ""
}

// fail builds the error for str field str (or, when str < 0, for header
// string hs: 2i is header i's name, 2i+1 its value).
func (fs *fields) fail(str, hs, off int, detail string) error {
	if str >= 0 {
		return fs.err(fs.strs[str], off, detail)
	}
	part := "name"
	if hs%2 == 1 {
		part = "value"
	}
	return fs.err("header "+strconv.Itoa(hs/2)+" "+part, off, detail)
}

func (fs *fields) err(name string, off int, detail string) error {
	return &DecodeError{Field: fs.msg + " " + name, Offset: off, Detail: detail}
}
