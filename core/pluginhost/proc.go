package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"

	"github.com/hashicorp/go-plugin/runner"
)

// groupProc is one plugin process (a `describe` run or a served plugin) in a
// process group of its own: whatever it forks stays in the group, and the
// whole group is SIGKILLed when the process exits, is killed or is replaced.
// The group is killed while the leader is still an unreaped zombie, so its
// id cannot have been reused by an unrelated group.
type groupProc struct {
	cmd *exec.Cmd

	mu     sync.Mutex
	pid    int
	reaped bool
}

// start starts the process (in its own group, with a parent-death signal
// where the system has one; see startCmd).
func (g *groupProc) start() error {
	g.cmd.SysProcAttr = procAttr()
	if err := startCmd(g.cmd); err != nil {
		return err
	}
	g.mu.Lock()
	g.pid = g.cmd.Process.Pid
	g.mu.Unlock()
	return nil
}

// kill SIGKILLs the process and its whole group, unless it was reaped.
func (g *groupProc) kill() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pid > 0 && !g.reaped {
		killGroup(g.pid)
	}
}

// wait waits until the process exits, kills what is left of its group, then
// reaps it and returns what exec.Cmd.Wait returns.
func (g *groupProc) wait() error {
	if !waitExit(g.pid) {
		// No way to wait without reaping: once reaped, the group's id
		// may name an unrelated group, so what is left of it stays (an
		// explicit kill before the exit still reaches it).
		err := g.cmd.Wait()
		g.mu.Lock()
		defer g.mu.Unlock()
		g.reaped = true
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	killGroup(g.pid)
	err := g.cmd.Wait()
	g.reaped = true
	return err
}

// procRunner is the go-plugin runner of a served plugin: the plugin's own
// command run as a groupProc.
type procRunner struct {
	g      groupProc
	stdout io.ReadCloser
	stderr io.ReadCloser
	exe    *os.File // the pinned executable the command runs, closed once started
	tmpDir string   // go-plugin's socket directory, removed if Start fails
}

var _ runner.Runner = (*procRunner)(nil)

// newProcRunner prepares cmd (whose Env go-plugin's spec carries) to run as
// a plugin; exe, if not nil, is the open executable cmd runs (see
// pinnedExec), closed once the process started.
func newProcRunner(cmd *exec.Cmd, exe *os.File, tmpDir string) (*procRunner, error) {
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	return &procRunner{g: groupProc{cmd: cmd}, stdout: stdout, stderr: stderr, exe: exe, tmpDir: tmpDir}, nil
}

// Start implements runner.Runner.
func (r *procRunner) Start(context.Context) error {
	err := r.g.start()
	if r.exe != nil {
		r.exe.Close()
	}
	if err != nil && r.tmpDir != "" {
		_ = os.RemoveAll(r.tmpDir)
	}
	return err
}

// Wait implements runner.Runner.
func (r *procRunner) Wait(context.Context) error { return r.g.wait() }

// Kill implements runner.Runner: SIGKILL to the plugin's whole group.
func (r *procRunner) Kill(context.Context) error {
	r.g.kill()
	return nil
}

// Stdout implements runner.Runner.
func (r *procRunner) Stdout() io.ReadCloser { return r.stdout }

// Stderr implements runner.Runner.
func (r *procRunner) Stderr() io.ReadCloser { return r.stderr }

// Name implements runner.Runner.
func (r *procRunner) Name() string { return r.g.cmd.Path }

// ID implements runner.Runner: the pid.
func (r *procRunner) ID() string {
	r.g.mu.Lock()
	defer r.g.mu.Unlock()
	if r.g.pid == 0 {
		return ""
	}
	return strconv.Itoa(r.g.pid)
}

// Diagnose implements runner.Runner.
func (r *procRunner) Diagnose(context.Context) string {
	return fmt.Sprintf("the plugin %s did not speak the go-plugin handshake (not built for this architecture, missing libraries, or not a plugin)", r.g.cmd.Path)
}

// PluginToHost implements runner.Runner: no translation.
func (r *procRunner) PluginToHost(n, a string) (string, string, error) { return n, a, nil }

// HostToPlugin implements runner.Runner: no translation.
func (r *procRunner) HostToPlugin(n, a string) (string, string, error) { return n, a, nil }

// ownerEnv is the environment variable that marks a plugin process (and
// whatever it forks) as belonging to one Manager; see Config.Owner.
const ownerEnv = "CELLUSTER_PLUGIN_OWNER"

// errNoProc is returned by process helpers a system does not offer.
var errNoProc = errors.New("not supported on this system")

// selfStart is this process's start time as the kernel reports it (clock
// ticks after boot), "" if unknown: with the pid it names this process
// uniquely across pid reuse.
var selfStart = sync.OnceValue(func() string {
	s, _ := procStart(os.Getpid())
	return s
})

// afterHash, if set (by tests), runs between hashing a pinned executable
// and starting it.
var afterHash func(path string)

// pinnedExec opens the executable at path and hashes it through the open
// file. If the sum is pin, cmd is made to run that open file (where the
// system allows: on Linux through /proc/self/fd), so that the bytes that
// run are the bytes hashed even if the path is replaced meanwhile; the
// caller closes the file once cmd started (the process keeps it open as
// its descriptor 3). A mismatch is a refusal naming the file, the pinned
// and the actual sum.
func pinnedExec(cmd *exec.Cmd, name, path, pin string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, refused(ErrNotExecutable, "plugin %s: executable: %w", name, err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		f.Close()
		return nil, refused(ErrNotExecutable, "plugin %s: hashing %s: %w", name, path, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := checkPin(name, path, sum, pin); err != nil {
		f.Close()
		return nil, err
	}
	if afterHash != nil {
		afterHash(path)
	}
	execFile(cmd, f)
	return f, nil
}
