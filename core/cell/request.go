package cell

import (
	"net/http"
	"slices"
	"strconv"

	"github.com/celluster/celluster/pluginapi/cellabi"
)

// EnvelopeRequest turns an HTTP request whose body was read whole into a
// request envelope, with the v1.1 metadata (HasMeta set). The headers are
// exactly those sent (cellabi's doc states the rules): names in canonical
// form, sorted by name, each name's values in the order received; Host is
// not among them (it is Meta.Host); Content-Length and Transfer-Encoding
// are dropped and, when the body is not empty, Content-Length is set to
// its length.
func EnvelopeRequest(r *http.Request, body []byte) cellabi.Request {
	req := cellabi.Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Body: body,
		HasMeta: true, Meta: RequestMeta(r)}
	names := make([]string, 0, len(r.Header))
	n := 1
	for k, vs := range r.Header {
		switch k {
		case "Content-Length", "Transfer-Encoding", "Host":
			continue
		}
		names = append(names, k)
		n += len(vs)
	}
	slices.Sort(names)
	req.Headers = make([]cellabi.Header, 0, n)
	for _, k := range names {
		for _, v := range r.Header[k] {
			req.Headers = append(req.Headers, cellabi.Header{Name: k, Value: v})
		}
	}
	if len(body) > 0 {
		req.Headers = append(req.Headers, cellabi.Header{Name: "Content-Length", Value: strconv.Itoa(len(body))})
	}
	return req
}

// RequestMeta is the v1.1 metadata of an HTTP request: its host, the
// client's address, the scheme, the protocol and the full URL.
func RequestMeta(r *http.Request) cellabi.Meta {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	return cellabi.Meta{Host: host, RemoteAddr: r.RemoteAddr, Scheme: scheme, Proto: r.Proto,
		URL: scheme + "://" + host + r.URL.RequestURI()}
}

// callMeta is the v1.1 metadata of a cel.call to cellName from the cell
// whose SPIFFE ID is caller.
func callMeta(cellName, caller string, req *cellabi.Request) cellabi.Meta {
	url := "cel://" + cellName + req.Path
	if req.Query != "" {
		url += "?" + req.Query
	}
	return cellabi.Meta{Host: cellName, RemoteAddr: caller, Scheme: "cel", Proto: "cel.call", URL: url}
}

// forModule returns env as a module of ABI minor version minor reads it:
// without the v1.1 metadata for a v1 module. req is env decoded.
func forModule(minor int, req *cellabi.Request, env []byte) []byte {
	if minor >= 1 || !req.HasMeta {
		return env
	}
	r := *req
	r.HasMeta, r.Meta = false, cellabi.Meta{}
	return cellabi.AppendRequest(nil, &r)
}
