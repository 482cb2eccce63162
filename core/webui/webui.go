package webui

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/celluster/celluster/core/admin"
	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/journal"
	"github.com/celluster/celluster/core/signals"
)

// Node is what the view reads: a subset of admin.Node. Its methods are
// called concurrently.
type Node interface {
	Status() admin.Status
	Cells() []cell.Info
	Plugins() []admin.PluginStatus
	Signals() []signals.Reading
	Journal(cell string, limit int) []journal.Entry
	Intent(cell string) (admin.Intent, bool)
	Nodes() (fabricAddr, trustDomain string, nodes []admin.NodeInfo)
}

// JournalSeq is optional for a Node: the seq of the journal's last entry,
// read without touching the journal's files. With it the view reads the
// journal only when it has grown.
type JournalSeq interface {
	JournalSeq() uint64
}

// Defaults for Config.
const (
	DefaultInterval    = time.Second
	DefaultJournalPoll = 250 * time.Millisecond
	DefaultHistory     = 300
	DefaultMaxViewers  = 16
)

// Config configures a Server. The zero value uses the defaults.
type Config struct {
	// Name is the node's name, shown in the page's title.
	Name string
	// Interval is how often a snapshot is pushed and the cells sampled for
	// the plots: the node's telemetry interval (DefaultInterval).
	Interval time.Duration
	// JournalPoll is how often the journal is read for new entries while
	// anyone watches (DefaultJournalPoll).
	JournalPoll time.Duration
	// History is how many points each cell's plots keep (DefaultHistory).
	History int
	// MaxViewers bounds the event streams served at once (DefaultMaxViewers).
	MaxViewers int
	// Logger receives the server's warnings (slog.Default()).
	Logger *slog.Logger
}

// Server serves the view of one node.
type Server struct {
	node Node
	cfg  Config
	log  *slog.Logger

	// loopback: refuse Host headers that are not loopback (set by Serve).
	loopback bool
	// scrub cuts the node's directories out of what is shown.
	scrub func() scrubber

	joined chan struct{} // a viewer joined: the loop polls the journal

	mu      sync.Mutex
	viewers map[*viewer]struct{}
	hist    map[string]*ring // per cell, the plot points
	pending map[string][]point
	lastSeq uint64 // the journal's last seq pushed (or seen while nobody watched)
}

// New returns a view of node.
func New(node Node, cfg Config) *Server {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.JournalPoll <= 0 {
		cfg.JournalPoll = DefaultJournalPoll
	}
	if cfg.History <= 0 {
		cfg.History = DefaultHistory
	}
	if cfg.MaxViewers <= 0 {
		cfg.MaxViewers = DefaultMaxViewers
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	warmEncoders.Do(warm)
	s := &Server{node: node, cfg: cfg, log: cfg.Logger, viewers: map[*viewer]struct{}{}, hist: map[string]*ring{}, joined: make(chan struct{}, 1)}
	s.scrub = sync.OnceValue(func() scrubber { return newScrubber(node.Status()) })
	return s
}

// warmEncoders builds encoding/json's encoders for what the view sends
// once, before the goroutines that send it start. Built by a stream's
// goroutine and then used by the loop's, they were reported as a data race
// inside encoding/json by race-built nodes (go1.26.8; not reproduced in a
// unit test).
var warmEncoders sync.Once

func warm() {
	_, _ = json.Marshal(snapshot{Fabric: &fabricView{Nodes: []fabricMember{{}}}, Cells: []cellView{{Versions: []versionView{{}},
		Intent: &intentView{Rules: []ruleView{{}}}}}, Plugins: []pluginView{{}}, Kernel: kernelView{Programs: []bpfProgram{{}}},
		Points: map[string][]point{"": {{}}}})
	_, _ = json.Marshal(hello{Points: map[string][]point{"": {{}}}})
	_, _ = json.Marshal(entryView{Values: []journal.Value{{Labels: map[string]string{"": ""}}}})
}

// CheckAddr refuses a listen address that other hosts could reach unless
// public is set: only "localhost" and loopback IP addresses are accepted
// without it. An empty host (":8090") listens on every interface.
func CheckAddr(addr string, public bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("ui: bad listen address %q: want HOST:PORT, e.g. 127.0.0.1:8090", addr)
	}
	if public || isLoopbackHost(host) {
		return nil
	}
	what := host
	if host == "" {
		what = "every interface"
	}
	return fmt.Errorf("ui: %s listens on %s, not a loopback address: the web view would show this node (cells, intents, the journal) to other hosts; give --ui-public as well to mean it, or use 127.0.0.1", addr, what)
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Listen checks addr with CheckAddr and listens on it.
func Listen(addr string, public bool) (net.Listener, error) {
	if err := CheckAddr(addr, public); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ui: listening on %s: %w", addr, err)
	}
	return l, nil
}

const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 10 * time.Second // per write: the event stream lives on
	idleTimeout       = 2 * time.Minute
	shutdownTimeout   = 5 * time.Second
)

// Serve serves the view on l until ctx ends. A listener on a loopback
// address only answers requests naming a loopback host.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	if ta, ok := l.Addr().(*net.TCPAddr); ok && ta.IP.IsLoopback() {
		s.loopback = true
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		IdleTimeout:       idleTimeout,
		// The event streams end with ctx, so Shutdown need not wait for them.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	s.begin()
	go s.loop(lctx)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("ui: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("ui: serve: %w", err)
	}
	return nil
}

// The page's assets, served at /, /app.js and /style.css.
//
//go:embed assets
var assets embed.FS

type asset struct {
	body        []byte
	contentType string
	etag        string
}

var files = func() map[string]asset {
	out := map[string]asset{}
	for path, ct := range map[string]string{
		"/":          "text/html; charset=utf-8",
		"/app.js":    "text/javascript; charset=utf-8",
		"/style.css": "text/css; charset=utf-8",
	} {
		name := "assets" + path
		if path == "/" {
			name = "assets/index.html"
		}
		b, err := fs.ReadFile(assets, name)
		if err != nil {
			panic("webui: missing embedded asset " + name)
		}
		sum := sha256.Sum256(b)
		out[path] = asset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return out
}()

// CSP is the Content-Security-Policy of every answer.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'"

// Handler returns the view's HTTP handler. Without Serve's loop, /events
// sends what a viewer gets on joining and then only journal entries and
// snapshots that the loop would push: use Serve.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /events", s.events)
	for path, a := range files {
		pattern := "GET " + path
		if path == "/" {
			pattern = "GET /{$}"
		}
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Set("Content-Type", a.contentType)
			h.Set("ETag", a.etag)
			h.Set("Cache-Control", "no-cache")
			if r.Header.Get("If-None-Match") == a.etag {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			_, _ = w.Write(a.body)
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		if s.loopback && !loopbackRequest(r) {
			http.Error(w, "misdirected request", http.StatusMisdirectedRequest)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "read-only", http.StatusMethodNotAllowed)
			return
		}
		if _, pattern := mux.Handler(r); pattern == "" {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// loopbackRequest says whether r names a loopback host: a page served
// from elsewhere whose name was made to resolve to 127.0.0.1 (DNS
// rebinding) names its own host.
func loopbackRequest(r *http.Request) bool {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return isLoopbackHost(host) || strings.HasSuffix(strings.ToLower(host), ".localhost")
}
