package ebpf

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// attach attaches prog the way its section says.
func attach(prog *ebpf.Program, ps *ebpf.ProgramSpec) (link.Link, error) {
	switch {
	case ps.Type == ebpf.Tracing && attachable(ps.Type, ps.AttachType):
		return link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ps.AttachType})
	case ps.Type == ebpf.RawTracepoint:
		return link.AttachRawTracepoint(link.RawTracepointOptions{Name: ps.AttachTo, Program: prog})
	}
	return nil, fmt.Errorf("%w: no way to attach %s programs with attach type %s", ErrNotSupported, ps.Type, ps.AttachType)
}

// checkPrivilege reports, wrapping ErrUnprivileged, which capabilities the
// process lacks to load and attach tracing programs.
func checkPrivilege() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("ebpf: reading capabilities: %w", err)
	}
	has := func(c int) bool { return data[c/32].Effective&(1<<(uint(c)%32)) != 0 }
	if has(unix.CAP_SYS_ADMIN) || (has(unix.CAP_BPF) && has(unix.CAP_PERFMON)) {
		return nil
	}
	var missing []string
	if !has(unix.CAP_BPF) {
		missing = append(missing, "CAP_BPF")
	}
	if !has(unix.CAP_PERFMON) {
		missing = append(missing, "CAP_PERFMON")
	}
	return fmt.Errorf("%w: loading tracing programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); this process lacks %s (run celcore as root)",
		ErrUnprivileged, strings.Join(missing, " and "))
}

// isBpffs reports whether path lies on a bpffs.
func isBpffs(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, err
	}
	return uint32(st.Type) == uint32(unix.BPF_FS_MAGIC), nil
}

// mountedBpffs returns bpffsMount if a bpffs is mounted there, else "".
func mountedBpffs() string {
	if ok, _ := isBpffs(bpffsMount); ok {
		return bpffsMount
	}
	return ""
}

// mountBpffs mounts a bpffs at bpffsMount.
func mountBpffs() error {
	err := unix.Mount("bpf", bpffsMount, "bpf", 0, "mode=0700")
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%w: mounting bpffs at %s needs CAP_SYS_ADMIN: %w", ErrUnprivileged, bpffsMount, err)
	}
	if err != nil {
		return fmt.Errorf("ebpf: mounting bpffs at %s: %w", bpffsMount, err)
	}
	return nil
}

// isPermission reports whether err is the kernel refusing for lack of privilege.
func isPermission(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)
}

// lockDir takes an exclusive, non-blocking flock(2) on directory dir
// (creating it first) and returns the open directory holding the lock. The
// kernel drops the lock when the holder exits, however it exits. If another
// open file holds it, the error wraps ErrInUse and names the holder's pid
// when /proc/locks shows it. A directory removed and created again while
// the lock was being taken is locked afresh.
func lockDir(dir string) (*os.File, error) {
	for range 5 {
		// Another node's Close may remove an empty parent between MkdirAll
		// creating it and creating dir: MkdirAll again.
		var err error
		for range 3 {
			if err = os.MkdirAll(dir, 0o700); err == nil {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("ebpf: creating pin directory: %w", err)
		}
		f, err := os.Open(dir)
		if err != nil {
			continue // removed in between
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			holder := lockHolder(f)
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, fmt.Errorf("%w: %s is locked by another live process%s (another node of the same name on this host?)", ErrInUse, dir, holder)
			}
			return nil, fmt.Errorf("ebpf: locking pin directory %s: %w", dir, err)
		}
		// The lock is good only if dir is still the directory locked: a
		// previous owner's Close removes it.
		fi, ferr := f.Stat()
		di, derr := os.Stat(dir)
		if ferr == nil && derr == nil && os.SameFile(fi, di) {
			return f, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("ebpf: locking pin directory %s: it keeps being removed and created again", dir)
}

// lockHolder returns " (pid N)" for the process /proc/locks says holds a
// flock on f, or "".
func lockHolder(f *os.File) string {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return ""
	}
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return ""
	}
	// 1: FLOCK  ADVISORY  WRITE 1234 00:1f:5678 0 EOF
	dev := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) >= 6 && f[1] == "FLOCK" && f[5] == dev {
			return " (pid " + f[4] + ")"
		}
	}
	return ""
}
