//go:build !linux

package ebpf

import (
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

func attach(*ebpf.Program, *ebpf.ProgramSpec) (link.Link, error) {
	return nil, fmt.Errorf("%w: attaching BPF tracing programs needs Linux", ErrNotSupported)
}

func checkPrivilege() error {
	return fmt.Errorf("%w: BPF tracing programs need Linux", ErrNotSupported)
}

func isBpffs(string) (bool, error) { return false, nil }

func mountedBpffs() string { return "" }

func mountBpffs() error {
	return fmt.Errorf("%w: bpffs needs Linux", ErrNotSupported)
}

func isPermission(error) bool { return false }

func lockDir(string) (*os.File, error) {
	return nil, fmt.Errorf("%w: bpffs needs Linux", ErrNotSupported)
}
