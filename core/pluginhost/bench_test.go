package pluginhost

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"

	"github.com/celluster/celluster/core/pluginhost/testdata/plugins/tplug"
	pb "github.com/celluster/celluster/pluginapi/v1"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func reportP50(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(ds[len(ds)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// BenchmarkVerbCall compares one verb call to the same implementation
// (tplug.Verber, verb "echo") as a Go function and through the plugin
// boundary (Manager.Execute: routing, gRPC over go-plugin with mTLS, a real
// process).
func BenchmarkVerbCall(b *testing.B) {
	req := &pb.VerbRequest{Verb: "echo", Cell: "hello", Trigger: &pb.Trigger{Manual: true}}
	ctx := context.Background()

	b.Run("peer=in-process", func(b *testing.B) {
		v := &tplug.Verber{Names: []string{"echo"}}
		ds := make([]time.Duration, 0, 1<<16)
		for b.Loop() {
			t0 := time.Now()
			resp, err := v.Execute(ctx, req)
			ds = append(ds, time.Since(t0))
			if err != nil || resp.GetOutcome() != pb.Outcome_OUTCOME_DONE {
				b.Fatal(resp, err)
			}
		}
		reportP50(b, ds)
	})

	// One plugin process serves both plugin sub-benchmarks.
	var m *Manager
	plugin := func(b *testing.B) *Manager {
		if m == nil {
			dir := b.TempDir()
			install(b, dir, "verber", "verber")
			m = New(Config{Dir: dir, Logger: quietLogger(), StartTimeout: 30 * time.Second, HealthInterval: time.Second})
			if err := m.Start(ctx); err != nil {
				b.Fatal(err)
			}
			if s := statusOf(b, m, "verber"); s.State != StateRunning {
				b.Fatalf("%+v", s)
			}
			for range 200 { // warm up the connection
				if _, _, err := m.Execute(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		}
		return m
	}
	defer func() {
		if m != nil {
			m.Close()
		}
	}()

	b.Run("peer=plugin", func(b *testing.B) {
		m := plugin(b)
		ds := make([]time.Duration, 0, 1<<16)
		for b.Loop() {
			t0 := time.Now()
			resp, _, err := m.Execute(ctx, req)
			ds = append(ds, time.Since(t0))
			if err != nil || resp.GetOutcome() != pb.Outcome_OUTCOME_DONE {
				b.Fatal(resp, err)
			}
		}
		reportP50(b, ds)
	})

	// The floor: go-plugin's Ping (a gRPC health check) over the same mTLS
	// connection to the same process, with no routing and no plugin code.
	b.Run("peer=plugin-ping-floor", func(b *testing.B) {
		m := plugin(b)
		m.mu.Lock()
		p := m.plugins[0]
		m.mu.Unlock()
		p.mu.Lock()
		in := p.inst
		p.mu.Unlock()
		ds := make([]time.Duration, 0, 1<<16)
		for b.Loop() {
			t0 := time.Now()
			if err := in.proto.Ping(); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(t0))
		}
		reportP50(b, ds)
	})
}

// BenchmarkTelemetryStream measures samples per second streamed by a
// telemetry source sending batches of 1000 samples as fast as it can into
// a Subscribe-style callback. One op is one batch. The timed span runs from
// the moment the first batch is let through to the arrival of the last of
// b.N more: the plugin's start is outside it.
//
//   - peer=in-process: the same source (tplug.Ticker, as the firehose
//     plugin runs it) called as a Go function, its batches handed straight
//     to the callback: the cost of making the samples.
//   - peer=plugin: the firehose plugin process started by a Manager, the
//     batches crossing go-plugin's gRPC stream (mTLS) to Manager.Subscribe.
func BenchmarkTelemetryStream(b *testing.B) {
	b.Run("peer=in-process", func(b *testing.B) {
		src := &tplug.Ticker{Signal: "test.firehose", Size: 1000}
		tplug.Log = hclog.NewNullLogger() // in process, its log would go to the benchmark's output
		var got int
		stream := &sinkStream{ctx: context.Background(), send: func(batch *pb.SampleBatch) error {
			if len(batch.GetSamples()) != 1000 {
				b.Fatalf("batch of %d", len(batch.GetSamples()))
			}
			got++
			if got == b.N {
				return errEnough
			}
			return nil
		}}
		b.ResetTimer()
		if err := src.Stream(&pb.StreamRequest{}, stream); err != errEnough {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)*1000/b.Elapsed().Seconds(), "samples/s")
	})

	b.Run("peer=plugin", func(b *testing.B) {
		dir := b.TempDir()
		install(b, dir, "firehose", "firehose")
		n := int64(b.N)
		var got atomic.Int64
		first := make(chan struct{}) // the first batch arrived
		release := make(chan struct{})
		done := make(chan struct{})
		m := New(Config{
			Dir:            dir,
			Logger:         quietLogger(),
			StartTimeout:   30 * time.Second,
			HealthInterval: time.Second,
			Settings:       map[string]map[string]string{"firehose": {"every": "0", "size": "1000", "batches": strconv.FormatInt(n+1, 10)}},
		})
		m.Subscribe(func(_ string, batch *pb.SampleBatch) {
			if len(batch.GetSamples()) != 1000 {
				b.Errorf("batch of %d", len(batch.GetSamples()))
			}
			switch got.Add(1) {
			case 1:
				// Hold the stream until the clock runs.
				close(first)
				<-release
			case n + 1:
				close(done)
			}
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer func() {
			cancel()
			m.Close()
		}()
		b.StopTimer()
		if err := m.Start(ctx); err != nil {
			b.Fatal(err)
		}
		select {
		case <-first:
		case <-time.After(time.Minute):
			b.Fatal("no first batch within a minute of the plugin's start")
		}
		b.ResetTimer()
		b.StartTimer()
		close(release)
		select {
		case <-done:
		case <-time.After(5 * time.Minute):
			b.Fatalf("got %d of %d batches", got.Load(), n+1)
		}
		b.StopTimer()
		b.ReportMetric(float64(n)*1000/b.Elapsed().Seconds(), "samples/s")
	})
}

var errEnough = errors.New("enough batches")

// sinkStream is the server side of a telemetry stream in process: Send
// hands each batch to send.
type sinkStream struct {
	grpc.ServerStream
	ctx  context.Context
	send func(*pb.SampleBatch) error
}

func (s *sinkStream) Send(b *pb.SampleBatch) error { return s.send(b) }
func (s *sinkStream) Context() context.Context     { return s.ctx }
