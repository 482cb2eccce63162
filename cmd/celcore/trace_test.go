package main

import (
	"context"
	"encoding/hex"
	"net"
	"strings"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/celluster/celluster/core/testbuild"
)

// otlpReceiver is an OTLP trace receiver (the collector's gRPC service) on
// 127.0.0.1, keeping every span it is sent with the node that sent it.
type otlpReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	addr  string
	mu    sync.Mutex
	spans []recvSpan
}

type recvSpan struct {
	node string
	*tracepb.Span
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{addr: l.Addr().String()}
	s := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(s, r)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return r
}

// Export implements the OTLP trace service.
func (r *otlpReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		node := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.instance.id" {
				node = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				r.spans = append(r.spans, recvSpan{node: node, Span: sp})
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// trace returns the spans of the trace that has a span named name, or nil.
func (r *otlpReceiver) trace(name string) []recvSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	var id []byte
	for _, s := range r.spans {
		if s.GetName() == name {
			id = s.GetTraceId()
		}
	}
	if id == nil {
		return nil
	}
	var out []recvSpan
	for _, s := range r.spans {
		if string(s.GetTraceId()) == string(id) {
			out = append(out, s)
		}
	}
	return out
}

// TestTraceAcrossCellsAndNodes: a request to front on node ta, which
// calls hello served only on node tb, arrives at an OTLP receiver as one
// trace: ingress and front on ta, the cel.call and the fabric hop from
// ta, hello on tb, each the child of the one before.
func TestTraceAcrossCellsAndNodes(t *testing.T) {
	rcv := newOTLPReceiver(t)
	c := newCluster(t)
	otlp := []string{"--otlp", "grpc://" + rcv.addr, "--trace-sample", "1"}
	ta := c.start("ta", otlp...)
	tb := c.start("tb", otlp...)
	c.converged("ta", "tb")
	tb.writeIntent("hello", "cell hello\nallow from cell:front\n")
	tb.drop("hello", testbuild.Cell(t, "hello"))
	tb.waitStatus("/hello", 200)
	ta.writeIntent("front", "cell front\ngrant call cell:hello\n")
	ta.drop("front", testbuild.Cell(t, "front"))
	eventually(t, "front on ta to reach hello on tb", func() bool {
		r, err := ta.do("GET", "/front?name=traced", "")
		return err == nil && r.status == 200 && r.body == "front got: Hello, traced!\n"
	})
	if on := c.serving("hello", "ta", "tb"); len(on) != 1 || on[0] != "tb" {
		t.Fatalf("hello serves on %v, want tb only", on)
	}

	want := []struct{ name, node string }{
		{"GET /front", "ta"},
		{"cell front", "ta"},
		{"cel.call cell:hello", "ta"},
		{"fabric tb", "ta"},
		{"cell hello", "tb"},
	}
	var spans []recvSpan
	eventuallyState(t, "one trace with spans from both nodes", func() (bool, string) {
		spans = rcv.trace("cell hello")
		var names []string
		for _, s := range spans {
			names = append(names, s.node+":"+s.GetName())
		}
		for _, w := range want {
			if findSpan(spans, w.name, w.node) == nil {
				return false, strings.Join(names, ", ")
			}
		}
		return true, ""
	})
	// Each is the child of the one before.
	for i := 1; i < len(want); i++ {
		child, parent := findSpan(spans, want[i].name, want[i].node), findSpan(spans, want[i-1].name, want[i-1].node)
		if string(child.GetParentSpanId()) != string(parent.GetSpanId()) {
			t.Errorf("%s's parent is %s, want %s (%s)", want[i].name, hex.EncodeToString(child.GetParentSpanId()),
				hex.EncodeToString(parent.GetSpanId()), want[i-1].name)
		}
	}
	if root := findSpan(spans, "GET /front", "ta"); len(root.GetParentSpanId()) != 0 {
		t.Errorf("the ingress span has a parent: %x", root.GetParentSpanId())
	}
}

func findSpan(spans []recvSpan, name, node string) *recvSpan {
	for i := range spans {
		if spans[i].GetName() == name && spans[i].node == node {
			return &spans[i]
		}
	}
	return nil
}

// TestTraceOfADecision: a reflex decision (an idle cell decays) arrives
// as one trace: the rule firing, the verb, and the calls the verb plugin
// made to the host while carrying it out; its id is in the journal entry.
func TestTraceOfADecision(t *testing.T) {
	rcv := newOTLPReceiver(t)
	n := startNode(t, "", "--telemetry-interval", "100ms", "--otlp", "grpc://"+rcv.addr)
	n.writeIntent("hello", "cell hello\nkeep replicas 1..4\nkeep warm 2\ndecay after 1s idle\n")
	n.drop("hello", testbuild.Cell(t, "hello"))
	n.waitStatus("/hello", 200)
	var e *journalEntry
	eventually(t, "the idle decay to be journaled", func() bool {
		e = find(n.journal("hello"), func(e journalEntry) bool { return e.Verb == "decay" && e.Rule == "idle-decay" && e.Outcome == "done" })
		return e != nil
	})
	if len(e.TraceID) != 32 {
		t.Fatalf("the decay's journal entry has trace id %q", e.TraceID)
	}
	eventuallyState(t, "the decision's trace: rule, verb and host calls", func() (bool, string) {
		spans := rcv.trace("reflex idle-decay")
		var names []string
		var hostCall bool
		for _, s := range spans {
			names = append(names, s.GetName())
			hostCall = hostCall || strings.HasPrefix(s.GetName(), "host /")
		}
		ok := len(spans) > 0 && hex.EncodeToString(spans[0].GetTraceId()) == e.TraceID &&
			findSpan(spans, "verb decay", n.name) != nil && hostCall
		return ok, strings.Join(names, ", ")
	})
	out, err := n.celctl("why", "hello")
	if err != nil || !strings.Contains(out, "trace "+e.TraceID) {
		t.Fatalf("celctl why hello does not give the trace id %s: %v\n%s", e.TraceID, err, out)
	}
}
