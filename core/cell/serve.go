package cell

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/celluster/celluster/core/cgi"
	"github.com/celluster/celluster/core/tracing"
	"github.com/celluster/celluster/core/wasm"
	"github.com/celluster/celluster/pluginapi/cellabi"
)

var envPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// ServeHTTP runs one request through the cell. The cell is mounted at
// /<name>; it sees the full path.
func (c *Cell) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if tracing.Enabled() {
		ctx, span := tracing.Start(r.Context(), "cell "+c.name, trace.SpanKindInternal, attribute.String("celluster.cell", c.name))
		defer span.End()
		r = r.WithContext(ctx)
	}
	start := time.Now()
	status, v := c.serve(w, r)
	if tracing.Enabled() {
		span := trace.SpanFromContext(r.Context())
		span.SetAttributes(attribute.Int("http.response.status_code", status))
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
}

// serve returns the status written, or 0 when the client went away before
// an answer, and the version that answered, if any.
func (c *Cell) serve(w http.ResponseWriter, r *http.Request) (int, *version) {
	ctx := r.Context()
	lim := c.lim.Load()
	slots, err := c.enter(ctx, lim)
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil
		}
		c.log.Warn("request refused: over concurrency limit", "path", r.URL.Path, "reason", err,
			"concurrency", lim.Concurrency, "queue", lim.QueueLength)
		w.Header().Set("Retry-After", "1")
		reason := errQueueTimeout.Error()
		if errors.Is(err, errQueueFull) {
			reason = errQueueFull.Error()
		}
		return c.fail(w, http.StatusServiceUnavailable, "is over its concurrency limit ("+reason+"); retry later"), nil
	}
	defer func() { <-slots }()
	c.stats.inflight.Add(1)
	defer c.stats.inflight.Add(-1)

	v := c.acquire(ctx)
	if v == nil {
		// The reason (a path, a compiler error) is for the operator: it is
		// in the log and `celctl cells`, not in the answer.
		c.mu.Lock()
		msg := c.err
		c.mu.Unlock()
		c.log.Debug("request refused: no version serving", "path", r.URL.Path, "err", msg)
		w.Header().Set("Retry-After", "1")
		return c.fail(w, http.StatusServiceUnavailable, "is not serving"), nil
	}
	defer v.release()

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, lim.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return c.fail(w, http.StatusRequestEntityTooLarge, "accepts request bodies up to "+strconv.FormatInt(lim.MaxBody, 10)+" bytes"), v
		}
		c.log.Debug("reading request body", "path", r.URL.Path, "err", err)
		return c.fail(w, http.StatusBadRequest, "could not read the request body"), v
	}
	if v.pool != nil {
		status, refused := c.serveReactor(ctx, w, r, v, lim, body)
		if refused {
			// No replica free in time is the cell's capacity, not the
			// version's fault: it counts for the cell only, so a
			// saturated queue cannot roll back a good upgrade.
			return status, nil
		}
		return status, v
	}
	return c.serveCommand(ctx, w, r, v, lim, body), v
}

func (c *Cell) serveReactor(ctx context.Context, w http.ResponseWriter, r *http.Request, v *version, lim *Limits, body []byte) (status int, refused bool) {
	req := EnvelopeRequest(r, body)
	req.HasMeta = v.mod.ABIMinor >= 1 // a v1 cell gets the v1 envelope
	bp := envPool.Get().(*[]byte)
	env := cellabi.AppendRequest((*bp)[:0], &req)
	defer func() { *bp = env[:0]; envPool.Put(bp) }()

	inst, err := v.pool.get(ctx, lim.QueueTimeout)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return 0, false
	case errors.Is(err, errQueueTimeout):
		c.log.Warn("request refused: no replica free", "path", r.URL.Path, "wait", lim.QueueTimeout, "live", v.replicas())
		w.Header().Set("Retry-After", "1")
		return c.fail(w, http.StatusServiceUnavailable, "is busy: no replica free in time; retry later"), true
	default:
		c.log.Error("cannot start instance", "err", err)
		return c.fail(w, http.StatusInternalServerError, "could not start an instance"), false
	}
	out, err := inst.Handle(ctx, lim.RequestTimeout, env)
	if err != nil {
		v.pool.put(inst, false)
		return c.callFailed(w, r, lim, err), false
	}
	resp, err := cellabi.DecodeResponse(out)
	if err != nil {
		v.pool.put(inst, false)
		c.log.Error("malformed response envelope; instance replaced", "path", r.URL.Path, "err", err)
		return c.fail(w, http.StatusBadGateway, "returned a malformed response"), false
	}
	v.pool.put(inst, true)
	h := w.Header()
	for _, hd := range resp.Headers {
		h.Add(hd.Name, hd.Value)
	}
	h.Set("Content-Length", strconv.Itoa(len(resp.Body)))
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
	return resp.Status, false
}

func (c *Cell) serveCommand(ctx context.Context, w http.ResponseWriter, r *http.Request, v *version, lim *Limits, body []byte) int {
	// Below /<cell> (the cell served by name), SCRIPT_NAME is /<cell>;
	// reached by a route elsewhere (a host, another path), it is empty
	// and PATH_INFO the whole path.
	script, pathInfo := c.name, r.URL.Path
	if rest, ok := strings.CutPrefix(r.URL.Path, "/"+c.name); ok && (rest == "" || rest[0] == '/') {
		pathInfo = rest
	} else {
		script = ""
	}
	var out limitedBuffer
	out.limit = wasm.MaxResponse
	err := v.mod.RunCommand(ctx, wasm.CommandRequest{
		InstanceConfig: wasm.InstanceConfig{Cell: c.name, Logger: c.log, Call: c.callFunc(), Signal: c.signalFunc()},
		Env:            cgi.Env(r, script, pathInfo),
		Stdin:          bytes.NewReader(body),
		Stdout:         &out,
		Timeout:        lim.RequestTimeout,
	})
	if err != nil {
		return c.callFailed(w, r, lim, err)
	}
	if out.overflow {
		c.log.Error("command output too large", "path", r.URL.Path, "limit", out.limit)
		return c.fail(w, http.StatusBadGateway, "wrote a response larger than the limit")
	}
	resp, err := cgi.ParseResponse(out.Bytes())
	if err != nil {
		c.log.Error("malformed CGI response", "path", r.URL.Path, "err", err)
		return c.fail(w, http.StatusBadGateway, "returned a malformed response")
	}
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	h.Set("Content-Length", strconv.Itoa(len(resp.Body)))
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
	return resp.Status
}

// callFailed answers a call that did not complete: 504 past the time limit,
// 500 for a trap, exit or memory exhaustion, nothing when the client left.
func (c *Cell) callFailed(w http.ResponseWriter, r *http.Request, lim *Limits, err error) int {
	switch {
	case errors.Is(err, wasm.ErrTimeout):
		c.log.Warn("request stopped at its time limit; instance replaced", "path", r.URL.Path, "limit", lim.RequestTimeout)
		return c.fail(w, http.StatusGatewayTimeout, "request exceeded its time limit")
	case errors.Is(err, wasm.ErrCanceled):
		c.log.Debug("request canceled by client; instance replaced", "path", r.URL.Path)
		return 0
	}
	c.log.Error("cell failed; instance replaced", "path", r.URL.Path, "err", err)
	return c.fail(w, http.StatusInternalServerError, "failed while handling the request")
}

// fail answers status with a short generic reason: "celluster: cell NAME
// " + reason. Reasons are fixed strings: a client never sees host paths,
// guest traps or stack traces, or file contents; those go to the log (and
// the cell's error in `celctl cells`).
func (c *Cell) fail(w http.ResponseWriter, status int, reason string) int {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, "celluster: cell "+c.name+" "+reason+"\n")
	return status
}

// limitedBuffer collects command output up to limit bytes.
type limitedBuffer struct {
	bytes.Buffer
	limit    int
	overflow bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.limit - b.Len(); len(p) > room {
		b.overflow = true
		if room > 0 {
			b.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return b.Buffer.Write(p)
}
