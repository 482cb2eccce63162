package plugin

import (
	"context"
	"errors"
	"net"
	"reflect"
	"sync"
	"testing"
	"time"

	pb "github.com/celluster/celluster/pluginapi/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// fakeHost records host calls; block, when set, makes AddJournalNote wait
// for its ctx.
type fakeHost struct {
	mu      sync.Mutex
	calls   []string
	samples []Sample
	weights []RouteWeight
	block   bool
	entered chan struct{}
}

func (f *fakeHost) rec(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeHost) ListCells(ctx context.Context) ([]CellState, error) {
	f.rec("ListCells")
	return []CellState{{Name: "hello", Replicas: 2, State: "ready"}}, nil
}

func (f *fakeHost) ReadSignals(ctx context.Context, names ...string) ([]Reading, error) {
	f.rec("ReadSignals")
	return []Reading{{Signal: names[0], Value: 4, Time: t0, Source: "core"}}, nil
}

func (f *fakeHost) SpawnReplicas(ctx context.Context, cell string, count int) (int, error) {
	f.rec("SpawnReplicas")
	if cell != "hello" {
		return 0, status.Errorf(codes.NotFound, "no cell %q", cell)
	}
	return 2 + count, nil
}

func (f *fakeHost) DrainReplicas(ctx context.Context, cell string, count int) (int, error) {
	f.rec("DrainReplicas")
	return 2 - count, nil
}

func (f *fakeHost) SetRouteWeights(ctx context.Context, cell string, weights []RouteWeight) error {
	f.rec("SetRouteWeights")
	f.mu.Lock()
	f.weights = weights
	f.mu.Unlock()
	return nil
}

func (f *fakeHost) EmitSignal(ctx context.Context, samples ...Sample) error {
	f.rec("EmitSignal")
	f.mu.Lock()
	f.samples = samples
	f.mu.Unlock()
	return errors.New("plain failure")
}

func (f *fakeHost) LoadBPF(ctx context.Context, name string, object []byte, constants map[string]uint64) (BPFObject, error) {
	f.rec("LoadBPF")
	return BPFObject{ID: name, Maps: []string{"m"}, Programs: []BPFProgram{{Name: "p", Type: "Tracing", Attach: "x", ID: 7}}}, nil
}

func (f *fakeHost) ReadBPFMap(ctx context.Context, objectID, mapName string) ([]BPFMapEntry, error) {
	f.rec("ReadBPFMap")
	return []BPFMapEntry{{Key: []byte{1}, Values: [][]byte{{2}, {3}}}}, nil
}

func (f *fakeHost) WaitBPFEvents(ctx context.Context, objectID, mapName string, timeout time.Duration) ([][]byte, error) {
	f.rec("WaitBPFEvents")
	return [][]byte{{byte(timeout / time.Millisecond)}}, nil
}

func (f *fakeHost) PlaceReplicas(ctx context.Context, cell, node string, count int, reason string) (string, int, error) {
	f.rec("PlaceReplicas")
	return node + "!", count, nil
}

func (f *fakeHost) ListNodes(ctx context.Context) ([]NodeState, error) {
	f.rec("ListNodes")
	return []NodeState{{Name: "a", State: "alive", Load: 3, Cells: []string{"hello"}, Self: true}}, nil
}

func (f *fakeHost) UnloadBPF(ctx context.Context, objectID string) error {
	f.rec("UnloadBPF")
	return nil
}

func (f *fakeHost) RetireVersion(ctx context.Context, cell, sha256 string) error {
	f.rec("RetireVersion")
	return nil
}

func (f *fakeHost) AddJournalNote(ctx context.Context, cell, note string) error {
	f.rec("AddJournalNote")
	if f.block {
		close(f.entered)
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// serveHost serves h on a loopback listener and returns a Server whose
// host connection is a client of it, as Configure would make it.
func serveHost(t *testing.T, h Host) (*Server, *grpc.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	pb.RegisterHostServer(gs, NewHostServer(h))
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(Info{Name: "t"}, verbFunc(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	srv.setHost(newHostConn(srv.life, conn))
	return srv, gs
}

// verbFunc is a one-verb plugin "v".
type verbFunc func(ctx context.Context, host Host, req VerbRequest) (VerbResult, error)

func (f verbFunc) Verbs() []string { return []string{"v"} }
func (f verbFunc) Execute(ctx context.Context, host Host, req VerbRequest) (VerbResult, error) {
	return f(ctx, host, req)
}

func TestHostNotConfigured(t *testing.T) {
	srv, err := NewServer(Info{Name: "t"}, verbFunc(nil))
	if err != nil {
		t.Fatal(err)
	}
	host := srv.Host()
	ctx := context.Background()
	errs := []error{
		func() error { _, err := host.ListCells(ctx); return err }(),
		func() error { _, err := host.ReadSignals(ctx); return err }(),
		func() error { _, err := host.SpawnReplicas(ctx, "c", 1); return err }(),
		func() error { _, err := host.DrainReplicas(ctx, "c", 1); return err }(),
		host.SetRouteWeights(ctx, "c", nil),
		host.EmitSignal(ctx),
		host.AddJournalNote(ctx, "c", "n"),
	}
	for i, err := range errs {
		if !errors.Is(err, ErrNoHost) {
			t.Errorf("call %d: %v, want ErrNoHost", i, err)
		}
	}
	if s := status.Code(toStatus(errs[0])); s != codes.FailedPrecondition {
		t.Errorf("ErrNoHost maps to %v", s)
	}
	srv.Close()
	if _, err := host.ListCells(ctx); !errors.Is(err, ErrHostGone) {
		t.Errorf("after Close: %v, want ErrHostGone", err)
	}
}

func TestHostCalls(t *testing.T) {
	f := &fakeHost{}
	srv, _ := serveHost(t, f)
	host := srv.Host()
	ctx := context.Background()

	cells, err := host.ListCells(ctx)
	if err != nil || !reflect.DeepEqual(cells, []CellState{{Name: "hello", Replicas: 2, State: "ready"}}) {
		t.Errorf("ListCells = %+v, %v", cells, err)
	}
	rs, err := host.ReadSignals(ctx, "host.cpu")
	if err != nil || !reflect.DeepEqual(rs, []Reading{{Signal: "host.cpu", Value: 4, Time: t0, Source: "core"}}) {
		t.Errorf("ReadSignals = %+v, %v", rs, err)
	}
	if n, err := host.SpawnReplicas(ctx, "hello", 3); n != 5 || err != nil {
		t.Errorf("SpawnReplicas = %d, %v", n, err)
	}
	if n, err := host.DrainReplicas(ctx, "hello", 1); n != 1 || err != nil {
		t.Errorf("DrainReplicas = %d, %v", n, err)
	}
	_, err = host.SpawnReplicas(ctx, "ghost", 1)
	if status.Code(err) != codes.NotFound || errors.Is(err, ErrHostGone) {
		t.Errorf("SpawnReplicas(ghost) = %v, want NotFound", err)
	}
	if _, err := host.SpawnReplicas(ctx, "hello", -1); err == nil {
		t.Errorf("SpawnReplicas(-1): no error")
	}
	w := []RouteWeight{{Target: "a", Weight: 90}, {Target: "b", Weight: 10}}
	if err := host.SetRouteWeights(ctx, "hello", w); err != nil {
		t.Errorf("SetRouteWeights: %v", err)
	}
	obj, err := host.LoadBPF(ctx, "tcp", []byte{0x7f, 'E', 'L', 'F'}, map[string]uint64{"k": 1})
	if err != nil || !reflect.DeepEqual(obj, BPFObject{ID: "tcp", Maps: []string{"m"}, Programs: []BPFProgram{{Name: "p", Type: "Tracing", Attach: "x", ID: 7}}}) {
		t.Errorf("LoadBPF = %+v, %v", obj, err)
	}
	es, err := host.ReadBPFMap(ctx, "tcp", "m")
	if err != nil || !reflect.DeepEqual(es, []BPFMapEntry{{Key: []byte{1}, Values: [][]byte{{2}, {3}}}}) {
		t.Errorf("ReadBPFMap = %+v, %v", es, err)
	}
	if recs, err := host.WaitBPFEvents(ctx, "tcp", "ev", 7*time.Millisecond); err != nil || len(recs) != 1 || recs[0][0] != 7 {
		t.Errorf("WaitBPFEvents = %v, %v", recs, err)
	}
	if node, n, err := host.PlaceReplicas(ctx, "hello", "b", 2, "test"); err != nil || node != "b!" || n != 2 {
		t.Errorf("PlaceReplicas = %q, %d, %v", node, n, err)
	}
	if ns, err := host.ListNodes(ctx); err != nil || len(ns) != 1 || ns[0].Name != "a" || ns[0].Load != 3 || !ns[0].Self || ns[0].Cells[0] != "hello" {
		t.Errorf("ListNodes = %+v, %v", ns, err)
	}
	if err := host.UnloadBPF(ctx, "tcp"); err != nil {
		t.Errorf("UnloadBPF: %v", err)
	}
	before := time.Now()
	err = host.EmitSignal(ctx, Sample{Signal: "x.y", Value: 1})
	if status.Code(err) != codes.Unknown || errors.Is(err, ErrHostGone) {
		t.Errorf("EmitSignal = %v, want Unknown", err)
	}
	if err := host.AddJournalNote(ctx, "hello", "note"); err != nil {
		t.Errorf("AddJournalNote: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !reflect.DeepEqual(f.weights, w) {
		t.Errorf("host got weights %+v", f.weights)
	}
	if len(f.samples) != 1 || f.samples[0].Time.Before(before.Add(-time.Second)) {
		t.Errorf("host got samples %+v; want one stamped now", f.samples)
	}
	if len(f.calls) != 14 {
		t.Errorf("host got calls %v", f.calls)
	}
}

func TestHostCallerContext(t *testing.T) {
	f := &fakeHost{block: true, entered: make(chan struct{})}
	srv, _ := serveHost(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := srv.Host().AddJournalNote(ctx, "hello", "n")
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrHostGone) {
		t.Errorf("AddJournalNote past its deadline = %v, want DeadlineExceeded", err)
	}
	// The connection is still usable.
	if _, err := srv.Host().ListCells(context.Background()); err != nil {
		t.Errorf("ListCells after a deadline: %v", err)
	}
}

// A call in flight when the plugin closes fails with ErrHostGone at once.
func TestHostGoneOnClose(t *testing.T) {
	f := &fakeHost{block: true, entered: make(chan struct{})}
	srv, _ := serveHost(t, f)
	done := make(chan error, 1)
	go func() { done <- srv.Host().AddJournalNote(context.Background(), "hello", "n") }()
	<-f.entered
	srv.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrHostGone) {
			t.Errorf("in-flight call after Close = %v, want ErrHostGone", err)
		}
		if code := status.Code(toStatus(err)); code != codes.Aborted {
			t.Errorf("ErrHostGone maps to %v", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("in-flight call hung after Close")
	}
}

// When the host goes away, calls in flight and later ones fail with
// ErrHostGone promptly.
func TestHostGoneWhenHostStops(t *testing.T) {
	f := &fakeHost{block: true, entered: make(chan struct{})}
	srv, gs := serveHost(t, f)
	done := make(chan error, 1)
	go func() { done <- srv.Host().AddJournalNote(context.Background(), "hello", "n") }()
	<-f.entered
	gs.Stop()
	select {
	case err := <-done:
		if !errors.Is(err, ErrHostGone) {
			t.Errorf("in-flight call after the host stopped = %v, want ErrHostGone", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("in-flight call hung after the host stopped")
	}
	for range 3 {
		start := time.Now()
		_, err := srv.Host().ListCells(context.Background())
		if !errors.Is(err, ErrHostGone) {
			t.Errorf("call after the host stopped = %v, want ErrHostGone", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("call after the host stopped took %v", d)
		}
	}
}

// A new Configure replaces the host connection; the Host handle handed
// out before follows it.
func TestHostReplaced(t *testing.T) {
	srv, _ := serveHost(t, &fakeHost{})
	host := srv.Host()
	old := srv.host
	f2 := &fakeHost{}
	srv2, _ := serveHost(t, f2)
	srv.setHost(newHostConn(srv.life, srv2.host.conn))
	if old.life.Err() == nil {
		t.Errorf("the replaced connection is still alive")
	}
	if _, err := host.ListCells(context.Background()); err != nil {
		t.Fatalf("ListCells on the new host: %v", err)
	}
	f2.mu.Lock()
	defer f2.mu.Unlock()
	if len(f2.calls) != 1 {
		t.Errorf("new host got %v", f2.calls)
	}
}
