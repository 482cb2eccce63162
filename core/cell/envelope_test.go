package cell

import (
	"context"
	"strings"
	"testing"

	"github.com/celluster/celluster/pluginapi/cellabi"
)

// TestServeEnvelope: an envelope is served by a reactor and by a command
// cell without going through HTTP; a call from a cell is authorised by the
// target's `allow from` (cell or node), and refusals say why.
func TestServeEnvelope(t *testing.T) {
	reg, _ := newTestRegistry(t, Limits{MaxBody: 16})
	app := loadCell(t, reg, "app", "v1.wasm")
	cmd := loadCell(t, reg, "cmd", "cmd.wasm")
	ctx := context.Background()
	env := func(path, body string) []byte {
		return cellabi.AppendRequest(nil, &cellabi.Request{Method: "GET", Path: path, Body: []byte(body),
			Headers: []cellabi.Header{{Name: CallerHeader, Value: "spiffe://x/cell/forged"}}})
	}
	serve := func(c *Cell, e []byte, f From) cellabi.Response {
		t.Helper()
		r, err := cellabi.DecodeResponse(c.ServeEnvelope(ctx, e, f))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	if r := serve(app, env("/app/x", ""), From{}); r.Status != 200 || string(r.Body) != "v1" {
		t.Fatalf("reactor: %d %q", r.Status, r.Body)
	}
	if r := serve(cmd, env("x", ""), From{}); r.Status != 202 || string(r.Body) != "cmd" {
		t.Fatalf("command cell, relative path: %d %q", r.Status, r.Body)
	}
	if r := serve(app, env("/app", strings.Repeat("b", 17)), From{}); r.Status != 413 {
		t.Fatalf("body over the limit: %d %q", r.Status, r.Body)
	}
	if r := serve(app, []byte("junk"), From{}); r.Status != 400 || !strings.Contains(string(r.Body), "malformed") {
		t.Fatalf("malformed envelope: %d %q", r.Status, r.Body)
	}

	front := From{Cell: "front", CellID: "spiffe://test.local/cell/front", Node: "n2"}
	r := serve(app, env("/app", ""), front)
	if r.Status != 403 || !strings.Contains(string(r.Body), "cell app does not allow calls from cell:front") ||
		!strings.Contains(string(r.Body), "no `allow from`") {
		t.Fatalf("a call without allow from: %d %q", r.Status, r.Body)
	}
	for _, allow := range [][]string{{"cell:front"}, {"cell:*"}, {"node:n2"}, {"node:*"}} {
		app.SetCallPolicy(CallPolicy{AllowFrom: allow})
		if r := serve(app, env("/app", ""), front); r.Status != 200 {
			t.Fatalf("allow from %v: %d %q", allow, r.Status, r.Body)
		}
	}
	app.SetCallPolicy(CallPolicy{AllowFrom: []string{"cell:other", "node:n3"}})
	if r := serve(app, env("/app", ""), front); r.Status != 403 || !strings.Contains(string(r.Body), "cell:other, node:n3") {
		t.Fatalf("allow from others: %d %q", r.Status, r.Body)
	}
	if in := app.Info(); in.Requests < 6 {
		t.Fatalf("envelopes not counted: %+v", in)
	}

	var pol CallPolicy
	if err := pol.MayCall("front", "app"); err == nil || !strings.Contains(err.Error(), "grant call cell:app") {
		t.Fatalf("MayCall without a grant: %v", err)
	}
	pol.Calls = []string{"cell:app"}
	if err := pol.MayCall("front", "app"); err != nil {
		t.Fatal(err)
	}
}
