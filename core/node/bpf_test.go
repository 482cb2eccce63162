package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	cilium "github.com/cilium/ebpf"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/celluster/celluster/core/ebpf"
	"github.com/celluster/celluster/core/hostapi"
	pb "github.com/celluster/celluster/pluginapi/v1"
)

// realLoader returns an eBPF loader for a node of its own, closed when the
// test ends. Without the privilege the test is skipped saying what is
// missing — except under CI=true, where the machine has it and the test
// must run.
func realLoader(t *testing.T) *ebpf.Loader {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	l, err := ebpf.New(ebpf.Config{
		Node:   "celtest-node-" + hex.EncodeToString(b),
		Logger: slog.New(slog.DiscardHandler),
		Vars:   map[string]any{"target_tgid": uint32(os.Getpid())},
	})
	if errors.Is(err, ebpf.ErrUnprivileged) || errors.Is(err, ebpf.ErrNotSupported) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and eBPF is unavailable: %v", err)
		}
		t.Skipf("needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN) and kernel BTF: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Loader.Close: %v", err)
		}
	})
	return l
}

// shippedObject reads one of the kernel plugin's BPF objects as built.
func shippedObject(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "plugins", "kernel", name+"_bpfel.o"))
	if err != nil {
		t.Fatalf("reading the kernel plugin's object (go generate ./plugins/kernel): %v", err)
	}
	return b
}

// The node's bpfHost, behind the real host service, with real objects
// loaded and attached in the kernel: a plugin reads, waits on and unloads
// only what it loaded itself. Another plugin asking for the object by its
// id gets NotFound, cannot unload it, and loading its own object of the
// same name leaves the first one's alone.
func TestBPFObjectsBelongToTheirPlugin(t *testing.T) {
	l := realLoader(t)
	b := &bpfHost{l: l}
	log := slog.New(slog.DiscardHandler)
	kernel := hostapi.New("kernel", nil, nil, nil, b, nil, log)
	other := hostapi.New("other", nil, nil, nil, b, nil, log)
	ctx := context.Background()

	loaded, err := kernel.LoadBPF(ctx, &pb.LoadBPFRequest{Name: "runq", Object: shippedObject(t, "runq")})
	if err != nil {
		t.Fatalf("LoadBPF: %v", err)
	}
	id := loaded.GetObjectId()
	if id != "kernel/runq" || !slices.Contains(loaded.GetMaps(), "cel_runq_node") || len(loaded.GetPrograms()) == 0 {
		t.Fatalf("LoadBPF = %v", loaded)
	}
	pinned := filepath.Join(l.Status().PinPath, "kernel", "runq")
	if _, err := os.Stat(pinned); err != nil {
		t.Fatalf("the object is not pinned at %s: %v", pinned, err)
	}
	if _, err := kernel.ReadBPFMap(ctx, &pb.ReadBPFMapRequest{ObjectId: id, Map: "cel_runq_node"}); err != nil {
		t.Fatalf("the owner reading its map: %v", err)
	}

	notFound := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.NotFound {
			t.Errorf("%s: %v, want NotFound", what, err)
		}
	}
	_, err = other.ReadBPFMap(ctx, &pb.ReadBPFMapRequest{ObjectId: id, Map: "cel_runq_node"})
	notFound("another plugin reading the map", err)
	_, err = other.WaitBPFEvents(ctx, &pb.WaitBPFEventsRequest{ObjectId: id, Map: "cel_runq_node", Timeout: durationpb.New(time.Millisecond)})
	notFound("another plugin waiting on the object", err)
	_, err = other.UnloadBPF(ctx, &pb.UnloadBPFRequest{ObjectId: id})
	notFound("another plugin unloading the object", err)

	// Its own object of the same name is its own.
	mine, err := other.LoadBPF(ctx, &pb.LoadBPFRequest{Name: "runq", Object: shippedObject(t, "runq")})
	if err != nil || mine.GetObjectId() != "other/runq" {
		t.Fatalf("another plugin loading its own runq: %v, %v", mine, err)
	}
	_, err = kernel.ReadBPFMap(ctx, &pb.ReadBPFMapRequest{ObjectId: "other/runq", Map: "cel_runq_node"})
	notFound("the first plugin reading the other's map", err)

	// The first plugin's object survived all of that, attached and pinned.
	if _, err := kernel.ReadBPFMap(ctx, &pb.ReadBPFMapRequest{ObjectId: id, Map: "cel_runq_node"}); err != nil {
		t.Fatalf("the owner's object after the other plugin's attempts: %v", err)
	}
	for _, p := range loaded.GetPrograms() {
		prog, err := ebpfProgram(p.GetId())
		if err != nil {
			t.Errorf("program %s (id %d) is no longer in the kernel: %v", p.GetName(), p.GetId(), err)
			continue
		}
		prog.Close()
	}

	if _, err := kernel.UnloadBPF(ctx, &pb.UnloadBPFRequest{ObjectId: id}); err != nil {
		t.Fatalf("the owner unloading: %v", err)
	}
	if _, err := os.Stat(pinned); !os.IsNotExist(err) {
		t.Errorf("the unloaded object's pins remain: %v", err)
	}
	if _, err := other.ReadBPFMap(ctx, &pb.ReadBPFMapRequest{ObjectId: "other/runq", Map: "cel_runq_node"}); err != nil {
		t.Errorf("the other plugin's object after the first one unloaded its own: %v", err)
	}
}

// ebpfProgram opens a program loaded in the kernel by its id.
func ebpfProgram(id uint32) (*cilium.Program, error) {
	return cilium.NewProgramFromID(cilium.ProgramID(id))
}
