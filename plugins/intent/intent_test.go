package intent

import (
	"context"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/celluster/celluster/sdk/plugin"
	"github.com/celluster/celluster/sdk/plugin/plugintest"
)

// helloSpec is what testdata/hello.intent (DESIGN.md's example) means.
func helloSpec() *plugin.IntentSpec {
	return &plugin.IntentSpec{
		Cell:      "hello",
		Module:    plugin.ModuleRef{Path: "hello.wasm"},
		Endpoints: []plugin.Endpoint{{Protocol: "http", Listen: ":8080", Path: "/hello"}},
		Replicas:  plugin.ReplicaBounds{Min: 1, Max: 8},
		Warm:      1,
		Objectives: []plugin.Objective{
			{Kind: plugin.LatencyP99, Threshold: 0.02, Line: 7},
			{Kind: plugin.ErrorRate, Threshold: 0.01, Line: 8},
		},
		Rules: []plugin.Rule{{
			Name: "line 11", Signal: "cpu", Comparator: plugin.Greater, Threshold: 80,
			Window: 3 * time.Second, Verb: "clone", Cooldown: 10 * time.Second, Line: 11,
		}},
		Limits:         plugin.Limits{RequestTime: 2 * time.Second, Memory: 64 << 20},
		Grants:         []plugin.Grant{{Capability: "kv"}, {Capability: "signal"}, {Capability: "call", Targets: []string{"cell:auth"}}},
		AllowFrom:      []string{"cell:frontend", "node:*"},
		Placement:      plugin.Placement{SpreadAcrossNodes: true},
		DecayAfterIdle: 5 * time.Minute,
	}
}

func TestDesignExample(t *testing.T) {
	content, err := os.ReadFile("testdata/hello.intent")
	if err != nil {
		t.Fatal(err)
	}
	spec, diags := ParseBytes("hello.intent", content)
	if len(diags) > 0 {
		t.Fatalf("diagnostics: %v", diags)
	}
	if want := helloSpec(); !reflect.DeepEqual(spec, want) {
		t.Errorf("got  %+v\nwant %+v", spec, want)
	}
}

func TestValid(t *testing.T) {
	const ok64 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	tests := []struct {
		name, src string
		want      plugin.IntentSpec // Cell "x" is implied
	}{
		{"cell only", "", plugin.IntentSpec{}},
		{"comments and blanks", "# a comment\n\n   \t\n# more\r\n", plugin.IntentSpec{}},
		{"module", "module a/b.wasm", plugin.IntentSpec{Module: plugin.ModuleRef{Path: "a/b.wasm"}}},
		{"module sha256", "module m.wasm sha256 " + strings.ToUpper(ok64), plugin.IntentSpec{Module: plugin.ModuleRef{Path: "m.wasm", SHA256: ok64}}},
		{"abi", "abi command", plugin.IntentSpec{ABI: plugin.ABICommand}},
		{"serve path", "serve http /hello", plugin.IntentSpec{Endpoints: []plugin.Endpoint{{Protocol: "http", Path: "/hello"}}}},
		{"serve addr path", "serve http 127.0.0.1:8080 /\nserve http :9090 /a\nserve http [::1]:80 /b\nserve http localhost:1 /c",
			plugin.IntentSpec{Endpoints: []plugin.Endpoint{
				{Protocol: "http", Listen: "127.0.0.1:8080", Path: "/"},
				{Protocol: "http", Listen: ":9090", Path: "/a"},
				{Protocol: "http", Listen: "[::1]:80", Path: "/b"},
				{Protocol: "http", Listen: "localhost:1", Path: "/c"},
			}}},
		{"serve default", "serve http /", plugin.IntentSpec{Endpoints: []plugin.Endpoint{{Protocol: "http", Path: "/"}}}},
		{"serve prefix", "serve http /api/v2\nserve http /api/v2/", plugin.IntentSpec{Endpoints: []plugin.Endpoint{
			{Protocol: "http", Path: "/api/v2"}, {Protocol: "http", Path: "/api/v2/"}}}},
		{"serve host", "serve host Shop.Example, *.shop.example\nserve host api.example,localhost", plugin.IntentSpec{
			Hosts: []string{"shop.example", "*.shop.example", "api.example", "localhost"}}},
		{"serve host and path", "serve host shop.example\nserve http /api", plugin.IntentSpec{
			Endpoints: []plugin.Endpoint{{Protocol: "http", Path: "/api"}}, Hosts: []string{"shop.example"}}},
		{"limit body", "limit body 1MiB", plugin.IntentSpec{Limits: plugin.Limits{Body: 1 << 20}}},
		{"limit body two tokens", "limit body 512 KiB", plugin.IntentSpec{Limits: plugin.Limits{Body: 512 << 10}}},
		{"limit body bytes", "limit body 1", plugin.IntentSpec{Limits: plugin.Limits{Body: 1}}},
		{"limit body largest", "limit body 1GiB", plugin.IntentSpec{Limits: plugin.Limits{Body: 1 << 30}}},
		{"replicas range", "keep replicas 0..3", plugin.IntentSpec{Replicas: plugin.ReplicaBounds{Min: 0, Max: 3}}},
		{"replicas exact", "keep replicas 4", plugin.IntentSpec{Replicas: plugin.ReplicaBounds{Min: 4, Max: 4}}},
		{"warm", "keep warm 0\n", plugin.IntentSpec{}},
		{"warm 2", "keep\twarm\t2", plugin.IntentSpec{Warm: 2}},
		{"p99", "keep p99 latency under 1m30s", plugin.IntentSpec{Objectives: []plugin.Objective{{Kind: plugin.LatencyP99, Threshold: 90, Line: 2}}}},
		{"p99 µs", "keep p99 latency under 250µs", plugin.IntentSpec{Objectives: []plugin.Objective{{Kind: plugin.LatencyP99, Threshold: 250e-6, Line: 2}}}},
		{"error rate", "keep error rate under 0.5%", plugin.IntentSpec{Objectives: []plugin.Objective{{Kind: plugin.ErrorRate, Threshold: 0.005, Line: 2}}}},
		{"limits", "limit request time 150ms\nlimit memory 2 GiB\nlimit concurrency 16",
			plugin.IntentSpec{Limits: plugin.Limits{RequestTime: 150 * time.Millisecond, Memory: 2 << 30, Concurrency: 16}}},
		{"limit memory MB", "limit memory 10MB", plugin.IntentSpec{Limits: plugin.Limits{Memory: 10_000_000}}},
		{"limit memory bytes", "limit memory 4096", plugin.IntentSpec{Limits: plugin.Limits{Memory: 4096}}},
		{"limit kv", "grant kv\nlimit kv 16MiB", plugin.IntentSpec{Limits: plugin.Limits{KV: 16 << 20}, Grants: []plugin.Grant{{Capability: "kv"}}}},
		{"limit kv two tokens", "limit kv 512 KiB", plugin.IntentSpec{Limits: plugin.Limits{KV: 512 << 10}}},
		{"when minimal", "when rps >= 100 then spawn", plugin.IntentSpec{Rules: []plugin.Rule{
			{Name: "line 2", Signal: "rps", Comparator: plugin.GreaterOrEqual, Threshold: 100, Verb: "spawn", Line: 2}}}},
		{"when full", "when latency.p99{port=8080,route=x} > 20ms for 1m then reroute cell:b now cooldown 30s", plugin.IntentSpec{Rules: []plugin.Rule{{
			Name: "line 2", Signal: "latency.p99", Labels: map[string]string{"port": "8080", "route": "x"},
			Comparator: plugin.Greater, Threshold: 0.02, Window: time.Minute, Verb: "reroute",
			Args: []string{"cell:b", "now"}, Cooldown: 30 * time.Second, Line: 2}}}},
		{"when values", "when host.memory < 64MiB then decay\nwhen queue == 0 then decay\nwhen errors.rate != -1.5 then upgrade v2\nwhen kernel.tcp.retransmits <= 12.5% then clone\nwhen inflight > 3 KiB then spawn",
			plugin.IntentSpec{Rules: []plugin.Rule{
				{Name: "line 2", Signal: "host.memory", Comparator: plugin.Less, Threshold: 64 << 20, Verb: "decay", Line: 2},
				{Name: "line 3", Signal: "queue", Comparator: plugin.Equal, Threshold: 0, Verb: "decay", Line: 3},
				{Name: "line 4", Signal: "errors.rate", Comparator: plugin.NotEqual, Threshold: -1.5, Verb: "upgrade", Args: []string{"v2"}, Line: 4},
				{Name: "line 5", Signal: "kernel.tcp.retransmits", Comparator: plugin.LessOrEqual, Threshold: 12.5, Verb: "clone", Line: 5},
				{Name: "line 6", Signal: "inflight", Comparator: plugin.Greater, Threshold: 3072, Verb: "spawn", Line: 6},
			}}},
		{"decay", "decay after 90s idle", plugin.IntentSpec{DecayAfterIdle: 90 * time.Second}},
		{"keep state", "keep state", plugin.IntentSpec{State: plugin.StatePolicy{Keep: true}}},
		{"keep state replicated", "keep  state\treplicated every 1s # to the survivor", plugin.IntentSpec{State: plugin.StatePolicy{Keep: true, ReplicateEvery: time.Second}}},
		{"keep state replicated fastest", "keep state replicated every 100ms", plugin.IntentSpec{State: plugin.StatePolicy{Keep: true, ReplicateEvery: 100 * time.Millisecond}}},
		{"keep state replicated 0.1s", "keep state replicated every 0.1s", plugin.IntentSpec{State: plugin.StatePolicy{Keep: true, ReplicateEvery: 100 * time.Millisecond}}},
		{"keep state replicated slowest", "keep state replicated every 1h", plugin.IntentSpec{State: plugin.StatePolicy{Keep: true, ReplicateEvery: time.Hour}}},
		{"keep state replicated compound", "keep state replicated every 1m30.5s", plugin.IntentSpec{State: plugin.StatePolicy{Keep: true, ReplicateEvery: 90500 * time.Millisecond}}},
		{"keep state reactor", "abi reactor\nkeep state", plugin.IntentSpec{ABI: plugin.ABIReactor, State: plugin.StatePolicy{Keep: true}}},
		{"grants merge", "grant kv,log , call cell:a\ngrant call cell:b, kv, call cell:a", plugin.IntentSpec{Grants: []plugin.Grant{
			{Capability: "kv"}, {Capability: "log"}, {Capability: "call", Targets: []string{"cell:a", "cell:b"}}}}},
		{"allow", "allow from cell:*, node:edge-1.example\nallow from cell:*", plugin.IntentSpec{AllowFrom: []string{"cell:*", "node:edge-1.example"}}},
		{"placement", "spread across nodes\nprefer node a\nprefer node b\nprefer node a\navoid node C-3", plugin.IntentSpec{Placement: plugin.Placement{
			SpreadAcrossNodes: true, PreferNodes: []string{"a", "b"}, AvoidNodes: []string{"C-3"}}}},
		{"spread count", "spread across 3 nodes", plugin.IntentSpec{Placement: plugin.Placement{SpreadAcrossNodes: true, SpreadMinNodes: 3}}},
		{"trailing comment", "keep warm 1# one", plugin.IntentSpec{Warm: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, diags := ParseBytes("t.intent", []byte("cell x\n"+tt.src))
			if len(diags) > 0 {
				t.Fatalf("diagnostics: %v", diags)
			}
			want := tt.want
			want.Cell = "x"
			if !reflect.DeepEqual(*spec, want) {
				t.Errorf("got  %+v\nwant %+v", *spec, want)
			}
			assertRoundTrip(t, spec)
		})
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name, src string
		line, col int
		msg, hint string // substrings
	}{
		{"no cell", "keep warm 1", 1, 1, `found no "cell" statement`, "cell hello"},
		{"empty", "", 1, 1, `found no "cell" statement`, ""},
		{"cell name", "cell Hello", 1, 6, `found "Hello", expected a cell name`, `write "hello"`},
		{"cell no name", "cell", 1, 5, "found end of line, expected a cell name", ""},
		{"cell twice", "cell a\n\ncell b", 3, 1, `found a second "cell" statement`, "line 1"},
		{"cell extra", "cell a b", 1, 8, `found "b", expected end of line`, "#"},
		{"unknown statement", "cell a\ncel b", 2, 1, `found "cel", expected a statement`, `did you mean "cell"?`},
		{"uppercase keyword", "cell a\nKeep warm 1", 2, 1, `found "Keep"`, `keywords are lowercase: write "keep"`},
		{"keep replica", "cell a\nkeep replica 1..8", 2, 6, `found "replica", expected "replicas" or "warm" or "p99" or "error" or "state"`, `did you mean "replicas"?`},
		{"keep stat", "cell a\nkeep stat", 2, 6, `found "stat", expected "replicas" or "warm" or "p99" or "error" or "state"`, `did you mean "state"?`},
		{"keep states", "cell a\nkeep states replicated every 1s", 2, 6, `found "states", expected "replicas"`, `did you mean "state"?`},
		{"keep State", "cell a\nkeep State", 2, 6, `found "State"`, `keywords are lowercase: write "state"`},
		{"keep nothing", "cell a\nkeep", 2, 5, `found end of line, expected "replicas" or "warm" or "p99" or "error" or "state"`, ""},
		{"state twice", "cell a\nkeep state\nkeep state replicated every 1s", 3, 1, `found a second "keep state" statement, expected at most one`, "the first is on line 2; remove one of them"},
		{"state duration without replicated", "cell a\nkeep state 1s", 2, 12, `found "1s", expected "replicated" or end of line`, "keep state replicated every 1s"},
		{"state replicated typo", "cell a\nkeep state replicate every 1s", 2, 12, `found "replicate", expected "replicated" or end of line`, `did you mean "replicated"?`},
		{"state every missing", "cell a\nkeep state replicated 1s", 2, 23, `found "1s", expected "every"`, ""},
		{"state every typo", "cell a\nkeep state replicated evry 1s", 2, 23, `found "evry", expected "every"`, `did you mean "every"?`},
		{"state replicated eol", "cell a\nkeep state replicated", 2, 22, `found end of line, expected "every"`, ""},
		{"state no duration", "cell a\nkeep state replicated every", 2, 28, "found end of line, expected a duration", ""},
		{"state no unit", "cell a\nkeep state replicated every 5", 2, 29, `found "5", expected a duration`, "add a unit"},
		{"state zero", "cell a\nkeep state replicated every 0s", 2, 29, `found "0s", expected a duration`, "above zero"},
		{"state negative", "cell a\nkeep state replicated every -1s", 2, 29, `found "-1s", expected a duration`, ""},
		{"state too often", "cell a\nkeep state replicated every 99ms", 2, 29, `found "99ms", expected a duration from 100ms to 1h`, "more often than every 100ms"},
		{"state too rare", "cell a\nkeep state replicated every 1h0m0.001s", 2, 29, `found "1h0m0.001s", expected a duration from 100ms to 1h`, "up to an hour old"},
		{"state way too rare", "cell a\nkeep state replicated every 1000h", 2, 29, `found "1000h", expected a duration from 100ms to 1h`, ""},
		{"state extra", "cell a\nkeep state replicated every 1s now", 2, 32, `found "now", expected end of line`, "#"},
		{"state in command cell", "cell a\nabi command\nkeep state", 3, 6, `found keep state in a command cell ("abi command" on line 2), expected it only in a reactor cell`, "remove keep state or write abi reactor"},
		{"state before abi command", "cell a\nkeep state replicated every 1s\nabi command", 2, 6, `("abi command" on line 3)`, "a command cell starts afresh"},
		{"replicas dash", "cell a\nkeep replicas 1-8", 2, 15, `found "1-8", expected a count such as 2 or a range such as 1..8`, "write a range as 1..8"},
		{"replicas reversed", "cell a\nkeep replicas 8..1", 2, 15, "minimum is at most its maximum", "write 1..8"},
		{"replicas zero", "cell a\nkeep replicas 0", 2, 15, "at least 1 replica", "decay after"},
		{"replicas twice", "cell a\nkeep replicas 1\nkeep replicas 2", 3, 1, `second "keep replicas"`, "line 2"},
		{"warm negative", "cell a\nkeep warm -1", 2, 11, `found "-1", expected a count`, ""},
		{"warm over max", "cell a\nkeep replicas 1..2\nkeep warm 3", 3, 11, "found keep warm 3, expected at most the 2 replicas", ""},
		{"warm twice", "cell a\nkeep warm 1\nkeep warm 1", 3, 1, `second "keep warm"`, "line 2"},
		{"p99 no unit", "cell a\nkeep p99 latency under 20", 2, 24, `found "20", expected a duration`, "add a unit"},
		{"p99 missing under", "cell a\nkeep p99 latency 20ms", 2, 18, `found "20ms", expected "under"`, ""},
		{"error rate fraction", "cell a\nkeep error rate under 0.01", 2, 23, `found "0.01", expected a percentage`, "1%"},
		{"error rate eol", "cell a\nkeep error rate under", 2, 22, `found end of line, expected a percentage`, ""},
		{"limit unknown", "cell a\nlimit cpu 2", 2, 7, `found "cpu", expected "request" or "memory" or "concurrency"`, ""},
		{"limit time unit", "cell a\nlimit request time 2 s", 2, 20, `found "2", expected a duration`, "add a unit"},
		{"limit memory case", "cell a\nlimit memory 64mib", 2, 14, `found "64mib", expected a size`, "write 64MiB"},
		{"limit memory frac", "cell a\nlimit memory 1.5GiB", 2, 14, `found "1.5GiB", expected a size`, "whole numbers"},
		{"limit memory twice", "cell a\nlimit memory 1\nlimit memory 2", 3, 1, `second "limit memory"`, "line 2"},
		{"limit concurrency zero", "cell a\nlimit concurrency 0", 2, 19, "at least 1", ""},
		{"limit kv eol", "cell a\nlimit kv", 2, 9, "found end of line, expected a size such as 16MiB", "limit kv 16MiB"},
		{"limit kv zero", "cell a\nlimit kv 0", 2, 10, `found "0", expected a size`, "above zero"},
		{"limit kv twice", "cell a\nlimit kv 1KiB\nlimit kv 2KiB", 3, 1, `second "limit kv"`, "line 2"},
		{"module twice", "cell a\nmodule a.wasm\nmodule b.wasm", 3, 1, `second "module"`, "line 2"},
		{"module sha", "cell a\nmodule a.wasm sha256 abc", 2, 22, `found "abc" (3 characters), expected 64 hexadecimal digits`, ""},
		{"module word", "cell a\nmodule a.wasm sha1 abc", 2, 15, `found "sha1", expected "sha256"`, ""},
		{"serve proto", "cell a\nserve grpc /x", 2, 7, `found "grpc", expected "http"`, ""},
		{"serve port", "cell a\nserve http 8080 /x", 2, 12, `found "8080", expected an address`, "write a port as :8080"},
		{"serve no path", "cell a\nserve http :8080", 2, 17, "found end of line, expected a path starting with /", ""},
		{"serve bad port", "cell a\nserve http :99999 /x", 2, 12, "a port from 1 to 65535", ""},
		{"serve twice", "cell a\nserve http /x\nserve http /x", 3, 1, "a second time", "line 2"},
		{"serve typo", "cell a\nserve hosts shop.example", 2, 7, `found "hosts", expected "http" or "host"`, `did you mean "host"?`},
		{"serve path query", "cell a\nserve http /a?b=1", 2, 12, `found "/a?b=1", expected a path prefix such as /api/v2`, "without a query"},
		{"serve path wildcard", "cell a\nserve http :80 /api/*", 2, 16, `found "/api/*", expected a path prefix`, "wildcard"},
		{"serve path dots", "cell a\nserve http /a/../b", 2, 12, `found "/a/../b", expected a path prefix`, ". or .."},
		{"serve path empty segment", "cell a\nserve http /a//b", 2, 12, `found "/a//b", expected a path prefix`, "one /"},
		{"serve host eol", "cell a\nserve host", 2, 11, "found end of line, expected a host name such as shop.example", "serve host shop.example, *.shop.example"},
		{"serve host port", "cell a\nserve host shop.example:8080", 2, 12, `found "shop.example:8080", expected a host name`, "the port does not route: write serve host shop.example"},
		{"serve host any", "cell a\nserve host *", 2, 12, `found "*", expected a host name`, "leave serve host out"},
		{"serve host inner wildcard", "cell a\nserve host a.*.example", 2, 12, `found "a.*.example", expected a host name`, "first label"},
		{"serve host label", "cell a\nserve host -a.example", 2, 12, `found "-a.example", expected a host name`, "labels are 1 to 63"},
		{"serve host final dot", "cell a\nserve host a.example.", 2, 12, `found "a.example.", expected a host name`, "final dot"},
		{"serve host ipv6", "cell a\nserve host [::1]", 2, 12, `found "[::1]", expected a host name`, "IPv6"},
		{"serve host twice", "cell a\nserve host a.example\nserve host A.example", 3, 12, "found host a.example a second time, expected each host once", "line 2"},
		{"serve host twice on a line", "cell a\nserve host a.b, a.b", 2, 17, "found host a.b a second time", "line 2"},
		{"serve host no comma", "cell a\nserve host a.b c.d", 2, 16, `found "c.d", expected "," or end of line`, "commas"},
		{"serve host empty item", "cell a\nserve host a.b,,c.d", 2, 16, `found ",", expected a host name`, ""},
		{"limit body eol", "cell a\nlimit body", 2, 11, "found end of line, expected a size from 1B to 1GiB", "limit body 1MiB"},
		{"limit body zero", "cell a\nlimit body 0", 2, 12, `found "0", expected a size from 1B to 1GiB`, "above zero"},
		{"limit body too large", "cell a\nlimit body 2 GiB", 2, 12, `found "2GiB", expected a size from 1B to 1GiB`, "held whole in memory"},
		{"limit body unit", "cell a\nlimit body 1mb", 2, 12, `found "1mb", expected a size`, "write 1MB"},
		{"limit body twice", "cell a\nlimit body 1KiB\nlimit body 2KiB", 3, 1, `second "limit body"`, "line 2"},
		{"limit body extra", "cell a\nlimit body 1KiB now", 2, 17, `found "now", expected end of line`, ""},
		{"when glued", "cell a\nwhen cpu>80% then clone", 2, 6, `found "cpu>80%", expected a signal`, "separate the signal"},
		{"when op", "cell a\nwhen cpu = 80 then clone", 2, 10, "expected a comparator", "write == for equality"},
		{"when value", "cell a\nwhen cpu > lots then clone", 2, 12, `found "lots", expected a value`, ""},
		{"when then", "cell a\nwhen cpu > 80 clone", 2, 15, `found "clone", expected "for" or "then"`, ""},
		{"when no then", "cell a\nwhen cpu > 80", 2, 14, `found end of line, expected "for" or "then"`, ""},
		{"when for", "cell a\nwhen cpu > 80 for 3 then clone", 2, 19, `found "3", expected a duration`, "add a unit"},
		{"when verb", "cell a\nwhen cpu > 80 then scale", 2, 20, `found "scale", expected a verb`, "spawn, clone, reroute, upgrade and decay"},
		{"when verb typo", "cell a\nwhen cpu > 80 then clon", 2, 20, `found "clon", expected a verb`, `did you mean "clone"?`},
		{"when cooldown", "cell a\nwhen cpu > 80 then clone cooldown", 2, 34, "found end of line, expected a duration", ""},
		{"when cooldown extra", "cell a\nwhen cpu > 80 then clone cooldown 1s x", 2, 38, `found "x", expected end of line`, ""},
		{"when labels open", "cell a\nwhen rps{port=1 > 1 then clone", 2, 9, "expected labels", ""},
		{"when label key", "cell a\nwhen rps{port=1,9x=2} > 1 then clone", 2, 17, `found "9x", expected a label name`, ""},
		{"when label value", "cell a\nwhen rps{port} > 1 then clone", 2, 10, `found "port", expected a label such as port=value`, ""},
		{"when labels empty", "cell a\nwhen rps{} > 1 then clone", 2, 9, `found "{}", expected labels`, ""},
		{"when label dup", "cell a\nwhen rps{a=1,a=2} > 1 then clone", 2, 14, `found label "a" a second time`, ""},
		{"decay twice", "cell a\ndecay after 1m idle\ndecay after 2m idle", 3, 1, `second "decay"`, "line 2"},
		{"decay idle", "cell a\ndecay after 1m", 2, 15, `found end of line, expected "idle"`, ""},
		{"decay zero", "cell a\ndecay after 0s idle", 2, 13, `found "0s", expected a duration`, "above zero"},
		{"grant unknown", "cell a\ngrant kv, net", 2, 11, `found "net", expected a capability`, ""},
		{"grant empty", "cell a\ngrant kv,,log", 2, 10, `found ",", expected a capability`, ""},
		{"grant trailing", "cell a\ngrant kv,", 2, 10, "found end of line, expected a capability", ""},
		{"grant call", "cell a\ngrant call, kv", 2, 11, `found ",", expected a target such as cell:auth after "call"`, ""},
		{"grant call target", "cell a\ngrant call auth", 2, 12, `found "auth", expected a target cell:NAME`, ""},
		{"grant no comma", "cell a\ngrant kv log", 2, 10, `found "log", expected "," or end of line`, "commas"},
		{"allow bare", "cell a\nallow from frontend", 2, 12, `found "frontend", expected an identity`, "write cell:frontend"},
		{"allow kind", "cell a\nallow from cel:x", 2, 12, "expected an identity", `did you mean "cell"?`},
		{"allow no from", "cell a\nallow cell:x", 2, 7, `found "cell:x", expected "from"`, ""},
		{"spread", "cell a\nspread across cells", 2, 15, `found "cells", expected "nodes"`, ""},
		{"spread one node", "cell a\nspread across 1 nodes", 2, 15, `found "1", expected a node count from 2 to 1000`, ""},
		{"spread count unit", "cell a\nspread across 3 cells", 2, 17, `found "cells", expected "nodes"`, ""},
		{"prefer avoid clash", "cell a\nprefer node x\navoid node x", 3, 12, "line 2 says to prefer", ""},
		{"prefer bad name", "cell a\nprefer node -x", 2, 13, "expected a node name", ""},
		{"abi", "cell a\nabi wasi", 2, 5, `found "wasi", expected "reactor" or "command"`, ""},
		{"control char", "cell a\nkeep\x00 warm 1", 2, 5, "control character U+0000", ""},
		{"bad utf8", "cell a\nmodule \xff.wasm", 2, 8, "not UTF-8", ""},
		{"columns count characters", "cell a\nmodule µ.wasm sha256 x", 2, 22, `found "x" (1 characters)`, ""},
		{"tab columns", "cell a\n\tkeep\twarm\tx", 2, 12, `found "x", expected a count`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, diags := ParseBytes("t.intent", []byte(tt.src))
			if spec != nil {
				t.Errorf("got a spec for invalid input: %+v", spec)
			}
			for _, d := range diags {
				if d.Line == tt.line && d.Column == tt.col && strings.Contains(d.Message, tt.msg) && strings.Contains(d.Hint, tt.hint) {
					if d.File != "t.intent" || d.Severity != plugin.Error {
						t.Errorf("diagnostic %v: file %q severity %v", d, d.File, d.Severity)
					}
					return
				}
			}
			t.Errorf("no error at %d:%d with message ~%q hint ~%q; got:", tt.line, tt.col, tt.msg, tt.hint)
			for _, d := range diags {
				t.Errorf("\t%v", d)
			}
		})
	}
}

func TestAllErrorsCollected(t *testing.T) {
	src := "cell a\nkeep replica 1\nlimit memory x\nwhen cpu > 1 then fly\n"
	_, diags := ParseBytes("t.intent", []byte(src))
	if len(diags) != 3 {
		t.Fatalf("got %d diagnostics, want 3: %v", len(diags), diags)
	}
	for i, d := range diags {
		if d.Line != i+2 {
			t.Errorf("diagnostic %d on line %d, want %d", i, d.Line, i+2)
		}
	}
}

func TestErrorCap(t *testing.T) {
	src := strings.Repeat("bogus\n", 200)
	_, diags := ParseBytes("t.intent", []byte(src))
	if len(diags) != MaxErrors {
		t.Errorf("got %d diagnostics, want %d", len(diags), MaxErrors)
	}
}

func TestTooLarge(t *testing.T) {
	src := "cell a\n" + strings.Repeat("#", MaxSize)
	spec, diags := ParseBytes("t.intent", []byte(src))
	if spec != nil || len(diags) != 1 || diags[0].Line != 1 || diags[0].Column != 1 {
		t.Errorf("got %v, %v", spec, diags)
	}
}

func TestParseAndAccepts(t *testing.T) {
	p := New()
	ext, mt := p.Accepts()
	if !reflect.DeepEqual(ext, []string{".intent"}) || !reflect.DeepEqual(mt, []string{"application/vnd.celluster.intent"}) {
		t.Errorf("Accepts = %v, %v", ext, mt)
	}
	spec, diags, err := p.Parse(context.Background(), "x.intent", MediaType, []byte("cell x"))
	if err != nil || len(diags) > 0 || spec.Cell != "x" {
		t.Errorf("Parse = %v, %v, %v", spec, diags, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := p.Parse(ctx, "x.intent", "", []byte("cell x")); err == nil {
		t.Error("Parse with an ended context did not fail")
	}
}

func TestFormatRoundTrip(t *testing.T) {
	assertRoundTrip(t, helloSpec())
}

// assertRoundTrip checks that Format(spec) parses back to spec, lines aside.
func assertRoundTrip(t *testing.T, spec *plugin.IntentSpec) {
	t.Helper()
	text := Format(spec)
	again, diags := ParseBytes("formatted.intent", text)
	if len(diags) > 0 {
		t.Fatalf("Format gave text that does not parse: %v\n%s", diags, text)
	}
	if a, b := withoutLines(spec), withoutLines(again); !reflect.DeepEqual(a, b) {
		t.Errorf("round trip changed the spec:\n%s\nbefore %+v\nafter  %+v", text, a, b)
	}
}

// withoutLines copies s with its Line fields and rule names cleared.
func withoutLines(s *plugin.IntentSpec) plugin.IntentSpec {
	c := *s
	c.Objectives = append([]plugin.Objective(nil), s.Objectives...)
	for i := range c.Objectives {
		c.Objectives[i].Line = 0
	}
	c.Rules = append([]plugin.Rule(nil), s.Rules...)
	for i := range c.Rules {
		c.Rules[i].Line, c.Rules[i].Name = 0, ""
	}
	return c
}

func TestConformance(t *testing.T) {
	hello, err := os.ReadFile("testdata/hello.intent")
	if err != nil {
		t.Fatal(err)
	}
	at := func(line, col int) *plugintest.Position { return &plugintest.Position{Line: line, Column: col} }
	plugintest.IntentSuite(t, Info, New(), []plugintest.IntentCase{
		{Name: "design example", Filename: "hello.intent", Content: hello},
		{Name: "minimal", Content: []byte("cell x\n")},
		{Name: "rules", MediaType: MediaType, Content: []byte("cell api\nwhen latency.p99{port=8080} > 20ms for 5s then clone cooldown 30s\nwhen idle > 10m then decay\n")},
		{Name: "labels and grants", Filename: "module.wasm#cel.intent", Content: []byte("cell a # comment\ngrant call cell:b, call cell:c\n")},
		{Name: "keep state", Content: []byte("cell kv\nkeep state replicated every 1s\n")},
		{Name: "missing cell", Content: []byte("keep warm 1\n"), WantErrorAt: at(1, 1)},
		{Name: "state in a command cell", Content: []byte("cell a\nabi command\nkeep state\n"), WantErrorAt: at(3, 6)},
		{Name: "replica typo", Content: []byte("cell a\nkeep replica 1..8\n"), WantErrorAt: at(2, 6)},
		{Name: "bad verb", Content: []byte("cell a\nwhen cpu > 80% then scale\n"), WantErrorAt: at(2, 21)},
		{Name: "bad utf8", Content: []byte("cell a\nmodule \xff\n"), WantErrorAt: at(2, 8)},
	})
}
