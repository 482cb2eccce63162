package node

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"

	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/pluginapi/cellabi"
)

// CallerHeader carries the calling cell's SPIFFE ID on a cell-to-cell call.
// On a call from a peer it is asserted by that peer, whose own identity the
// fabric verified; a request from outside the node never carries it (the
// ingress drops it).
const CallerHeader = "X-Celluster-Caller"

// callPolicy is what a cell's intent says about calls: whom it may call
// (grant call cell:NAME) and who may call it (allow from ...).
type callPolicy struct {
	calls     []string // "cell:NAME"
	allowFrom []string // "cell:NAME", "cell:*", "node:NAME", "node:*"
	// prefer and avoid are the intent's placement hints for replicas on
	// peers (prefer node / avoid node).
	prefer, avoid []string
	spread        bool
}

func (n *Node) callPolicyOf(name string) callPolicy {
	n.imu.Lock()
	defer n.imu.Unlock()
	if st := n.intents[name]; st != nil {
		return st.calls
	}
	return callPolicy{}
}

// cellID is a cell's SPIFFE ID in this node's trust domain.
func (n *Node) cellID(name string) string {
	return "spiffe://" + n.cfg.TrustDomain + "/cell/" + name
}

// callCell is the registry's Caller: cel.call from the cell caller.
func (n *Node) callCell(ctx context.Context, caller, target string, req []byte) ([]byte, error) {
	name := strings.TrimPrefix(target, "cell:")
	if err := cell.ValidName(name); err != nil {
		return refusal(400, "cel.call: "+err.Error()), nil
	}
	if !slices.Contains(n.callPolicyOf(caller).calls, "cell:"+name) {
		return refusal(403, fmt.Sprintf("cell %s is not granted call to cell:%s (add `grant call cell:%s` to its intent)", caller, name, name)), nil
	}
	env, err := withHeader(req, CallerHeader, n.cellID(caller))
	if err != nil {
		return refusal(400, "cel.call: malformed request: "+err.Error()), nil
	}
	if n.reg.Lookup(name) != nil {
		return n.serveCall(ctx, name, env, "cell:"+caller, ""), nil
	}
	if n.mesh == nil {
		return refusal(404, "no cell "+name+" on this node, and it runs without a fabric"), nil
	}
	for _, mb := range n.Members() {
		if mb.Self || mb.State != "alive" || !slices.Contains(mb.Cells, name) {
			continue
		}
		return n.mesh.requestCell(ctx, mb, name, env)
	}
	return refusal(404, "no node of the fabric serves cell "+name), nil
}

// serveCall serves a call envelope with a cell of this node, after
// checking the cell's `allow from` against the calling cell (and the node
// it came from, for a call from a peer).
func (n *Node) serveCall(ctx context.Context, name string, env []byte, callerCell, viaNode string) []byte {
	allow := n.callPolicyOf(name).allowFrom
	ok := slices.Contains(allow, callerCell) || slices.Contains(allow, "cell:*") ||
		(viaNode != "" && (slices.Contains(allow, "node:"+viaNode) || slices.Contains(allow, "node:*")))
	if !ok {
		stated := "nothing (no `allow from`)"
		if len(allow) > 0 {
			stated = strings.Join(allow, ", ")
		}
		return refusal(403, fmt.Sprintf("cell %s does not allow calls from %s: its intent allows from %s", name, callerCell, stated))
	}
	out, err := n.serveEnvelope(ctx, name, env)
	if err != nil {
		return refusal(502, err.Error())
	}
	return out
}

// serveEnvelope runs a request envelope through a local cell and returns
// the response envelope.
func (n *Node) serveEnvelope(ctx context.Context, name string, env []byte) ([]byte, error) {
	req, err := cellabi.DecodeRequest(env)
	if err != nil {
		return nil, fmt.Errorf("malformed request: %w", err)
	}
	h := n.reg.Handler(name)
	if h == nil {
		return nil, fmt.Errorf("no cell %s on node %s", name, n.cfg.Name)
	}
	target := req.Path
	if target == "" || target[0] != '/' {
		target = "/" + name + target
	}
	if req.Query != "" {
		target += "?" + req.Query
	}
	hr := httptest.NewRequestWithContext(ctx, req.Method, target, bytes.NewReader(req.Body))
	for _, hd := range req.Headers {
		hr.Header.Add(hd.Name, hd.Value)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, hr)
	resp := cellabi.Response{Status: rec.Code, Body: rec.Body.Bytes()}
	for k, vs := range rec.Header() {
		for _, v := range vs {
			resp.Headers = append(resp.Headers, cellabi.Header{Name: k, Value: v})
		}
	}
	resp.Headers = append(resp.Headers, cellabi.Header{Name: ServedByHeader, Value: n.cfg.Name})
	return cellabi.AppendResponse(nil, &resp), nil
}

// refusal is a response envelope saying why a call was not made.
func refusal(status int, msg string) []byte {
	return cellabi.AppendResponse(nil, &cellabi.Response{Status: status,
		Headers: []cellabi.Header{{Name: "Content-Type", Value: "text/plain; charset=utf-8"}}, Body: []byte(msg + "\n")})
}

// withHeader returns the request envelope with header name set to value
// (replacing any the caller set: a cell cannot claim another's identity).
func withHeader(env []byte, name, value string) ([]byte, error) {
	req, err := cellabi.DecodeRequest(env)
	if err != nil {
		return nil, err
	}
	hs := req.Headers[:0:0]
	for _, h := range req.Headers {
		if !strings.EqualFold(h.Name, name) {
			hs = append(hs, h)
		}
	}
	req.Headers = append(hs, cellabi.Header{Name: name, Value: value})
	return cellabi.AppendRequest(nil, &req), nil
}

// callerOf returns the calling cell's "cell:NAME" from a request envelope's
// caller header, if it names a cell of this trust domain.
func (n *Node) callerOf(env []byte) string {
	req, err := cellabi.DecodeRequest(env)
	if err != nil {
		return ""
	}
	prefix := "spiffe://" + n.cfg.TrustDomain + "/cell/"
	for _, h := range req.Headers {
		if strings.EqualFold(h.Name, CallerHeader) && strings.HasPrefix(h.Value, prefix) {
			return "cell:" + strings.TrimPrefix(h.Value, prefix)
		}
	}
	return ""
}
