package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/celluster/celluster/core/admin/adminpb"
	"github.com/celluster/celluster/core/testbuild"
)

// BenchmarkCloneToPeer: `clone 1 on NODE` of a Go cell, from the verb
// asked of node A (its admin API, as celctl does, without starting a celctl
// process) to node B answering a request for the cell with its own replica:
// the plugin call, the placement request over the fabric, B loading the
// module and starting the replica, then the first GET to B answering 200
// with the cell's body and version (polled every millisecond if B is not
// serving yet when the verb returns). module=present: B already keeps and
// has compiled the module (peers prefetch each other's modules by hash; aim
// ≤ 50 ms); module=fetched: B must fetch the module over the fabric and
// compile it (started with --no-prefetch), in the same run;
// module=present,state=kept: as module=present for a cell whose intent
// keeps state, so B first fetches the cell's state from A (the Go hello
// cell's: state-KiB is what crossed the fabric) and its replica continues
// from it.
func BenchmarkCloneToPeer(b *testing.B) {
	dir := b.TempDir()
	ca := filepath.Join(dir, "ca")
	if out, err := runCelctl(b, "ca", "init", "--trust-domain", "test.local", "--out", ca); err != nil {
		b.Fatalf("ca init: %v\n%s", err, out)
	}
	args := []string{"--fabric", "127.0.0.1:0", "--ca", ca, "--trust-domain", "test.local", "--telemetry-interval", "200ms"}
	a := startNode(b, "", args...)
	seed, _ := a.fabricAddr()
	warmB := startNode(b, "", append(args, "--join", seed)...)
	coldB := startNode(b, "", append(args, "--join", seed, "--no-prefetch")...)
	eventually(b, "three alive nodes", func() bool { return len(a.nodes()) == 3 })
	conn, err := grpc.NewClient("unix://"+a.admin, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	admin := adminpb.NewAdminClient(conn)
	if _, err := admin.Status(context.Background(), &adminpb.StatusRequest{}); err != nil {
		b.Fatal(err)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	httpc := &http.Client{Transport: tr, Timeout: time.Minute}

	hello := testbuild.Cell(b, "hello")
	seq := 0
	for _, peer := range []struct {
		name string
		node *proc
		// module returns the i-th module and the version it answers with.
		module func(i int) ([]byte, string)
		state  bool
	}{
		{"module=present", warmB, func(int) ([]byte, string) { return hello, "dev" }, false},
		{"module=fetched", coldB, func(i int) ([]byte, string) {
			v := fmt.Sprintf("clone%d", i)
			return testbuild.Cell(b, "hello", "-X main.version="+v), v
		}, false},
		{"module=present,state=kept", warmB, func(int) ([]byte, string) { return hello, "dev" }, true},
	} {
		_, nodeName := peer.node.fabricAddr()
		b.Run(peer.name, func(b *testing.B) {
			var took []time.Duration
			i := 0
			for b.Loop() {
				b.StopTimer()
				seq++
				name := fmt.Sprintf("c%d", seq)
				mod, version := peer.module(i)
				if peer.state {
					a.writeIntent(name, "cell "+name+"\nkeep replicas 1..4\nkeep state\n")
				}
				a.drop(name, mod)
				a.waitStatus("/"+name, 200)
				if peer.node == warmB {
					sha := a.listCells()[name].SHA256
					eventually(b, "B to keep and compile the module", func() bool {
						_, err := os.Stat(filepath.Join(warmB.data, "modules", sha+".wasm"))
						return err == nil && containsLog(warmB, "precompiled a peer's module")
					})
				}
				if r, err := peer.node.do("GET", "/"+name, ""); err != nil || (r.status == 200 && r.header.Get("X-Celluster-Served-By") == "") {
					b.Fatalf("B serves /%s itself before the clone: %+v %v", name, r, err)
				}
				b.StartTimer()
				t0 := time.Now()
				e, err := admin.Verb(context.Background(), &adminpb.VerbRequest{Verb: "clone", Cell: name, Args: []string{"1", "on", nodeName}})
				if err != nil {
					b.Fatalf("clone on %s: %v", nodeName, err)
				}
				if e.GetOutcome() != "done" {
					b.Fatalf("clone on %s: %s: %s", nodeName, e.GetOutcome(), e.GetMessage())
				}
				firstAnswer(b, httpc, peer.node.base+"/"+name+"?name=bench", "Hello, bench!\n", version)
				took = append(took, time.Since(t0))
				b.StopTimer()
				i++
				b.StartTimer()
			}
			if peer.state {
				b.ReportMetric(float64(stateBytes(b, peer.node))/1024, "state-KiB")
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
		})
	}
}

// firstAnswer polls url every millisecond until the node answers 200
// itself (not by forwarding the request to a peer that serves the cell),
// and checks that the answer is body, of the given cell version.
func firstAnswer(b *testing.B, c *http.Client, url, body, version string) {
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := c.Get(url)
		if err == nil {
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && resp.Header.Get("X-Celluster-Served-By") == "" {
				if string(got) != body || resp.Header.Get("X-Cell-Version") != version {
					b.Fatalf("GET %s: %q version %q, want %q version %q", url, got, resp.Header.Get("X-Cell-Version"), body, version)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("GET %s: no 200 within a minute of the clone (last: %v)", url, err)
		}
		time.Sleep(time.Millisecond)
	}
}

func containsLog(n *proc, s string) bool { return strings.Contains(n.Logs(), s) }

// stateBytes is the size of the last state the node logged fetching.
func stateBytes(b *testing.B, n *proc) int {
	logs := n.Logs()
	i := strings.LastIndex(logs, "fetched a cell's state")
	if i < 0 {
		b.Fatal("the peer fetched no state")
	}
	line := logs[i:]
	if j := strings.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	var size int
	for _, key := range []string{`"bytes":`, "bytes="} { // JSON or text logs
		if k := strings.Index(line, key); k >= 0 {
			fmt.Sscan(line[k+len(key):], &size)
		}
	}
	if size == 0 {
		b.Fatalf("no size in %q", line)
	}
	return size
}
