// Package ingress is the node's HTTP front door: it routes /<cell> and every
// path below it to the cell of that name, and, by the route table in
// force (SetRoutes, from the cells' intents), a host name and path prefix
// to a cell, and what nothing else takes to the default cell (routes.go
// says in which order). Every protocol below goes through the one
// ServeHTTP, so they all route alike.
//
// It speaks HTTP/1.1 and HTTP/2 without TLS (h2c, prior knowledge) on the
// plain listener and, when given a certificate, HTTP/1.1 and HTTP/2 over
// TLS on a TCP listener and HTTP/3 (quic-go's http3) on a UDP socket of
// the same port, which every TLS response advertises with Alt-Svc. The
// certificate is loaded again when its files change (Certs.Watch). Slow
// or greedy clients are bounded by Options: header, whole-request and idle
// timeouts, the header size, streams per connection and connections per
// listener.
package ingress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/netutil"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/celluster/celluster/core/tracing"
)

// Cells finds the handler of a cell by name; nil when there is none.
type Cells interface {
	Handler(name string) http.Handler
}

// Options bound what a client may hold of the ingress. Zero fields take
// the defaults.
type Options struct {
	// ReadHeaderTimeout bounds reading a request's header (10s).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included (60s).
	ReadTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long (2m).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's header (64 KiB).
	MaxHeaderBytes int
	// MaxStreams bounds the requests one HTTP/2 or HTTP/3 connection
	// carries at once (250).
	MaxStreams int
	// MaxConns bounds the TCP connections each listener holds open;
	// beyond it, new ones wait to be accepted (10000).
	MaxConns int
}

func (o Options) withDefaults() Options {
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = 10 * time.Second
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 60 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 2 * time.Minute
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = 64 << 10
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = 250
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 10000
	}
	return o
}

// Server serves cells over HTTP.
type Server struct {
	cells  Cells
	log    *slog.Logger
	opts   Options
	srv    *http.Server // plain: HTTP/1.1 and h2c
	routes Router

	mu   sync.Mutex
	tls  *http.Server  // HTTPS: HTTP/1.1 and HTTP/2
	h3   *http3.Server // HTTP/3
	done bool
}

// New returns a server routing to cells.
func New(cells Cells, log *slog.Logger, opts Options) *Server {
	s := &Server{cells: cells, log: log, opts: opts.withDefaults()}
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	s.srv = s.httpServer(s, protos)
	return s
}

// httpServer is an http.Server for h with the Options' bounds.
func (s *Server) httpServer(h http.Handler, protos *http.Protocols) *http.Server {
	return &http.Server{
		Handler:           h,
		Protocols:         protos,
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		ReadTimeout:       s.opts.ReadTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		MaxHeaderBytes:    s.opts.MaxHeaderBytes,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: s.opts.MaxStreams},
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// CellName returns the cell a request path is for: its first segment.
func CellName(path string) string {
	name, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	return name
}

// SetRoutes puts a route table in force for the requests that follow;
// nil routes by the first path segment alone.
func (s *Server) SetRoutes(t *Table) { s.routes.Set(t) }

// route finds the cell of a request: with no table, by its first path
// segment; with one, by Table.Match, then by name when the table lets it,
// then the default cell. name is "" when nothing names a cell.
func (s *Server) route(r *http.Request) (name string, h http.Handler, routed bool) {
	t := s.routes.Table()
	if t == nil {
		if name = CellName(r.URL.Path); name != "" {
			h = s.cells.Handler(name)
		}
		return name, h, false
	}
	name, byName := t.Match(r.Host, r.URL.Path)
	if name != "" {
		if h = s.cells.Handler(name); h != nil || !byName {
			return name, h, true
		}
	}
	if d := t.Default(); d != "" {
		return d, s.cells.Handler(d), true
	}
	return name, nil, true
}

// ServeHTTP routes one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, h, routed := s.route(r)
	if h == nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusNotFound)
		switch {
		case name != "":
			fmt.Fprintf(w, "celluster: no cell named %q on this node\n", name)
		case routed:
			fmt.Fprintln(w, "celluster: no cell is routed for this host and path")
		default:
			fmt.Fprintln(w, "celluster: no cell at /; cells are served at /<name>")
		}
		return
	}
	if !tracing.Enabled() {
		h.ServeHTTP(w, r)
		return
	}
	ctx := tracing.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := tracing.Start(ctx, r.Method+" /"+name, trace.SpanKindServer,
		attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path),
		attribute.String("celluster.cell", name))
	defer span.End()
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	h.ServeHTTP(sw, r.WithContext(ctx))
	span.SetAttributes(attribute.Int("http.response.status_code", sw.status))
	if sw.status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(sw.status))
	}
}

// statusWriter remembers the status a traced request was answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap gives http.ResponseController the writer underneath.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Serve accepts plain connections (HTTP/1.1 and h2c) on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	if err := s.srv.Serve(netutil.LimitListener(l, s.opts.MaxConns)); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("ingress: %w", err)
	}
	return nil
}

// ServeTLS serves HTTPS (HTTP/1.1 and HTTP/2) on l and HTTP/3 on pc, which
// should be a UDP socket on l's port, with certs, until Shutdown. Every
// HTTPS response advertises HTTP/3 with Alt-Svc.
func (s *Server) ServeTLS(l net.Listener, pc net.PacketConn, certs *Certs) error {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.GetCertificate}
	h3 := &http3.Server{
		Handler:        s,
		TLSConfig:      http3.ConfigureTLSConfig(tlsConf.Clone()),
		QUICConfig:     &quic.Config{MaxIncomingStreams: int64(s.opts.MaxStreams), MaxIdleTimeout: s.opts.IdleTimeout},
		MaxHeaderBytes: s.opts.MaxHeaderBytes,
		IdleTimeout:    s.opts.IdleTimeout,
		Port:           l.Addr().(*net.TCPAddr).Port,
		Logger:         s.log.With("component", "http3"),
	}
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	srv := s.httpServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = h3.SetQUICHeaders(w.Header()) // Alt-Svc: h3=":PORT"
		s.ServeHTTP(w, r)
	}), protos)
	srv.TLSConfig = tlsConf
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return nil
	}
	s.tls, s.h3 = srv, h3
	s.mu.Unlock()
	errc := make(chan error, 2)
	go func() {
		if err := h3.Serve(pc); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, quic.ErrServerClosed) {
			errc <- fmt.Errorf("ingress HTTP/3: %w", err)
			return
		}
		errc <- nil
	}()
	go func() {
		if err := srv.ServeTLS(netutil.LimitListener(l, s.opts.MaxConns), "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("ingress HTTPS: %w", err)
			return
		}
		errc <- nil
	}()
	err := <-errc
	if err != nil {
		s.closeTLS()
		<-errc
		return err
	}
	return <-errc
}

// closeTLS stops the HTTPS and HTTP/3 servers at once.
func (s *Server) closeTLS() {
	s.mu.Lock()
	srv, h3 := s.tls, s.h3
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
	if h3 != nil {
		_ = h3.Close()
	}
}

// Shutdown stops accepting on every listener and waits, bounded by ctx,
// for requests in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.done = true
	srv, h3 := s.tls, s.h3
	s.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	wg.Go(func() { errs[0] = s.srv.Shutdown(ctx) })
	if srv != nil {
		wg.Go(func() { errs[1] = srv.Shutdown(ctx) })
	}
	if h3 != nil {
		wg.Go(func() { errs[2] = h3.Shutdown(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
