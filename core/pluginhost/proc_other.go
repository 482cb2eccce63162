//go:build !linux

package pluginhost

import (
	"os"
	"os/exec"
	"syscall"
)

// procAttr puts a plugin process in a process group of its own. Outside
// Linux there is no parent-death signal: Close (and the plugin noticing its
// host connection is gone) must end plugins.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// startCmd starts cmd.
func startCmd(cmd *exec.Cmd) error { return cmd.Start() }

// killGroup SIGKILLs every process in the process group pgid.
func killGroup(pgid int) {
	if pgid > 0 {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}

// waitExit cannot wait without reaping here: it returns false at once.
func waitExit(int) bool { return false }

// procStart is not available here.
func procStart(int) (string, error) { return "", errNoProc }

// orphan is a process a previous run of the same owner left behind.
type orphan struct {
	pid     int
	cmdline string
	owner   string
}

// killOrphans is not available here.
func killOrphans(string) ([]orphan, error) { return nil, errNoProc }

// execFile cannot execute an open file here: cmd runs cmd.Path, hashed an
// instant before.
func execFile(*exec.Cmd, *os.File) {}
