package cellabi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"go/build"
	"reflect"
	"strings"
	"testing"
)

// le32 returns n as 4 little-endian bytes.
func le32(n uint32) []byte { return binary.LittleEndian.AppendUint32(nil, n) }

// cat concatenates byte slices and strings (strings are str-encoded with
// their u32 length prefix when wrapped in s()).
func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// s returns the str encoding of v.
func s(v string) []byte { return append(le32(uint32(len(v))), v...) }

var sampleRequest = Request{
	Method: "POST",
	Path:   "/hello/world",
	Query:  "name=cell&x=1",
	Headers: []Header{
		{"Accept", "*/*"},
		{"X-Dup", "1"},
		{"X-Dup", "2"},
		{"X-Empty", ""},
	},
	Body: []byte("hi\x00\xff"),
}

var sampleResponse = Response{
	Status: 404,
	Headers: []Header{
		{"Content-Type", "text/plain"},
		{"Set-Cookie", "a=1"},
		{"Set-Cookie", "b=2"},
	},
	Body: []byte("not found\n"),
}

func TestRequestWireFormat(t *testing.T) {
	r := Request{Method: "GET", Path: "/h", Headers: []Header{{"A", "b"}}, Body: []byte("x")}
	want := cat(
		[]byte{1, 0, 0, 0},
		s("GET"), s("/h"), s(""),
		le32(1), s("A"), s("b"),
		s("x"),
	)
	got := AppendRequest(nil, &r)
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendRequest:\n got % x\nwant % x", got, want)
	}
}

// TestRequestMetaWireFormat: a v1.1 request sets flags bit 0 and carries
// five strs after the body; decoding gives them back.
func TestRequestMetaWireFormat(t *testing.T) {
	r := Request{Method: "GET", Path: "/h", Body: []byte("x"), HasMeta: true, Meta: Meta{
		Host: "example.com", RemoteAddr: "127.0.0.1:5000", Scheme: "https", Proto: "HTTP/2.0", URL: "https://example.com/h",
	}}
	want := cat(
		[]byte{1, FlagMeta, 0, 0},
		s("GET"), s("/h"), s(""),
		le32(0),
		s("x"),
		s("example.com"), s("127.0.0.1:5000"), s("https"), s("HTTP/2.0"), s("https://example.com/h"),
	)
	got := AppendRequest(nil, &r)
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendRequest:\n got % x\nwant % x", got, want)
	}
	back, err := DecodeRequest(got)
	if err != nil {
		t.Fatal(err)
	}
	back.Headers = nil
	if !reflect.DeepEqual(back, r) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", back, r)
	}
	// Trailing bytes after the metadata are refused like after the body.
	_, err = DecodeRequest(append(got, 0))
	if err == nil || err.Error() != fmt.Sprintf("cellabi: request: 1 trailing bytes at offset %d after the metadata", len(got)) {
		t.Fatalf("trailing byte: %v", err)
	}
	// A v1 request decoded into a Request that held metadata drops it.
	v1 := AppendRequest(nil, &Request{Method: "GET", Path: "/h"})
	if err := DecodeRequestInto(&back, v1); err != nil || back.HasMeta || back.Meta != (Meta{}) {
		t.Fatalf("v1 after v1.1: %+v, %v", back, err)
	}
}

func TestResponseWireFormat(t *testing.T) {
	r := Response{Status: 200, Headers: []Header{{"Content-Type", "text/plain"}}, Body: []byte("ok")}
	want := cat(
		[]byte{1, 0, 200, 0},
		le32(1), s("Content-Type"), s("text/plain"),
		s("ok"),
	)
	got := AppendResponse(nil, &r)
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendResponse:\n got % x\nwant % x", got, want)
	}
	// 999 needs both status bytes.
	got = AppendResponse(nil, &Response{Status: 999})
	if want := cat([]byte{1, 0, 0xe7, 0x03}, le32(0), le32(0)); !bytes.Equal(got, want) {
		t.Fatalf("status 999:\n got % x\nwant % x", got, want)
	}
}

func TestRequestRoundTrip(t *testing.T) {
	for name, r := range map[string]Request{
		"sample": sampleRequest,
		"empty":  {},
		"no body": {
			Method: "GET", Path: "/", Headers: []Header{{"", ""}},
		},
		"big body": {Method: "PUT", Path: "/x", Body: bytes.Repeat([]byte{0xab}, 1<<16)},
	} {
		t.Run(name, func(t *testing.T) {
			prefix := []byte("prefix")
			b := AppendRequest(append([]byte(nil), prefix...), &r)
			if !bytes.HasPrefix(b, prefix) {
				t.Fatal("AppendRequest clobbered dst")
			}
			got, err := DecodeRequest(b[len(prefix):])
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, r) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, r)
			}
		})
	}
}

func TestResponseRoundTrip(t *testing.T) {
	for name, r := range map[string]Response{
		"sample": sampleResponse,
		"100":    {Status: 100},
		"999":    {Status: 999, Body: []byte{0}},
	} {
		t.Run(name, func(t *testing.T) {
			b := AppendResponse(nil, &r)
			got, err := DecodeResponse(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, r) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, r)
			}
		})
	}
}

// TestDecodeCopies checks that nothing returned aliases the input buffer.
func TestDecodeCopies(t *testing.T) {
	b := AppendRequest(nil, &sampleRequest)
	req, err := DecodeRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 'Z'
	}
	if !reflect.DeepEqual(req, sampleRequest) {
		t.Fatalf("request changed after overwriting the input: %+v", req)
	}

	b = AppendResponse(nil, &sampleResponse)
	resp, err := DecodeResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 'Z'
	}
	if !reflect.DeepEqual(resp, sampleResponse) {
		t.Fatalf("response changed after overwriting the input: %+v", resp)
	}
}

func TestAppendResponseBadStatusPanics(t *testing.T) {
	for _, st := range []int{0, 99, 1000, 70000, -1} {
		func() {
			defer func() {
				v := recover()
				if v == nil {
					t.Errorf("status %d: no panic", st)
					return
				}
				if msg, _ := v.(string); !strings.HasPrefix(msg, "cellabi: ") {
					t.Errorf("status %d: panic %v lacks the cellabi: prefix", st, v)
				}
			}()
			AppendResponse(nil, &Response{Status: st})
		}()
	}
}

type rejectCase struct {
	name   string
	in     []byte
	field  string
	offset int
	msg    string
}

func checkReject(t *testing.T, tc rejectCase, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: accepted % x", tc.name, tc.in)
	}
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("%s: error %T is not a *DecodeError: %v", tc.name, err, err)
	}
	if de.Field != tc.field || de.Offset != tc.offset || err.Error() != tc.msg {
		t.Fatalf("%s:\n got field %q offset %d %q\nwant field %q offset %d %q",
			tc.name, de.Field, de.Offset, err.Error(), tc.field, tc.offset, tc.msg)
	}
}

func TestDecodeRequestRejects(t *testing.T) {
	good := AppendRequest(nil, &Request{Method: "GET", Path: "/p", Headers: []Header{{"A", "b"}}, Body: []byte("xy")})
	// good = 1 0 0 0 | 3 GET (4..10) | 2 /p (11..16) | 0 (17..20) | nheaders 1 (21..24)
	//        | 1 A (25..29) | 1 b (30..34) | 2 xy (35..40); len 41
	if len(good) != 41 {
		t.Fatalf("test setup: len %d", len(good))
	}
	withByte := func(off int, v byte) []byte {
		b := append([]byte(nil), good...)
		b[off] = v
		return b
	}
	withU32 := func(off int, v uint32) []byte {
		b := append([]byte(nil), good...)
		binary.LittleEndian.PutUint32(b[off:], v)
		return b
	}
	cases := []rejectCase{
		{"empty", nil, "request version", 0,
			"cellabi: request version: need 1 bytes for the version at offset 0, have 0"},
		{"version 0", withByte(0, 0), "request version", 0,
			"cellabi: request version: version 0 at offset 0 is not supported, want 1"},
		{"version 2", withByte(0, 2), "request version", 0,
			"cellabi: request version: version 2 at offset 0 is not supported, want 1"},
		{"no flags", good[:1], "request flags", 1,
			"cellabi: request flags: need 1 bytes for the flags at offset 1, have 0"},
		{"flags", withByte(1, 0x80), "request flags", 1,
			"cellabi: request flags: flags 0x80 at offset 1 must be 0 or 0x01 (metadata follows the body, v1.1) in version 1"},
		{"meta flag without the metadata", withByte(1, FlagMeta), "request meta host", 41,
			"cellabi: request meta host: need 4 bytes for the length at offset 41, have 0"},
		{"short reserved", good[:3], "request reserved", 2,
			"cellabi: request reserved: need 2 bytes for the reserved u16 at offset 2, have 1"},
		{"reserved", withByte(3, 1), "request reserved", 2,
			"cellabi: request reserved: reserved 0x0100 at offset 2 must be 0 in version 1"},
		{"no method", good[:4], "request method", 4,
			"cellabi: request method: need 4 bytes for the length at offset 4, have 0"},
		{"short method length", good[:6], "request method", 4,
			"cellabi: request method: need 4 bytes for the length at offset 4, have 2"},
		{"method too long", withU32(4, 100), "request method", 4,
			"cellabi: request method: length 100 at offset 4 exceeds the 33 bytes left"},
		{"method length max", withU32(4, 0xFFFFFFFF), "request method", 4,
			"cellabi: request method: length 4294967295 at offset 4 exceeds the 33 bytes left"},
		{"truncated method", good[:9], "request method", 4,
			"cellabi: request method: length 3 at offset 4 exceeds the 1 bytes left"},
		{"path too long", withU32(11, 31), "request path", 11,
			"cellabi: request path: length 31 at offset 11 exceeds the 26 bytes left"},
		{"query too long", withU32(17, 21), "request query", 17,
			"cellabi: request query: length 21 at offset 17 exceeds the 20 bytes left"},
		{"no nheaders", good[:21], "request nheaders", 21,
			"cellabi: request nheaders: need 4 bytes for the nheaders u32 at offset 21, have 0"},
		{"nheaders too many", withU32(21, 3), "request nheaders", 21,
			"cellabi: request nheaders: nheaders 3 at offset 21 is more than the 16 bytes left can hold (at most 1)"},
		{"nheaders huge", withU32(21, 0xFFFFFFFF), "request nheaders", 21,
			"cellabi: request nheaders: nheaders 4294967295 at offset 21 is more than the 16 bytes left can hold (at most 1)"},
		{"nheaders no room", cat(good[:21], le32(1), le32(0)), "request nheaders", 21,
			"cellabi: request nheaders: nheaders 1 at offset 21 is more than the 4 bytes left can hold (at most 0)"},
		{"header name too long", withU32(25, 17), "request header 0 name", 25,
			"cellabi: request header 0 name: length 17 at offset 25 exceeds the 12 bytes left"},
		{"header value too long", withU32(30, 8), "request header 0 value", 30,
			"cellabi: request header 0 value: length 8 at offset 30 exceeds the 7 bytes left"},
		{"no body", cat(good[:21], le32(0)), "request body", 25,
			"cellabi: request body: need 4 bytes for the length at offset 25, have 0"},
		{"short body length", cat(good[:21], le32(0), []byte{2, 0}), "request body", 25,
			"cellabi: request body: need 4 bytes for the length at offset 25, have 2"},
		{"body too long", withU32(35, 3), "request body", 35,
			"cellabi: request body: length 3 at offset 35 exceeds the 2 bytes left"},
		{"truncated body", good[:40], "request body", 35,
			"cellabi: request body: length 2 at offset 35 exceeds the 1 bytes left"},
		{"trailing", append(append([]byte(nil), good...), 0, 0, 0), "request", 41,
			"cellabi: request: 3 trailing bytes at offset 41 after the body"},
	}
	for _, tc := range cases {
		r, err := DecodeRequest(tc.in)
		checkReject(t, tc, err)
		if !reflect.DeepEqual(r, Request{}) {
			t.Errorf("%s: non-zero Request returned with an error: %+v", tc.name, r)
		}
	}
}

func TestDecodeResponseRejects(t *testing.T) {
	good := AppendResponse(nil, &Response{Status: 200, Headers: []Header{{"A", "b"}, {"C", "d"}}, Body: []byte("xy")})
	// good = 1 0 200 0 | nheaders 2 (4..7) | 1 A (8..12) | 1 b (13..17)
	//        | 1 C (18..22) | 1 d (23..27) | 2 xy (28..33); len 34
	if len(good) != 34 {
		t.Fatalf("test setup: len %d", len(good))
	}
	withU16 := func(off int, v uint16) []byte {
		b := append([]byte(nil), good...)
		binary.LittleEndian.PutUint16(b[off:], v)
		return b
	}
	withU32 := func(off int, v uint32) []byte {
		b := append([]byte(nil), good...)
		binary.LittleEndian.PutUint32(b[off:], v)
		return b
	}
	cases := []rejectCase{
		{"empty", []byte{}, "response version", 0,
			"cellabi: response version: need 1 bytes for the version at offset 0, have 0"},
		{"version", withU16(0, 0x0002), "response version", 0,
			"cellabi: response version: version 2 at offset 0 is not supported, want 1"},
		{"flags", withU16(0, 0x0101), "response flags", 1,
			"cellabi: response flags: flags 0x01 at offset 1 must be 0 in version 1"},
		{"short status", good[:2], "response status", 2,
			"cellabi: response status: need 2 bytes for the status u16 at offset 2, have 0"},
		{"status 0", withU16(2, 0), "response status", 2,
			"cellabi: response status: status 0 at offset 2 is outside 100..999"},
		{"status 99", withU16(2, 99), "response status", 2,
			"cellabi: response status: status 99 at offset 2 is outside 100..999"},
		{"status 1000", withU16(2, 1000), "response status", 2,
			"cellabi: response status: status 1000 at offset 2 is outside 100..999"},
		{"status max", withU16(2, 0xFFFF), "response status", 2,
			"cellabi: response status: status 65535 at offset 2 is outside 100..999"},
		{"no nheaders", good[:4], "response nheaders", 4,
			"cellabi: response nheaders: need 4 bytes for the nheaders u32 at offset 4, have 0"},
		{"nheaders too many", withU32(4, 4), "response nheaders", 4,
			"cellabi: response nheaders: nheaders 4 at offset 4 is more than the 26 bytes left can hold (at most 2)"},
		{"header 1 name", withU32(18, 100), "response header 1 name", 18,
			"cellabi: response header 1 name: length 100 at offset 18 exceeds the 12 bytes left"},
		{"header 1 value", withU32(23, 4000), "response header 1 value", 23,
			"cellabi: response header 1 value: length 4000 at offset 23 exceeds the 7 bytes left"},
		{"truncated in header",
			cat([]byte{1, 0, 200, 0}, le32(2), s("123456789"), s(""), []byte{0, 0, 0}),
			"response header 1 name", 25,
			"cellabi: response header 1 name: need 4 bytes for the length at offset 25, have 3"},
		{"truncated before nheaders", good[:6], "response nheaders", 4,
			"cellabi: response nheaders: need 4 bytes for the nheaders u32 at offset 4, have 2"},
		{"body too long", withU32(28, 5), "response body", 28,
			"cellabi: response body: length 5 at offset 28 exceeds the 2 bytes left"},
		{"trailing", append(append([]byte(nil), good...), 9), "response", 34,
			"cellabi: response: 1 trailing bytes at offset 34 after the body"},
	}
	for _, tc := range cases {
		r, err := DecodeResponse(tc.in)
		checkReject(t, tc, err)
		if !reflect.DeepEqual(r, Response{}) {
			t.Errorf("%s: non-zero Response returned with an error: %+v", tc.name, r)
		}
	}
}

// TestDecodeRequestDoesNotOverAllocate checks that a lying nheaders cannot
// make the decoder allocate more than the input could describe.
func TestDecodeRequestDoesNotOverAllocate(t *testing.T) {
	b := cat([]byte{1, 0, 0, 0}, s(""), s(""), s(""), le32(1<<30), make([]byte, 64))
	allocs := testing.AllocsPerRun(10, func() {
		if _, err := DecodeRequest(b); err == nil {
			t.Fatal("accepted")
		}
	})
	if allocs > 10 {
		t.Fatalf("%v allocations rejecting a lying nheaders", allocs)
	}
}

// TestImports keeps the package a small leaf: it is linked into every Go
// cell, so each dependency costs wasm size.
func TestImports(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"encoding/binary": true, "errors": true, "fmt": true, "strconv": true}
	for _, imp := range pkg.Imports {
		if !allowed[imp] {
			t.Errorf("cellabi imports %q; only encoding/binary, errors, fmt and strconv are allowed", imp)
		}
	}
}

func BenchmarkDecodeRequest(b *testing.B) {
	buf := AppendRequest(nil, &sampleRequest)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := DecodeRequest(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendResponse(b *testing.B) {
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendResponse(buf[:0], &sampleResponse)
	}
}

func TestDecodeRequestInto(t *testing.T) {
	want := Request{Method: "POST", Path: "/p", Query: "a=1",
		Headers: []Header{{"A", "1"}, {"B", "2"}}, Body: []byte("body")}
	env := AppendRequest(nil, &want)
	r := Request{Headers: make([]Header, 1, 4), Body: []byte("old")}
	arr := &r.Headers[:1][0]
	if err := DecodeRequestInto(&r, env); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("got %+v, want %+v", r, want)
	}
	if &r.Headers[0] != arr {
		t.Error("the Headers array was not reused")
	}
	env[len(env)-1] = 'X'
	if string(r.Body) != "body" {
		t.Error("Body shares memory with the envelope")
	}
	if n := testing.AllocsPerRun(100, func() { DecodeRequestInto(&r, env) }); n != 2 {
		t.Errorf("DecodeRequestInto allocates %v times, want 2 (strings and body)", n)
	}

	// No headers: the array is kept, the slice is empty.
	if err := DecodeRequestInto(&r, AppendRequest(nil, &Request{Method: "GET"})); err != nil {
		t.Fatal(err)
	}
	if len(r.Headers) != 0 || cap(r.Headers) != 4 || r.Body != nil || r.Method != "GET" || r.Path != "" {
		t.Errorf("no headers: %+v (cap %d)", r, cap(r.Headers))
	}

	// An error leaves r alone.
	before := r
	if err := DecodeRequestInto(&r, env[:len(env)-1]); err == nil {
		t.Fatal("truncated envelope accepted")
	}
	if !reflect.DeepEqual(r, before) {
		t.Errorf("error changed r: %+v", r)
	}
}
