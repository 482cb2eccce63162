// Package ingress is the node's HTTP front door: it routes /<cell> and every
// path below it to the cell of that name.
package ingress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

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

// Server serves cells over HTTP.
type Server struct {
	cells Cells
	log   *slog.Logger
	srv   *http.Server
}

// New returns a server routing to cells.
func New(cells Cells, log *slog.Logger) *Server {
	s := &Server{cells: cells, log: log}
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s
}

// CellName returns the cell a request path is for: its first segment.
func CellName(path string) string {
	name, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	return name
}

// ServeHTTP routes one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := CellName(r.URL.Path)
	var h http.Handler
	if name != "" {
		h = s.cells.Handler(name)
	}
	if h == nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusNotFound)
		if name == "" {
			fmt.Fprintln(w, "celluster: no cell at /; cells are served at /<name>")
		} else {
			fmt.Fprintf(w, "celluster: no cell named %q on this node\n", name)
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

// Serve accepts connections on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("ingress: %w", err)
	}
	return nil
}

// Shutdown stops accepting and waits, bounded by ctx, for requests in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.srv.Shutdown(ctx)
}
