package testbuild_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/celluster/celluster/core/testbuild"
	"github.com/celluster/celluster/core/wasm"
	"github.com/celluster/celluster/pluginapi/cellabi"
)

// TestCCellKinds: examples/cells/greet is a C cell (.c files, no Go) and a
// reactor (it includes cel.h); the Go cells are not C cells.
func TestCCellKinds(t *testing.T) {
	srcs, err := testbuild.CSources("greet")
	if err != nil || len(srcs) != 1 || !strings.HasSuffix(srcs[0], "examples/cells/greet/greet.c") {
		t.Fatalf("CSources(greet) = %v, %v", srcs, err)
	}
	if r, err := testbuild.IsReactor("greet"); err != nil || !r {
		t.Fatalf("IsReactor(greet) = %v, %v", r, err)
	}
	for _, name := range []string{"hello", "echo"} {
		if srcs, err := testbuild.CSources(name); err != nil || srcs != nil {
			t.Fatalf("CSources(%s) = %v, %v: a Go cell", name, srcs, err)
		}
	}
	if r, err := testbuild.IsReactor("echo"); err != nil || r {
		t.Fatalf("IsReactor(echo) = %v, %v: a command", r, err)
	}
}

// logBuffer collects the guest's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// greetReactor builds the C example cell and starts one instance of it in
// the node's wasm runtime (core/wasm), without a node around it: the
// envelopes below are handed to it as they are, malformed ones too.
func greetReactor(t *testing.T) (*wasm.Reactor, *logBuffer) {
	t.Helper()
	src := testbuild.Cell(t, "greet")
	logs := &logBuffer{}
	e, err := wasm.NewEngine(context.Background(), wasm.Config{
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(context.Background()) })
	m, err := e.Compile(context.Background(), src, wasm.CompileOptions{MemoryLimit: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Release)
	if m.ABI != wasm.ABIReactor {
		t.Fatalf("greet.wasm is a %s, want a reactor", m.ABI)
	}
	r, err := m.NewReactor(context.Background(), wasm.InstanceConfig{Cell: "greet", InitTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	return r, logs
}

func handle(t *testing.T, r *wasm.Reactor, env []byte) cellabi.Response {
	t.Helper()
	out, err := r.Handle(context.Background(), 5*time.Second, env)
	if err != nil {
		t.Fatalf("cel_handle of %d bytes %x: %v", len(env), env[:min(len(env), 64)], err)
	}
	resp, err := cellabi.DecodeResponse(out)
	if err != nil {
		t.Fatalf("the C cell's response does not decode: %v\n%q", err, out)
	}
	// Byte for byte what the Go encoder makes of the same response.
	if again := cellabi.AppendResponse(nil, &resp); !bytes.Equal(again, out) {
		t.Fatalf("response envelope\n%x\nre-encoded by cellabi\n%x", out, again)
	}
	return resp
}

// TestCCellEnvelope: sdk/c/cel.h, through the greet example in the real
// runtime, decodes v1 and v1.1 request envelopes, encodes responses byte
// for byte as pluginapi/cellabi does, and accepts exactly the envelopes
// cellabi accepts: every other is answered 400 with cellabi's reason (field
// and offset), logged, and the instance serves on — every truncation of a
// valid envelope, the README's list of rejections, and random corruptions.
func TestCCellEnvelope(t *testing.T) {
	t.Parallel()
	r, logs := greetReactor(t)

	// The README's worked example (§3): a v1 envelope.
	worked := []byte("\x01\x00\x00\x00" + "\x03\x00\x00\x00GET" + "\x06\x00\x00\x00/hello" +
		"\x09\x00\x00\x00name=cell" + "\x01\x00\x00\x00" + "\x06\x00\x00\x00Accept" + "\x03\x00\x00\x00*/*" +
		"\x00\x00\x00\x00")
	if len(worked) != 59 {
		t.Fatalf("worked example is %d bytes, want 59", len(worked))
	}
	resp := handle(t, r, worked)
	if resp.Status != 200 || !strings.HasPrefix(string(resp.Body), "Hello, cell!\nmethod: GET\npath: /hello\nquery: name=cell\nmetadata: none") ||
		!strings.Contains(string(resp.Body), "headers: 1\n") {
		t.Fatalf("v1 request: %d %q", resp.Status, resp.Body)
	}

	// v1.1, with a body and metadata.
	req := cellabi.Request{Method: "POST", Path: "/greet/x", Query: "name=C%20cell&x=1",
		Headers: []cellabi.Header{{Name: "Content-Length", Value: "4"}, {Name: "User-Agent", Value: "t/1"}},
		Body:    []byte("ping"), HasMeta: true,
		Meta: cellabi.Meta{Host: "shop.example:81", RemoteAddr: "192.0.2.7:4242", Scheme: "https", Proto: "HTTP/2.0",
			URL: "https://shop.example:81/greet/x?name=C%20cell&x=1"}}
	good := cellabi.AppendRequest(nil, &req)
	resp = handle(t, r, good)
	for _, want := range []string{"Hello, C cell!\n", "method: POST\n", "host: shop.example:81\n", "scheme: https\n",
		"client: 192.0.2.7:4242\n", "proto: HTTP/2.0\n", "url: https://shop.example:81/greet/x?name=C%20cell&x=1\n",
		"user-agent: t/1\n", "headers: 2\n", "body: 4 bytes\n"} {
		if !strings.Contains(string(resp.Body), want) {
			t.Fatalf("v1.1 request: body %q lacks %q", resp.Body, want)
		}
	}

	// Many headers: more than the runtime's array held, so it grows.
	many := req
	many.Headers = nil
	for i := range 5000 {
		many.Headers = append(many.Headers, cellabi.Header{Name: fmt.Sprintf("X-H%04d", i), Value: "v"})
	}
	if resp = handle(t, r, cellabi.AppendRequest(nil, &many)); resp.Status != 200 || !strings.Contains(string(resp.Body), "headers: 5000\n") {
		t.Fatalf("5000 headers: %d %q", resp.Status, resp.Body)
	}

	// agree checks the C decoder against cellabi's on env.
	agree := func(what string, env []byte) {
		t.Helper()
		_, goErr := cellabi.DecodeRequest(env)
		resp := handle(t, r, env)
		if goErr == nil {
			// Accepted: served (a corrupted name may still be a 400 of
			// greet's own, never a malformed envelope).
			if strings.HasPrefix(string(resp.Body), "malformed") {
				t.Fatalf("%s: cellabi accepts it, the C cell answered %d %q", what, resp.Status, resp.Body)
			}
			return
		}
		want := "malformed request envelope: " + strings.TrimPrefix(goErr.Error(), "cellabi: ") + "\n"
		if resp.Status != 400 || string(resp.Body) != want {
			t.Fatalf("%s: %x\nthe C cell answered %d %q\nwant 400 %q", what, env[:min(len(env), 64)], resp.Status, resp.Body, want)
		}
	}
	for n := range len(good) {
		agree(fmt.Sprintf("truncated to %d bytes", n), good[:n])
	}
	set32 := func(off int, v uint32) []byte {
		b := bytes.Clone(good)
		binary.LittleEndian.PutUint32(b[off:], v)
		return b
	}
	nhOff := 4 + 4 + len(req.Method) + 4 + len(req.Path) + 4 + len(req.Query)
	rejects := map[string][]byte{
		"version 2":                    append([]byte{2}, good[1:]...),
		"flags 2":                      append([]byte{1, 2}, good[2:]...),
		"reserved 1":                   append([]byte{1, 1, 1, 0}, good[4:]...),
		"v1 flags with metadata":       append([]byte{1, 0}, good[2:]...),
		"trailing byte":                append(bytes.Clone(good), 0),
		"method length past the end":   set32(4, 0xFFFFFFFF),
		"path length past the end":     set32(4+4+len(req.Method), uint32(len(good))),
		"nheaders too large":           set32(nhOff, 0x7FFFFFFF),
		"nheaders one more":            set32(nhOff, 3),
		"header 0 name past the end":   set32(nhOff+4, 1<<20),
		"meta url length past the end": set32(len(good)-4-len(req.Meta.URL), uint32(len(req.Meta.URL)+1)),
	}
	for what, env := range rejects {
		agree(what, env)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		env := bytes.Clone(good)
		for range 1 + rng.IntN(3) {
			switch rng.IntN(3) {
			case 0:
				env[rng.IntN(len(env))] = byte(rng.IntN(256))
			case 1:
				env[rng.IntN(len(env))] ^= 1 << rng.IntN(8)
			case 2:
				env = env[:rng.IntN(len(env))]
			}
			if len(env) == 0 {
				break
			}
		}
		agree(fmt.Sprintf("corruption %d", i), env)
	}
	if !strings.Contains(logs.String(), "malformed request envelope: request nheaders") {
		t.Fatalf("no malformed envelope was logged:\n%.2000s", logs.String())
	}
	// The instance kept its state all along: still serving, count going on.
	resp = handle(t, r, worked)
	if resp.Status != 200 || !strings.Contains(string(resp.Body), "served: ") {
		t.Fatalf("after the malformed envelopes: %d %q", resp.Status, resp.Body)
	}
}
