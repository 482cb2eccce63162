// Command whoami is a reactor cell that describes the request it got, as
// JSON: the method, path and query, the headers in the order the node
// sent them, and ABI v1.1's request metadata — the host the client asked
// for, the client's address, the scheme, the protocol and the full URL:
//
//	{"method":"GET","path":"/whoami","query":"","host":"example.com:8080",
//	 "remote_addr":"127.0.0.1:50312","scheme":"http","proto":"HTTP/1.1",
//	 "url":"http://example.com:8080/whoami","headers":[["Accept","*/*"]]}
//
// Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o whoami.wasm .
package main

import (
	"encoding/json"
	"sort"

	"github.com/celluster/celluster/sdk/cell"
)

type reply struct {
	Method     string      `json:"method"`
	Path       string      `json:"path"`
	Query      string      `json:"query"`
	Host       string      `json:"host"`
	RemoteAddr string      `json:"remote_addr"`
	Scheme     string      `json:"scheme"`
	Proto      string      `json:"proto"`
	URL        string      `json:"url"`
	Headers    [][2]string `json:"headers"`
}

func init() {
	cell.HandleFunc(whoami)
}

func whoami(w cell.ResponseWriter, r *cell.Request) {
	rep := reply{Method: r.Method, Path: r.Path, Query: r.RawQuery, Host: r.Host, RemoteAddr: r.RemoteAddr,
		Scheme: r.Scheme, Proto: r.Proto, URL: r.URL, Headers: [][2]string{}}
	names := make([]string, 0, len(r.Header))
	for k := range r.Header {
		names = append(names, k)
	}
	sort.Strings(names) // the node sends them sorted; the map lost the order
	for _, k := range names {
		for _, v := range r.Header[k] {
			rep.Headers = append(rep.Headers, [2]string{k, v})
		}
	}
	b, _ := json.Marshal(rep)
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}

// main is required in package main but never runs in a reactor module;
// init registers the handler instead.
func main() {}
