package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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

// processAlive reports whether pid is a live (not zombie) process.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// installHoldplug builds the test plugin written against sdk/plugin
// (testdata/holdplug) into the node's plugin directory.
func installHoldplug(t *testing.T, data string) {
	t.Helper()
	b, err := os.ReadFile(testbuild.Binary(t, "./cmd/celcore/testdata/holdplug", false))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(data, "plugins")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "holdplug"), b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// holdChildren lists the pids holdplug's children left markers for in dir.
func holdChildren(t *testing.T, dir string) []int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		if s, ok := strings.CutPrefix(e.Name(), "child."); ok {
			if pid, err := strconv.Atoi(s); err == nil {
				out = append(out, pid)
			}
		}
	}
	sort.Ints(out)
	return out
}

// childrenOf lists the live child processes of pid.
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil && processAlive(c) {
				out = append(out, c)
			}
		}
	}
	return out
}

// TestNoBuiltinPlugins: an empty --builtin-plugins (`--builtin-plugins ""`,
// `--builtin-plugins=`, a blank or a lone comma) starts no built-in plugin:
// once the one third-party plugin runs, it is the only plugin and the
// node's only child process.
func TestNoBuiltinPlugins(t *testing.T) {
	for _, args := range [][]string{{"--builtin-plugins", ""}, {"--builtin-plugins="}, {"--builtin-plugins", " "}, {"--builtin-plugins", ","}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			installHoldplug(t, data)
			n := startNode(t, data, args...)
			var ps map[string]pluginJSON
			eventually(t, "holdplug to run", func() bool {
				ps = n.listPlugins()
				return ps["holdplug"].State == "running"
			})
			if len(ps) != 1 {
				t.Fatalf("plugins: %+v, want holdplug alone", ps)
			}
			if kids := childrenOf(t, n.cmd.Process.Pid); len(kids) != 1 || kids[0] != ps["holdplug"].PID {
				t.Fatalf("the node's child processes are %v, want holdplug's %d alone", kids, ps["holdplug"].PID)
			}
		})
	}
}

// TestPluginProcessesDieWithTheirNode: a plugin's forked child dies when
// the plugin is killed and restarted; after kill -9 of the node every plugin
// process (built-in and third-party) is gone, and the child the last plugin
// forked — which nothing alive could signal — is killed by the next node
// started on the same data directory.
func TestPluginProcessesDieWithTheirNode(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	marks := t.TempDir()
	installHoldplug(t, data)
	n := startNode(t, data, "--plugin-setting", "holdplug.dir="+marks)
	var pids []int
	var hold pluginJSON
	eventually(t, "every plugin to run", func() bool {
		pids = pids[:0]
		ps := n.listPlugins()
		for _, p := range ps {
			if p.State != "running" {
				return false
			}
			pids = append(pids, p.PID)
		}
		hold = ps["holdplug"]
		return len(ps) > 1 && hold.PID > 0
	})
	first := holdChildren(t, marks)
	t.Cleanup(func() {
		for _, pid := range holdChildren(t, marks) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if len(first) != 1 || !processAlive(first[0]) {
		t.Fatalf("holdplug's child: %v", first)
	}

	// The plugin killed: restarted, its child gone with it.
	if err := syscall.Kill(hold.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, "holdplug to be restarted", func() bool {
		p := n.listPlugins()["holdplug"]
		return p.State == "running" && p.Restarts == 1
	})
	eventually(t, "the killed plugin's child to die", func() bool { return !processAlive(first[0]) })
	var second int
	eventually(t, "the restarted plugin's child", func() bool {
		for _, pid := range holdChildren(t, marks) {
			if pid != first[0] && processAlive(pid) {
				second = pid
				return true
			}
		}
		return false
	})
	pids = pids[:0]
	for _, p := range n.listPlugins() {
		pids = append(pids, p.PID)
	}

	// kill -9 of the node: every plugin process goes with it.
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-n.exited
	eventually(t, "the plugins to die with their node", func() bool {
		for _, pid := range pids {
			if processAlive(pid) {
				return false
			}
		}
		return true
	})
	if !processAlive(second) {
		t.Fatalf("the plugin's child %d died with the node: the restart below would prove nothing", second)
	}

	// The next node on the data directory kills what was left.
	n2 := startNode(t, data, "--builtin-plugins", "")
	eventually(t, "the orphan to be killed", func() bool { return !processAlive(second) })
	// The line is logged once the kill is sent: it may trail the death.
	eventually(t, "the new node to log the orphan it killed", func() bool {
		logs := n2.Logs()
		return strings.Contains(logs, "left behind") && strings.Contains(logs, fmt.Sprintf(`"pid":%d`, second))
	})
}

// TestHungPluginMidVerb: a verb plugin stopped (SIGSTOP) in the middle of
// a verb: the node keeps serving, fails the verb with a clear error in the
// journal and the log once the plugin stops answering its health check,
// kills and restarts the plugin, and the next verb runs.
func TestHungPluginMidVerb(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	installHoldplug(t, data)
	n := startNode(t, data, "--builtin-plugins", "")
	n.drop("hello", testbuild.Cell(t, "hello"))
	n.waitStatus("/hello", 200)
	var hold pluginJSON
	eventually(t, "holdplug to run", func() bool {
		hold = n.listPlugins()["holdplug"]
		return hold.State == "running"
	})

	verbDone := make(chan string, 1)
	go func() {
		out, err := n.celctl("--timeout", "60s", "verb", "hold", "hello")
		verbDone <- fmt.Sprintf("%s (%v)", out, err)
	}()
	eventually(t, "the verb to reach the plugin", func() bool {
		return find(n.journal("hello"), func(e journalEntry) bool { return e.Message == "holding" }) != nil
	})
	if err := syscall.Kill(hold.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(hold.PID, syscall.SIGKILL) })
	if r := n.get("/hello"); r.status != 200 {
		t.Fatalf("the cell answered %d with its verb plugin hung", r.status)
	}

	var failed *journalEntry
	eventually(t, "the hung verb to be failed", func() bool {
		failed = find(n.journal("hello"), func(e journalEntry) bool { return e.Verb == "hold" })
		return failed != nil
	})
	if failed.Outcome != "failed" || !strings.Contains(failed.Message, "holdplug") ||
		!strings.Contains(failed.Message, "stopped answering") || !strings.Contains(failed.Message, "restarting") {
		t.Fatalf("journal entry of the hung verb: %+v", *failed)
	}
	select {
	case out := <-verbDone:
		if !strings.Contains(out, "stopped answering") {
			t.Errorf("celctl verb said %s", out)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("celctl verb did not return")
	}
	if !strings.Contains(n.Logs(), "plugin failed its health check") {
		t.Error("the log does not say the plugin failed its health check")
	}

	eventually(t, "holdplug to be restarted", func() bool {
		p := n.listPlugins()["holdplug"]
		return p.State == "running" && p.Restarts == 1 && p.PID != hold.PID
	})
	eventually(t, "the hung process to be gone", func() bool { return !processAlive(hold.PID) })
	if out, err := n.celctl("verb", "ping", "hello"); err != nil || !strings.Contains(out, "pong") {
		t.Fatalf("a verb after the restart: %v\n%s", err, out)
	}
	if r := n.get("/hello"); r.status != 200 {
		t.Fatalf("the cell answered %d after the plugin's restart", r.status)
	}
}

// TestBuiltinPluginsList: names are trimmed ("host, intent" is two), and a
// name given twice or unknown stops celcore with an error naming it.
func TestBuiltinPluginsList(t *testing.T) {
	n := startNode(t, "", "--builtin-plugins", "host, intent")
	eventually(t, "host and intent to run", func() bool {
		ps := n.listPlugins()
		return len(ps) == 2 && ps["host"].State == "running" && ps["intent"].State == "running"
	})
	bin := testbuild.Binary(t, "./cmd/celcore", raceBinaries)
	for _, tc := range []struct{ list, want string }{
		{"host,host", `--builtin-plugins: "host" given twice`},
		{"host,nope", `--builtin-plugins: no built-in plugin named "nope"`},
	} {
		dir := t.TempDir()
		out, err := exec.Command(bin, "--cells", filepath.Join(dir, "cells"), "--data", filepath.Join(dir, "data"),
			"--http", "127.0.0.1:0", "--builtin-plugins", tc.list).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("--builtin-plugins %q: %v\n%s\nwant an error saying %s", tc.list, err, out, tc.want)
		}
	}
}

// TestPinnedPluginRuns: a plugin file pinned with its own sha256 is checked,
// described and run (from the descriptor that was hashed), and serves verbs.
func TestPinnedPluginRuns(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	installHoldplug(t, data)
	b, err := os.ReadFile(filepath.Join(data, "plugins", "holdplug"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	n := startNode(t, data, "--builtin-plugins", "", "--plugin-sha256", "holdplug="+hex.EncodeToString(sum[:]))
	n.drop("hello", testbuild.Cell(t, "hello"))
	n.waitStatus("/hello", 200)
	eventually(t, "the pinned plugin to run", func() bool {
		p := n.listPlugins()["holdplug"]
		return p.State == "running" && p.PID > 0
	})
	if out, err := n.celctl("verb", "ping", "hello"); err != nil || !strings.Contains(out, "pong") {
		t.Fatalf("a verb of the pinned plugin: %v\n%s", err, out)
	}
}
