package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/celluster/celluster/core/testbuild"
)

// rssKiB returns the resident set size of process pid.
func rssKiB(t testing.TB, pid int) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				t.Fatal(err)
			}
			return kb
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// leaks lists the strings a client must never see in an answer: host paths,
// guest traps, compiler errors and the bytes of files behind symlinks.
var leaks = []string{"/", ".wasm", "trap", "wasm stack", "cel_handle", "magic", "SECRET", "root:", "0x", "compil"}

// generic checks that an error answer carries only a generic reason.
func generic(t *testing.T, what string, r reply) {
	t.Helper()
	body := strings.TrimPrefix(r.body, "celluster: cell ")
	for _, l := range leaks {
		if strings.Contains(body, l) {
			t.Errorf("%s: answer %d %q carries %q", what, r.status, r.body, l)
		}
	}
	if !strings.HasPrefix(r.body, "celluster: cell ") || strings.Count(r.body, "\n") != 1 || len(r.body) > 120 {
		t.Errorf("%s: answer %d %q is not one short generic line", what, r.status, r.body)
	}
}

// TestBadInputSuite throws bad input at one real node: malformed, trapping
// and huge modules, a FIFO, symlinks out of and inside the cells
// directory, bad intents, a module off its intent's sha256 pin, endpoints
// and ABIs the node cannot honour, rules on signals nobody emits. After
// each, the cells that served keep serving the same version, the error is
// in `celctl cells` (or `celctl intent`) saying what and where, and HTTP
// clients get a short generic reason.
func TestBadInputSuite(t *testing.T) {
	n := startNode(t, "")
	v1 := testbuild.Cell(t, "hello", "-X main.version=v1")
	v2 := testbuild.Cell(t, "hello", "-X main.version=v2")
	n.drop("hello", v1)
	n.drop("counter", testbuild.Cell(t, "counter"))
	n.waitStatus("/hello", 200)
	n.waitStatus("/counter", 200)
	sha1 := sha256hex(v1)
	stillServing := func(what string) {
		t.Helper()
		r := n.get("/hello")
		if r.status != 200 || r.header.Get("X-Cell-Version") != "v1" {
			t.Fatalf("after %s: hello answered %d %q (version %q), want v1 serving", what, r.status, r.body, r.header.Get("X-Cell-Version"))
		}
		if r := n.get("/counter"); r.status != 200 {
			t.Fatalf("after %s: counter answered %d %q", what, r.status, r.body)
		}
	}
	cellError := func(name string, want ...string) cellJSON {
		t.Helper()
		var c cellJSON
		eventually(t, fmt.Sprintf("celctl cells to show %s's error %q", name, want), func() bool {
			c = n.listCells()[name]
			for _, w := range want {
				if !strings.Contains(c.Error, w) {
					return false
				}
			}
			return true
		})
		return c
	}

	t.Run("malformed module", func(t *testing.T) {
		n.drop("junk", []byte("this is not wasm at all"))
		c := cellError("junk", filepath.Join(n.cellsDir, "junk.wasm"), "not a usable WebAssembly module")
		if c.State != "failed" {
			t.Fatalf("junk: %+v", c)
		}
		r := n.get("/junk")
		if r.status != 503 {
			t.Fatalf("GET /junk = %d %q", r.status, r.body)
		}
		generic(t, "malformed module", r)
		n.drop("hello", v1[:len(v1)/3]) // a truncated replacement
		cellError("hello", "hello.wasm", "not a usable WebAssembly module")
		stillServing("a truncated module")
		n.drop("hello", v1)
		eventually(t, "hello's error to clear", func() bool { return n.listCells()["hello"].Error == "" })
	})

	t.Run("trapping module", func(t *testing.T) {
		bad, err := os.ReadFile(filepath.Join("..", "..", "core", "wasm", "testdata", "badptr.wasm"))
		if err != nil {
			t.Fatal(err)
		}
		n.drop("badptr", bad)
		r := n.waitStatus("/badptr", 500)
		generic(t, "trapping module", r)
		eventually(t, "the trap in the log", func() bool {
			return strings.Contains(n.Logs(), "cell failed; instance replaced") && strings.Contains(n.Logs(), "guest trapped during cel_handle")
		})
		stillServing("a trapping module")
	})

	t.Run("FIFO", func(t *testing.T) {
		fifo := filepath.Join(n.cellsDir, "f.wasm")
		if err := syscall.Mkfifo(fifo, 0o644); err != nil {
			t.Fatal(err)
		}
		cellError("f", fifo, "not a regular file", "FIFO")
		generic(t, "FIFO", n.get("/f"))
		stillServing("a FIFO")
		// The name is not wedged: a valid module replaces the FIFO.
		if err := os.Remove(fifo); err != nil {
			t.Fatal(err)
		}
		n.drop("f", testbuild.Cell(t, "counter"))
		n.waitStatus("/f", 200)
	})

	t.Run("symlinks", func(t *testing.T) {
		secret := filepath.Join(t.TempDir(), "shadow")
		if err := os.WriteFile(secret, []byte("root:SECRET:19000:0:99999:7:::\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		for name, target := range map[string]string{"x": secret, "y": filepath.Join(n.cellsDir, "hello.wasm")} {
			if err := os.Symlink(target, filepath.Join(n.cellsDir, name+".wasm")); err != nil {
				t.Fatal(err)
			}
			c := cellError(name, filepath.Join(n.cellsDir, name+".wasm"), "symbolic link")
			if strings.Contains(c.Error, "SECRET") || strings.Contains(c.Error, "726f6f74") || strings.Contains(c.Error, "root:") {
				t.Fatalf("%s: the error carries the target's bytes: %q", name, c.Error)
			}
			r := n.get("/" + name)
			if r.status != 503 {
				t.Fatalf("GET /%s = %d %q", name, r.status, r.body)
			}
			generic(t, "symlink "+name, r)
		}
		stillServing("symlinks")
	})

	t.Run("huge module", func(t *testing.T) {
		before := rssKiB(t, n.cmd.Process.Pid)
		big := filepath.Join(n.cellsDir, ".big.tmp")
		f, err := os.Create(big)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(600 << 20); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if err := os.Rename(big, filepath.Join(n.cellsDir, "big.wasm")); err != nil {
			t.Fatal(err)
		}
		cellError("big", filepath.Join(n.cellsDir, "big.wasm"), "file too large", "629145600 bytes")
		after := rssKiB(t, n.cmd.Process.Pid)
		t.Logf("RSS before the 600 MiB file: %d KiB, after it was refused: %d KiB", before, after)
		if after-before > 64<<10 {
			t.Fatalf("refusing a 600 MiB module grew RSS by %d KiB: it was read", after-before)
		}
		generic(t, "huge module", n.get("/big"))
		stillServing("a huge module")
	})

	t.Run("bad intents", func(t *testing.T) {
		for _, tc := range []struct{ text, want string }{
			{"cell hello\nkeep replicas 1-8\n", "hello.intent:2:15"},
			{"cell hello\nserve http :8080 /hello\n", "hello.intent:2:12: serve http :8080 /hello: this node serves every cell on its one ingress"},
			{"cell hello\nserve http /a/../b\n", `hello.intent:2:12: found "/a/../b", expected a path prefix`},
			{"cell hello\nmodule other.wasm\n", "hello.intent:2:8: module other.wasm"},
			{"cell hello\nmodule hello.wasm sha256 12ab\n", "hello.intent:2:26"},
		} {
			n.writeIntent("hello", tc.text)
			cellError("hello", "intent rejected", tc.want)
			stillServing("intent " + strings.ReplaceAll(tc.text, "\n", "; "))
		}
		n.writeIntent("hello", "cell hello\n")
		eventually(t, "a good intent to clear the error", func() bool { return n.listCells()["hello"].Error == "" })
	})

	t.Run("sha256 pin", func(t *testing.T) {
		n.writeIntent("hello", "cell hello\nmodule hello.wasm sha256 "+sha1+"\n")
		eventually(t, "the pin to be in force", func() bool {
			in, ok := n.intent("hello")
			return ok && strings.Contains(in.Text, sha1)
		})
		n.drop("hello", v2)
		cellError("hello", "hello.wasm", "sha256 "+sha256hex(v2), "does not match the pin "+sha1, "hello.intent:2:8")
		stillServing("a module off its pin")
		if vs := n.versions("hello"); len(vs) != 1 || vs[0].SHA256 != sha1 {
			t.Fatalf("versions after a refused module: %+v", vs)
		}
		// The pinned module is accepted again.
		n.drop("hello", v1)
		eventually(t, "hello's error to clear", func() bool { return n.listCells()["hello"].Error == "" })
		n.writeIntent("hello", "cell hello\n")
	})

	t.Run("abi", func(t *testing.T) {
		n.writeIntent("counter", "cell counter\nabi command\n")
		cellError("counter", "counter.wasm", "a reactor module, but", "counter.intent:2:1 says abi command")
		stillServing("an abi the module does not have")
		n.writeIntent("counter", "cell counter\nabi reactor\n")
		eventually(t, "counter's error to clear", func() bool { return n.listCells()["counter"].Error == "" })
	})

	t.Run("rule on a silent signal", func(t *testing.T) {
		n.writeIntent("counter", "cell counter\nwhen bogus.signal > 1 for 1s then clone\n")
		var in intentJSON
		eventually(t, "the warning in celctl intent", func() bool {
			var ok bool
			in, ok = n.intent("counter")
			return ok && len(in.Warnings) > 0
		})
		if w := in.Warnings[0]; !strings.Contains(w, "counter.intent:2") || !strings.Contains(w, `"bogus.signal"`) || !strings.Contains(w, "no source emits") {
			t.Fatalf("warning %q", w)
		}
		if in.Error != "" {
			t.Fatalf("a warning rejected the intent: %q", in.Error)
		}
		out, err := n.celctl("intent", "counter")
		if err != nil || !strings.Contains(out, "WARNING: ") {
			t.Fatalf("celctl intent counter: %v\n%s", err, out)
		}
		eventually(t, "the warning in the log", func() bool { return strings.Contains(n.Logs(), "intent warning") })
		stillServing("a rule on a silent signal")
	})

	if strings.Contains(n.Logs(), "panic") {
		t.Fatalf("the node logged a panic")
	}
}
