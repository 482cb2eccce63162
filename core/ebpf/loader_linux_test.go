package ebpf

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/celluster/celluster/core/ebpf/internal/testobj"
)

var shipped = []string{"listen", "runq", "tcp"}

// The default allow-list is exactly what the shipped programs use: every
// program is covered and every entry is used.
func TestDefaultAllowedIsExactlyWhatTheProgramsNeed(t *testing.T) {
	used := map[Allow]bool{}
	for _, name := range shipped {
		spec, err := ebpf.LoadCollectionSpec(filepath.Join(objectsDir, name+"_bpfel.o"))
		if err != nil {
			t.Fatal(err)
		}
		if err := checkAllowed(DefaultAllowed(), spec); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		for pn, p := range spec.Programs {
			if !strings.HasPrefix(pn, "cel_") || len(pn) > 15 {
				t.Errorf("%s: program %q: want a cel_ name of at most 15 characters (bpftool shows 15)", name, pn)
			}
			used[Allow{Type: p.Type, AttachType: p.AttachType, Target: p.AttachTo}] = true
		}
	}
	for _, a := range DefaultAllowed() {
		if !used[a] {
			t.Errorf("DefaultAllowed has %s, which no program uses", a)
		}
	}
}

func TestProbeKernel(t *testing.T) {
	requirePrivilege(t)
	p := ProbeKernel()
	t.Logf("probe: %+v", p)
	if !p.BPFSyscall || !p.BTF || !p.ProgramTypes["Tracing"] || !p.ProgramTypes["RawTracepoint"] {
		t.Fatalf("probe = %+v, want bpf(2), BTF and Tracing programs on this machine", p)
	}
	for _, mt := range []string{"PerCPUHash", "PerCPUArray", "TaskStorage", "RingBuf"} {
		if !p.MapTypes[mt] {
			t.Errorf("map type %s not available: %s", mt, p.Err)
		}
	}
	for _, a := range DefaultAllowed() {
		if !p.AttachPoints[a.String()] {
			t.Errorf("attach point %s not found: %s", a, p.Err)
		}
	}
}

// Every shipped object loads and attaches; its maps and links are pinned
// under PinRoot/<node>/<owner>/<name>/ while loaded and gone after Close;
// bpftool lists the programs by their cel_ names.
func TestLoadAttachPinAndClose(t *testing.T) {
	l := newLoader(t, Config{Vars: map[string]any{"target_tgid": os.Getpid()}})
	var objs []*Object
	for _, name := range shipped {
		objs = append(objs, load(t, l, name, nil))
	}

	ids := map[uint32]string{}
	for _, o := range objs {
		if o.PinPath() != filepath.Join(DefaultPinRoot, l.node, "celtest", strings.TrimPrefix(o.ID(), "celtest/")) {
			t.Errorf("%s: PinPath %s", o.ID(), o.PinPath())
		}
		if len(o.Maps()) == 0 || len(o.Programs()) == 0 {
			t.Fatalf("%s: maps %v programs %v", o.ID(), o.Maps(), o.Programs())
		}
		for _, m := range o.Maps() {
			if _, err := os.Stat(filepath.Join(o.PinPath(), "maps", m)); err != nil {
				t.Errorf("%s: map %s not pinned: %v", o.ID(), m, err)
			}
		}
		for _, p := range o.Programs() {
			if _, err := os.Stat(filepath.Join(o.PinPath(), "links", p.Name)); err != nil {
				t.Errorf("%s: link of %s not pinned: %v", o.ID(), p.Name, err)
			}
			if p.ID == 0 || p.Type != "Tracing" || !strings.Contains(p.Attach, "/") {
				t.Errorf("%s: program info %+v", o.ID(), p)
			}
			ids[p.ID] = p.Name
		}
	}

	st := l.Status()
	if len(st.Objects) != len(shipped) || st.Objects[0].ID != "celtest/listen" || !st.Probe.BTF {
		t.Errorf("Status = %+v", st)
	}

	if _, err := exec.LookPath("bpftool"); err != nil {
		missing(t, "needs bpftool on PATH")
	} else {
		listed := bpftoolPrograms(t)
		for id, name := range ids {
			if listed[id] != name {
				t.Errorf("bpftool prog show: id %d is %q, want %q", id, listed[id], name)
			}
		}
	}

	// Closing one object detaches and unpins it; the others stay.
	if err := objs[0].Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(objs[0].PinPath()); !os.IsNotExist(err) {
		t.Errorf("%s: pins left after Close: %v", objs[0].ID(), err)
	}
	if got := len(l.Objects()); got != len(shipped)-1 {
		t.Errorf("%d objects after closing one, want %d", got, len(shipped)-1)
	}
	if _, err := objs[0].ReadMap(objs[0].Maps()[0]); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadMap after Close: %v, want ErrClosed", err)
	}
	if err := objs[0].Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := exec.LookPath("bpftool"); err == nil {
		// The kernel frees a detached program after an RCU grace period.
		eventually(t, 10*time.Second, "programs still loaded after Close", func() bool {
			listed := bpftoolPrograms(t)
			for _, p := range objs[0].Programs() {
				if _, ok := listed[p.ID]; ok {
					return false
				}
			}
			return true
		})
	}

	// Loader.Close (in cleanup) removes the node's directory; check the
	// objects are gone from the kernel too.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, o := range objs[1:] {
		if _, err := os.Stat(o.PinPath()); !os.IsNotExist(err) {
			t.Errorf("%s: pins left after Loader.Close: %v", o.ID(), err)
		}
	}
	if _, err := l.Load(context.Background(), "celtest", "tcp", readObject(t, "tcp"), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Load after Close: %v, want ErrClosed", err)
	}
}

// bpftoolPrograms maps program ID to name as `bpftool prog show` lists them.
func bpftoolPrograms(t *testing.T) map[uint32]string {
	t.Helper()
	var progs []struct {
		ID   uint32 `json:"id"`
		Name string `json:"name"`
	}
	if err := json.Unmarshal([]byte(run(t, "", "bpftool", "-j", "prog", "show")), &progs); err != nil {
		t.Fatalf("bpftool -j prog show: %v", err)
	}
	m := map[uint32]string{}
	for _, p := range progs {
		m[p.ID] = p.Name
	}
	return m
}

// An object with programs off the allow-list is refused whole, the error
// naming each offending program and why; nothing is loaded or pinned.
func TestAllowListRefusesWholeObject(t *testing.T) {
	l := newLoader(t, Config{})
	_, err := l.Load(context.Background(), "celtest", "forbidden", testobj.Forbidden(), nil)
	if !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("Load = %v, want ErrNotAllowed", err)
	}
	for _, want := range []string{
		`"cel_kprobe"`, "Kprobe",
		`"cel_xdp"`, "XDP",
		`"cel_fentry_open"`, "fentry programs",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "cel_ok_switch") {
		t.Errorf("error %q blames the allowed program", err)
	}
	if len(l.Objects()) != 0 {
		t.Errorf("objects after a refused load: %v", l.Objects())
	}
	if _, err := os.Stat(filepath.Join(l.dir, "celtest")); !os.IsNotExist(err) {
		t.Errorf("pins after a refused load: %v", err)
	}

	// A target glob lets a program in; the bench object's sys_enter is not.
	_, err = l.Load(context.Background(), "celtest", "bench", testobj.Bench(), nil)
	if !errors.Is(err, ErrNotAllowed) || !strings.Contains(err.Error(), `tp_btf target "sys_enter"`) {
		t.Errorf("bench object: %v, want ErrNotAllowed naming sys_enter", err)
	}
}

func TestAllowListGlob(t *testing.T) {
	spec, err := ebpf.LoadCollectionSpec(filepath.Join(objectsDir, "tcp_bpfel.o"))
	if err != nil {
		t.Fatal(err)
	}
	glob := []Allow{{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, Target: "tcp_*"}}
	if err := checkAllowed(glob, spec); err != nil {
		t.Errorf("tcp_* refused the tcp object: %v", err)
	}
	narrow := []Allow{{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, Target: "tcp_*_reset"}}
	err = checkAllowed(narrow, spec)
	if !errors.Is(err, ErrNotAllowed) || !strings.Contains(err.Error(), "cel_tcp_retrans") || strings.Contains(err.Error(), "cel_tcp_rst") {
		t.Errorf("tcp_*_reset: %v, want only cel_tcp_retrans refused", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Node: ""},
		{Node: "../x"},
		{Node: "a/b"},
		{Node: "n", PinRoot: "relative"},
		{Node: "n", Allowed: []Allow{{Type: ebpf.XDP, Target: "*"}}},
		{Node: "n", Allowed: []Allow{{Type: ebpf.Kprobe, Target: "tcp_*"}}},
		{Node: "n", Allowed: []Allow{{Type: ebpf.Tracing, AttachType: ebpf.AttachModifyReturn, Target: "x"}}},
		{Node: "n", Allowed: []Allow{{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFEntry, Target: "[x"}}},
		{Node: "n", Allowed: []Allow{{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFEntry}}},
	} {
		if l, err := New(cfg); err == nil {
			l.Close()
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	l := newLoader(t, Config{})
	ctx := context.Background()
	tcp := readObject(t, "tcp")

	if _, err := l.Load(ctx, "celtest", "junk", []byte("not an ELF"), nil); err == nil {
		t.Error("garbage loaded")
	}
	if _, err := l.Load(ctx, "../x", "tcp", tcp, nil); err == nil {
		t.Error("owner ../x accepted")
	}
	if _, err := l.Load(ctx, "celtest", "tcp", tcp, map[string]any{"nope": 1}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown variable: %v, want ErrNotFound", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := l.Load(cancelled, "celtest", "tcp", tcp, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}

	o, err := l.Load(ctx, "celtest", "tcp", tcp, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Load(ctx, "celtest", "tcp", tcp, nil); !errors.Is(err, ErrExists) {
		t.Errorf("second load under the same name: %v, want ErrExists", err)
	}
	if _, err := o.ReadMap("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadMap(nope): %v, want ErrNotFound", err)
	}
	if _, err := o.ReadMap(".bss"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadMap(.bss): %v, want ErrNotFound", err)
	}
	if !slices.Equal(o.Maps(), []string{"cel_tcp_counts", "cel_tcp_events"}) {
		t.Errorf("Maps = %v", o.Maps())
	}
	if _, err := o.ReadMap("cel_tcp_events"); err == nil || !strings.Contains(err.Error(), "RingBuf") {
		t.Errorf("ReadMap of a ring buffer: %v, want an error naming RingBuf (use ReadEvents)", err)
	}

	runq := readObject(t, "runq")
	ro, err := l.Load(ctx, "celtest", "runq-list", runq, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ro.ReadMap("cel_runq_start"); err == nil || !strings.Contains(err.Error(), "TaskStorage") {
		t.Errorf("ReadMap of a task storage map: %v, want an error naming TaskStorage", err)
	}
	if _, err := l.Load(ctx, "celtest", "runq", runq, map[string]any{"target_tgid": -1}); err == nil || !strings.Contains(err.Error(), "does not fit a 4-byte unsigned") {
		t.Errorf("target_tgid -1: %v, want a range error", err)
	}
	if _, err := l.Load(ctx, "celtest", "runq", runq, map[string]any{"target_tgid": int64(1) << 40}); err == nil {
		t.Error("target_tgid 1<<40 accepted")
	}
}

func TestSizeInt(t *testing.T) {
	for _, c := range []struct {
		in     any
		size   uint32
		signed bool
		want   any
		ok     bool
	}{
		{42, 4, false, uint32(42), true},
		{uint8(7), 8, false, uint64(7), true},
		{-1, 4, false, nil, false},
		{-1, 8, true, uint64(1<<64 - 1), true},
		{-128, 1, true, uint8(0x80), true},
		{-129, 1, true, nil, false},
		{128, 1, true, nil, false},
		{255, 1, false, uint8(255), true},
		{256, 1, false, nil, false},
		{65535, 2, false, uint16(65535), true},
		{uint64(1 << 63), 8, true, nil, false},
		{uint64(1 << 63), 8, false, uint64(1 << 63), true},
		{int64(1) << 40, 4, false, nil, false},
		{"text", 4, false, "text", true},
		{7, 3, false, 7, true},
	} {
		got, err := sizeInt(c.in, c.size, c.signed)
		if (err == nil) != c.ok || (c.ok && got != c.want) {
			t.Errorf("sizeInt(%v, %d, %v) = %v (%T), %v; want %v (%T)", c.in, c.size, c.signed, got, got, err, c.want, c.want)
		}
	}
}

// A second loader for the same node name — another node of that name on
// this host — is refused while the first lives, with an error naming the
// directory and the holder; the first one's pins and programs are untouched.
func TestSecondLiveOwnerRefused(t *testing.T) {
	node := "celtest-" + randomID(t)
	first := newLoader(t, Config{Node: node})
	o := load(t, first, "runq", nil)

	second, err := New(Config{Node: node, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err == nil {
		second.Close()
		t.Fatal("a second loader for a live node's directory was accepted")
	}
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), first.dir) || !strings.Contains(err.Error(), fmt.Sprintf("(pid %d)", os.Getpid())) {
		t.Fatalf("New: %v; want ErrInUse naming %s and pid %d", err, first.dir, os.Getpid())
	}
	t.Logf("New: %v", err)
	for _, m := range o.Maps() {
		if _, err := os.Stat(filepath.Join(o.PinPath(), "maps", m)); err != nil {
			t.Errorf("the live node's map %s lost its pin: %v", m, err)
		}
	}
	for _, p := range o.Programs() {
		if _, err := os.Stat(filepath.Join(o.PinPath(), "links", p.Name)); err != nil {
			t.Errorf("the live node's link %s lost its pin: %v", p.Name, err)
		}
	}
	if _, err := o.ReadMap(o.Maps()[0]); err != nil {
		t.Errorf("the live node's map: %v", err)
	}
}

const pinOwnerChild = "CELTEST_EBPF_PIN_OWNER"

// What a node killed outright left pinned — programs still attached through
// their pinned links — is removed by the next loader of that name, which
// gets the lock because the old owner is dead.
func TestStalePinsRemovedWhenOwnerDead(t *testing.T) {
	if node := os.Getenv(pinOwnerChild); node != "" {
		l, err := New(Config{Node: node, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		o, err := l.Load(context.Background(), "celtest", "runq", readObject(t, "runq"), nil)
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		fmt.Println("READY", o.Programs()[0].ID)
		select {} // until killed
	}
	requirePrivilege(t)
	node := "celtest-" + randomID(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^TestStalePinsRemovedWhenOwnerDead$", "-test.count=1")
	cmd.Env = append(os.Environ(), pinOwnerChild+"="+node)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	var id uint32
	if _, serr := fmt.Sscanf(line, "READY %d", &id); err != nil || serr != nil {
		t.Fatalf("the first owner said %q (%v)", line, err)
	}
	stale := filepath.Join(DefaultPinRoot, node, "celtest", "runq")
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("the first owner pinned nothing: %v", err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("the dead owner's pins vanished by themselves (%v): this test would prove nothing", err)
	}
	if p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id)); err != nil {
		t.Fatalf("the dead owner's program %d is not attached through its pinned link: %v", id, err)
	} else {
		p.Close()
	}

	l := newLoader(t, Config{Node: node})
	if _, err := os.Stat(filepath.Join(l.dir, "celtest")); !os.IsNotExist(err) {
		t.Fatalf("stale pins still there: %v", err)
	}
	if _, err := os.Stat(l.dir); err != nil {
		t.Fatalf("node directory not kept: %v", err)
	}
	// The program goes with its last link, an RCU grace period later.
	eventually(t, 10*time.Second, "the dead owner's program to be unloaded", func() bool {
		p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
		if err == nil {
			p.Close()
		}
		return err != nil
	})
}

// Loads, reads, closes and status calls from many goroutines, then
// Loader.Close while readers are running: no races (go test -race), and
// the readers end with ErrClosed or at the stop.
func TestConcurrentUse(t *testing.T) {
	l := newLoader(t, Config{Vars: map[string]any{"target_tgid": os.Getpid()}})
	runq := load(t, l, "runq", nil)
	ctx := context.Background()

	var readers, loaders sync.WaitGroup
	stop := make(chan struct{})
	readErr := make(chan error, 4)
	for range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				if _, err := runq.ReadMap("cel_runq_node"); err != nil {
					readErr <- err
					return
				}
				select {
				case <-stop:
					readErr <- nil
					return
				default:
				}
			}
		}()
	}
	for i := range 4 {
		loaders.Add(1)
		go func() {
			defer loaders.Done()
			for j := range 3 {
				name := fmt.Sprintf("tcp-%d-%d", i, j)
				o, err := l.Load(ctx, "celtest", name, readObject(t, "tcp"), nil)
				if err != nil {
					t.Errorf("Load %s: %v", name, err)
					return
				}
				_ = l.Status()
				if _, err := o.ReadMap("cel_tcp_counts"); err != nil {
					t.Errorf("ReadMap: %v", err)
				}
				if err := o.Close(); err != nil {
					t.Errorf("Close %s: %v", name, err)
				}
			}
		}()
	}
	loaders.Wait()
	if err := l.Close(); err != nil { // readers still reading
		t.Fatal(err)
	}
	close(stop)
	readers.Wait()
	for range 4 {
		if err := <-readErr; err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("reader: %v, want nil or ErrClosed", err)
		}
	}
	if got := l.Objects(); len(got) != 0 {
		t.Errorf("objects after Close: %v", got)
	}
}
