package main

import (
	"strings"
	"testing"

	"github.com/celluster/celluster/core/testbuild"
)

// TestCellCalls: a cell calls another through cel.call as itself; the
// caller's grant and the target's `allow from` decide, and a refusal is a
// clear answer to the caller, which it passes on.
func TestCellCalls(t *testing.T) {
	n := startNode(t, "")
	n.writeIntent("hello", "cell hello\nallow from cell:front\n")
	n.writeIntent("front", "cell front\ngrant call cell:hello\n")
	n.drop("hello", testbuild.Cell(t, "hello"))
	n.drop("front", testbuild.Cell(t, "front"))
	n.waitStatus("/hello", 200)
	eventually(t, "front to reach hello", func() bool {
		r, err := n.do("GET", "/front?name=caller", "")
		return err == nil && r.status == 200 && r.body == "front got: Hello, caller!\n"
	})

	// hello stops allowing front.
	n.writeIntent("hello", "cell hello\nallow from cell:other\n")
	var r reply
	eventually(t, "hello's refusal to reach front's client", func() bool {
		r = n.get("/front")
		return r.status == 403
	})
	if !strings.Contains(r.body, "cell hello does not allow calls from cell:front") || !strings.Contains(r.body, "cell:other") {
		t.Fatalf("refusal body %q", r.body)
	}

	// front loses its grant.
	n.writeIntent("hello", "cell hello\nallow from cell:*\n")
	n.writeIntent("front", "cell front\n")
	eventually(t, "front to be refused for lack of a grant", func() bool {
		r = n.get("/front")
		return r.status == 403 && strings.Contains(r.body, "not granted call to cell:hello")
	})

	// A request from outside cannot claim a caller's identity.
	req := n.get("/hello")
	if req.status != 200 {
		t.Fatalf("hello over HTTP: %d", req.status)
	}
}
