package ebpf

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
)

// Probe is what the kernel offers this process, for status and diagnosis.
type Probe struct {
	// BPFSyscall is true when bpf(2) works for this process (a map could be
	// created).
	BPFSyscall bool
	// BTF is true when the kernel's BTF (/sys/kernel/btf/vmlinux) loads: CO-RE,
	// tp_btf and fentry/fexit need it.
	BTF bool
	// ProgramTypes says which program kinds the loader attaches can be
	// loaded: "Tracing" (a tp_btf program), "Tracing/fentry" (a
	// trampoline: fentry, fexit; some hardened kernels refuse these) and
	// "RawTracepoint".
	ProgramTypes map[string]bool
	// MapTypes says which map types the programs use can be created, keyed by
	// type name ("PerCPUHash", "PerCPUArray", "TaskStorage", "Hash", "Array",
	// "RingBuf").
	MapTypes map[string]bool
	// AttachPoints says which DefaultAllowed targets exist in the kernel's
	// BTF, keyed by section ("tp_btf/sched_switch", "fentry/tcp_conn_request").
	AttachPoints map[string]bool
	// Bpffs is where bpffs is mounted ("/sys/fs/bpf"), or "" when it is not.
	Bpffs string
	// Err says why something above is missing; "" when nothing is.
	Err string
}

var probedMapTypes = []ebpf.MapType{ebpf.Hash, ebpf.Array, ebpf.PerCPUHash, ebpf.PerCPUArray, ebpf.TaskStorage, ebpf.RingBuf}

// probedPrograms are minimal programs, one per kind the loader attaches.
// (features.HaveProgramType(ebpf.Tracing) tries an fentry, which says
// nothing about tp_btf on kernels that refuse trampolines.)
var probedPrograms = []struct {
	key  string
	spec ebpf.ProgramSpec
}{
	{"Tracing", ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: "sched_switch"}},
	{"Tracing/fentry", ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFEntry, AttachTo: "bpf_fentry_test1"}},
	{"RawTracepoint", ebpf.ProgramSpec{Type: ebpf.RawTracepoint, AttachTo: "sched_switch"}},
}

// loadProbe loads (and closes) a program that returns 0.
func loadProbe(spec ebpf.ProgramSpec) error {
	spec.License = "GPL"
	spec.Instructions = asm.Instructions{asm.LoadImm(asm.R0, 0, asm.DWord), asm.Return()}
	prog, err := ebpf.NewProgramWithOptions(&spec, ebpf.ProgramOptions{LogDisabled: true})
	if err != nil {
		return err
	}
	return prog.Close()
}

// probeErrors keeps the errors behind a Probe so New can classify them.
type probeErrors struct {
	bpf, btf, tracing error
}

// ProbeKernel reports what the kernel offers this process. It never fails:
// whatever is missing is false, and Err says why.
func ProbeKernel() Probe {
	p, _ := probeKernel()
	return p
}

func probeKernel() (Probe, probeErrors) {
	p := Probe{
		ProgramTypes: map[string]bool{},
		MapTypes:     map[string]bool{},
		AttachPoints: map[string]bool{},
	}
	var pe probeErrors
	var why []string
	note := func(what string, err error) { why = append(why, what+": "+err.Error()) }

	if err := features.HaveMapType(ebpf.Array); err != nil {
		pe.bpf = err
		note("bpf(2)", err)
	} else {
		p.BPFSyscall = true
	}

	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		pe.btf = err
		note("kernel BTF", err)
	} else {
		p.BTF = true
	}

	if p.BPFSyscall {
		for _, pp := range probedPrograms {
			err := loadProbe(pp.spec)
			p.ProgramTypes[pp.key] = err == nil
			if err != nil {
				note("program "+pp.key, err)
				if pp.key == "Tracing" {
					pe.tracing = err
				}
			}
		}
		for _, mt := range probedMapTypes {
			err := features.HaveMapType(mt)
			p.MapTypes[mt.String()] = err == nil
			if err != nil {
				note("map type "+mt.String(), err)
			}
		}
	}

	if kernel != nil {
		for _, a := range DefaultAllowed() {
			ok, err := attachPointExists(kernel, a)
			p.AttachPoints[a.String()] = ok
			if err != nil {
				note("attach point "+a.String(), err)
			}
		}
	}

	p.Bpffs = mountedBpffs()
	if p.Bpffs == "" {
		why = append(why, "bpffs: not mounted at "+bpffsMount)
	}
	p.Err = strings.Join(why, "; ")
	return p, pe
}

// attachPointExists looks a's target up in the kernel's BTF: a tp_btf target
// has a btf_trace_<name> typedef, an fentry/fexit target a function.
func attachPointExists(kernel *btf.Spec, a Allow) (bool, error) {
	var name string
	switch {
	case a.Type == ebpf.Tracing && a.AttachType == ebpf.AttachTraceRawTp:
		var td *btf.Typedef
		name = "btf_trace_" + a.Target
		if err := kernel.TypeByName(name, &td); err != nil {
			return notFound(name, err)
		}
	case a.Type == ebpf.Tracing:
		var fn *btf.Func
		name = a.Target
		if err := kernel.TypeByName(name, &fn); err != nil {
			return notFound(name, err)
		}
	default:
		return false, fmt.Errorf("no BTF check for %s", a)
	}
	return true, nil
}

func notFound(name string, err error) (bool, error) {
	if errors.Is(err, btf.ErrNotFound) {
		return false, fmt.Errorf("%s not in kernel BTF", name)
	}
	return false, err
}
