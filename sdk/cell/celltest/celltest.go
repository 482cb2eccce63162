// Package celltest runs cell handlers natively, for unit tests of reactor
// cells. Requests go through the same envelope encoding and decoding
// (cell.ServeEnvelope) as in the wasm module, so a handler that passes here
// sees the same Request and produces the same response bytes as when
// celcore calls its cel_handle export.
package celltest

import (
	"fmt"
	"sort"
	"strings"

	"github.com/celluster/celluster/pluginapi/cellabi"
	"github.com/celluster/celluster/sdk/cell"
)

// Response is a decoded response envelope.
type Response struct {
	// Status is the HTTP status code.
	Status int
	// Header holds the response headers with canonical keys.
	Header cell.Header
	// Body is the response body; nil when empty.
	Body []byte
}

// Do serves one request with h and returns the response. target is a path
// with an optional query, such as "/hello/x?name=cell"; it is split at the
// first '?' and not otherwise altered. body may be nil. A nil h means the
// handler set with cell.Handle, as in a deployed cell.
//
// Do panics if the response envelope does not decode, which would be a bug
// in the SDK.
func Do(h cell.Handler, method, target string, body []byte) *Response {
	path, query, _ := strings.Cut(target, "?")
	return DoRequest(h, &cell.Request{Method: method, Path: path, RawQuery: query, Body: body})
}

// DoRequest is Do for a request with headers and, when r.Host is set, the
// v1.1 metadata (Host, RemoteAddr, Scheme, Proto, URL). Header keys are
// sent in sorted order.
func DoRequest(h cell.Handler, r *cell.Request) *Response {
	env := cellabi.Request{Method: r.Method, Path: r.Path, Query: r.RawQuery, Body: r.Body}
	if r.Host != "" {
		env.HasMeta = true
		env.Meta = cellabi.Meta{Host: r.Host, RemoteAddr: r.RemoteAddr, Scheme: r.Scheme, Proto: r.Proto, URL: r.URL}
	}
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range r.Header[k] {
			env.Headers = append(env.Headers, cellabi.Header{Name: k, Value: v})
		}
	}
	out := cell.ServeEnvelope(nil, h, cellabi.AppendRequest(nil, &env))
	resp, err := cellabi.DecodeResponse(out)
	if err != nil {
		panic(fmt.Sprintf("celltest: the SDK produced a bad response envelope: %v", err))
	}
	res := &Response{Status: resp.Status, Header: cell.Header{}, Body: resp.Body}
	for _, hd := range resp.Headers {
		res.Header[hd.Name] = append(res.Header[hd.Name], hd.Value)
	}
	return res
}
