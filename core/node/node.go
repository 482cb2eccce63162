// Package node wires one Celluster node together: the wasm engine, the cell
// registry, the watched cells directory, the HTTP ingress and the admin API.
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/celluster/celluster/core/admin"
	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/cellwatch"
	"github.com/celluster/celluster/core/ingress"
	"github.com/celluster/celluster/core/pluginhost"
	"github.com/celluster/celluster/core/signals"
	"github.com/celluster/celluster/core/wasm"
)

// MaxModuleSize bounds a module file the node will read.
const MaxModuleSize = 256 << 20

// Config configures a node.
type Config struct {
	// CellsDir is the watched directory; created if missing.
	CellsDir string
	// DataDir holds the compile cache and the admin socket.
	DataDir string
	// HTTPAddr is the ingress listen address ("127.0.0.1:0" picks a port).
	HTTPAddr string
	// AdminPath is the admin unix socket; default <DataDir>/admin.sock.
	AdminPath string
	// Settle is how long a cell file must be left alone before it is loaded.
	Settle time.Duration
	// DrainTimeout bounds how long stopping waits for requests in flight.
	DrainTimeout time.Duration
	// Limits are the cells' default limits.
	Limits cell.Limits
	// Name is the node's name (default: the host name).
	Name string
	// PluginsDir holds third-party plugin executables; default <DataDir>/plugins.
	PluginsDir string
	// Builtins names the first-party plugins to run (by re-executing celcore).
	Builtins []string
	// PluginPins maps a plugin (or file) name to its expected sha256.
	PluginPins map[string]string
	// PluginSettings maps a plugin name to its settings.
	PluginSettings map[string]map[string]string
	// TelemetryInterval is how often cell signals are published (default 1s).
	TelemetryInterval time.Duration
	// Version is reported by status.
	Version string
	// Logger is the node's log.
	Logger *slog.Logger
}

// Node is a running node.
type Node struct {
	cfg      Config
	log      *slog.Logger
	started  time.Time
	eng      *wasm.Engine
	reg      *cell.Registry
	sig      *signals.Store
	plugins  *pluginhost.Manager
	httpAddr string

	mu      sync.Mutex
	busy    map[string]bool
	next    map[string]cellwatch.Event
	loading sync.WaitGroup
}

// Run starts a node and serves until ctx ends, then drains in-flight
// requests (bounded by DrainTimeout) and stops. ready, if not nil, is called
// once the ingress and admin API accept connections.
func Run(ctx context.Context, cfg Config, ready func(*Node)) error {
	n, err := start(ctx, cfg)
	if err != nil {
		return err
	}
	return n.serve(ctx, ready)
}

func start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.AdminPath == "" {
		cfg.AdminPath = filepath.Join(cfg.DataDir, "admin.sock")
	}
	if cfg.PluginsDir == "" {
		cfg.PluginsDir = filepath.Join(cfg.DataDir, "plugins")
	}
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
	}
	if cfg.TelemetryInterval <= 0 {
		cfg.TelemetryInterval = time.Second
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 200 * time.Millisecond
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if err := cfg.Limits.Validate(); err != nil {
		return nil, err
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	for _, d := range []string{cfg.CellsDir, cfg.DataDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	eng, err := wasm.NewEngine(ctx, wasm.Config{CacheDir: filepath.Join(cfg.DataDir, "cache"), Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	return &Node{
		cfg:     cfg,
		log:     cfg.Logger,
		started: time.Now(),
		eng:     eng,
		reg:     cell.NewRegistry(eng, cfg.Logger, cfg.Limits),
		sig:     signals.NewStore(),
		busy:    map[string]bool{},
		next:    map[string]cellwatch.Event{},
	}, nil
}

func (n *Node) serve(ctx context.Context, ready func(*Node)) error {
	defer n.eng.Close(context.Background())
	hl, err := net.Listen("tcp", n.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("ingress: listening on %s: %w", n.cfg.HTTPAddr, err)
	}
	n.httpAddr = hl.Addr().String()
	al, err := admin.Listen(n.cfg.AdminPath)
	if err != nil {
		hl.Close()
		return err
	}
	ing := ingress.New(n.reg, n.log)
	adm := admin.New(n)

	// Plugins start (in the background) before the admin API serves, which
	// reads the plugin manager.
	pctx, stopPlugins := context.WithCancel(context.Background())
	defer stopPlugins()
	if err := n.startPlugins(pctx); err != nil {
		n.log.Error("plugins unavailable; cells keep serving", "err", err)
	}

	errc := make(chan error, 3)
	go func() { errc <- ing.Serve(hl) }()
	go func() { errc <- adm.Serve(al) }()

	go n.publishCellSignals(pctx, n.cfg.TelemetryInterval)

	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	w := cellwatch.New(n.cfg.CellsDir, n.cfg.Settle, n.log)
	go func() { errc <- w.Run(wctx, n.submit) }()

	n.log.Info("celcore ready", "http", n.httpAddr, "admin", n.cfg.AdminPath, "cells", n.cfg.CellsDir, "data", n.cfg.DataDir)
	if ready != nil {
		ready(n)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	n.log.Info("stopping: draining requests in flight", "timeout", n.cfg.DrainTimeout)
	stopWatch()
	dctx, cancel := context.WithTimeout(context.Background(), n.cfg.DrainTimeout)
	defer cancel()
	if err := ing.Shutdown(dctx); err != nil {
		n.log.Warn("drain incomplete", "err", err)
	}
	adm.Stop()
	if n.plugins != nil {
		n.plugins.Close()
	}
	n.loading.Wait()
	n.reg.Close(dctx)
	n.log.Info("stopped")
	return runErr
}

// HTTPAddr returns the address the ingress listens on.
func (n *Node) HTTPAddr() string { return n.httpAddr }

// submit runs ev for its cell, at most one load per cell at a time; events
// arriving during a load coalesce into the latest.
func (n *Node) submit(ev cellwatch.Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.busy[ev.Cell] {
		n.next[ev.Cell] = ev
		return
	}
	n.busy[ev.Cell] = true
	if ev.Op == cellwatch.Changed {
		if err := n.reg.Declare(ev.Cell); err != nil {
			n.log.Error("rejected cell file", "path", ev.Path, "err", err)
		}
	}
	n.loading.Add(1)
	go n.process(ev)
}

func (n *Node) process(ev cellwatch.Event) {
	defer n.loading.Done()
	for {
		n.apply(ev)
		n.mu.Lock()
		next, ok := n.next[ev.Cell]
		if !ok {
			delete(n.busy, ev.Cell)
			n.mu.Unlock()
			return
		}
		delete(n.next, ev.Cell)
		n.mu.Unlock()
		ev = next
	}
}

func (n *Node) apply(ev cellwatch.Event) {
	ctx := context.Background()
	if ev.Op == cellwatch.Removed {
		dctx, cancel := context.WithTimeout(ctx, n.cfg.DrainTimeout)
		defer cancel()
		n.reg.Remove(dctx, ev.Cell)
		return
	}
	if err := cell.ValidName(ev.Cell); err != nil {
		return // reported by submit
	}
	src, err := readModule(ev.Path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			dctx, cancel := context.WithTimeout(ctx, n.cfg.DrainTimeout)
			defer cancel()
			n.reg.Remove(dctx, ev.Cell)
			return
		}
		n.reg.Reject(ev.Cell, err)
		n.log.Error("rejected cell file", "cell", ev.Cell, "path", ev.Path, "err", err)
		return
	}
	if err := n.reg.Load(ctx, ev.Cell, src, ev.Path); err != nil {
		n.log.Error("rejected cell module; previous version, if any, keeps serving", "cell", ev.Cell, "path", ev.Path, "err", err)
	}
}

func readModule(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxModuleSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(b) > MaxModuleSize {
		return nil, fmt.Errorf("%s: module larger than %d bytes", path, MaxModuleSize)
	}
	return b, nil
}

// Status implements admin.Node.
func (n *Node) Status() admin.Status {
	return admin.Status{
		Version:       n.cfg.Version,
		Started:       n.started,
		HTTPAddr:      n.httpAddr,
		CellsDir:      n.cfg.CellsDir,
		DataDir:       n.cfg.DataDir,
		GoVersion:     runtime.Version(),
		WazeroVersion: wazeroVersion(),
		Compilations:  n.eng.Compilations(),
		Limits:        n.cfg.Limits,
	}
}

// Cells implements admin.Node.
func (n *Node) Cells() []cell.Info { return n.reg.List() }

func wazeroVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/tetratelabs/wazero" {
				return d.Version
			}
		}
	}
	return "unknown"
}

// Signals implements admin.Node.
func (n *Node) Signals() []signals.Reading { return n.sig.Latest() }
