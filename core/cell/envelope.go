package cell

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/celluster/celluster/pluginapi/cellabi"
)

// CallerHeader is the header a cell sees on a cell-to-cell call: the
// calling cell's SPIFFE ID, set by the runtime from the verified caller
// (any copy in the request is dropped). It is informational: the runtime
// authorises the call before the cell runs.
const CallerHeader = "X-Celluster-Caller"

// From says who sends a request envelope: a calling cell (by name; "" for
// a request from outside, e.g. HTTP forwarded by a peer), its SPIFFE ID,
// and the node it came through ("" for this node). The node learns the
// peer from the fabric's verified connection and the calling cell from the
// request frame, never from a header.
type From struct {
	Cell, CellID, Node string
}

// CallPolicy is what a cell's intent says about calls: whom it may call
// (grant call cell:NAME) and who may call it (allow from ...).
type CallPolicy struct {
	// Calls lists "cell:NAME" targets the cell may call.
	Calls []string
	// AllowFrom lists "cell:NAME", "cell:*", "node:NAME" or "node:*".
	AllowFrom []string
}

// SetCallPolicy sets the cell's call policy (from its intent).
func (c *Cell) SetCallPolicy(p CallPolicy) { c.calls.Store(&p) }

// CallPolicy is the cell's call policy (none: it calls nobody and nobody
// may call it).
func (c *Cell) CallPolicy() CallPolicy {
	if p := c.calls.Load(); p != nil {
		return *p
	}
	return CallPolicy{}
}

// MayCall reports, as an error saying why not, whether the policy grants
// calling cell target.
func (p CallPolicy) MayCall(self, target string) error {
	if slices.Contains(p.Calls, "cell:"+target) {
		return nil
	}
	return fmt.Errorf("cell %s is not granted call to cell:%s (add `grant call cell:%s` to its intent)", self, target, target)
}

// Allows reports, as an error saying why not, whether a call from f may
// reach the cell named self.
func (p CallPolicy) Allows(self string, f From) error {
	a := p.AllowFrom
	if slices.Contains(a, "cell:"+f.Cell) || slices.Contains(a, "cell:*") ||
		(f.Node != "" && (slices.Contains(a, "node:"+f.Node) || slices.Contains(a, "node:*"))) {
		return nil
	}
	stated := "nothing (no `allow from`)"
	if len(a) > 0 {
		stated = strings.Join(a, ", ")
	}
	return fmt.Errorf("cell %s does not allow calls from cell:%s: its intent allows from %s", self, f.Cell, stated)
}

// Refusal is a response envelope saying why a request was not served.
func Refusal(status int, msg string) []byte {
	return cellabi.AppendResponse(nil, &cellabi.Response{Status: status,
		Headers: []cellabi.Header{{Name: "Content-Type", Value: "text/plain; charset=utf-8"}}, Body: []byte(msg + "\n")})
}

// ServeEnvelope runs one request envelope (cellabi) through the cell and
// returns the response envelope: the path for cel.call and for requests a
// peer forwarded. A call from a cell (f.Cell set) is authorised first by
// the cell's `allow from`. A reactor gets the envelope as it came (only
// rewritten when the path is relative or caller headers must change); a
// command cell gets it as a CGI request. The limits, statistics and
// answers are those of ServeHTTP.
func (c *Cell) ServeEnvelope(ctx context.Context, env []byte, f From) []byte {
	if f.Cell != "" {
		if err := c.CallPolicy().Allows(c.name, f); err != nil {
			return Refusal(http.StatusForbidden, err.Error())
		}
	}
	req, err := cellabi.DecodeRequest(env)
	if err != nil {
		return Refusal(http.StatusBadRequest, "malformed request envelope: "+err.Error())
	}
	rewrite := req.Path == "" || req.Path[0] != '/'
	if rewrite {
		req.Path = "/" + c.name + req.Path
	}
	for _, h := range req.Headers {
		if strings.EqualFold(h.Name, CallerHeader) {
			rewrite = true
		}
	}
	if f.CellID != "" {
		rewrite = true
	}
	if rewrite {
		hs := req.Headers[:0:0]
		for _, h := range req.Headers {
			if !strings.EqualFold(h.Name, CallerHeader) {
				hs = append(hs, h)
			}
		}
		if f.CellID != "" {
			hs = append(hs, cellabi.Header{Name: CallerHeader, Value: f.CellID})
		}
		req.Headers = hs
		env = cellabi.AppendRequest(nil, &req)
	}
	w := &envelopeWriter{h: http.Header{}}
	start := time.Now()
	status, v := c.serveEnvelope(ctx, w, &req, env)
	if status != 0 {
		d := time.Since(start)
		c.stats.record(d, status)
		if v != nil {
			v.stats.record(d, status)
		}
	}
	if w.status == 0 {
		w.status = http.StatusServiceUnavailable
	}
	resp := cellabi.Response{Status: w.status, Body: w.body.Bytes()}
	for k, vs := range w.h {
		for _, v := range vs {
			resp.Headers = append(resp.Headers, cellabi.Header{Name: k, Value: v})
		}
	}
	return cellabi.AppendResponse(nil, &resp)
}

// serveEnvelope is serve for an envelope.
func (c *Cell) serveEnvelope(ctx context.Context, w http.ResponseWriter, req *cellabi.Request, env []byte) (int, *version) {
	lim := c.lim.Load()
	slots, err := c.enter(ctx, lim)
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil
		}
		w.Header().Set("Retry-After", "1")
		return c.fail(w, http.StatusServiceUnavailable, "cell %s is over its concurrency limit of %d (%v)", c.name, lim.Concurrency, err), nil
	}
	defer func() { <-slots }()
	c.stats.inflight.Add(1)
	defer c.stats.inflight.Add(-1)
	v := c.acquire(ctx)
	if v == nil {
		w.Header().Set("Retry-After", "1")
		return c.fail(w, http.StatusServiceUnavailable, "cell %s is not serving", c.name), nil
	}
	defer v.release()
	if int64(len(req.Body)) > lim.MaxBody {
		return c.fail(w, http.StatusRequestEntityTooLarge, "cell %s accepts bodies up to %d bytes", c.name, lim.MaxBody), v
	}
	if v.pool != nil {
		return c.serveReactorEnvelope(ctx, w, req.Path, v, lim, env), v
	}
	target := req.Path
	if req.Query != "" {
		target += "?" + req.Query
	}
	r, err := http.NewRequestWithContext(ctx, req.Method, target, bytes.NewReader(req.Body))
	if err != nil {
		return c.fail(w, http.StatusBadRequest, "malformed request: %v", err), v
	}
	for _, h := range req.Headers {
		r.Header.Add(h.Name, h.Value)
	}
	r.ContentLength = int64(len(req.Body))
	return c.serveCommand(ctx, w, r, v, lim, req.Body), v
}

// envelopeWriter collects a response for an envelope.
type envelopeWriter struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (w *envelopeWriter) Header() http.Header { return w.h }

func (w *envelopeWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *envelopeWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(b)
}
