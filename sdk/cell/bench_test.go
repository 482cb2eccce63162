package cell_test

import (
	"testing"

	"github.com/celluster/celluster/pluginapi/cellabi"
	"github.com/celluster/celluster/sdk/cell"
)

func BenchmarkServeEnvelope(b *testing.B) {
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
}
