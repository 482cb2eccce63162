package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"

	"github.com/celluster/celluster/core/admin"
	"github.com/celluster/celluster/core/ebpf"
	"github.com/celluster/celluster/core/hostapi"
	"github.com/celluster/celluster/core/metrics"
)

// startBPF starts the eBPF loader. Without the privilege (or BTF) it logs
// once and the node runs on without kernel signals.
func (n *Node) startBPF() {
	l, err := ebpf.New(ebpf.Config{
		Node:   n.cfg.Name,
		Logger: n.log,
		Vars:   map[string]any{"target_tgid": uint32(os.Getpid())},
	})
	if err != nil {
		n.bpfErr = err.Error()
		n.log.Warn("eBPF unavailable: kernel signals are off; everything else works", "err", err)
		return
	}
	n.bpf = &bpfHost{l: l}
}

// stopBPF detaches and unpins everything the node loaded.
func (n *Node) stopBPF() {
	if n.bpf == nil {
		return
	}
	if err := n.bpf.l.Close(); err != nil {
		n.log.Warn("eBPF cleanup", "err", err)
	}
}

// bpfHost adapts the loader to the host service: a plugin loading a name
// again replaces its object.
type bpfHost struct {
	l  *ebpf.Loader
	mu sync.Mutex
	// objects by id ("<owner>/<name>").
	objs map[string]*ebpf.Object
}

func (n *Node) bpfHost() hostapi.BPF {
	if n.bpf == nil {
		return nil
	}
	return n.bpf
}

func bpfErr(err error) error {
	switch {
	case errors.Is(err, ebpf.ErrNotAllowed):
		return fmt.Errorf("%w: %w", hostapi.ErrBPFNotAllowed, err)
	case errors.Is(err, ebpf.ErrUnprivileged), errors.Is(err, ebpf.ErrNotSupported), errors.Is(err, ebpf.ErrClosed):
		return fmt.Errorf("%w: %w", hostapi.ErrBPFUnavailable, err)
	case errors.Is(err, ebpf.ErrNotFound):
		return fmt.Errorf("%w: %w", hostapi.ErrBPFNotFound, err)
	}
	return err
}

// Load implements hostapi.BPF.
func (b *bpfHost) Load(ctx context.Context, owner, name string, object []byte, constants map[string]uint64) (hostapi.BPFObject, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.objs == nil {
		b.objs = map[string]*ebpf.Object{}
	}
	id := owner + "/" + name
	if old := b.objs[id]; old != nil {
		_ = old.Close()
		delete(b.objs, id)
	}
	vars := make(map[string]any, len(constants))
	for k, v := range constants {
		vars[k] = v
	}
	o, err := b.l.Load(ctx, owner, name, object, vars)
	if err != nil {
		return hostapi.BPFObject{}, bpfErr(err)
	}
	b.objs[o.ID()] = o
	out := hostapi.BPFObject{ID: o.ID(), Maps: o.Maps()}
	for _, p := range o.Programs() {
		out.Programs = append(out.Programs, hostapi.BPFProgram{Name: p.Name, Type: p.Type, Attach: p.Attach, ID: p.ID})
	}
	return out, nil
}

func (b *bpfHost) object(owner, id string) (*ebpf.Object, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	o := b.objs[id]
	if o == nil || o.Info().Owner != owner {
		return nil, fmt.Errorf("%w: object %q of plugin %s", hostapi.ErrBPFNotFound, id, owner)
	}
	return o, nil
}

// ReadMap implements hostapi.BPF.
func (b *bpfHost) ReadMap(owner, id, mapName string) ([]hostapi.BPFEntry, error) {
	o, err := b.object(owner, id)
	if err != nil {
		return nil, err
	}
	es, err := o.ReadMap(mapName)
	if err != nil && !errors.Is(err, ebpf.ErrTruncated) {
		return nil, bpfErr(err)
	}
	out := make([]hostapi.BPFEntry, len(es))
	for i, e := range es {
		out[i] = hostapi.BPFEntry{Key: e.Key, Values: e.Values}
	}
	return out, nil
}

// WaitEvents implements hostapi.BPF.
func (b *bpfHost) WaitEvents(ctx context.Context, owner, id, mapName string) ([][]byte, error) {
	o, err := b.object(owner, id)
	if err != nil {
		return nil, err
	}
	recs, err := o.ReadEvents(ctx, mapName, 0)
	if err != nil {
		return nil, bpfErr(err)
	}
	return recs, nil
}

// Unload implements hostapi.BPF.
func (b *bpfHost) Unload(owner, id string) error {
	o, err := b.object(owner, id)
	if err != nil {
		return err
	}
	b.mu.Lock()
	delete(b.objs, id)
	b.mu.Unlock()
	return bpfErr(o.Close())
}

// bpfInfo reports the eBPF programs for metrics.
func (n *Node) bpfInfo() metrics.BPFInfo {
	if n.bpf == nil {
		return metrics.BPFInfo{}
	}
	info := metrics.BPFInfo{Available: true}
	for _, o := range n.bpf.l.Objects() {
		for _, p := range o.Programs {
			info.Programs = append(info.Programs, metrics.BPFProgram{Object: o.ID, Name: p.Name, Loaded: true})
		}
	}
	return info
}

// bpfStatus reports the loader for `celctl status`.
func (n *Node) bpfStatus() admin.BPFStatus {
	if n.bpf == nil {
		p := ebpf.ProbeKernel()
		st := admin.BPFStatus{Error: n.bpfErr, Syscall: p.BPFSyscall, BTF: p.BTF}
		return st
	}
	st := n.bpf.l.Status()
	out := admin.BPFStatus{Available: true, Error: st.Probe.Err, Syscall: st.Probe.BPFSyscall, BTF: st.Probe.BTF, PinPath: st.PinPath}
	for _, m := range []struct {
		set map[string]bool
		dst *[]string
	}{{st.Probe.ProgramTypes, &out.ProgramTypes}, {st.Probe.MapTypes, &out.MapTypes}, {st.Probe.AttachPoints, &out.AttachPoints}} {
		for k, ok := range m.set {
			if ok {
				*m.dst = append(*m.dst, k)
			}
		}
		sort.Strings(*m.dst)
	}
	for _, o := range st.Objects {
		for _, p := range o.Programs {
			out.Programs = append(out.Programs, admin.BPFProgram{Object: o.ID, Name: p.Name, Type: p.Type, Attach: p.Attach, ID: p.ID})
		}
	}
	return out
}
