// Command front is a reactor cell that calls another cell: GET /front
// (?name=N) asks the hello cell, on this node or any node of the fabric,
// through cel.call, and answers with what hello said. Its intent grants
// the call (`grant call cell:hello`); hello's must allow it (`allow from
// cell:front`). A refused call is answered with the node's status and
// reason, so the refusal is visible to the client.
package main

import (
	"net/url"
	"strconv"

	"github.com/celluster/celluster/sdk/cell"
)

func init() {
	cell.HandleFunc(front)
}

func front(w cell.ResponseWriter, r *cell.Request) {
	path := "/hello"
	if name := r.QueryValue("name"); name != "" {
		path += "?name=" + url.QueryEscape(name)
	}
	resp, err := cell.Call("cell:hello", "GET", path, nil, nil)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err != nil {
		w.WriteHeader(502)
		w.Write([]byte("front: calling hello: " + err.Error() + "\n"))
		return
	}
	w.Header().Set("X-Hello-Status", strconv.Itoa(resp.Status))
	w.WriteHeader(resp.Status)
	w.Write([]byte("front got: "))
	w.Write(resp.Body)
}

// main is required in package main but never runs in a reactor module.
func main() {}
