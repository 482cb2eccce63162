package hostapi

import (
	"context"
	"fmt"
	"google.golang.org/protobuf/types/known/durationpb"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/signals"
	"github.com/celluster/celluster/core/wasm"
	pb "github.com/celluster/celluster/pluginapi/v1"
)

func TestHostService(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, err := wasm.NewEngine(ctx, wasm.Config{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close(ctx)
	reg := cell.NewRegistry(eng, log, cell.Limits{Concurrency: 4})
	defer reg.Close(ctx)
	src, err := os.ReadFile("../cell/testdata/v1.wasm")
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Load(ctx, "app", src, "app.wasm"); err != nil {
		t.Fatal(err)
	}
	store := signals.NewStore()
	notes := &noteRecorder{}
	h := New("probe", reg, store, notes, nil, nil, log)

	cells, err := h.ListCells(ctx, &pb.ListCellsRequest{})
	if err != nil || len(cells.GetCells()) != 1 || cells.GetCells()[0].GetName() != "app" || cells.GetCells()[0].GetReplicas() != 1 {
		t.Fatalf("ListCells = %v, %v", cells, err)
	}
	r, err := h.SpawnReplicas(ctx, &pb.SpawnReplicasRequest{Cell: "app", Count: 2})
	if err != nil || r.GetReplicas() != 3 {
		t.Fatalf("SpawnReplicas = %v, %v", r, err)
	}
	r, err = h.DrainReplicas(ctx, &pb.DrainReplicasRequest{Cell: "app", Count: 1})
	if err != nil || r.GetReplicas() != 2 {
		t.Fatalf("DrainReplicas = %v, %v", r, err)
	}
	if _, err := h.SpawnReplicas(ctx, &pb.SpawnReplicasRequest{Cell: "nope", Count: 1}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown cell: %v", err)
	}
	// Weighted routing: a second version staged beside the first.
	v2, err := os.ReadFile("../cell/testdata/v2.wasm")
	if err != nil {
		t.Fatal(err)
	}
	sha2, staged, err := reg.Lookup("app").Stage(ctx, v2, "app.wasm")
	if err != nil || !staged {
		t.Fatalf("Stage = %v, %v", staged, err)
	}
	sha1 := reg.Lookup("app").Info().SHA256
	if _, err := h.SetRouteWeights(ctx, &pb.SetRouteWeightsRequest{Cell: "app", Weights: []*pb.RouteWeight{{Target: sha2[:12], Weight: 100}, {Target: sha1, Weight: 0}}}); err != nil {
		t.Fatalf("SetRouteWeights: %v", err)
	}
	cells, _ = h.ListCells(ctx, &pb.ListCellsRequest{})
	if vs := cells.GetCells()[0].GetVersions(); len(vs) != 2 || vs[0].GetSha256() != sha2 || vs[0].GetWeight() != 100 {
		t.Fatalf("versions after SetRouteWeights = %v", vs)
	}
	if _, err := h.SetRouteWeights(ctx, &pb.SetRouteWeightsRequest{Cell: "app", Weights: []*pb.RouteWeight{{Target: "deadbeefdeadbeef", Weight: 1}}}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown version: %v", err)
	}
	if _, err := h.SetRouteWeights(ctx, &pb.SetRouteWeightsRequest{Cell: "app", Weights: []*pb.RouteWeight{{Target: sha2, Weight: 0}}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("all-zero weights: %v", err)
	}
	if _, err := h.RetireVersion(ctx, &pb.RetireVersionRequest{Cell: "app", Sha256: sha1[:8]}); err != nil {
		t.Fatalf("RetireVersion: %v", err)
	}
	if _, err := h.RetireVersion(ctx, &pb.RetireVersionRequest{Cell: "app", Sha256: sha2}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("retiring the last version: %v", err)
	}
	if _, err := h.EmitSignal(ctx, &pb.EmitSignalRequest{Samples: []*pb.Sample{{Signal: "probe.value", Value: 42, Labels: map[string]string{"cell": "app"}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.EmitSignal(ctx, &pb.EmitSignalRequest{Samples: []*pb.Sample{{Value: 1}}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("nameless sample: %v", err)
	}
	rs, err := h.ReadSignals(ctx, &pb.ReadSignalsRequest{Names: []string{"probe.value"}})
	if err != nil || len(rs.GetReadings()) != 1 || rs.GetReadings()[0].GetValue() != 42 || rs.GetReadings()[0].GetSource() != "probe" || rs.GetReadings()[0].GetTimeUnixNano() == 0 {
		t.Fatalf("ReadSignals = %v, %v", rs, err)
	}
	if _, err := h.AddJournalNote(ctx, &pb.AddJournalNoteRequest{Cell: "app", Note: "hi"}); err != nil {
		t.Fatal(err)
	}
	if notes.got != "probe/app/hi" {
		t.Fatalf("journal note = %q, want probe/app/hi", notes.got)
	}
}

type noteRecorder struct{ got string }

func (r *noteRecorder) Note(_ context.Context, plugin, cell, note string) error {
	r.got = plugin + "/" + cell + "/" + note
	return nil
}

// fakeBPF keeps objects per owner, as the node's loader does. It checks only
// how the host service maps BPF errors to gRPC codes; the node's real
// ownership check is tested with objects loaded in the kernel
// (core/node TestBPFObjectsBelongToTheirPlugin).
type fakeBPF struct{ objs map[string]string }

func (f *fakeBPF) Load(_ context.Context, owner, name string, object []byte, _ map[string]uint64) (BPFObject, error) {
	if string(object) == "kprobe" {
		return BPFObject{}, fmt.Errorf("program p: %w: kprobe", ErrBPFNotAllowed)
	}
	id := owner + "/" + name
	f.objs[id] = owner
	return BPFObject{ID: id, Maps: []string{"m"}}, nil
}

func (f *fakeBPF) ReadMap(owner, id, m string) ([]BPFEntry, error) {
	if f.objs[id] != owner || m != "m" {
		return nil, fmt.Errorf("%s/%s: %w", id, m, ErrBPFNotFound)
	}
	return []BPFEntry{{Key: []byte{1}, Values: [][]byte{{2}}}}, nil
}

func (f *fakeBPF) WaitEvents(ctx context.Context, owner, id, m string) ([][]byte, error) {
	if f.objs[id] != owner {
		return nil, fmt.Errorf("%s: %w", id, ErrBPFNotFound)
	}
	<-ctx.Done() // no events: the host's cap on the wait ends it
	return nil, nil
}

func (f *fakeBPF) Unload(owner, id string) error {
	if f.objs[id] != owner {
		return fmt.Errorf("%s: %w", id, ErrBPFNotFound)
	}
	delete(f.objs, id)
	return nil
}

func TestBPFCalls(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	none := New("kernel", nil, nil, nil, nil, nil, log)
	if _, err := none.LoadBPF(ctx, &pb.LoadBPFRequest{Name: "tcp", Object: []byte{1}}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("LoadBPF without a loader: %v", err)
	}
	f := &fakeBPF{objs: map[string]string{}}
	k, other := New("kernel", nil, nil, nil, f, nil, log), New("other", nil, nil, nil, f, nil, log)
	resp, err := k.LoadBPF(ctx, &pb.LoadBPFRequest{Name: "tcp", Object: []byte("elf")})
	if err != nil || resp.GetObjectId() != "kernel/tcp" {
		t.Fatalf("LoadBPF = %v, %v", resp, err)
	}
	if _, err := k.LoadBPF(ctx, &pb.LoadBPFRequest{Name: "bad", Object: []byte("kprobe")}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a disallowed program: %v", err)
	}
	if _, err := k.LoadBPF(ctx, &pb.LoadBPFRequest{Name: "", Object: []byte("elf")}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no name: %v", err)
	}
	m, err := k.ReadBPFMap(ctx, &pb.ReadBPFMapRequest{ObjectId: "kernel/tcp", Map: "m"})
	if err != nil || len(m.GetEntries()) != 1 {
		t.Fatalf("ReadBPFMap = %v, %v", m, err)
	}
	if _, err := other.ReadBPFMap(ctx, &pb.ReadBPFMapRequest{ObjectId: "kernel/tcp", Map: "m"}); status.Code(err) != codes.NotFound {
		t.Fatalf("another plugin's object: %v", err)
	}
	if _, err := other.UnloadBPF(ctx, &pb.UnloadBPFRequest{ObjectId: "kernel/tcp"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unloading another plugin's object: %v", err)
	}
	ev, err := k.WaitBPFEvents(ctx, &pb.WaitBPFEventsRequest{ObjectId: "kernel/tcp", Map: "ev", Timeout: durationpb.New(time.Millisecond)})
	if err != nil || len(ev.GetRecords()) != 0 {
		t.Fatalf("WaitBPFEvents with nothing to wait for = %v, %v", ev, err)
	}
	if _, err := k.UnloadBPF(ctx, &pb.UnloadBPFRequest{ObjectId: "kernel/tcp"}); err != nil {
		t.Fatal(err)
	}
}
