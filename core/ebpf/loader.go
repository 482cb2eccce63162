package ebpf

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

// Loader loads, attaches and pins BPF objects for one node. It is safe for
// concurrent use.
type Loader struct {
	node    string
	dir     string   // PinRoot/<node>
	lock    *os.File // dir, open, holding an exclusive flock
	root    string   // PinRoot
	log     *slog.Logger
	vars    map[string]any
	allowed []Allow
	probe   Probe

	mu      sync.Mutex
	closed  bool
	loading sync.WaitGroup
	objects map[string]*Object // nil value: a load in progress
}

// New probes the kernel, mounts bpffs at /sys/fs/bpf if PinRoot lies under it
// and nothing is mounted, creates PinRoot/<node> and locks it (flock(2),
// held until Close or the process's exit). A directory locked by another
// live process — another node of the same name on this host — is refused
// with an error wrapping ErrInUse, and nothing in it is touched. Once the
// lock is held, whatever a previous, dead owner left there is removed
// (pinned links keep programs attached after a crash).
//
// Without the privilege it returns an error wrapping ErrUnprivileged that
// names what is missing; a kernel without bpf(2), BTF or tracing programs
// gives one wrapping ErrNotSupported.
func New(cfg Config) (*Loader, error) {
	if err := checkName("node", cfg.Node); err != nil {
		return nil, err
	}
	root := cfg.PinRoot
	if root == "" {
		root = DefaultPinRoot
	}
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("ebpf: PinRoot %q is not an absolute path", root)
	}
	root = filepath.Clean(root)
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	allowed := cfg.Allowed
	if allowed == nil {
		allowed = DefaultAllowed()
	}
	if err := validateAllowed(allowed); err != nil {
		return nil, err
	}

	if err := checkPrivilege(); err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("ebpf: raising RLIMIT_MEMLOCK: %w", err)
	}
	probe, pe := probeKernel()
	switch {
	case pe.bpf != nil && isPermission(pe.bpf):
		return nil, fmt.Errorf("%w: the kernel refused bpf(2): %w", ErrUnprivileged, pe.bpf)
	case pe.bpf != nil:
		return nil, fmt.Errorf("%w: bpf(2) unusable: %w", ErrNotSupported, pe.bpf)
	case pe.btf != nil:
		return nil, fmt.Errorf("%w: kernel BTF (/sys/kernel/btf/vmlinux) is needed for CO-RE, tp_btf and fentry: %w", ErrNotSupported, pe.btf)
	case pe.tracing != nil && isPermission(pe.tracing):
		return nil, fmt.Errorf("%w: the kernel refused a tracing program: %w", ErrUnprivileged, pe.tracing)
	case pe.tracing != nil:
		return nil, fmt.Errorf("%w: BTF tracepoint (tp_btf) programs: %w", ErrNotSupported, pe.tracing)
	}

	if (root == bpffsMount || strings.HasPrefix(root, bpffsMount+"/")) && probe.Bpffs == "" {
		if err := mountBpffs(); err != nil {
			return nil, err
		}
		probe.Bpffs = bpffsMount
		log.Info("ebpf: mounted bpffs", "path", bpffsMount)
	}

	dir := filepath.Join(root, cfg.Node)
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	// The lock is ours, so whoever pinned what is left here is dead: remove
	// it (pinned links keep programs attached after a crash).
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		log.Warn("ebpf: removing pins a previous process left", "path", dir)
		for _, e := range ents {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				lock.Close()
				return nil, fmt.Errorf("ebpf: removing stale pins under %s: %w", dir, err)
			}
		}
	}
	if ok, err := isBpffs(dir); err != nil || !ok {
		os.Remove(dir)
		lock.Close()
		removeIfEmpty(root)
		return nil, fmt.Errorf("%w: pin directory %s is not on a bpffs (mount one, or set PinRoot under %s)", ErrNotSupported, dir, bpffsMount)
	}

	return &Loader{
		node:    cfg.Node,
		dir:     dir,
		lock:    lock,
		root:    root,
		log:     log.With("node", cfg.Node),
		vars:    maps.Clone(cfg.Vars),
		allowed: slices.Clone(allowed),
		probe:   probe,
		objects: map[string]*Object{},
	}, nil
}

// Load parses object (a BPF ELF), refuses it whole unless every program is
// on the allow-list (the error names each offending program and why), sets
// Config.Vars and then vars (which must all exist in the object), loads it,
// attaches every program by its section and pins its maps and links under
// PinRoot/<node>/<owner>/<name>/{maps,links}/. Owner is who asked (a plugin
// name), name the object's name; together they must be unique.
func (l *Loader) Load(ctx context.Context, owner, name string, object []byte, vars map[string]any) (*Object, error) {
	if err := checkName("owner", owner); err != nil {
		return nil, err
	}
	if err := checkName("object name", name); err != nil {
		return nil, err
	}
	id := owner + "/" + name
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	if _, ok := l.objects[id]; ok {
		l.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrExists, id)
	}
	l.objects[id] = nil
	l.loading.Add(1)
	l.mu.Unlock()
	defer l.loading.Done()

	obj, err := l.load(ctx, owner, name, object, vars)

	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil && l.closed {
		obj.teardown()
		err = ErrClosed
	}
	if err != nil {
		delete(l.objects, id)
		return nil, err
	}
	l.objects[id] = obj
	l.log.Info("ebpf: loaded", "object", id, "programs", len(obj.progs), "maps", len(obj.maps))
	return obj, nil
}

func (l *Loader) load(ctx context.Context, owner, name string, object []byte, vars map[string]any) (*Object, error) {
	id := owner + "/" + name
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ebpf: load %s: %w", id, err)
	}
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		return nil, fmt.Errorf("ebpf: load %s: parsing the ELF: %w", id, err)
	}
	if len(spec.Programs) == 0 {
		return nil, fmt.Errorf("ebpf: load %s: the object has no programs", id)
	}
	if err := checkAllowed(l.allowed, spec); err != nil {
		return nil, fmt.Errorf("ebpf: load %s: %w", id, err)
	}
	for _, k := range sortedKeys(l.vars) {
		if v, ok := spec.Variables[k]; ok {
			if err := setVar(v, l.vars[k]); err != nil {
				return nil, fmt.Errorf("ebpf: load %s: Config.Vars: %w", id, err)
			}
		}
	}
	for _, k := range sortedKeys(vars) {
		v, ok := spec.Variables[k]
		if !ok {
			return nil, fmt.Errorf("ebpf: load %s: variable %q: %w in the object", id, k, ErrNotFound)
		}
		if err := setVar(v, vars[k]); err != nil {
			return nil, fmt.Errorf("ebpf: load %s: %w", id, err)
		}
	}

	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			l.log.Debug("ebpf: verifier log", "object", id, "log", fmt.Sprintf("%+v", ve))
		}
		return nil, fmt.Errorf("ebpf: load %s: %w", id, err)
	}
	o := &Object{
		loader: l,
		owner:  owner,
		name:   name,
		dir:    filepath.Join(l.dir, owner, name),
		coll:   coll,
		links:  map[string]link.Link{},
	}
	for n := range coll.Maps {
		if !hiddenMap(n) {
			o.maps = append(o.maps, n)
		}
	}
	slices.Sort(o.maps)

	fail := func(err error) (*Object, error) {
		o.teardown()
		return nil, fmt.Errorf("ebpf: load %s: %w", id, err)
	}
	for _, pn := range sortedKeys(spec.Programs) {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		ps, prog := spec.Programs[pn], coll.Programs[pn]
		lk, err := attach(prog, ps)
		if err != nil {
			return fail(fmt.Errorf("attaching program %q to %s/%s: %w", pn, sectionPrefix(ps.Type, ps.AttachType), ps.AttachTo, err))
		}
		o.links[pn] = lk
		info := ProgramInfo{Name: pn, Type: ps.Type.String(), Attach: sectionPrefix(ps.Type, ps.AttachType) + "/" + ps.AttachTo}
		if pi, err := prog.Info(); err == nil {
			if pid, ok := pi.ID(); ok {
				info.ID = uint32(pid)
			}
		}
		o.progs = append(o.progs, info)
	}

	for _, sub := range []string{"maps", "links"} {
		if err := os.MkdirAll(filepath.Join(o.dir, sub), 0o700); err != nil {
			return fail(fmt.Errorf("creating pin directory: %w", err))
		}
	}
	for _, mn := range o.maps {
		if err := coll.Maps[mn].Pin(filepath.Join(o.dir, "maps", mn)); err != nil {
			return fail(fmt.Errorf("pinning map %q: %w", mn, err))
		}
	}
	for _, pn := range sortedKeys(o.links) {
		if err := o.links[pn].Pin(filepath.Join(o.dir, "links", pn)); err != nil {
			return fail(fmt.Errorf("pinning link of %q: %w", pn, err))
		}
	}
	return o, nil
}

// Objects describes the loaded objects, sorted by ID.
func (l *Loader) Objects() []ObjectInfo {
	l.mu.Lock()
	objs := make([]*Object, 0, len(l.objects))
	for _, o := range l.objects {
		if o != nil {
			objs = append(objs, o)
		}
	}
	l.mu.Unlock()
	infos := make([]ObjectInfo, 0, len(objs))
	for _, o := range objs {
		infos = append(infos, o.Info())
	}
	slices.SortFunc(infos, func(a, b ObjectInfo) int { return cmp.Compare(a.ID, b.ID) })
	return infos
}

// Status is the probe taken at New and the loaded objects.
func (l *Loader) Status() Status {
	return Status{Node: l.node, PinPath: l.dir, Probe: l.probe, Objects: l.Objects()}
}

// Close closes every object (detach, unpin), waits for loads in progress,
// removes PinRoot/<node>, and PinRoot itself if nothing else is in it.
// Further Loads fail with ErrClosed. A bpffs New mounted stays mounted.
func (l *Loader) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	l.loading.Wait()

	l.mu.Lock()
	objs := slices.Collect(maps.Values(l.objects))
	l.objects = map[string]*Object{}
	l.mu.Unlock()

	var errs []error
	for _, o := range objs {
		if o != nil {
			errs = append(errs, o.teardown())
		}
	}
	if err := os.RemoveAll(l.dir); err != nil {
		errs = append(errs, fmt.Errorf("ebpf: removing %s: %w", l.dir, err))
	}
	// Unlocked only once removed: a waiting New sees the directory gone
	// and locks the one it creates.
	l.lock.Close()
	removeIfEmpty(l.root)
	return errors.Join(errs...)
}

// forget drops o from the loader's registry.
func (l *Loader) forget(o *Object) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.objects[o.ID()] == o {
		delete(l.objects, o.ID())
	}
}

// Object is one loaded, attached and pinned BPF object.
type Object struct {
	loader      *Loader
	owner, name string
	dir         string
	maps        []string
	progs       []ProgramInfo

	mu     sync.Mutex
	closed bool
	coll   *ebpf.Collection
	links  map[string]link.Link
	events eventReaders
}

// ID is "<owner>/<name>".
func (o *Object) ID() string { return o.owner + "/" + o.name }

// Maps lists the object's maps by name, sorted (the compiler's .rodata,
// .data and .bss sections excepted).
func (o *Object) Maps() []string { return slices.Clone(o.maps) }

// Programs describes the object's programs, sorted by name.
func (o *Object) Programs() []ProgramInfo { return slices.Clone(o.progs) }

// PinPath is the directory the object's maps/ and links/ are pinned under.
func (o *Object) PinPath() string { return o.dir }

// Info describes the object.
func (o *Object) Info() ObjectInfo {
	return ObjectInfo{ID: o.ID(), Owner: o.owner, Name: o.name, PinPath: o.dir, Maps: o.Maps(), Programs: o.Programs()}
}

// ReadMap returns every entry of the named map as raw bytes in host byte
// order, one value per possible CPU for per-CPU maps. It reads at most
// MaxReadEntries entries: a larger map returns those and ErrTruncated.
// Entries of a hash map that change during the read may be missed or seen
// twice.
func (o *Object) ReadMap(name string) ([]Entry, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil, fmt.Errorf("ebpf: %s: %w", o.ID(), ErrClosed)
	}
	m, ok := o.coll.Maps[name]
	if !ok || hiddenMap(name) {
		return nil, fmt.Errorf("ebpf: %s: map %q: %w", o.ID(), name, ErrNotFound)
	}
	switch m.Type() {
	case ebpf.RingBuf, ebpf.PerfEventArray, ebpf.ProgramArray,
		ebpf.TaskStorage, ebpf.SkStorage, ebpf.InodeStorage, ebpf.CgroupStorage:
		return nil, fmt.Errorf("ebpf: %s: map %q is a %s, which user space cannot list", o.ID(), name, m.Type())
	}
	perCPU := perCPUMap(m.Type())
	var entries []Entry
	it := m.Iterate()
	for {
		var key []byte
		var values [][]byte
		var more bool
		if perCPU {
			more = it.Next(&key, &values)
		} else {
			var value []byte
			more = it.Next(&key, &value)
			values = [][]byte{value}
		}
		if !more {
			break
		}
		if len(entries) == MaxReadEntries {
			return entries, fmt.Errorf("ebpf: %s: map %q: %w at %d entries", o.ID(), name, ErrTruncated, MaxReadEntries)
		}
		entries = append(entries, Entry{Key: key, Values: values})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("ebpf: %s: reading map %q: %w", o.ID(), name, err)
	}
	return entries, nil
}

// Close detaches the programs, unpins the maps and links and frees the
// object. Closing twice is a no-op.
func (o *Object) Close() error {
	err := o.teardown()
	o.loader.forget(o)
	return err
}

// teardown does Close's work without touching the loader's registry.
func (o *Object) teardown() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	o.closed = true
	o.closeEvents()
	var errs []error
	for _, pn := range sortedKeys(o.links) {
		lk := o.links[pn]
		if err := lk.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpinning link of %q: %w", pn, err))
		}
		if err := lk.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detaching %q: %w", pn, err))
		}
	}
	for _, mn := range o.maps {
		if err := o.coll.Maps[mn].Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpinning map %q: %w", mn, err))
		}
	}
	o.coll.Close()
	if err := os.RemoveAll(o.dir); err != nil {
		errs = append(errs, err)
	}
	removeIfEmpty(filepath.Dir(o.dir)) // the owner's directory
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ebpf: closing %s: %w", o.ID(), err)
	}
	o.loader.log.Info("ebpf: closed", "object", o.ID())
	return nil
}

// hiddenMap reports the maps the compiler makes for globals (.rodata, .bss,
// .data and their suffixed variants): not pinned, not listed, not readable.
func hiddenMap(name string) bool { return strings.HasPrefix(name, ".") }

func perCPUMap(t ebpf.MapType) bool {
	switch t {
	case ebpf.PerCPUHash, ebpf.PerCPUArray, ebpf.LRUCPUHash, ebpf.PerCPUCGroupStorage:
		return true
	}
	return false
}

// removeIfEmpty removes dir if it is an empty directory.
func removeIfEmpty(dir string) {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) == 0 {
		os.Remove(dir)
	}
}

// setVar sets a global variable, converting Go integers to the variable's
// size and signedness with a range check, so callers can pass an int
// (os.Getpid()).
func setVar(v *ebpf.VariableSpec, val any) error {
	signed := false
	if v.Type != nil {
		if i, ok := btf.UnderlyingType(v.Type.Type).(*btf.Int); ok {
			signed = i.Encoding&btf.Signed != 0
		}
	}
	sized, err := sizeInt(val, v.Size(), signed)
	if err != nil {
		return fmt.Errorf("variable %q: %w", v.Name, err)
	}
	if err := v.Set(sized); err != nil {
		return fmt.Errorf("variable %q: %w", v.Name, err)
	}
	return nil
}

// sizeInt converts a Go integer to the unsigned integer of size bytes that
// holds its two's complement, if it fits a (signed or unsigned) integer of
// that size. Anything else is returned as it is.
func sizeInt(val any, size uint32, signed bool) (any, error) {
	if size != 1 && size != 2 && size != 4 && size != 8 {
		return val, nil
	}
	rv := reflect.ValueOf(val)
	var (
		u   uint64 // the value's bits
		neg bool
		big bool // > MaxInt64
	)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i := rv.Int()
		neg, u = i < 0, uint64(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		u = rv.Uint()
		big = u > math.MaxInt64
	default:
		return val, nil
	}
	bits := size * 8
	var fits bool
	switch {
	case neg && !signed:
		fits = false
	case neg:
		fits = bits == 64 || int64(u) >= -(int64(1)<<(bits-1))
	case signed:
		fits = !big && (bits == 64 || u < uint64(1)<<(bits-1))
	default:
		fits = bits == 64 || u < uint64(1)<<bits
	}
	if !fits {
		kind := "unsigned"
		if signed {
			kind = "signed"
		}
		return nil, fmt.Errorf("%v does not fit a %d-byte %s integer", val, size, kind)
	}
	switch size {
	case 1:
		return uint8(u), nil
	case 2:
		return uint16(u), nil
	case 4:
		return uint32(u), nil
	}
	return u, nil
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
