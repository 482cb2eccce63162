package pluginhost

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"

	"github.com/celluster/celluster/pluginapi"
	pluginapiv1 "github.com/celluster/celluster/pluginapi/v1"
)

const (
	kindTelemetry = pluginapi.KindTelemetry
	kindIntent    = pluginapi.KindIntent
	kindVerb      = pluginapi.KindVerb
)

// nodeAPIVersions are the plugin API versions this node speaks, oldest first.
var nodeAPIVersions = []int{pluginapi.ProtocolVersion}

// goPluginCookieMessage starts what a go-plugin server prints to stderr when
// the magic cookie in its environment is not the one it was built with.
const goPluginCookieMessage = "This binary is a plugin"

// managed is one plugin: its executable and the life of its processes.
type managed struct {
	m    *Manager
	spec Spec
	base string // file base name

	settled    chan struct{} // closed once the first start attempt settled
	settleOnce sync.Once
	changed    chan struct{} // the directory watcher saw the executable change

	// stop ends this plugin's supervision alone and done is closed when
	// it has ended (guarded by the Manager's mu).
	stop context.CancelFunc
	done chan struct{}

	mu      sync.Mutex
	name    string // described name once claimed, else spec name or base
	claimed bool
	log     *slog.Logger
	info    *pluginapiv1.PluginInfo // from describe
	stat    os.FileInfo             // of the executable, as last prepared
	// refusedStat is a replacement of the running executable that was
	// refused (its pin), so that it is logged once.
	refusedStat os.FileInfo
	sha         string
	pin         string // the pin that applies, "" if none
	state       State
	pid         int
	api         uint32
	restarts    int
	lastErr     string
	inst        *instance // nil unless running
	caps        caps
}

// caps are a plugin's declared capabilities, as of its last start.
type caps struct {
	known      bool
	signals    []*pluginapiv1.SignalDesc
	extensions []string // lower case, with the dot
	mediaTypes []string // lower case, without parameters
	verbs      []string
}

// newManaged returns the unstarted plugin for s, named after the spec or file.
func newManaged(m *Manager, s Spec) *managed {
	base := filepath.Base(s.Path)
	name := s.Name
	if name == "" {
		name = base
	}
	return &managed{
		m:       m,
		spec:    s,
		base:    base,
		settled: make(chan struct{}),
		changed: make(chan struct{}, 1),
		name:    name,
		log:     m.log.With("plugin", name),
		state:   StateStarting,
	}
}

// settle marks the first start attempt as concluded (Start waits for it).
func (p *managed) settle() { p.settleOnce.Do(func() { close(p.settled) }) }

// logger returns the plugin's logger (plugin=<name>).
func (p *managed) logger() *slog.Logger {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log
}

// displayName returns the plugin's current name.
func (p *managed) displayName() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.name
}

// status snapshots the plugin for Status.
func (p *managed) status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Status{
		Name:        p.name,
		Kind:        p.info.GetKind(),
		Version:     p.info.GetVersion(),
		Description: p.info.GetDescription(),
		Path:        p.spec.Path,
		Args:        slices.Clone(p.spec.Args),
		SHA256:      p.sha,
		API:         p.api,
		State:       p.state,
		PID:         p.pid,
		Restarts:    p.restarts,
		LastError:   p.lastErr,
		Builtin:     p.spec.Builtin,
		Verbs:       slices.Clone(p.caps.verbs),
		Extensions:  slices.Clone(p.caps.extensions),
		MediaTypes:  slices.Clone(p.caps.mediaTypes),
	}
	for _, sd := range p.caps.signals {
		s.Signals = append(s.Signals, sd.GetName())
	}
	return s
}

// refusal is an error after which a plugin is not restarted until its
// executable changes. It reads as its message and unwraps to its cause (one
// of the Err* refusal sentinels) and to any error the message wraps.
type refusal struct {
	cause error
	err   error
}

// Error returns the refusal's message.
func (r *refusal) Error() string { return r.err.Error() }

// Unwrap returns the cause and the wrapped error.
func (r *refusal) Unwrap() []error { return []error{r.cause, r.err} }

// refused builds a refusal with the given cause and message.
func refused(cause error, format string, args ...any) error {
	return &refusal{cause: cause, err: fmt.Errorf(format, args...)}
}

// isRefusal reports whether err is (or wraps) a refusal.
func isRefusal(err error) bool {
	var r *refusal
	return errors.As(err, &r)
}

// prepare checks the executable and its pin, runs describe, and validates
// what it says. Errors are refusals unless ctx ended.
func (p *managed) prepare(ctx context.Context) error {
	name := p.displayName()
	path := p.spec.Path
	st, err := os.Stat(path)
	if err != nil {
		st = nil
	}
	p.mu.Lock()
	p.stat = st
	p.mu.Unlock()
	if err != nil {
		return refused(ErrNotExecutable, "plugin %s: executable: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		return refused(ErrNotExecutable, "plugin %s: %s is not a regular file", name, path)
	}
	sum, err := p.m.fileSHA(path, st)
	if err != nil {
		return refused(ErrNotExecutable, "plugin %s: hashing the executable: %w", name, err)
	}
	pin := p.pinFor()
	p.mu.Lock()
	p.sha = sum
	p.pin = pin
	p.mu.Unlock()
	if err := p.checkPins(sum, pin); err != nil { // before the binary is ever executed
		return err
	}

	info, err := p.describe(ctx, name, pin)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.info = info // shown in Status even if refused below
	p.mu.Unlock()
	if err := validateInfo(name, info); err != nil {
		return err
	}
	if p.spec.Name != "" && info.GetName() != p.spec.Name {
		return refused(ErrDescribe, "plugin %s: describe says its name is %q", name, info.GetName())
	}
	return nil
}

// checkReplacement checks a replaced executable (stat st) against its
// pin before the running instance is stopped for it.
func (p *managed) checkReplacement(st os.FileInfo) error {
	if !st.Mode().IsRegular() {
		return refused(ErrNotExecutable, "plugin %s: %s is not a regular file", p.displayName(), p.spec.Path)
	}
	sum, err := p.m.fileSHA(p.spec.Path, st)
	if err != nil {
		return refused(ErrNotExecutable, "plugin %s: hashing the executable: %w", p.displayName(), err)
	}
	return p.checkPins(sum, p.pinFor())
}

// checkPins refuses the executable, whose sha256 is sum, unless it
// matches pin, or when pins are given and none names this plugin file.
func (p *managed) checkPins(sum, pin string) error {
	if pin == "" && !p.spec.Builtin && len(p.m.cfg.Pins) > 0 {
		return refused(ErrNotPinned, "plugin file %s: %w: pins are given, so every file in the plugin directory needs one by its file name (%s=%s)", p.spec.Path, ErrNotPinned, p.base, sum)
	}
	return checkPin(p.displayName(), p.spec.Path, sum, pin)
}

// pinFor returns the pin that applies to the plugin's file, "" if none:
// Spec.SHA256, else Config.Pins by built-in name, else by file base name.
// Pins never name what a binary reports about itself: that is only known
// after running it.
func (p *managed) pinFor() string {
	if p.spec.SHA256 != "" {
		return p.spec.SHA256
	}
	if p.spec.Builtin && p.spec.Name != "" {
		if pin := p.m.cfg.Pins[p.spec.Name]; pin != "" {
			return pin
		}
	}
	return p.m.cfg.Pins[p.base]
}

// checkPin refuses the file at path, whose sha256 is sum, unless it matches
// pin (no pin: no check).
func checkPin(name, path, sum, pin string) error {
	if pin == "" {
		return nil
	}
	if !strings.EqualFold(strings.TrimSpace(pin), sum) {
		return refused(ErrChecksumMismatch, "plugin %s: %w: %s has %s, pinned %s", name, ErrChecksumMismatch, path, sum, pin)
	}
	return nil
}

// validateInfo checks describe output: a name, a known kind, a shared API version.
func validateInfo(name string, info *pluginapiv1.PluginInfo) error {
	if info.GetName() == "" {
		return refused(ErrDescribe, "plugin %s: describe reported no name", name)
	}
	if _, ok := pluginapi.KindService[info.GetKind()]; !ok {
		return refused(ErrDescribe, "plugin %s: unknown kind %q (this node knows %s, %s, %s)",
			name, info.GetKind(), kindTelemetry, kindIntent, kindVerb)
	}
	if !sharesVersion(info.GetApiVersions()) {
		return refused(ErrUnsupportedAPI, "plugin %s speaks API versions %v; this node speaks %v",
			info.GetName(), info.GetApiVersions(), nodeAPIVersions)
	}
	return nil
}

// sharesVersion reports whether vs holds a version this node speaks.
func sharesVersion(vs []uint32) bool {
	for _, v := range vs {
		if slices.Contains(nodeAPIVersions, int(v)) {
			return true
		}
	}
	return false
}

// describe runs `<path> [args...] describe` and parses its PluginInfo; a
// pinned executable is checked against pin as it is started (see
// pinnedExec).
func (p *managed) describe(ctx context.Context, name, pin string) (*pluginapiv1.PluginInfo, error) {
	timeout := p.m.cfg.StartTimeout
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	args := append(slices.Clone(p.spec.Args), "describe")
	cmdline := strings.Join(append([]string{p.spec.Path}, args...), " ")
	cmd := exec.Command(p.spec.Path, args...)
	cmd.Env = p.m.env(os.Environ())
	cmd.WaitDelay = time.Second
	stdout := &limitedBuffer{max: 1 << 20}
	stderr := newTail(2048)
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	if pin != "" {
		exe, err := pinnedExec(cmd, name, p.spec.Path, pin)
		if err != nil {
			return nil, err
		}
		defer exe.Close()
	}
	g := &groupProc{cmd: cmd}
	if err := g.start(); err != nil {
		return nil, refused(ErrDescribe, "plugin %s: `%s` did not start: %w", name, cmdline, err)
	}
	stop := context.AfterFunc(dctx, g.kill)
	err := g.wait()
	stop()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if errors.Is(dctx.Err(), context.DeadlineExceeded) {
		return nil, refused(ErrDescribe, "plugin %s: `%s` did not finish within %v", name, cmdline, timeout)
	}
	if err != nil {
		return nil, refused(ErrDescribe, "plugin %s: `%s` failed: %w%s", name, cmdline, err, said(stderr.String()))
	}
	info := &pluginapiv1.PluginInfo{}
	if err := unmarshalInfo(stdout.Bytes(), info); err != nil {
		return nil, refused(ErrDescribe, "plugin %s: `%s` did not print a PluginInfo as JSON: %w", name, cmdline, err)
	}
	return info, nil
}

// said formats what a plugin wrote to stderr for an error message.
func said(stderr string) string {
	s := strings.TrimSpace(stderr)
	if s == "" {
		return ""
	}
	var lines []string
	for l := range strings.Lines(s) {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			lines = append(lines, l)
		}
	}
	return fmt.Sprintf(" (it said: %q)", strings.Join(lines, "; "))
}

// supervise runs the plugin until ctx ends: launch, watch, restart with
// backoff after a crash, wait for the file to change after a refusal.
func (p *managed) supervise(ctx context.Context, err error) {
	defer p.settle()
	bo := newBackoff(p.m.cfg.Backoff)
	for {
		if err != nil {
			if ctx.Err() != nil {
				p.stopped()
				return
			}
			p.fail(err)
			p.settle()
			if !p.waitFileChange(ctx) {
				p.stopped()
				return
			}
			p.logger().Info("plugin executable changed; trying it again", "path", p.spec.Path)
			bo.reset()
			if err = p.prepare(ctx); err == nil {
				err = p.m.claim(p)
			}
			continue
		}

		p.setState(StateStarting)
		inst, lerr := p.launch(ctx)
		switch {
		case ctx.Err() != nil:
			p.stopped()
			return
		case lerr != nil && isRefusal(lerr):
			err = lerr
			continue
		case lerr != nil:
			p.crashed(lerr)
			p.settle()
		default:
			p.running(inst)
			p.settle()
			why := p.watch(ctx, inst)
			if ctx.Err() != nil {
				p.stopped()
				return
			}
			if errors.Is(why, errReplaced) {
				p.logger().Info("plugin executable replaced; checking it and restarting the plugin", "path", p.spec.Path)
				p.mu.Lock()
				p.restarts++
				p.mu.Unlock()
				bo.reset()
				if err = p.prepare(ctx); err == nil {
					err = p.m.claim(p)
				}
				continue
			}
			if time.Since(inst.started) >= p.m.cfg.Backoff.ResetAfter {
				bo.reset()
			}
			p.crashed(why)
		}

		d := bo.next()
		p.logger().Info("restarting plugin after backoff", "in", d)
		if !sleepCtx(ctx, d) {
			p.stopped()
			return
		}
		p.mu.Lock()
		p.restarts++
		old := p.stat
		p.mu.Unlock()
		if st, serr := os.Stat(p.spec.Path); serr != nil || fileChanged(old, st) {
			// A replaced executable is checked and described again.
			if err = p.prepare(ctx); err == nil {
				err = p.m.claim(p)
			}
		}
	}
}

// setState records the plugin's state.
func (p *managed) setState(s State) {
	p.mu.Lock()
	p.state = s
	p.mu.Unlock()
}

// fail records a refusal: state failed until the executable changes.
func (p *managed) fail(err error) {
	p.mu.Lock()
	p.state = StateFailed
	p.lastErr = err.Error()
	p.pid = 0
	p.caps = caps{} // not routed to until it runs again
	log := p.log
	p.mu.Unlock()
	log.Error("plugin refused; it will not be started again until its executable changes", "err", err)
}

// crashed records a crash: state backoff until the restart.
func (p *managed) crashed(err error) {
	p.mu.Lock()
	p.state = StateBackoff
	p.lastErr = err.Error()
	p.pid = 0
	log := p.log
	p.mu.Unlock()
	log.Warn("plugin crashed", "err", err)
}

// stopped records that the manager stopped the plugin (a refusal stays failed).
func (p *managed) stopped() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pid = 0
	p.inst = nil
	if p.state != StateFailed {
		p.state = StateStopped
	}
}

// running publishes inst for calls and, for telemetry, opens its stream.
func (p *managed) running(inst *instance) {
	p.mu.Lock()
	p.inst = inst
	p.state = StateRunning
	p.pid = inst.pid
	p.api = uint32(inst.api)
	p.caps = inst.caps
	log := p.log
	kind := p.info.GetKind()
	version := p.info.GetVersion()
	p.mu.Unlock()
	log.Info("plugin running", "pid", inst.pid, "kind", kind, "version", version, "api", inst.api)
	if kind == kindTelemetry {
		p.m.wg.Add(1)
		go func() {
			defer p.m.wg.Done()
			p.stream(inst)
		}()
	}
}

// detach makes inst unreachable for new calls and fails the calls in flight
// with cause, which wraps ErrPluginShutdown and says why.
func (p *managed) detach(inst *instance, cause error) {
	p.mu.Lock()
	if p.inst == inst {
		p.inst = nil
		p.pid = 0
	}
	p.mu.Unlock()
	inst.cancel(cause)
}

// watch returns when the plugin exited, failed its health check (it is then
// killed) or ctx ended (it is then killed), saying why.
func (p *managed) watch(ctx context.Context, inst *instance) error {
	cfg := p.m.cfg
	tick := time.NewTicker(cfg.HealthInterval)
	defer tick.Stop()
	name := p.displayName()
	for {
		select {
		case <-ctx.Done():
			p.detach(inst, fmt.Errorf("%w: the node is stopping it", ErrPluginShutdown))
			inst.stop(false)
			return ctx.Err()
		case <-inst.exited.Done():
			p.detach(inst, fmt.Errorf("%w: the plugin process exited", ErrPluginShutdown))
			inst.stop(false)
			return fmt.Errorf("plugin %s (pid %d) exited unexpectedly (%s) after %v%s",
				name, inst.pid, inst.exitStatus(), time.Since(inst.started).Round(time.Millisecond), said(crashSummary(inst.stderr.String())))
		case <-p.changed:
			p.mu.Lock()
			ran := p.stat
			p.mu.Unlock()
			st, err := os.Stat(p.spec.Path)
			if err != nil || !fileChanged(ran, st) {
				continue // gone (the watcher stops it) or the file this instance runs
			}
			p.mu.Lock()
			seen := p.refusedStat != nil && !fileChanged(p.refusedStat, st)
			p.mu.Unlock()
			if seen {
				continue
			}
			if err := p.checkReplacement(st); err != nil {
				p.mu.Lock()
				p.refusedStat = st
				p.lastErr = err.Error()
				p.mu.Unlock()
				p.logger().Error("the plugin's executable was replaced by one that is refused; the running instance keeps running", "path", p.spec.Path, "err", err)
				continue
			}
			p.detach(inst, fmt.Errorf("%w: its executable was replaced; restarting it", ErrPluginShutdown))
			inst.stop(false)
			return errReplaced
		case <-tick.C:
			err := inst.ping(p.m.pingTimeout)
			if err == nil || inst.exited.Err() != nil {
				continue // an exit is reported by its own case
			}
			p.detach(inst, fmt.Errorf("%w: it stopped answering (health check: %v); killed and restarting", ErrPluginShutdown, err))
			p.logger().Warn("plugin failed its health check; killing it and failing its calls in flight", "pid", inst.pid, "err", err)
			inst.stop(true) // too sick to be asked
			return fmt.Errorf("plugin %s (pid %d) failed its health check: %w", name, inst.pid, err)
		}
	}
}

// waitFileChange waits until the executable differs from when it was last
// prepared; false if ctx ended first.
func (p *managed) waitFileChange(ctx context.Context) bool {
	p.mu.Lock()
	old := p.stat
	p.mu.Unlock()
	tick := time.NewTicker(max(p.m.cfg.HealthInterval, 100*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-p.changed:
		case <-tick.C:
		}
		st, err := os.Stat(p.spec.Path)
		if err != nil {
			st = nil
		}
		if fileChanged(old, st) {
			return true
		}
	}
}

// fileChanged reports whether two stats (nil: no file) differ: another
// file, size, modification time or mode.
func fileChanged(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return (a == nil) != (b == nil)
	}
	return !os.SameFile(a, b) || a.Size() != b.Size() || !a.ModTime().Equal(b.ModTime()) || a.Mode() != b.Mode()
}

// settings merges Spec.Settings with Config.Settings by base name, then by
// plugin name.
func (p *managed) settings(name string) map[string]string {
	out := maps.Clone(p.spec.Settings)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, p.m.cfg.Settings[p.base])
	maps.Copy(out, p.m.cfg.Settings[name])
	return out
}

// instance is one process of a plugin, from handshake to exit.
type instance struct {
	client  *plugin.Client
	run     atomic.Pointer[procRunner] // set when go-plugin asks for the runner
	proto   plugin.ClientProtocol
	pid     int
	api     int
	started time.Time
	stderr  *tail

	// exited is done when the process has exited (go-plugin's doneCtx).
	exited context.Context
	// ctx is exited, also canceled (cause ErrPluginShutdown) when the
	// manager stops using the instance. Calls run under it.
	ctx    context.Context
	cancel context.CancelCauseFunc

	tel    pluginapiv1.TelemetryClient
	intent pluginapiv1.IntentParserClient
	verb   pluginapiv1.VerbClient
	caps   caps

	stopOnce sync.Once
}

// killGrace bounds go-plugin's graceful Kill (which asks the plugin to shut
// down without a deadline, then SIGKILLs after 2s): a plugin too hung to
// answer is SIGKILLed after this.
const killGrace = 3 * time.Second

// stop fails the calls in flight, kills the process (go-plugin's graceful
// Kill, or SIGKILL if hard or if that does not finish within killGrace) and
// waits until it is reaped.
func (in *instance) stop(hard bool) {
	in.stopOnce.Do(func() {
		if in.cancel != nil {
			in.cancel(ErrPluginShutdown)
		}
		if hard {
			in.sigkill()
		}
		t := time.AfterFunc(killGrace, in.sigkill)
		in.client.Kill()
		t.Stop()
		unregister(in)
	})
}

// sigkill SIGKILLs the process and its group, if it was started.
func (in *instance) sigkill() {
	if r := in.run.Load(); r != nil {
		r.g.kill()
	}
}

// exitStatus says how the process ended; valid after stop.
func (in *instance) exitStatus() string {
	if r := in.run.Load(); r != nil {
		r.g.mu.Lock()
		ps := r.g.cmd.ProcessState
		r.g.mu.Unlock()
		if ps != nil {
			return ps.String()
		}
	}
	return "exit status unknown"
}

// ping is go-plugin's ClientProtocol.Ping, bounded by timeout (Ping itself
// takes no context).
func (in *instance) ping(timeout time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- in.proto.Ping() }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-errc:
		return err
	case <-t.C:
		return fmt.Errorf("no answer to ping within %v", timeout)
	case <-in.exited.Done():
		return ErrPluginShutdown
	}
}

// launch starts one process of the plugin and brings it to running:
// handshake, Info, host service, Configure, capabilities.
func (p *managed) launch(ctx context.Context) (_ *instance, err error) {
	cfg := p.m.cfg
	p.mu.Lock()
	name, info, pin, log := p.name, p.info, p.pin, p.log
	p.mu.Unlock()

	inst := &instance{started: time.Now(), stderr: newTail(4096)}
	// A pinned executable is hashed again as it is started, and the bytes
	// hashed are the bytes run (see pinnedExec): the path may have been
	// replaced since prepare checked it.
	cc := &plugin.ClientConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion:  pluginapi.ProtocolVersion,
			MagicCookieKey:   pluginapi.MagicCookieKey,
			MagicCookieValue: pluginapi.MagicCookieValue,
		},
		VersionedPlugins: pluginSets(),
		// go-plugin passes a command carrying only its environment.
		RunnerFunc: func(_ hclog.Logger, spec *exec.Cmd, tmpDir string) (runner.Runner, error) {
			cmd := exec.Command(p.spec.Path, p.spec.Args...)
			cmd.Env = p.m.env(spec.Env)
			var exe *os.File
			if pin != "" {
				var err error
				if exe, err = pinnedExec(cmd, name, p.spec.Path, pin); err != nil {
					_ = os.RemoveAll(tmpDir) // go-plugin's socket dir: nothing will use it
					return nil, err
				}
			}
			r, err := newProcRunner(cmd, exe, tmpDir)
			if err != nil {
				if exe != nil {
					exe.Close()
				}
				return nil, err
			}
			inst.run.Store(r)
			return r, nil
		},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		GRPCDialOptions:  traceDialOptions(),
		AutoMTLS:         true,
		StartTimeout:     cfg.StartTimeout,
		Logger:           newHCLogger(log),
		Stderr:           inst.stderr,
		SyncStdout:       newLineLogger(log, "stdout"),
		SyncStderr:       newLineLogger(log, "stderr"),
	}
	inst.client = plugin.NewClient(cc)
	register(inst)
	defer func() {
		if err != nil {
			inst.stop(true)
		}
	}()

	// Handshake. go-plugin checks the protocol version and transport;
	// the plugin checks the cookie.
	proto, err := inst.client.Client()
	if err != nil {
		return nil, p.startError(name, inst, err)
	}
	inst.proto = proto
	inst.pid = inst.run.Load().g.pid
	inst.api = inst.client.NegotiatedVersion()

	raw, err := proto.Dispense(pluginapi.ServicePlugin)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: dispensing service %q: %w", name, pluginapi.ServicePlugin, err)
	}
	base := raw.(*dispensed[pluginapiv1.PluginClient])
	inst.exited = base.done
	inst.ctx, inst.cancel = context.WithCancelCause(base.done)

	sctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	sctx, cancelJoin := joinCtx(sctx, inst.ctx)
	defer cancelJoin()
	failed := func(step string, err error) error {
		if inst.ctx.Err() != nil {
			return fmt.Errorf("plugin %s: %s: %w: the process exited%s", name, step, ErrPluginShutdown, said(crashSummary(inst.stderr.String())))
		}
		if errors.Is(sctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("plugin %s: %s: no answer within %v: %w", name, step, cfg.StartTimeout, err)
		}
		return fmt.Errorf("plugin %s: %s: %w", name, step, err)
	}

	got, err := base.client.Info(sctx, &pluginapiv1.InfoRequest{})
	if err != nil {
		return nil, failed("Info", err)
	}
	if got.GetKind() != info.GetKind() || got.GetName() != info.GetName() {
		return nil, refused(ErrDescribe, "plugin %s: the running plugin says it is %s %q, describe said %s %q",
			name, got.GetKind(), got.GetName(), info.GetKind(), info.GetName())
	}
	if !slices.Contains(got.GetApiVersions(), uint32(inst.api)) {
		return nil, refused(ErrUnsupportedAPI, "plugin %s negotiated API version %d but its Info lists %v", name, inst.api, got.GetApiVersions())
	}

	// Serve the host service on the broker; the plugin dials it by id.
	hostID := base.broker.NextId()
	host := cfg.Host
	if cfg.HostFor != nil {
		if h := cfg.HostFor(name); h != nil {
			host = h
		}
	}
	go base.broker.AcceptAndServe(hostID, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(append(opts, traceHostCalls(name))...)
		pluginapiv1.RegisterHostServer(s, host)
		return s
	})
	_, err = base.client.Configure(sctx, &pluginapiv1.ConfigureRequest{
		Settings:     p.settings(name),
		Node:         cfg.Node,
		HostBrokerId: hostID,
		ApiVersion:   uint32(inst.api),
	})
	if err != nil {
		return nil, failed("Configure", err)
	}

	svc := pluginapi.KindService[info.GetKind()]
	raw, err = proto.Dispense(svc)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: dispensing service %q: %w", name, svc, err)
	}
	c := caps{known: true}
	switch info.GetKind() {
	case kindTelemetry:
		inst.tel = raw.(*dispensed[pluginapiv1.TelemetryClient]).client
		resp, err := inst.tel.Signals(sctx, &pluginapiv1.SignalsRequest{})
		if err != nil {
			return nil, failed("Signals", err)
		}
		c.signals = resp.GetSignals()
	case kindIntent:
		inst.intent = raw.(*dispensed[pluginapiv1.IntentParserClient]).client
		resp, err := inst.intent.Accepts(sctx, &pluginapiv1.AcceptsRequest{})
		if err != nil {
			return nil, failed("Accepts", err)
		}
		for _, e := range resp.GetExtensions() {
			c.extensions = append(c.extensions, normExt(e))
		}
		for _, mt := range resp.GetMediaTypes() {
			c.mediaTypes = append(c.mediaTypes, normMediaType(mt))
		}
	case kindVerb:
		inst.verb = raw.(*dispensed[pluginapiv1.VerbClient]).client
		resp, err := inst.verb.Verbs(sctx, &pluginapiv1.VerbsRequest{})
		if err != nil {
			return nil, failed("Verbs", err)
		}
		c.verbs = resp.GetVerbs()
	}
	inst.caps = c
	return inst, nil
}

var pluginVersionRE = regexp.MustCompile(`Plugin version: (\d+)`)

// startError turns a failed go-plugin handshake into a clear error: a
// refusal for what a restart cannot fix, a plain error (crash) otherwise.
func (p *managed) startError(name string, inst *instance, err error) error {
	inst.stop(true) // reaps the process: its stderr is complete after this
	stderr := inst.stderr.String()
	msg := err.Error()
	switch {
	case isRefusal(err):
		return err // the pin checked as the process started
	case strings.Contains(msg, "timeout while waiting for plugin to start"):
		return refused(ErrHandshakeTimeout, "plugin %s did not complete the handshake within %v", name, p.m.cfg.StartTimeout)
	case strings.Contains(msg, "incompatible API version with plugin"):
		v := "?"
		if m := pluginVersionRE.FindStringSubmatch(msg); m != nil {
			v = m[1]
		}
		return refused(ErrUnsupportedAPI, "plugin %s speaks API versions [%s]; this node speaks %v", name, v, nodeAPIVersions)
	case strings.Contains(stderr, goPluginCookieMessage):
		return refused(ErrBadCookie, "plugin %s refused the handshake: %w: it expects a different %s value%s",
			name, ErrBadCookie, pluginapi.MagicCookieKey, said(stderr))
	case strings.Contains(msg, "unsupported plugin protocol"):
		return refused(ErrUnsupportedAPI, "plugin %s: %w (this node speaks only gRPC plugins)", name, err)
	case strings.HasPrefix(msg, "Unrecognized remote plugin message: ") &&
		!strings.HasPrefix(msg, "Unrecognized remote plugin message: \n"):
		line, _, _ := strings.Cut(strings.TrimPrefix(msg, "Unrecognized remote plugin message: "), "\n")
		return refused(ErrDescribe, "plugin %s did not speak the go-plugin handshake: it printed %q", name, line)
	}
	return fmt.Errorf("plugin %s: exited during start (%s): %w%s", name, inst.exitStatus(), err, said(crashSummary(stderr)))
}

// joinCtx returns a context canceled when parent ends or when other does
// (then with cause ErrPluginShutdown).
func joinCtx(parent, other context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	stop := context.AfterFunc(other, func() { cancel(ErrPluginShutdown) })
	return ctx, func() {
		stop()
		cancel(context.Canceled)
	}
}

// sleepCtx sleeps for d; false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoff yields exponential delays from min to max.
type backoff struct {
	min, max, cur time.Duration
}

// newBackoff returns a backoff over b.Min..b.Max.
func newBackoff(b Backoff) *backoff { return &backoff{min: b.Min, max: b.Max} }

// next returns the next delay: Min, then doubling up to Max.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	return b.cur
}

// reset starts over at Min.
func (b *backoff) reset() { b.cur = 0 }

// sha256File returns the hex sha256 of the file at path.
func sha256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// limitedBuffer keeps the first max bytes written and discards the rest.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

// Write implements io.Writer; it never fails.
func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
