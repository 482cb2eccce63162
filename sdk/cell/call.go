package cell

import (
	"errors"
	"fmt"

	"github.com/celluster/celluster/pluginapi/cellabi"
)

// CallResponse is another cell's answer to Call.
type CallResponse struct {
	// Status is the HTTP status: the target's own, or the node's when it
	// refused or could not make the call (403 not granted or not allowed,
	// 404 no such cell, 502 unreachable), with the reason in Body.
	Status int
	// Header holds the response headers.
	Header Header
	// Body is the response body.
	Body []byte
}

// Call sends a request to another cell, on this node or on a peer, as this
// cell: the node adds the caller's identity (spiffe://TD/cell/NAME), the
// caller's intent must grant it (`grant call cell:TARGET`) and the
// target's must allow it (`allow from cell:CALLER`). target is "NAME" or
// "cell:NAME"; path is the target's URL path and query, e.g.
// "/hello?name=x". A refused call is a CallResponse with an error status
// and the reason; err reports only a call that could not be encoded or
// decoded.
func Call(target, method, path string, header Header, body []byte) (*CallResponse, error) {
	req := cellabi.Request{Method: method, Path: path, Body: body}
	if i := indexByte(path, '?'); i >= 0 {
		req.Path, req.Query = path[:i], path[i+1:]
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Headers = append(req.Headers, cellabi.Header{Name: k, Value: v})
		}
	}
	out, err := hostCall(target, cellabi.AppendRequest(nil, &req))
	if err != nil {
		return nil, err
	}
	resp, err := cellabi.DecodeResponse(out)
	if err != nil {
		return nil, fmt.Errorf("cell.Call %s: malformed response: %w", target, err)
	}
	cr := &CallResponse{Status: resp.Status, Header: Header{}, Body: resp.Body}
	for _, h := range resp.Headers {
		cr.Header.Add(h.Name, h.Value)
	}
	return cr, nil
}

// errNoHost is returned by Call outside a node (native builds and tests).
var errNoHost = errors.New("cell.Call: no node to call through (native build)")

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}
