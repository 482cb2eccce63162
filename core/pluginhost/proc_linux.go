package pluginhost

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// procAttr puts a plugin process in a process group of its own and has the
// kernel SIGKILL it when the node dies, so it never outlives the node even
// if the node is killed without running Close.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// forker runs functions on one OS thread that is locked for the life of the
// process. Linux delivers a parent-death signal when the *thread* that forked
// the child exits, not the process (prctl(2) PR_SET_PDEATHSIG; Go issue
// 27505). The Go runtime terminates a thread when a goroutine locked to it
// exits without unlocking, so a plugin forked from an ordinary goroutine
// could be killed while the node runs on. Forking only from this thread,
// which never exits, makes the signal mean "the node died".
var forker = sync.OnceValue(func() chan<- func() {
	ch := make(chan func())
	go func() {
		runtime.LockOSThread() // never unlocked: this goroutine never returns
		for f := range ch {
			f()
		}
	}()
	return ch
})

// startCmd starts cmd from the forker thread.
func startCmd(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	forker() <- func() { done <- cmd.Start() }
	return <-done
}

// killGroup SIGKILLs every process in the process group pgid.
func killGroup(pgid int) {
	if pgid > 0 {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}

// waitExit blocks until process pid has exited, without reaping it; false
// if it could not wait.
func waitExit(pid int) bool {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return err == nil
		}
	}
}

// procStart returns the start time of process pid (field 22 of
// /proc/PID/stat, clock ticks after boot).
func procStart(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", err
	}
	i := bytes.LastIndexByte(b, ')') // the command may hold spaces and parentheses
	if i < 0 {
		return "", fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the command: state is field 3, starttime field 22.
	if len(f) < 20 {
		return "", fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return f[19], nil
}

// orphan is a process a previous run of the same owner left behind.
type orphan struct {
	pid     int
	cmdline string
	owner   string // the dead owner: pid/starttime
}

// killOrphans SIGKILLs every process whose environment marks it as started
// for owner (ownerEnv=<owner>/<pid>/<starttime>) by a process that is no
// longer alive. Each candidate is opened as a pidfd before its environment is
// read, and signalled through it, so a pid reused in between is never hit.
func killOrphans(owner string) ([]orphan, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	prefix := []byte(ownerEnv + "=" + owner + "/")
	self := os.Getpid()
	var out []orphan
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		o, ok := orphanOf(pid, prefix)
		if ok {
			out = append(out, o)
		}
	}
	return out, nil
}

// orphanOf checks and, if it is an orphan of the owner prefix names, kills
// process pid.
func orphanOf(pid int, prefix []byte) (orphan, bool) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return orphan{}, false
	}
	defer unix.Close(fd)
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return orphan{}, false
	}
	var mark []byte
	for kv := range bytes.SplitSeq(env, []byte{0}) {
		if bytes.HasPrefix(kv, prefix) {
			mark = kv[len(prefix):]
			break
		}
	}
	if mark == nil {
		return orphan{}, false
	}
	ownerPid, start, ok := strings.Cut(string(mark), "/")
	opid, err := strconv.Atoi(ownerPid)
	if !ok || err != nil {
		return orphan{}, false
	}
	if s, err := procStart(opid); err == nil && s == start {
		return orphan{}, false // its node is alive
	}
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		return orphan{}, false
	}
	return orphan{
		pid:     pid,
		cmdline: strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " ")),
		owner:   string(mark),
	}, true
}

// execFile makes cmd execute the open file f rather than cmd.Path: f is
// passed as the child's next descriptor, and the child executes it through
// /proc/self/fd. argv[0] stays the path.
func execFile(cmd *exec.Cmd, f *os.File) {
	cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	cmd.Path = "/proc/self/fd/" + strconv.Itoa(2+len(cmd.ExtraFiles))
}
