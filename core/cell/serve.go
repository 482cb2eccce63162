package cell

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/celluster/celluster/core/cgi"
	"github.com/celluster/celluster/core/wasm"
	"github.com/celluster/celluster/pluginapi/cellabi"
)

var envPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// ServeHTTP runs one request through the cell. The cell is mounted at
// /<name>; it sees the full path.
func (c *Cell) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	status, v := c.serve(w, r)
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
		return c.fail(w, http.StatusServiceUnavailable, "cell %s is over its concurrency limit of %d (%v)", c.name, lim.Concurrency, err), nil
	}
	defer func() { <-slots }()
	c.stats.inflight.Add(1)
	defer c.stats.inflight.Add(-1)

	v := c.acquire(ctx)
	if v == nil {
		c.mu.Lock()
		msg := c.err
		c.mu.Unlock()
		if msg == "" {
			msg = "no version loaded"
		}
		return c.fail(w, http.StatusServiceUnavailable, "cell %s is not serving: %s", c.name, msg), nil
	}
	defer v.release()

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, lim.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return c.fail(w, http.StatusRequestEntityTooLarge, "cell %s accepts bodies up to %d bytes", c.name, lim.MaxBody), v
		}
		return c.fail(w, http.StatusBadRequest, "reading request body: %v", err), v
	}
	if v.pool != nil {
		return c.serveReactor(ctx, w, r, v, lim, body), v
	}
	return c.serveCommand(ctx, w, r, v, lim, body), v
}

func (c *Cell) serveReactor(ctx context.Context, w http.ResponseWriter, r *http.Request, v *version, lim *Limits, body []byte) int {
	req := cellabi.Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Body: body}
	n := 0
	for _, vs := range r.Header {
		n += len(vs)
	}
	req.Headers = make([]cellabi.Header, 0, n)
	for k, vs := range r.Header {
		for _, v := range vs {
			req.Headers = append(req.Headers, cellabi.Header{Name: k, Value: v})
		}
	}
	bp := envPool.Get().(*[]byte)
	env := cellabi.AppendRequest((*bp)[:0], &req)
	defer func() { *bp = env[:0]; envPool.Put(bp) }()

	inst, err := v.pool.get(ctx, lim.QueueTimeout)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return 0
	case errors.Is(err, errQueueTimeout):
		w.Header().Set("Retry-After", "1")
		return c.fail(w, http.StatusServiceUnavailable, "cell %s: no replica free within %s (%d live)", c.name, lim.QueueTimeout, v.replicas())
	default:
		c.log.Error("cannot start instance", "err", err)
		return c.fail(w, http.StatusInternalServerError, "cell %s: cannot start an instance: %v", c.name, err)
	}
	out, err := inst.Handle(ctx, lim.RequestTimeout, env)
	if err != nil {
		v.pool.put(inst, false)
		return c.callFailed(w, r, lim, err)
	}
	resp, err := cellabi.DecodeResponse(out)
	if err != nil {
		v.pool.put(inst, false)
		c.log.Error("malformed response envelope; instance replaced", "path", r.URL.Path, "err", err)
		return c.fail(w, http.StatusBadGateway, "cell %s returned a malformed response: %v", c.name, err)
	}
	v.pool.put(inst, true)
	h := w.Header()
	for _, hd := range resp.Headers {
		h.Add(hd.Name, hd.Value)
	}
	h.Set("Content-Length", strconv.Itoa(len(resp.Body)))
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
	return resp.Status
}

func (c *Cell) serveCommand(ctx context.Context, w http.ResponseWriter, r *http.Request, v *version, lim *Limits, body []byte) int {
	pathInfo := strings.TrimPrefix(r.URL.Path, "/"+c.name)
	var out limitedBuffer
	out.limit = wasm.MaxResponse
	err := v.mod.RunCommand(ctx, wasm.CommandRequest{
		InstanceConfig: wasm.InstanceConfig{Cell: c.name, Logger: c.log, Call: c.callFunc()},
		Env:            cgi.Env(r, c.name, pathInfo),
		Stdin:          bytes.NewReader(body),
		Stdout:         &out,
		Timeout:        lim.RequestTimeout,
	})
	if err != nil {
		return c.callFailed(w, r, lim, err)
	}
	if out.overflow {
		c.log.Error("command output too large", "path", r.URL.Path, "limit", out.limit)
		return c.fail(w, http.StatusBadGateway, "cell %s wrote more than %d bytes", c.name, out.limit)
	}
	resp, err := cgi.ParseResponse(out.Bytes())
	if err != nil {
		c.log.Error("malformed CGI response", "path", r.URL.Path, "err", err)
		return c.fail(w, http.StatusBadGateway, "cell %s returned a malformed CGI response: %v", c.name, err)
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
		return c.fail(w, http.StatusGatewayTimeout, "cell %s: request exceeded its time limit of %s", c.name, lim.RequestTimeout)
	case errors.Is(err, wasm.ErrCanceled):
		c.log.Debug("request canceled by client; instance replaced", "path", r.URL.Path)
		return 0
	}
	c.log.Error("cell failed; instance replaced", "path", r.URL.Path, "err", err)
	return c.fail(w, http.StatusInternalServerError, "cell %s failed: %v", c.name, err)
}

func (c *Cell) fail(w http.ResponseWriter, status int, format string, args ...any) int {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, format+"\n", args...)
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
