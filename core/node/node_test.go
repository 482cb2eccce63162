package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/celluster/celluster/core/admin/adminpb"
)

// TestRunInProcess runs a whole node in process, under the race detector:
// a module dropped into the cells directory is served while the admin API
// is read concurrently; replacing it upgrades, removing it drains it, and
// cancelling the context stops the node cleanly.
func TestRunInProcess(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{
		CellsDir: filepath.Join(dir, "cells"), DataDir: filepath.Join(dir, "data"),
		HTTPAddr: "127.0.0.1:0", Settle: 50 * time.Millisecond, TelemetryInterval: 20 * time.Millisecond,
		Name:   fmt.Sprintf("nodetest-%d", os.Getpid()),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	readyc := make(chan *Node, 1)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, func(n *Node) { readyc <- n }) }()
	var n *Node
	select {
	case n = <-readyc:
	case err := <-done:
		t.Fatalf("node stopped before ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("node not ready")
	}
	base := "http://" + n.HTTPAddr()

	drop := func(name, src string) {
		t.Helper()
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(cfg.CellsDir, ".tmp")
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(cfg.CellsDir, name+".wasm")); err != nil {
			t.Fatal(err)
		}
	}
	body := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor := func(path string, code int, want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			c, b := body(path)
			if c == code && (want == "" || b == want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s = %d %q, want %d %q", path, c, b, code, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	conn, err := grpc.NewClient("unix://"+filepath.Join(cfg.DataDir, "admin.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	adminc := adminpb.NewAdminClient(conn)

	// Read the admin API continuously while the node changes.
	stopReads := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stopReads:
				return
			default:
			}
			_, _ = adminc.ListCells(context.Background(), &adminpb.ListCellsRequest{})
			_, _ = adminc.ListSignals(context.Background(), &adminpb.ListSignalsRequest{})
			_, _ = adminc.ListPlugins(context.Background(), &adminpb.ListPluginsRequest{})
			_, _ = adminc.Status(context.Background(), &adminpb.StatusRequest{})
		}
	}()

	drop("app", "../cell/testdata/v1.wasm")
	waitFor("/app", 200, "v1")
	drop("app", "../cell/testdata/v2.wasm")
	waitFor("/app", 200, "v2")
	st, err := adminc.Status(context.Background(), &adminpb.StatusRequest{})
	if err != nil || st.GetCells() != 1 || st.GetServing() != 1 {
		t.Fatalf("status = %v, %v", st, err)
	}
	if err := os.Remove(filepath.Join(cfg.CellsDir, "app.wasm")); err != nil {
		t.Fatal(err)
	}
	waitFor("/app", 404, "")
	close(stopReads)
	wg.Wait()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("node did not stop")
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "admin.sock")); !os.IsNotExist(err) {
		t.Fatalf("admin socket left behind: %v", err)
	}
}
