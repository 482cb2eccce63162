package node

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSampleCellsPublishesSignals(t *testing.T) {
	dir := t.TempDir()
	n, err := start(context.Background(), Config{
		CellsDir: filepath.Join(dir, "cells"), DataDir: filepath.Join(dir, "data"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer n.eng.Close(context.Background())
	defer n.reg.Close(context.Background())
	src, err := os.ReadFile("../cell/testdata/v1.wasm")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.reg.Load(context.Background(), "app", src, "app.wasm"); err != nil {
		t.Fatal(err)
	}
	h := n.reg.Handler("app")
	for range 4 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/app", nil))
		if rec.Code != 200 {
			t.Fatalf("status %d", rec.Code)
		}
	}
	now := time.Now()
	n.sampleCells(now, 2*time.Second)
	got := map[string]float64{}
	for _, r := range n.sig.Latest() {
		if r.Labels["cell"] != "app" || r.Source != "core" {
			t.Fatalf("reading %+v not labelled cell=app from core", r)
		}
		got[r.Name] = r.Value
	}
	if got["rps"] != 2 || got["errors.rate"] != 0 || got["replicas"] != 1 || got["inflight"] != 0 {
		t.Fatalf("signals = %v", got)
	}
	if got["latency.p99"] <= 0 || got["latency.p50"] > got["latency.p99"] || got["idle"] < 0 {
		t.Fatalf("latency/idle signals = %v", got)
	}
	// The next tick covers a window with no requests.
	n.sampleCells(now.Add(time.Second), time.Second)
	for _, r := range n.sig.Latest("rps", "latency.p99") {
		if r.Value != 0 {
			t.Fatalf("idle tick: %s = %v", r.Name, r.Value)
		}
	}
}
