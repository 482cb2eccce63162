package ebpf

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const unprivilegedChild = "CELTEST_EBPF_UNPRIVILEGED_CHILD"

// Without the privilege New fails with ErrUnprivileged and names what is
// missing. As root the test runs a copy of itself as nobody (uid 65534,
// no capabilities); otherwise it is already unprivileged.
func TestNewWithoutPrivilege(t *testing.T) {
	if os.Getenv(unprivilegedChild) == "1" || os.Geteuid() != 0 {
		if checkPrivilege() == nil {
			t.Skip("this process is privileged")
		}
		l, err := New(Config{Node: "celtest-unprivileged"})
		if err == nil {
			l.Close()
			t.Fatal("New succeeded without privilege")
		}
		if !errors.Is(err, ErrUnprivileged) || !strings.Contains(err.Error(), "CAP_BPF") {
			t.Fatalf("New: %v, want ErrUnprivileged naming CAP_BPF", err)
		}
		t.Logf("New: %v", err)
		return
	}

	// The test binary's directory is root's alone: copy it where nobody can
	// run it.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "celtest-ebpf-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "ebpf.test")
	if err := copyFile(self, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^TestNewWithoutPrivilege$", "-test.v", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), unprivilegedChild+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestNewWithoutPrivilege") || strings.Contains(string(out), "SKIP") {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
	t.Logf("as nobody:\n%s", out)
}

func copyFile(from, to string, mode os.FileMode) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}
