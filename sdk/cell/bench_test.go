package cell_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/celluster/celluster/pluginapi/cellabi"
	"github.com/celluster/celluster/sdk/cell"
)

// BenchmarkServeEnvelope: what the SDK adds to a handler inside a reactor
// cell, run natively: ServeEnvelope decodes a request envelope (GET
// /hello?name=x, two headers), calls hello's handler and encodes its
// response envelope. Peer in the same run: net-http, the same handler
// written for net/http, called with an already parsed *http.Request and an
// httptest.ResponseRecorder (no parsing, no network): what the SDK's
// envelope costs beside Go's own handler interface.
func BenchmarkServeEnvelope(b *testing.B) {
	b.Run("sdk=envelope", func(b *testing.B) {
		req := cellabi.AppendRequest(nil, &cellabi.Request{
			Method: "GET", Path: "/hello", Query: "name=x",
			Headers: []cellabi.Header{{Name: "Accept", Value: "*/*"}, {Name: "User-Agent", Value: "bench"}},
		})
		h := cell.HandlerFunc(func(w cell.ResponseWriter, r *cell.Request) {
			name := r.QueryValue("name")
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Cell-Version", "dev")
			w.Write([]byte("Hello, " + name + "!\n"))
		})
		var out []byte
		b.ReportAllocs()
		for b.Loop() {
			out = cell.ServeEnvelope(out[:0], h, req)
		}
		resp, err := cellabi.DecodeResponse(out)
		if err != nil || resp.Status != 200 || string(resp.Body) != "Hello, x!\n" {
			b.Fatalf("response %+v, %v", resp, err)
		}
	})
	b.Run("peer=net-http", func(b *testing.B) {
		req := httptest.NewRequest("GET", "/hello?name=x", nil)
		req.Header.Set("Accept", "*/*")
		req.Header.Set("User-Agent", "bench")
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			name := r.URL.Query().Get("name")
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Cell-Version", "dev")
			w.Write([]byte("Hello, " + name + "!\n"))
		})
		var rec *httptest.ResponseRecorder
		b.ReportAllocs()
		for b.Loop() {
			rec = httptest.NewRecorder()
			h.ServeHTTP(rec, req)
		}
		if rec.Code != 200 || rec.Body.String() != "Hello, x!\n" {
			b.Fatalf("response %d %q", rec.Code, rec.Body)
		}
	})
}
