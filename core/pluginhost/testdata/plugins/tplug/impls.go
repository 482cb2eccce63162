package tplug

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/celluster/celluster/pluginapi"
	pb "github.com/celluster/celluster/pluginapi/v1"
)

// Ticker is a telemetry source with one counter signal. Settings: every
// (duration between batches, default 10ms; 0 = as fast as possible), size
// (samples per batch, default 1), batches (stop after this many, then idle;
// 0 = unbounded), crash_after (exit 2 after this many batches; 0 = never).
type Ticker struct {
	pb.UnimplementedTelemetryServer
	Signal     string
	Every      time.Duration
	Size       int
	CrashAfter int
}

// Signals implements pb.TelemetryServer.
func (t *Ticker) Signals(context.Context, *pb.SignalsRequest) (*pb.SignalsResponse, error) {
	return &pb.SignalsResponse{Signals: []*pb.SignalDesc{{
		Name: t.Signal, Unit: "1", Kind: pb.SignalKind_SIGNAL_KIND_COUNTER, Help: "batches sent", Labels: []string{"cell"},
	}}}, nil
}

// Stream implements pb.TelemetryServer.
func (t *Ticker) Stream(_ *pb.StreamRequest, s pb.Telemetry_StreamServer) error {
	every := time.Duration(0)
	if v := Setting("every", ""); v != "" {
		every, _ = time.ParseDuration(v)
	} else {
		every = t.Every
	}
	size := IntSetting("size", max(t.Size, 1))
	limit := IntSetting("batches", 0)
	crash := IntSetting("crash_after", t.CrashAfter)
	Log.Info("stream opened", "every", every, "size", size)
	var tick <-chan time.Time
	if every > 0 {
		tk := time.NewTicker(every)
		defer tk.Stop()
		tick = tk.C
	}
	labels := map[string]string{"cell": "hello"}
	for n := 1; ; n++ {
		if tick != nil {
			select {
			case <-tick:
			case <-s.Context().Done():
				return nil
			}
		}
		if limit > 0 && n > limit {
			<-s.Context().Done()
			return nil
		}
		now := time.Now().UnixNano()
		b := &pb.SampleBatch{Samples: make([]*pb.Sample, size)}
		for i := range b.Samples {
			b.Samples[i] = &pb.Sample{Signal: t.Signal, Value: float64(n), TimeUnixNano: now, Labels: labels}
		}
		if err := s.Send(b); err != nil {
			return err
		}
		if crash > 0 && n >= crash {
			Log.Error("crashing on purpose", "after", n)
			os.Exit(2)
		}
	}
}

// Parser accepts .intent files; content containing "bad" gets an error
// diagnostic at line 2 column 5.
type Parser struct {
	pb.UnimplementedIntentParserServer
}

// Accepts implements pb.IntentParserServer.
func (Parser) Accepts(context.Context, *pb.AcceptsRequest) (*pb.AcceptsResponse, error) {
	return &pb.AcceptsResponse{Extensions: []string{".intent"}, MediaTypes: []string{"application/vnd.celluster.intent"}}, nil
}

// Parse implements pb.IntentParserServer.
func (Parser) Parse(_ context.Context, req *pb.ParseRequest) (*pb.ParseResponse, error) {
	if strings.Contains(string(req.GetContent()), "bad") {
		return &pb.ParseResponse{Diagnostics: []*pb.Diagnostic{{
			File: req.GetFilename(), Line: 2, Column: 5, Severity: pb.Severity_SEVERITY_ERROR,
			Message: `found "bad", expected a statement`, Hint: "remove it",
		}}}, nil
	}
	cell, _, _ := strings.Cut(strings.TrimSpace(string(req.GetContent())), "\n")
	return &pb.ParseResponse{Spec: &pb.IntentSpec{Cell: strings.TrimPrefix(cell, "cell ")}}, nil
}

// Verber implements verbs: poke (calls the host's ListCells and
// AddJournalNote), echo (answers at once; for benchmarks), block (notes
// "blocking" in the journal, then waits for the call to be canceled), crash
// (exits 3 mid-call).
type Verber struct {
	pb.UnimplementedVerbServer
	Names []string
}

// Verbs implements pb.VerbServer.
func (v *Verber) Verbs(context.Context, *pb.VerbsRequest) (*pb.VerbsResponse, error) {
	return &pb.VerbsResponse{Verbs: v.Names}, nil
}

// Execute implements pb.VerbServer.
func (v *Verber) Execute(ctx context.Context, req *pb.VerbRequest) (*pb.VerbResponse, error) {
	verb := req.GetVerb()
	if strings.HasPrefix(verb, "echo-") {
		verb = "echo"
	}
	switch verb {
	case "echo":
		return &pb.VerbResponse{Outcome: pb.Outcome_OUTCOME_DONE, Message: req.GetCell()}, nil
	case "poke":
		h := Host()
		cells, err := h.ListCells(ctx, &pb.ListCellsRequest{})
		if err != nil {
			return nil, err
		}
		if _, err := h.AddJournalNote(ctx, &pb.AddJournalNoteRequest{Cell: req.GetCell(), Note: "poked by " + pluginName(v)}); err != nil {
			return nil, err
		}
		return &pb.VerbResponse{Outcome: pb.Outcome_OUTCOME_DONE, Message: fmt.Sprintf("poked %s; the node has %d cells", req.GetCell(), len(cells.GetCells()))}, nil
	case "block":
		if _, err := Host().AddJournalNote(ctx, &pb.AddJournalNoteRequest{Cell: req.GetCell(), Note: "blocking"}); err != nil {
			return nil, err
		}
		<-ctx.Done()
		return nil, ctx.Err()
	case "crash":
		go func() {
			time.Sleep(20 * time.Millisecond)
			os.Exit(3)
		}()
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &pb.VerbResponse{Outcome: pb.Outcome_OUTCOME_REFUSED, Message: "unknown verb " + req.GetVerb()}, nil
}

func pluginName(*Verber) string { return "verber" }

// Kinds re-exported for the mains.
const (
	KindTelemetry = pluginapi.KindTelemetry
	KindIntent    = pluginapi.KindIntent
	KindVerb      = pluginapi.KindVerb
)
