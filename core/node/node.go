// Package node wires one Celluster node together: the wasm engine, the cell
// registry, the watched cells directory, the HTTP ingress and the admin API.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/celluster/celluster/core/admin"
	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/cellwatch"
	"github.com/celluster/celluster/core/dispatch"
	"github.com/celluster/celluster/core/ingress"
	"github.com/celluster/celluster/core/intents"
	"github.com/celluster/celluster/core/journal"
	"github.com/celluster/celluster/core/metrics"
	"github.com/celluster/celluster/core/pluginhost"
	"github.com/celluster/celluster/core/reflex"
	"github.com/celluster/celluster/core/signals"
	"github.com/celluster/celluster/core/statestore"
	"github.com/celluster/celluster/core/tracing"
	"github.com/celluster/celluster/core/wasm"
	"github.com/celluster/celluster/core/webui"
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
	// HTTPSAddr, when set, serves HTTPS (HTTP/1.1, HTTP/2) on TCP and
	// HTTP/3 on UDP at this address, with TLSCert and TLSKey (PEM files,
	// loaded again when they change).
	HTTPSAddr, TLSCert, TLSKey string
	// Ingress bounds what clients may hold of the ingress (timeouts,
	// header size, streams and connections).
	Ingress ingress.Options
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
	// PluginPins maps a plugin file name (or a built-in's name) to its
	// expected sha256 (see pluginhost.Config.Pins).
	PluginPins map[string]string
	// PluginSettings maps a plugin name to its settings.
	PluginSettings map[string]map[string]string
	// TelemetryInterval is how often cell signals are published (default 1s).
	TelemetryInterval time.Duration
	// FabricAddr, if set, joins the node to the QUIC fabric on this UDP
	// address ("127.0.0.1:0" picks a port).
	FabricAddr string
	// Join lists fabric addresses of nodes to join.
	Join []string
	// TrustDomain is the SPIFFE trust domain (DefaultTrustDomain if empty).
	TrustDomain string
	// CADir holds the trust domain's CA (ca.crt, and ca.key to issue this
	// node's certificates); default <DataDir>/ca, created on first start.
	CADir string
	// CertTTL is the lifetime of the node certificates a node holding the
	// CA issues (default one hour); they are renewed at two thirds of it.
	CertTTL time.Duration
	// Token is a join token (celctl ca token): with Join and no
	// certificate, the node gets its certificate from a node holding the
	// CA, over the fabric.
	Token string
	// NoPrefetch stops the node keeping (and compiling) its peers' modules
	// ahead of need: a clone onto it or a take-over then fetches them.
	NoPrefetch bool
	// CertFile and KeyFile give this node's certificate chain and key
	// instead of issuing them from the CA's key.
	CertFile, KeyFile string
	// MetricsAddr, if set, serves Prometheus metrics at /metrics there.
	MetricsAddr string
	// OTLPEndpoint, if set, exports traces there (package tracing), of a
	// TraceSample share of new traces.
	OTLPEndpoint string
	TraceSample  float64
	// UIAddr, if set, serves the live web view (core/webui) there: a
	// loopback address unless UIPublic.
	UIAddr   string
	UIPublic bool
	// UpgradeStepTime is how long each traffic step of an upgrade is
	// watched (the upgrade verb's default when zero).
	UpgradeStepTime time.Duration
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
	states   *statestore.Store // kept cell states across restarts
	sig      *signals.Store
	plugins  *pluginhost.Manager
	httpAddr string
	// httpsAddr is the HTTPS (and HTTP/3) ingress address, when served.
	httpsAddr string
	// own are the signals cells publish with cel.signal.
	own ownSignals

	metrics      *metrics.Metrics
	mesh         *nodeMesh
	bpf          *bpfHost
	bpfErr       string
	metricsAddr  string
	uiAddr       string
	journal      *journal.Journal
	engine       *reflex.Engine
	disp         *dispatch.Dispatcher
	pluginsReady chan struct{}   // closed once the plugins have started (or failed to)
	ctx          context.Context // the watcher's; loads and intent parsing use it
	imu          sync.Mutex
	intents      map[string]*intentState
	routeNotes   map[string]string // under imu: what the routes withhold from a cell (routes.go)

	rmu           sync.Mutex // rebuildRoutes, one at a time
	ing           *ingress.Server
	routesInForce []ingress.Route

	umu sync.Mutex
	ups map[string]*upgradeState // per cell, see converge.go

	mu        sync.Mutex
	busy      map[string]bool
	next      map[string]cellwatch.Event
	stopped   bool // no more loads start
	freeTimer *time.Timer
	loadSlots chan struct{} // bounds the loads running at once
	loading   sync.WaitGroup
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
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = DefaultTrustDomain
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
	if cfg.UIAddr != "" {
		if err := webui.CheckAddr(cfg.UIAddr, cfg.UIPublic); err != nil {
			return nil, err
		}
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
	states, err := statestore.Open(filepath.Join(cfg.DataDir, "state"))
	if err != nil {
		_ = eng.Close(ctx)
		return nil, err
	}
	n := &Node{
		cfg:     cfg,
		log:     cfg.Logger,
		started: time.Now(),
		eng:     eng,
		reg:     cell.NewRegistry(eng, cfg.Logger, cfg.Limits),
		sig:     signals.NewStore(),
		busy:    map[string]bool{},
		next:    map[string]cellwatch.Event{},
		intents: map[string]*intentState{},
		ups:     map[string]*upgradeState{},

		loadSlots: make(chan struct{}, max(8, 2*runtime.GOMAXPROCS(0))),

		pluginsReady: make(chan struct{}),
	}
	n.reg.Caller = n.callCell
	n.reg.Signals = n.cellSignal
	n.reg.States = states
	n.reg.OnState = n.journalState
	n.states = states
	return n, nil
}

func (n *Node) serve(ctx context.Context, ready func(*Node)) error {
	defer n.eng.Close(context.Background())
	hl, err := net.Listen("tcp", n.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("ingress: listening on %s: %w", n.cfg.HTTPAddr, err)
	}
	n.httpAddr = hl.Addr().String()
	https, err := n.listenHTTPS()
	if err != nil {
		hl.Close()
		return err
	}
	if https != nil {
		n.httpsAddr = https.tcp.Addr().String()
		defer https.close()
	}
	al, err := admin.Listen(n.cfg.AdminPath)
	if err != nil {
		hl.Close()
		return err
	}
	stopTracing, err := tracing.Setup(ctx, tracing.Config{Endpoint: n.cfg.OTLPEndpoint, Sample: n.cfg.TraceSample, Node: n.cfg.Name, Version: n.cfg.Version})
	if err != nil {
		hl.Close()
		al.Close()
		return err
	}
	defer func() {
		tctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := stopTracing(tctx); err != nil {
			n.log.Warn("flushing traces", "err", err)
		}
	}()
	if err := n.setupReflex(); err != nil {
		hl.Close()
		al.Close()
		return err
	}
	defer n.journal.Close()
	ing := ingress.New(routes{n}, n.log, n.cfg.Ingress)
	n.setIngress(ing)
	adm := admin.New(n)

	// The eBPF loader starts before the plugins that ask it for programs.
	n.startBPF()
	defer n.stopBPF()

	// Plugins start (in the background) before the admin API serves, which
	// reads the plugin manager.
	pctx, stopPlugins := context.WithCancel(context.Background())
	defer stopPlugins()
	if err := n.startPlugins(pctx); err != nil {
		n.log.Error("plugins unavailable; cells keep serving", "err", err)
	}

	errc := make(chan error, 8)
	n.metrics = n.newMetrics()
	if n.cfg.MetricsAddr != "" {
		addr, merrc, err := n.serveMetrics(pctx, n.cfg.MetricsAddr)
		if err != nil {
			hl.Close()
			al.Close()
			return err
		}
		n.metricsAddr = addr.String()
		go func() {
			if err := <-merrc; err != nil {
				errc <- err
			}
		}()
	}
	if n.cfg.UIAddr != "" {
		addr, uerrc, err := n.serveUI(pctx, n.cfg.UIAddr)
		if err != nil {
			hl.Close()
			al.Close()
			return err
		}
		n.uiAddr = addr.String()
		go func() {
			if err := <-uerrc; err != nil {
				errc <- err
			}
		}()
	}
	if n.cfg.FabricAddr != "" {
		if err := n.startMesh(pctx); err != nil {
			hl.Close()
			al.Close()
			return err
		}
		n.metrics.WatchFabric(n.fabricStats)
		defer func() {
			// Leave first, so peers see a departure, not a failure.
			lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = n.mesh.Close(lctx)
		}()
	}
	go func() { errc <- ing.Serve(hl) }()
	if https != nil {
		n.serveHTTPS(pctx, ing, https, errc)
	}
	go func() { errc <- adm.Serve(al) }()

	go n.publishCellSignals(pctx, n.cfg.TelemetryInterval)

	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	n.ctx = wctx
	w := cellwatch.New(n.cfg.CellsDir, n.cfg.Settle, n.log)
	go func() { errc <- w.Run(wctx, n.submit) }()

	n.log.Info("celcore ready", "http", n.httpAddr, "https", n.httpsAddr, "admin", n.cfg.AdminPath, "cells", n.cfg.CellsDir, "data", n.cfg.DataDir, "metrics", n.metricsAddr, "ui", n.uiAddr, "fabric", n.FabricAddr(), "node", n.cfg.Name)
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
	n.mu.Lock()
	n.stopped = true
	n.mu.Unlock()
	n.stopRetries()
	n.loading.Wait()
	n.disp.Close(dctx)
	if n.plugins != nil {
		n.plugins.Close()
	}
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
	if n.stopped {
		return
	}
	if n.busy[ev.Cell] {
		// The latest wins, except that a change of the module file itself
		// is kept (apply treats it as a new write).
		if prev, ok := n.next[ev.Cell]; !ok || !strings.HasSuffix(prev.Path, cellwatch.Ext) || strings.HasSuffix(ev.Path, cellwatch.Ext) {
			n.next[ev.Cell] = ev
		}
		return
	}
	n.busy[ev.Cell] = true
	if ev.Op == cellwatch.Changed && strings.HasSuffix(ev.Path, cellwatch.Ext) {
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
		// A bounded number of cells load at once, so that thousands of
		// files appearing together leave the CPU to requests and the
		// admin API.
		n.loadSlots <- struct{}{}
		n.apply(ev)
		<-n.loadSlots
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

// apply brings one cell in line with the cells directory: its module
// (first load, or an upgrade staged and handed to the upgrade verb) and its
// intent (file, embedded section or defaults). Any event for a cell leads
// here, so events that coalesce lose nothing.
func (n *Node) apply(ev cellwatch.Event) {
	ctx := n.ctx
	if err := cell.ValidName(ev.Cell); err != nil {
		return // reported by submit
	}
	if n.mesh != nil {
		// The fleet learns of the change now, not at the next tick: a
		// cell loaded moments before this node dies is still taken over.
		defer n.mesh.Announce()
	}
	path := filepath.Join(n.cfg.CellsDir, ev.Cell+cellwatch.Ext)
	src, err := readModule(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			n.removeCell(ev.Cell)
			return
		}
		n.reg.Reject(ev.Cell, err)
		n.log.Error("rejected cell file", "cell", ev.Cell, "path", path, "err", err)
		return
	}
	c := n.reg.Lookup(ev.Cell)
	if c == nil {
		if err := n.reg.Declare(ev.Cell); err != nil {
			return
		}
		c = n.reg.Lookup(ev.Cell)
	}
	if _, err := n.storeModule(src); err != nil {
		n.log.Warn("keeping the module in the content store", "cell", ev.Cell, "err", err)
	}
	// An intent (file or section) comes first: what it pins (module
	// sha256, abi) decides whether the module may load. The defaults pin
	// nothing, so a cell without an intent loads without waiting for the
	// parser plugin to start.
	isrc, ierr := intents.Find(path, src)
	var prep *preparedIntent
	if ierr != nil || isrc.Origin != intents.FromDefault {
		prep = n.prepareFound(ctx, c, isrc, ierr)
		c.Require(n.requirement(ev.Cell, prep))
	} else {
		c.Require(cell.Requirement{})
	}
	defer func() {
		if ierr == nil && isrc.Origin == intents.FromDefault {
			prep = n.prepareSource(ctx, c, isrc)
		}
		if prep != nil {
			n.commitIntent(ctx, c, prep, src, path)
		}
	}()
	if err := c.Check(src, path); err != nil {
		// Off the intent's pin: refused, whatever serves serves on.
		c.Reject(err)
		n.log.Error("rejected cell module; the serving version, if any, keeps serving", "cell", ev.Cell, "path", path, "err", err)
		return
	}
	if c.Info().SHA256 == "" {
		// Known before the first load, so a saved state is restored: from
		// the intent just prepared, else the one in force (applied when
		// its file was seen before the module's).
		if prep != nil && prep.prog != nil {
			c.SetKeepState(prep.prog.KeepState)
		} else if in, ok := n.Intent(ev.Cell); ok {
			c.SetKeepState(in.KeepState)
		}
		if err := c.Load(ctx, src, path); err != nil {
			n.log.Error("rejected cell module", "cell", ev.Cell, "path", path, "err", err)
			return
		}
		n.noteInterrupted(ev.Cell, c.Info().SHA256)
	} else {
		n.upgrade(ctx, c, src, path, strings.HasSuffix(ev.Path, cellwatch.Ext))
	}
}

// removeCell drains a cell whose module was removed and journals it.
func (n *Node) removeCell(name string) {
	dctx, cancel := context.WithTimeout(context.Background(), n.cfg.DrainTimeout)
	defer cancel()
	if n.reg.Remove(dctx, name) {
		n.forgetIntent(name)
		if err := n.states.Remove(name); err != nil {
			n.log.Warn("cannot remove the saved state of a removed cell", "cell", name, "err", err)
		}
		n.freeSoon()
		if n.mesh != nil {
			// This node is the cell's home: the copies served for the
			// fleet go with it.
			go n.mesh.Withdraw(context.WithoutCancel(dctx), name)
		}
		if _, err := n.journal.Append(journal.Entry{Cell: name, Verb: "decay", Args: []string{"all"}, Rule: "module-removed",
			Origin: "module " + name + cellwatch.Ext + " removed", Outcome: journal.Done, Message: "cell drained and removed"}); err != nil {
			n.log.Error("journal", "err", err)
		}
	}
}

// freeDelay is how long after the last cell removal the node returns freed
// memory to the system.
const freeDelay = time.Second

// freeSoon returns the memory of removed cells to the system once removals
// stop for freeDelay. Without it, an idle node runs no garbage collection
// (nothing allocates), so the instances of removed cells would stay
// resident however long it waits.
func (n *Node) freeSoon() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.freeTimer != nil {
		n.freeTimer.Reset(freeDelay)
		return
	}
	n.freeTimer = time.AfterFunc(freeDelay, func() {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		debug.FreeOSMemory()
		// Memory freed by finalizers (wazero's compiled code, closed
		// instances) is only returned by the collection after they ran.
		time.Sleep(100 * time.Millisecond)
		debug.FreeOSMemory()
		runtime.ReadMemStats(&after)
		n.log.Info("returned the memory of removed cells to the system",
			"heap_before", before.HeapInuse, "heap_after", after.HeapInuse, "released", after.HeapReleased-before.HeapReleased)
	})
}

// readModule reads a module file: a regular file of at most
// MaxModuleSize bytes (cellwatch.ReadFile), checked before it is read.
func readModule(path string) ([]byte, error) {
	return cellwatch.ReadFile(path, MaxModuleSize)
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
		MetricsAddr:   n.metricsAddr,
		BPF:           n.bpfStatus(),
	}
}

// Cells implements admin.Node; a rejected intent shows in the cell's error.
func (n *Node) Cells() []cell.Info {
	infos := n.reg.List()
	for i := range infos {
		if ie := n.intentErr(infos[i].Name); ie != "" {
			if infos[i].Error != "" {
				infos[i].Error += "; "
			}
			infos[i].Error += "intent rejected (the previous one stays in force): " + ie
		}
		if note := n.routeNote(infos[i].Name); note != "" {
			if infos[i].Error != "" {
				infos[i].Error += "; "
			}
			infos[i].Error += note
		}
	}
	return infos
}

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
