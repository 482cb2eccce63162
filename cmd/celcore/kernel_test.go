package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/celluster/celluster/core/testbuild"
)

// lossyTransfer, run in a helper process inside a network namespace (env
// CELTEST_LOSSY_PORT), sends data for a few seconds from a server on
// 127.0.0.1:PORT to a client in the same namespace while nftables drops 20 %
// of the server's packets where they arrive (a drop on the sending side is
// reported to TCP at once and is not retransmitted as a loss): the server's
// TCP retransmits, on PORT. Deadlines bound it: how the transfer ends does
// not matter, only that it lost packets.
func lossyTransfer(port string) error {
	nft := fmt.Sprintf("table inet celtest {\n chain in {\n  type filter hook input priority 0;\n  tcp sport %s numgen random mod 10 < 2 drop\n }\n}\n", port)
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(nft)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		return err
	}
	defer l.Close()
	end := time.Now().Add(3 * time.Second)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetWriteDeadline(end)
		buf := make([]byte, 16<<10)
		for time.Now().Before(end) {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	c, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetReadDeadline(end.Add(time.Second))
	_, _ = io.Copy(io.Discard, c)
	return nil
}

// testNetns creates a network namespace with its loopback up, removed when
// the test ends, after checking for root and the tools the test names (ip
// and nft always). It returns the name and the random bytes in it.
func testNetns(t *testing.T, tools ...string) (string, []byte) {
	t.Helper()
	requireRoot(t)
	for _, tool := range append([]string{"ip", "nft"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required (make deps): %v", tool, err)
		}
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ns := "celtest-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	return ns, b
}

// requireRoot skips (or, with CI=true, fails) a test that needs root for
// eBPF and network namespaces.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (CAP_BPF, CAP_SYS_ADMIN for network namespaces); CI runs as root")
	}
	t.Skip("needs root: CAP_BPF for the kernel programs and CAP_SYS_ADMIN for a network namespace")
}

// TestKernelSignalRule: the kernel plugin's programs, loaded by the core,
// see TCP retransmissions caused in a network namespace the test creates;
// an intent rule on kernel.tcp.retransmits for that port fires, and the
// journal shows the kernel values that caused it. After the node stops,
// none of its programs remain.
func TestKernelSignalRule(t *testing.T) {
	ns, b := testNetns(t, "bpftool")
	port := strconv.Itoa(41000 + int(b[0])<<4 + int(b[1]&15))

	n := startNode(t, "", "--telemetry-interval", "200ms", "--node", "kt"+hex.EncodeToString(b[:2]))
	n.writeIntent("hello", fmt.Sprintf("cell hello\nkeep replicas 1..4\nwhen kernel.tcp.retransmits{port=%s} > 0 for 1s then clone cooldown 1m\n", port))
	n.drop("hello", testbuild.Cell(t, "hello"))
	n.waitStatus("/hello", 200)
	eventually(t, "the kernel programs to be loaded", func() bool {
		out, _ := n.celctl("status")
		return strings.Contains(out, "cel_tcp_retrans")
	})
	if out, err := exec.Command("bpftool", "prog", "show").CombinedOutput(); err != nil || !strings.Contains(string(out), "cel_tcp_retrans") {
		t.Fatalf("bpftool prog show lacks cel_tcp_retrans while the node runs: %v\n%s", err, out)
	}

	// Transfers in the namespace until the rule has fired.
	var clone *journalEntry
	for i := 0; i < 5 && clone == nil; i++ {
		cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "CELTEST_LOSSY_PORT="+port)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("lossy transfer in %s: %v\n%s", ns, err, out)
		}
		clone = find(n.journal("hello"), func(e journalEntry) bool { return e.Verb == "clone" && e.Rule == "line 3" })
	}
	if clone == nil {
		out, _ := n.celctl("signals")
		t.Fatalf("the retransmit rule never fired; signals:\n%s", out)
	}
	v := clone.Values[len(clone.Values)-1]
	if v.Signal != "kernel.tcp.retransmits" || v.Labels["port"] != port || v.Value <= 0 || clone.Outcome != "done" {
		t.Fatalf("clone entry = %+v, want fired by kernel.tcp.retransmits{port=%s} > 0", clone, port)
	}
	if !strings.Contains(clone.Explanation, "kernel.tcp.retransmits") {
		t.Fatalf("explanation lacks the kernel signal: %s", clone.Explanation)
	}
	// The node's own programs (other tests may load theirs meanwhile) are
	// gone once it stops.
	out, err := n.celctl("status", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		BPF struct {
			Available bool `json:"available"`
			Programs  []struct {
				Name string `json:"name"`
				ID   uint32 `json:"id"`
			} `json:"programs"`
		} `json:"bpf"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || !st.BPF.Available || len(st.BPF.Programs) < 8 {
		t.Fatalf("celctl status -o json bpf: %v\n%s", err, out)
	}
	n.stop()
	// The kernel frees a detached tracing program once its last RCU grace
	// period ends, so it may linger for a moment after the node exits.
	for _, p := range st.BPF.Programs {
		var out []byte
		gone := func() bool {
			var err error
			out, err = exec.Command("bpftool", "prog", "show", "id", strconv.Itoa(int(p.ID))).CombinedOutput()
			return err != nil
		}
		deadline := time.Now().Add(15 * time.Second)
		for !gone() && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if !gone() {
			t.Errorf("program %s (id %d) remains 15s after the node stopped:\n%s", p.Name, p.ID, out)
		}
	}
}
