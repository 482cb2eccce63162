package main

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/celluster/celluster/core/testbuild"
)

// TestMetricsEndpoint: --metrics serves Prometheus metrics that promtool
// accepts, with the cells' requests and the verbs fired.
func TestMetricsEndpoint(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("promtool (Debian package prometheus) is required in CI: %v", err)
		}
		t.Skip("promtool not installed (apt-get install prometheus)")
	}
	n := startNode(t, "", "--metrics", "127.0.0.1:0")
	n.drop("hello", testbuild.Cell(t, "hello"))
	n.waitStatus("/hello", 200)
	for range 5 {
		n.get("/hello")
	}
	if out, err := n.celctl("verb", "clone", "hello"); err != nil {
		t.Fatalf("celctl verb clone: %v\n%s", err, out)
	}
	n.mu.Lock()
	addr := n.metrics
	n.mu.Unlock()
	if addr == "" {
		t.Fatal("no metrics address in the ready log line")
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, want := range []string{
		`celluster_cell_requests_total{cell="hello"} `,
		`celluster_cell_request_duration_seconds_bucket{cell="hello",le="+Inf"} `,
		`celluster_verbs_total{outcome="done",verb="clone"} 1`,
		`celluster_plugin_up{plugin="verbs"} 1`,
		`celluster_signal{cell="hello",name="replicas",port="",source="core",version=""} 2`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}
