package cgi

import (
	"bytes"
	"errors"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseResponse checks that ParseResponse never panics, that it fails
// only with a *ParseError, that what it accepts is well formed, and that
// re-serialising an accepted response parses back to the same thing.
func FuzzParseResponse(f *testing.F) {
	f.Add([]byte("Content-Type: text/plain\n\nhello\n"))
	f.Add([]byte("Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope"))
	f.Add([]byte("Location: /x\n\n"))
	f.Add([]byte("hello"))
	f.Fuzz(func(t *testing.T, out []byte) {
		resp, err := ParseResponse(out)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), "cgi: ") || pe.Line < 0 {
				t.Fatalf("bad error %T: %v", err, err)
			}
			return
		}
		if resp.Status < 100 || resp.Status > 999 {
			t.Fatalf("status %d", resp.Status)
		}
		if _, ok := resp.Header["Status"]; ok {
			t.Fatal("Status left in the header")
		}
		if len(resp.Body) > len(out) || !bytes.HasSuffix(out, resp.Body) {
			t.Fatal("body is not the tail of the output")
		}
		ser := serialize(resp)
		if bytes.Index(ser, []byte("\r\n\r\n"))+4 > MaxHeaderBytes {
			return // the CRLF form grew past the limit; nothing to compare
		}
		again, err := ParseResponse(ser)
		if err != nil {
			t.Fatalf("re-parsing %q: %v", ser, err)
		}
		if again.Status != resp.Status || !bytes.Equal(again.Body, resp.Body) || !sameHeader(again.Header, resp.Header) {
			t.Fatalf("unstable:\n%+v\n%+v", resp, again)
		}
	})
}

// serialize writes resp back out as CGI output, with an explicit Status.
func serialize(resp *Response) []byte {
	var b bytes.Buffer
	b.WriteString("Status: " + strconv.Itoa(resp.Status) + "\r\n")
	keys := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range resp.Header[k] {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	b.WriteString("\r\n")
	b.Write(resp.Body)
	return b.Bytes()
}

func sameHeader(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, av := range a {
		bv := b[k]
		if len(av) != len(bv) {
			return false
		}
		for i := range av {
			if av[i] != bv[i] {
				return false
			}
		}
	}
	return true
}
