// Package ebpf is the node's BPF loader. The core holds the privilege:
// plugins hand it compiled objects (ELF bytes) and read their maps through
// it, and never touch bpf(2) themselves.
//
// A Loader (one per node) probes the kernel, mounts bpffs if needed and owns
// PinRoot/<node>. Load parses an object, refuses it whole unless every
// program's type, attach type and target is on the allow-list, sets its
// constants, loads it, attaches each program by its ELF section (tp_btf,
// fentry, fexit, raw_tp) and pins its maps and links under
// PinRoot/<node>/<owner>/<name>/. Close detaches and unpins.
//
// Without the privilege New fails with an error wrapping ErrUnprivileged
// that names what is missing; the node then runs without kernel signals.
package ebpf

import (
	"errors"
	"fmt"
	"log/slog"
	"path"
	"regexp"
	"strings"

	"github.com/cilium/ebpf"
)

// DefaultPinRoot is where a Loader pins unless Config.PinRoot says otherwise.
const DefaultPinRoot = "/sys/fs/bpf/celluster"

// bpffsMount is where bpffs is conventionally mounted; New mounts it there
// when PinRoot lies beneath it and nothing is mounted yet.
const bpffsMount = "/sys/fs/bpf"

// MaxReadEntries bounds how many entries ReadMap returns.
const MaxReadEntries = 65536

var (
	// ErrUnprivileged means the process may not load or attach tracing
	// programs (it needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN).
	ErrUnprivileged = errors.New("ebpf: not privileged")
	// ErrNotSupported means the kernel or OS lacks something the loader needs
	// (bpf(2), BTF, tracing programs, bpffs).
	ErrNotSupported = errors.New("ebpf: not supported")
	// ErrNotAllowed means an object holds a program the allow-list does not cover.
	ErrNotAllowed = errors.New("ebpf: program not allowed")
	// ErrExists means an object of that owner and name is already loaded.
	ErrExists = errors.New("ebpf: object already loaded")
	// ErrNotFound means no such map (or variable) in the object.
	ErrNotFound = errors.New("ebpf: not found")
	// ErrClosed means the Loader or Object was closed.
	ErrClosed = errors.New("ebpf: closed")
	// ErrInUse means another live process (a node of the same name) holds
	// the loader's pin directory.
	ErrInUse = errors.New("ebpf: pin directory in use")
	// ErrTruncated is returned by ReadMap, with the first MaxReadEntries
	// entries, when a map holds more.
	ErrTruncated = errors.New("ebpf: map read truncated")
)

// Config configures a Loader.
type Config struct {
	// Node names the directory under PinRoot this loader owns (required; one
	// path element of letters, digits, '.', '_' or '-').
	Node string
	// PinRoot is the bpffs directory under which nodes pin; DefaultPinRoot
	// when empty.
	PinRoot string
	// Logger gets load, attach and cleanup events; slog.Default() when nil.
	Logger *slog.Logger
	// Vars are set in every loaded object that declares a global of that
	// name, e.g. {"target_tgid": os.Getpid()}. Objects without it ignore it.
	// Integers are converted to the variable's size (and range-checked).
	Vars map[string]any
	// Allowed lists the program types, attach types and targets objects may
	// use; nil means DefaultAllowed(). An empty, non-nil slice allows nothing.
	Allowed []Allow
}

// Allow admits programs of one type and attach type whose target matches a
// glob (path.Match syntax) on the BTF function or tracepoint name.
type Allow struct {
	// Type is the program type, e.g. ebpf.Tracing.
	Type ebpf.ProgramType
	// AttachType is e.g. ebpf.AttachTraceRawTp (tp_btf/) or
	// ebpf.AttachTraceFEntry (fentry/); ebpf.AttachNone for raw_tp/.
	AttachType ebpf.AttachType
	// Target is a glob on the attach target: "tcp_*", "sched_switch",
	// "inet_csk_accept".
	Target string
}

// String renders the entry as the ELF section that would match it,
// e.g. "tp_btf/sched_*".
func (a Allow) String() string { return sectionPrefix(a.Type, a.AttachType) + "/" + a.Target }

// DefaultAllowed is exactly what the programs under bpf/ attach to: BTF
// tracepoints for TCP, packet drops, listener wake-ups and the scheduler.
// Nothing else: no XDP, tc, cgroup, kprobes, fentry/fexit or fmod_ret.
func DefaultAllowed() []Allow {
	tp := func(name string) Allow {
		return Allow{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, Target: name}
	}
	return []Allow{
		tp("tcp_retransmit_skb"),
		tp("tcp_send_reset"),
		tp("tcp_receive_reset"),
		tp("kfree_skb"),
		tp("sk_data_ready"),
		tp("sched_wakeup"),
		tp("sched_wakeup_new"),
		tp("sched_switch"),
	}
}

// ProgramInfo describes one loaded program.
type ProgramInfo struct {
	// Name is the program's name in the object (the C function).
	Name string
	// Type is the program type, e.g. "Tracing".
	Type string
	// Attach is where it is attached, as an ELF section: "tp_btf/sched_switch".
	Attach string
	// ID is the kernel's program ID (as bpftool shows it); 0 if unknown.
	ID uint32
}

// ObjectInfo describes one loaded object.
type ObjectInfo struct {
	// ID is "<owner>/<name>".
	ID string
	// Owner is who loaded it (a plugin's name), Name the object's name.
	Owner, Name string
	// PinPath is the directory its maps/ and links/ are pinned under.
	PinPath string
	// Maps lists its maps by name (compiler-made .rodata/.data/.bss aside).
	Maps []string
	// Programs describes its programs, sorted by name.
	Programs []ProgramInfo
}

// Status is the loader's state for `celctl status`.
type Status struct {
	// Node is the node's name, PinPath its directory (PinRoot/<node>).
	Node, PinPath string
	// Probe is what the kernel offered when the loader started.
	Probe Probe
	// Objects are the loaded objects, sorted by ID.
	Objects []ObjectInfo
}

// Entry is one map entry as raw bytes in the kernel's (host) byte order.
type Entry struct {
	// Key is the key's bytes.
	Key []byte
	// Values holds one value per possible CPU for per-CPU maps, else one.
	Values [][]byte
}

// attachable lists the program kinds the loader knows how to attach.
func attachable(t ebpf.ProgramType, a ebpf.AttachType) bool {
	switch t {
	case ebpf.Tracing:
		return a == ebpf.AttachTraceRawTp || a == ebpf.AttachTraceFEntry || a == ebpf.AttachTraceFExit
	case ebpf.RawTracepoint:
		return a == ebpf.AttachNone
	}
	return false
}

// sectionPrefix names a program kind the way ELF sections do.
func sectionPrefix(t ebpf.ProgramType, a ebpf.AttachType) string {
	switch {
	case t == ebpf.Tracing && a == ebpf.AttachTraceRawTp:
		return "tp_btf"
	case t == ebpf.Tracing && a == ebpf.AttachTraceFEntry:
		return "fentry"
	case t == ebpf.Tracing && a == ebpf.AttachTraceFExit:
		return "fexit"
	case t == ebpf.RawTracepoint:
		return "raw_tp"
	}
	return t.String() + "(" + a.String() + ")"
}

// validateAllowed rejects entries the loader could not attach and bad globs,
// so a wrong config fails at New rather than at the first Load.
func validateAllowed(allowed []Allow) error {
	for _, a := range allowed {
		if !attachable(a.Type, a.AttachType) {
			return fmt.Errorf("ebpf: allow-list entry %s: the loader cannot attach %s programs with attach type %s",
				a, a.Type, a.AttachType)
		}
		if a.Target == "" {
			return fmt.Errorf("ebpf: allow-list entry %s: empty target", a)
		}
		if _, err := path.Match(a.Target, ""); err != nil {
			return fmt.Errorf("ebpf: allow-list entry %s: %w", a, err)
		}
	}
	return nil
}

// checkAllowed returns why spec may not be loaded, naming every offending
// program, or nil.
func checkAllowed(allowed []Allow, spec *ebpf.CollectionSpec) error {
	var why []string
	for _, name := range sortedKeys(spec.Programs) {
		p := spec.Programs[name]
		if reason := programAllowed(allowed, p); reason != "" {
			why = append(why, fmt.Sprintf("program %q (section %q): %s", name, p.SectionName, reason))
		}
	}
	if len(why) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrNotAllowed, strings.Join(why, "; "))
}

func programAllowed(allowed []Allow, p *ebpf.ProgramSpec) string {
	var targets []string
	for _, a := range allowed {
		if a.Type != p.Type || a.AttachType != p.AttachType {
			continue
		}
		if ok, _ := path.Match(a.Target, p.AttachTo); ok {
			return ""
		}
		targets = append(targets, a.Target)
	}
	kind := sectionPrefix(p.Type, p.AttachType)
	if len(targets) == 0 {
		return fmt.Sprintf("%s programs (type %s, attach type %s) are not on the allow-list", kind, p.Type, p.AttachType)
	}
	return fmt.Sprintf("%s target %q is not on the allow-list (allowed: %s)", kind, p.AttachTo, strings.Join(targets, ", "))
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// checkName makes sure s is safe as one path element under PinRoot.
func checkName(what, s string) error {
	if !namePattern.MatchString(s) {
		return fmt.Errorf("ebpf: %s %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", what, s)
	}
	return nil
}
