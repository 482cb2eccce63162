package node

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/celluster/celluster/core/identity"
)

// runNode runs a node in process on the fabric, joined to seed if given,
// until the test ends or stop is called.
func runNode(t *testing.T, ca, name, seed string) (n *Node, stop func()) {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{
		CellsDir: filepath.Join(dir, "cells"), DataDir: filepath.Join(dir, "data"),
		HTTPAddr: "127.0.0.1:0", Settle: 50 * time.Millisecond, TelemetryInterval: 50 * time.Millisecond,
		Name: name, FabricAddr: "127.0.0.1:0", CADir: ca, TrustDomain: "test.local",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if seed != "" {
		cfg.Join = []string{seed}
	}
	ctx, cancel := context.WithCancel(context.Background())
	readyc := make(chan *Node, 1)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, func(n *Node) { readyc <- n }) }()
	select {
	case n = <-readyc:
	case err := <-done:
		t.Fatalf("node %s stopped before ready: %v", name, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("node %s not ready", name)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("node %s did not stop", name)
		}
	}
	t.Cleanup(stop)
	return n, stop
}

// newCA makes a CA for a test's nodes.
func newCA(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	if _, err := identity.InitCA(dir, spiffeid.RequireTrustDomainFromString("test.local"), identity.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMeshInProcess runs three nodes of one fabric in process, under the
// race detector: a cell on A is served through C (forwarded over the
// fabric, whose frame names the cell), its module reaches B and C by hash,
// and when A leaves exactly one of B and C takes it over.
func TestMeshInProcess(t *testing.T) {
	ca := newCA(t)
	a, stopA := runNode(t, ca, "ipa", "")
	b, _ := runNode(t, ca, "ipb", a.FabricAddr())
	c, _ := runNode(t, ca, "ipc", a.FabricAddr())
	waitFor(t, "three alive members", func() bool {
		alive := 0
		for _, mb := range c.Members() {
			if mb.State == "alive" {
				alive++
			}
		}
		return alive == 3
	})
	mod, err := os.ReadFile(filepath.Join("..", "cell", "testdata", "v1.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(a.cfg.CellsDir, ".tmp")
	if err := os.WriteFile(tmp, mod, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(a.cfg.CellsDir, "tiny.wasm")); err != nil {
		t.Fatal(err)
	}
	get := func(n *Node) (int, string, string) {
		resp, err := http.Get("http://" + n.HTTPAddr() + "/tiny")
		if err != nil {
			return 0, err.Error(), ""
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), resp.Header.Get(ServedByHeader)
	}
	waitFor(t, "tiny served through C by A", func() bool {
		st, body, by := get(c)
		return st == 200 && body == "v1" && by == "ipa"
	})
	sha := a.reg.Lookup("tiny").Info().SHA256
	waitFor(t, "B and C to keep tiny's module", func() bool {
		for _, n := range []*Node{b, c} {
			if _, err := os.Stat(filepath.Join(n.cfg.DataDir, "modules", sha+".wasm")); err != nil {
				return false
			}
		}
		return true
	})
	stopA()
	waitFor(t, "tiny taken over by B or C", func() bool {
		return b.reg.Lookup("tiny") != nil || c.reg.Lookup("tiny") != nil
	})
	waitFor(t, "tiny served through both survivors", func() bool {
		sb, _, _ := get(b)
		sc, _, _ := get(c)
		return sb == 200 && sc == 200
	})
	if (b.reg.Lookup("tiny") != nil) == (c.reg.Lookup("tiny") != nil) {
		t.Fatalf("tiny on B: %v, on C: %v; want exactly one", b.reg.Lookup("tiny") != nil, c.reg.Lookup("tiny") != nil)
	}
}
