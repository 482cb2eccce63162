package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/celluster/celluster/core/testbuild"
)

type pluginJSON struct {
	Name       string   `json:"name"`
	Kind       string   `json:"kind"`
	Version    string   `json:"version"`
	API        uint32   `json:"api"`
	State      string   `json:"state"`
	PID        int      `json:"pid"`
	Restarts   int      `json:"restarts"`
	LastError  string   `json:"last_error"`
	Builtin    bool     `json:"builtin"`
	Signals    []string `json:"signals"`
	Extensions []string `json:"extensions"`
}

type signalJSON struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels"`
	Value  float64           `json:"value"`
	Unit   string            `json:"unit"`
	Source string            `json:"source"`
}

func (n *proc) listPlugins() map[string]pluginJSON {
	n.t.Helper()
	out, err := n.celctl("plugins", "-o", "json")
	if err != nil {
		n.t.Fatalf("celctl plugins: %v\n%s", err, out)
	}
	var list []pluginJSON
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		n.t.Fatalf("celctl plugins -o json: %v\n%s", err, out)
	}
	m := map[string]pluginJSON{}
	for _, p := range list {
		m[p.Name] = p
	}
	return m
}

func (n *proc) listSignals() []signalJSON {
	n.t.Helper()
	out, err := n.celctl("signals", "-o", "json")
	if err != nil {
		n.t.Fatalf("celctl signals: %v\n%s", err, out)
	}
	var list []signalJSON
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		n.t.Fatalf("celctl signals -o json: %v\n%s", err, out)
	}
	return list
}

// installPlugin builds the third-party example plugin (its own Go module)
// into the node's plugin directory.
func installPlugin(t *testing.T, data string) {
	t.Helper()
	bin := testbuild.ModuleBinary(t, "examples/plugins/logtail")
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(data, "plugins")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "logtail"), b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestThirdPartyPluginEndToEnd: the example plugin, built outside the core,
// is discovered in the plugin directory, streams its signal into the node,
// survives kill -9 (restarted, stream resumed) while cells keep serving; the
// built-in host plugin runs beside it by re-executing celcore.
func TestThirdPartyPluginEndToEnd(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	installPlugin(t, data)
	logFile := filepath.Join(t.TempDir(), "app.log")
	n := startNode(t, data, "--plugin-setting", "logtail.file="+logFile, "--plugin-setting", "logtail.pattern=ERROR")
	n.drop("hello", testbuild.Cell(t, "hello"))
	n.waitStatus("/hello", 200)

	appendLine := func(s string) {
		f, err := os.OpenFile(logFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(f, s)
		f.Close()
	}
	matches := func() float64 {
		for _, s := range n.listSignals() {
			if s.Name == "logtail.matches" && s.Labels["file"] == logFile {
				if s.Source != "logtail" {
					t.Fatalf("logtail.matches attributed to %q", s.Source)
				}
				return s.Value
			}
		}
		return -1
	}
	appendLine("ERROR disk full")
	appendLine("all fine")
	eventually(t, "logtail.matches to reach 1", func() bool { return matches() == 1 })

	var lt pluginJSON
	eventually(t, "both plugins to run", func() bool {
		ps := n.listPlugins()
		lt = ps["logtail"]
		return lt.State == "running" && ps["host"].State == "running" && ps["intent"].State == "running"
	})
	if lt.Kind != "dev.celluster.telemetry.v1" || lt.API != 1 || lt.PID <= 0 || lt.Builtin || lt.Version == "" {
		t.Fatalf("logtail plugin: %+v", lt)
	}
	host := n.listPlugins()["host"]
	if !host.Builtin || !strings.Contains(strings.Join(host.Signals, ","), "host.cpu") {
		t.Fatalf("built-in host plugin: %+v", host)
	}
	if in := n.listPlugins()["intent"]; !in.Builtin || in.Kind != "dev.celluster.intent.v1" || !slices.Contains(in.Extensions, ".intent") {
		t.Fatalf("built-in intent plugin: %+v", in)
	}
	eventually(t, "host.memory to be reported", func() bool {
		for _, s := range n.listSignals() {
			if s.Name == "host.memory" && s.Source == "host" && s.Unit == "percent" && s.Value > 0 {
				return true
			}
		}
		return false
	})

	// The node publishes each cell's own signals beside the plugins'.
	eventually(t, "hello's cell signals", func() bool {
		for _, s := range n.listSignals() {
			if s.Name == "latency.p99" && s.Labels["cell"] == "hello" && s.Source == "core" && s.Unit == "seconds" {
				return true
			}
		}
		return false
	})

	// kill -9: the plugin is restarted and its stream resumes.
	if err := syscall.Kill(lt.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if r := n.get("/hello"); r.status != 200 {
		t.Fatalf("cell answered %d while a plugin was down", r.status)
	}
	eventually(t, "logtail to be restarted", func() bool {
		p := n.listPlugins()["logtail"]
		return p.State == "running" && p.Restarts == 1 && p.PID != lt.PID
	})
	appendLine("ERROR again")
	appendLine("ERROR and again")
	// The restarted plugin reads the file from the start: 3 matching lines.
	eventually(t, "the resumed stream to count 3 matches", func() bool { return matches() == 3 })
	if !strings.Contains(n.Logs(), `"plugin":"logtail"`) {
		t.Error("plugin log lines not attributed to the plugin")
	}
}

// TestPluginChecksumMismatchRefused: a pinned sha256 that does not match the
// binary refuses to start it, with a clear error; the node serves on.
func TestPluginChecksumMismatchRefused(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	installPlugin(t, data)
	pin := strings.Repeat("ab", 32)
	n := startNode(t, data, "--plugin-sha256", "logtail="+pin, "--builtin-plugins", "")
	n.drop("hello", testbuild.Cell(t, "hello"))
	n.waitStatus("/hello", 200)
	var p pluginJSON
	eventually(t, "logtail to be refused", func() bool {
		p = n.listPlugins()["logtail"]
		return p.State == "failed"
	})
	if !strings.Contains(p.LastError, "sha256") || !strings.Contains(p.LastError, pin) || p.PID != 0 {
		t.Fatalf("refused plugin: %+v", p)
	}
	if _, ok := n.listPlugins()["host"]; ok {
		t.Fatal("--builtin-plugins '' still started the host plugin")
	}
}
