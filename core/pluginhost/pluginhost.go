// Package pluginhost runs a node's out-of-process plugins: it discovers
// plugin executables (a plugin directory plus the node's built-in plugins),
// verifies pinned checksums, asks each binary to describe itself, launches it
// over hashicorp/go-plugin (gRPC, automatic mTLS, versioned plugin sets),
// negotiates the API version, hands it the host service over go-plugin's
// broker, and supervises it: health pings, restart with bounded exponential
// backoff after a crash, and refusal (no restart loop) of binaries that can
// never work: wrong magic cookie, unsupported API version, a handshake that
// never completes, a sha256 that does not match its pin. The plugin
// directory is watched while the node runs (fsnotify, plus a rescan every
// 30s): a plugin dropped in is started, a replaced binary is checked and
// restarted, a removed one is stopped.
//
// Every plugin process runs in a process group of its own, forked from one
// OS thread locked for the life of the node, with a parent-death signal
// (SIGKILL): whatever a plugin forks is killed with it when it exits, is
// restarted or is stopped, and the plugin dies with the node even under
// kill -9. What a plugin forked cannot be signalled by a node killed
// outright; it carries the node's mark in its environment, and the next
// Manager with the same Config.Owner kills it at Start.
//
// Calls into plugins (Parse, Execute) are routed by kind and capability and
// never outlive the plugin: a call into a plugin that is not running, or that
// dies mid-call, returns an error wrapping ErrPluginShutdown. Telemetry
// streams are opened on every running telemetry plugin and opened again after
// each restart; Subscribe receives their batches.
//
// The package imports only the plugin API (pluginapi, pluginapi/v1),
// go-plugin, hclog, gRPC and fsnotify: the node implements HostService and owns the
// Manager.
package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sync/singleflight"

	pluginapiv1 "github.com/celluster/celluster/pluginapi/v1"
)

// ErrPluginShutdown is wrapped by the error of every call into a plugin that
// is not running, or that exits (or is stopped) while the call is in flight.
var ErrPluginShutdown = errors.New("plugin has shut down")

// ErrNoPlugin is wrapped by the error of a call no plugin can serve: no intent
// plugin accepts the file, no verb plugin declares the verb.
var ErrNoPlugin = errors.New("no plugin")

// Refusal causes. A refused plugin is in state StateFailed and is not started
// again until its executable changes; its LastError wraps one of these.
var (
	// ErrChecksumMismatch: the file's sha256 is not the pinned one.
	ErrChecksumMismatch = errors.New("sha256 mismatch")
	// ErrBadCookie: the plugin exited before the handshake because it
	// expects a different magic cookie (it was not built for Celluster).
	ErrBadCookie = errors.New("magic cookie mismatch")
	// ErrUnsupportedAPI: the plugin and the node share no API version.
	ErrUnsupportedAPI = errors.New("unsupported plugin API version")
	// ErrHandshakeTimeout: the plugin did not complete the go-plugin
	// handshake within Config.StartTimeout.
	ErrHandshakeTimeout = errors.New("plugin handshake timed out")
	// ErrDescribe: `<binary> describe` failed or printed something that is
	// not a valid PluginInfo, or the running plugin contradicts it.
	ErrDescribe = errors.New("plugin describe failed")
	// ErrNotExecutable: the plugin file is missing or not a regular file.
	ErrNotExecutable = errors.New("plugin executable unusable")
	// ErrNotPinned: pins are given but none names this plugin file.
	ErrNotPinned = errors.New("plugin file not pinned")
	// ErrDuplicateName: another plugin on the node already has the name.
	ErrDuplicateName = errors.New("duplicate plugin name")
)

// HostService is the mechanism the core exposes to plugins: the node
// implements it and the Manager serves it to every plugin over go-plugin's
// GRPCBroker (the broker id travels in ConfigureRequest.host_broker_id). It is
// exactly the generated pluginapiv1.HostServer, so implementations embed
// pluginapiv1.UnimplementedHostServer and stay compilable as the (additive)
// v1 Host service grows. Calls arrive concurrently from every plugin.
type HostService interface {
	pluginapiv1.HostServer
}

// Spec names one plugin executable and how to run it.
type Spec struct {
	// Name is the plugin's name. Built-ins must set it (describe must report
	// the same name); for a discovered file it is left empty and taken from
	// the binary's describe output.
	Name string
	// Path is the executable.
	Path string
	// Args come before go-plugin's handshake (and before "describe"), e.g.
	// ["plugin", "host"] for a built-in that re-executes celcore.
	Args []string
	// SHA256 is the pinned hex sha256 of Path; empty means not pinned.
	SHA256 string
	// Settings are passed in Configure (Config.Settings override them).
	Settings map[string]string
	// Builtin marks a first-party plugin shipped inside celcore.
	Builtin bool
}

// Backoff bounds restart delays after a crash.
type Backoff struct {
	// Min is the first delay (default 100ms); each crash doubles it.
	Min time.Duration
	// Max caps the delay (default 30s).
	Max time.Duration
	// ResetAfter: a plugin that stayed up this long restarts after Min
	// again (default 1m).
	ResetAfter time.Duration
}

// Config configures a Manager.
type Config struct {
	// Dir holds third-party plugin executables: every regular, executable,
	// non-hidden file in it is a plugin. It may not exist.
	Dir string
	// Builtins are first-party plugins: Path = os.Executable(),
	// Args = ["plugin", NAME], Builtin = true.
	Builtins []Spec
	// Pins maps a plugin file's base name (or a built-in's name) to its
	// expected sha256 hex. Every pin is checked before the file is ever
	// executed (`describe` included) and again at each launch; on Linux
	// the process runs from the very file descriptor that was hashed, so a
	// path replaced in between does not get its replacement run. When any pin is given, every file in Dir must be pinned: an
	// unpinned one is refused (ErrNotPinned) without being run. A pin that
	// names no file and no built-in is reported at Start. (Pins cannot name
	// what a binary reports about itself: that is known only after running
	// it.)
	Pins map[string]string
	// Settings maps a plugin name (or file base name) to the settings
	// passed in Configure; they override Spec.Settings.
	Settings map[string]map[string]string
	// Host is served to every plugin. Nil serves a host whose every call
	// answers Unimplemented.
	Host HostService
	// HostFor, if set, returns the host service for the named plugin (so
	// that what a plugin emits can be attributed to it); a nil result falls
	// back to Host.
	HostFor func(plugin string) HostService
	// Node is the node name passed in Configure.
	Node string
	// Logger receives the manager's log and every plugin's stderr and log
	// lines, with attribute plugin=<name>. Default slog.Default().
	Logger *slog.Logger
	// StartTimeout bounds `describe` and the handshake plus Info/Configure
	// and the capability query (default 10s).
	StartTimeout time.Duration
	// HealthInterval is how often a running plugin is pinged (default 2s).
	// A ping unanswered within max(HealthInterval, 5s), or failing, kills
	// and restarts the plugin.
	HealthInterval time.Duration
	// Backoff bounds restarts after crashes.
	Backoff Backoff
	// StreamInterval is the batch interval requested when opening a
	// telemetry stream (the source may differ; default 1s).
	StreamInterval time.Duration
	// Owner, if set, names this node's plugin processes across restarts
	// (the node passes its data directory). Every process the Manager
	// starts carries it, with this process's pid and start time, in its
	// environment (CELLUSTER_PLUGIN_OWNER), and so does whatever those
	// processes fork unless they clear their environment. Start SIGKILLs
	// every process marked with the same Owner by a process that is no
	// longer alive: what a node killed outright (kill -9, a crash) left
	// behind. Plugins themselves die with the node (a parent-death signal);
	// this catches what they forked. Linux only.
	Owner string
}

// withDefaults fills in the documented defaults.
func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 10 * time.Second
	}
	if c.HealthInterval <= 0 {
		c.HealthInterval = 2 * time.Second
	}
	if c.Backoff.Min <= 0 {
		c.Backoff.Min = 100 * time.Millisecond
	}
	if c.Backoff.Max <= 0 {
		c.Backoff.Max = 30 * time.Second
	}
	if c.Backoff.Max < c.Backoff.Min {
		c.Backoff.Max = c.Backoff.Min
	}
	if c.Backoff.ResetAfter <= 0 {
		c.Backoff.ResetAfter = time.Minute
	}
	if c.StreamInterval <= 0 {
		c.StreamInterval = time.Second
	}
	if c.Host == nil {
		c.Host = unimplementedHost{}
	}
	return c
}

// unimplementedHost answers every Host call with Unimplemented.
type unimplementedHost struct {
	pluginapiv1.UnimplementedHostServer
}

// State is where a plugin is in its life.
type State string

// Plugin states.
const (
	// StateStarting: being described, launched, negotiated or configured.
	StateStarting State = "starting"
	// StateRunning: serving calls.
	StateRunning State = "running"
	// StateBackoff: it crashed (or failed its health check) and waits to be
	// restarted.
	StateBackoff State = "backoff"
	// StateFailed: refused (bad cookie, unsupported API version, handshake
	// timeout, checksum mismatch, describe failure, duplicate name); not
	// started again until its executable changes.
	StateFailed State = "failed"
	// StateStopped: the manager stopped it.
	StateStopped State = "stopped"
)

// Status describes one plugin.
type Status struct {
	// Name is the plugin's name (the file base name until describe worked).
	Name string
	// Kind is the plugin kind, e.g. pluginapi.KindTelemetry.
	Kind string
	// Version is the plugin's own version.
	Version string
	// Description is the plugin's one-line description.
	Description string
	// Path is the executable and Args what it is run with.
	Path string
	Args []string
	// SHA256 is the hex sha256 of the executable as last checked.
	SHA256 string
	// API is the negotiated API version (0 until the first handshake).
	API uint32
	// State is where the plugin is.
	State State
	// PID is the running process, 0 when none.
	PID int
	// Restarts counts restarts after crashes.
	Restarts int
	// LastError is why it last failed, crashed or was refused.
	LastError string
	// Builtin marks a first-party plugin.
	Builtin bool
	// Verbs, Signals, Extensions and MediaTypes are the capabilities the
	// plugin declared at its last start (verb, telemetry, intent plugins).
	Verbs      []string
	Signals    []string
	Extensions []string
	MediaTypes []string
}

// Manager discovers, launches and supervises a node's plugins and routes
// calls to them. Its methods are safe for concurrent use.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	started bool
	closed  bool
	ctx     context.Context
	cancel  context.CancelFunc
	plugins []*managed // builtins first, then the plugin dir in name order
	wg      sync.WaitGroup

	subsMu sync.RWMutex
	subs   []func(plugin string, batch *pluginapiv1.SampleBatch)

	// skipped are the files of the plugin directory that are not
	// plugins, with why (logged once each).
	skipped map[string]string

	hashMu sync.Mutex
	hashes map[string]fileHash
	// hashing dedups concurrent hashes of one file: the built-in plugins
	// are all the celcore binary, prepared at once.
	hashing singleflight.Group

	// pingTimeout bounds a health ping: max(HealthInterval, 5s).
	pingTimeout time.Duration
	// owner is the hashed Config.Owner, "" if none.
	owner string
}

// fileHash is a cached checksum and the stat it was computed for.
type fileHash struct {
	stat os.FileInfo
	sum  string
}

// New returns a Manager for cfg (defaults filled in). Nothing runs until
// Start.
func New(cfg Config) *Manager {
	cfg = cfg.withDefaults()
	m := &Manager{
		cfg:         cfg,
		log:         cfg.Logger,
		hashes:      map[string]fileHash{},
		pingTimeout: max(cfg.HealthInterval, 5*time.Second),
	}
	if cfg.Owner != "" {
		h := sha256.Sum256([]byte(cfg.Owner))
		m.owner = hex.EncodeToString(h[:8])
	}
	return m
}

// env returns base plus the owner mark (see Config.Owner) for a plugin
// process.
func (m *Manager) env(base []string) []string {
	env := slices.Clone(base)
	if m.owner != "" && selfStart() != "" {
		env = append(env, fmt.Sprintf("%s=%s/%d/%s", ownerEnv, m.owner, os.Getpid(), selfStart()))
	}
	return env
}

// killOrphans kills what a dead previous owner left (see Config.Owner).
func (m *Manager) killOrphans() {
	if m.owner == "" {
		return
	}
	found, err := killOrphans(m.owner)
	if err != nil && !errors.Is(err, errNoProc) {
		m.log.Warn("could not look for plugin processes a previous run left behind", "err", err)
	}
	for _, o := range found {
		m.log.Warn("killed a plugin process a previous run of this node left behind", "pid", o.pid, "cmd", o.cmdline, "owner", o.owner)
	}
}

// Start discovers the plugins (Config.Builtins, then every executable in
// Config.Dir, which it creates if missing), checks pinned checksums, runs
// `<path> [args...] describe`, launches every plugin that passed, and
// returns once each plugin's first start attempt settled (running, failed or
// backoff) or ctx ended. One plugin's failure does not fail Start: it shows
// in Status. Supervision goes on in the background until ctx ends or Close;
// then every plugin is killed. Meanwhile Config.Dir is watched: a plugin
// added is described and started, one whose executable is replaced is
// checked (its pin first) and restarted, one removed is stopped; files that
// are not plugins are logged once each with the reason. Start returns an
// error only if it was called before or the plugin directory cannot be
// created or read; after Close it does nothing. It may run in its own
// goroutine while the node serves.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		// Close won a race with a Start run in the background: nothing to do.
		m.mu.Unlock()
		return nil
	}
	if m.started {
		m.mu.Unlock()
		return errors.New("pluginhost: Start called twice")
	}
	m.started = true
	m.ctx, m.cancel = context.WithCancel(ctx)
	mctx := m.ctx
	m.mu.Unlock()
	managers.add(m)
	m.killOrphans()

	var fw *fsnotify.Watcher
	if m.cfg.Dir != "" {
		if err := m.ensureDir(); err != nil {
			return err
		}
		fw = m.openWatch()
	}
	specs, err := m.discover()
	if err != nil {
		if fw != nil {
			fw.Close()
		}
		return err
	}
	m.checkPinNames(specs)
	plugins := make([]*managed, len(specs))
	for i, s := range specs {
		plugins[i] = newManaged(m, s)
	}

	// Describe in parallel, then claim names in order so that duplicates
	// are resolved deterministically (built-ins win, then by file name).
	prepErr := make([]error, len(plugins))
	var wg sync.WaitGroup
	for i, p := range plugins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prepErr[i] = p.prepare(mctx)
		}()
	}
	wg.Wait()
	m.mu.Lock()
	m.plugins = plugins
	m.mu.Unlock()
	for i, p := range plugins {
		if prepErr[i] == nil {
			prepErr[i] = m.claim(p)
		}
	}

	for i, p := range plugins {
		m.run(p, prepErr[i])
	}
	if fw != nil {
		m.mu.Lock()
		if m.closed {
			fw.Close()
		} else {
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				m.watchDir(mctx, fw)
			}()
		}
		m.mu.Unlock()
	}

	for _, p := range plugins {
		select {
		case <-p.settled:
		case <-mctx.Done():
			return nil
		}
	}
	return nil
}

// discover lists the built-ins, then the plugin directory.
func (m *Manager) discover() ([]Spec, error) {
	specs := slices.Clone(m.cfg.Builtins)
	if m.cfg.Dir == "" {
		return specs, nil
	}
	found, err := m.scanDir()
	if err != nil {
		return nil, err
	}
	return append(specs, found...), nil
}

// checkPinNames logs every pin that names no plugin file and no built-in.
func (m *Manager) checkPinNames(specs []Spec) {
	known := map[string]bool{}
	for _, s := range specs {
		known[filepath.Base(s.Path)] = true
		if s.Builtin {
			known[s.Name] = true
		}
	}
	for _, name := range slices.Sorted(maps.Keys(m.cfg.Pins)) {
		if !known[name] {
			m.log.Error("a pin names no plugin file and no built-in plugin; pins name plugin files, not the names plugins report",
				"pin", name, "dir", m.cfg.Dir)
		}
	}
}

// claim gives p its described name unless another plugin holds it.
func (m *Manager) claim(p *managed) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p.mu.Lock()
	name := p.info.GetName()
	p.mu.Unlock()
	for _, o := range m.plugins {
		if o == p {
			continue
		}
		o.mu.Lock()
		taken := o.claimed && o.name == name
		opath := o.spec.Path
		o.mu.Unlock()
		if taken {
			return refused(ErrDuplicateName, "plugin %s (%s): name already used by the plugin at %s", name, p.spec.Path, opath)
		}
	}
	p.mu.Lock()
	p.name = name
	p.claimed = true
	p.log = m.log.With("plugin", name)
	p.mu.Unlock()
	return nil
}

// Status returns every plugin's status, in name order.
func (m *Manager) Status() []Status {
	m.mu.Lock()
	ps := slices.Clone(m.plugins)
	m.mu.Unlock()
	out := make([]Status, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.status())
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Subscribe registers fn to receive every telemetry batch of every telemetry
// plugin, from now on (including after plugin restarts). fn is called from
// the plugin's stream goroutine, in order per plugin, and must not block.
func (m *Manager) Subscribe(fn func(plugin string, batch *pluginapiv1.SampleBatch)) {
	m.subsMu.Lock()
	m.subs = append(m.subs, fn)
	m.subsMu.Unlock()
}

// publish hands a batch to every subscriber.
func (m *Manager) publish(plugin string, b *pluginapiv1.SampleBatch) {
	m.subsMu.RLock()
	subs := m.subs
	m.subsMu.RUnlock()
	for _, fn := range subs {
		fn(plugin, b)
	}
}

// Signals returns, per telemetry plugin, the signals it declared at its last
// start.
func (m *Manager) Signals() map[string][]*pluginapiv1.SignalDesc {
	m.mu.Lock()
	ps := slices.Clone(m.plugins)
	m.mu.Unlock()
	out := map[string][]*pluginapiv1.SignalDesc{}
	for _, p := range ps {
		p.mu.Lock()
		if p.caps.known && p.info.GetKind() == kindTelemetry {
			out[p.name] = slices.Clone(p.caps.signals)
		}
		p.mu.Unlock()
	}
	return out
}

// Close stops supervision, kills every plugin process (gracefully first, as
// go-plugin's Client.Kill does, in parallel) and waits for them to be gone.
// It is safe to call more than once, and without Start.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	cancel := m.cancel
	m.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	m.wg.Wait()
	managers.remove(m)
}

// fileSHA returns the hex sha256 of path, cached while its stat is unchanged.
func (m *Manager) fileSHA(path string, st os.FileInfo) (string, error) {
	m.hashMu.Lock()
	h, ok := m.hashes[path]
	m.hashMu.Unlock()
	if ok && !fileChanged(h.stat, st) {
		return h.sum, nil
	}
	sum, err, _ := m.hashing.Do(path, func() (any, error) {
		m.hashMu.Lock()
		h, ok := m.hashes[path]
		m.hashMu.Unlock()
		if ok && !fileChanged(h.stat, st) {
			return h.sum, nil // hashed while this call waited
		}
		sum, err := sha256File(path)
		if err != nil {
			return "", err
		}
		m.hashMu.Lock()
		m.hashes[path] = fileHash{stat: st, sum: sum}
		m.hashMu.Unlock()
		return sum, nil
	})
	if err != nil {
		return "", err
	}
	return sum.(string), nil
}
