package cellabi

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// checkDecodeError fails unless err is a *DecodeError with the package's
// message prefix.
func checkDecodeError(t *testing.T, err error) {
	t.Helper()
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("error %T is not a *DecodeError: %v", err, err)
	}
	if !strings.HasPrefix(err.Error(), "cellabi: ") || de.Offset < 0 {
		t.Fatalf("malformed error: %v (offset %d)", err, de.Offset)
	}
}

// FuzzDecodeRequest checks that DecodeRequest never panics, that every
// rejection is a *DecodeError, and that an accepted envelope re-encodes to
// exactly the same bytes (the encoding is canonical) and decodes again to
// the same Request.
func FuzzDecodeRequest(f *testing.F) {
	f.Add(AppendRequest(nil, &sampleRequest))
	f.Add(AppendRequest(nil, &Request{}))
	f.Add([]byte{1, 0, 0, 0})
	f.Add(AppendRequest(nil, &Request{Method: "GET", Path: "/h", HasMeta: true,
		Meta: Meta{Host: "h", RemoteAddr: "127.0.0.1:1", Scheme: "http", Proto: "HTTP/1.1", URL: "http://h/h"}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		in := append([]byte(nil), b...)
		r, err := DecodeRequest(b)
		if !bytes.Equal(in, b) {
			t.Fatal("DecodeRequest modified its input")
		}
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		enc := AppendRequest(nil, &r)
		if !bytes.Equal(enc, b) {
			t.Fatalf("re-encoding differs:\n in % x\nout % x", b, enc)
		}
		r2, err := DecodeRequest(enc)
		if err != nil {
			t.Fatalf("re-decoding: %v", err)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("unstable:\n%+v\n%+v", r, r2)
		}
	})
}

// FuzzDecodeResponse is FuzzDecodeRequest for response envelopes.
func FuzzDecodeResponse(f *testing.F) {
	f.Add(AppendResponse(nil, &sampleResponse))
	f.Add(AppendResponse(nil, &Response{Status: 200}))
	f.Add([]byte{1, 0, 0xe7, 0x03})
	f.Fuzz(func(t *testing.T, b []byte) {
		in := append([]byte(nil), b...)
		r, err := DecodeResponse(b)
		if !bytes.Equal(in, b) {
			t.Fatal("DecodeResponse modified its input")
		}
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		if r.Status < MinStatus || r.Status > MaxStatus {
			t.Fatalf("accepted status %d", r.Status)
		}
		enc := AppendResponse(nil, &r)
		if !bytes.Equal(enc, b) {
			t.Fatalf("re-encoding differs:\n in % x\nout % x", b, enc)
		}
		r2, err := DecodeResponse(enc)
		if err != nil {
			t.Fatalf("re-decoding: %v", err)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("unstable:\n%+v\n%+v", r, r2)
		}
	})
}
