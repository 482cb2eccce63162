package cell

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/celluster/celluster/core/tracing"
	"github.com/celluster/celluster/core/wasm"
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
		return Refusal(http.StatusBadRequest, "malformed request envelope")
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
	if !req.HasMeta && f.Cell != "" {
		req.HasMeta, req.Meta = true, callMeta(c.name, f.CellID, &req)
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
	var span trace.Span
	if tracing.Enabled() {
		ctx = tracing.Extract(ctx, tracing.Headers{H: &req.Headers})
		ctx, span = tracing.Start(ctx, "cell "+c.name, trace.SpanKindServer,
			attribute.String("celluster.cell", c.name), attribute.String("celluster.caller", f.Cell), attribute.String("celluster.via", f.Node))
		defer span.End()
	}
	w := &envelopeWriter{h: http.Header{}}
	start := time.Now()
	status, v := c.serveEnvelope(ctx, w, &req, env)
	if span != nil {
		span.SetAttributes(attribute.Int("http.response.status_code", w.status))
		if v != nil {
			span.SetAttributes(attribute.String("celluster.version", v.mod.SHA256[:12]))
		}
	}
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

// serveEnvelope is serve for an envelope. Its answers are short and
// generic, like the HTTP path's; the details go to the log.
func (c *Cell) serveEnvelope(ctx context.Context, w *envelopeWriter, req *cellabi.Request, env []byte) (int, *version) {
	lim := c.lim.Load()
	slots, err := c.enter(ctx, lim)
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil
		}
		c.log.Warn("call refused: over concurrency limit", "path", req.Path, "reason", err, "concurrency", lim.Concurrency)
		w.Header().Set("Retry-After", "1")
		return w.fail(http.StatusServiceUnavailable, "cell "+c.name+" is over its concurrency limit; retry later"), nil
	}
	defer func() { <-slots }()
	c.stats.inflight.Add(1)
	defer c.stats.inflight.Add(-1)
	v := c.acquire(ctx)
	if v == nil {
		w.Header().Set("Retry-After", "1")
		return w.fail(http.StatusServiceUnavailable, "cell "+c.name+" is not serving"), nil
	}
	defer v.release()
	if int64(len(req.Body)) > lim.MaxBody {
		return w.fail(http.StatusRequestEntityTooLarge, "cell "+c.name+" accepts request bodies up to "+strconv.FormatInt(lim.MaxBody, 10)+" bytes"), v
	}
	if v.pool == nil {
		target := req.Path
		if req.Query != "" {
			target += "?" + req.Query
		}
		r, err := http.NewRequestWithContext(ctx, req.Method, target, bytes.NewReader(req.Body))
		if err != nil {
			return w.fail(http.StatusBadRequest, "malformed request"), v
		}
		for _, h := range req.Headers {
			r.Header.Add(h.Name, h.Value)
		}
		r.ContentLength = int64(len(req.Body))
		if req.HasMeta { // where it came from, for the CGI variables
			r.Host, r.RemoteAddr, r.Proto = req.Meta.Host, req.Meta.RemoteAddr, req.Meta.Proto
			if req.Meta.Scheme == "https" {
				r.TLS = &tls.ConnectionState{}
			}
		}
		return c.serveCommand(ctx, w, r, v, lim, req.Body), v
	}
	env = forModule(v.mod.ABIMinor, req, env)
	inst, err := v.pool.get(ctx, lim.QueueTimeout)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return 0, v
	case errors.Is(err, errQueueTimeout):
		w.Header().Set("Retry-After", "1")
		return w.fail(http.StatusServiceUnavailable, "cell "+c.name+" is busy: no replica free in time; retry later"), v
	default:
		c.log.Error("cannot start instance", "err", err)
		return w.fail(http.StatusInternalServerError, "cell "+c.name+" could not start an instance"), v
	}
	out, err := inst.Handle(ctx, lim.RequestTimeout, env)
	if err != nil {
		v.pool.put(inst, false)
		switch {
		case errors.Is(err, wasm.ErrTimeout):
			c.log.Warn("call stopped at its time limit; instance replaced", "path", req.Path, "limit", lim.RequestTimeout)
			return w.fail(http.StatusGatewayTimeout, "cell "+c.name+": request exceeded its time limit"), v
		case errors.Is(err, wasm.ErrCanceled):
			return 0, v
		}
		c.log.Error("cell failed; instance replaced", "path", req.Path, "err", err)
		return w.fail(http.StatusInternalServerError, "cell "+c.name+" failed while handling the request"), v
	}
	resp, err := cellabi.DecodeResponse(out)
	if err != nil {
		v.pool.put(inst, false)
		c.log.Error("malformed response envelope; instance replaced", "path", req.Path, "err", err)
		return w.fail(http.StatusBadGateway, "cell "+c.name+" returned a malformed response"), v
	}
	v.pool.put(inst, true)
	for _, hd := range resp.Headers {
		w.h.Add(hd.Name, hd.Value)
	}
	w.status = resp.Status
	w.body.Write(resp.Body)
	return resp.Status, v
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

// fail answers status with a short reason.
func (w *envelopeWriter) fail(status int, reason string) int {
	w.h = http.Header{"Content-Type": {"text/plain; charset=utf-8"}, "X-Content-Type-Options": {"nosniff"}}
	w.status = status
	w.body.Reset()
	w.body.WriteString(reason + "\n")
	return status
}

func (w *envelopeWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(b)
}
