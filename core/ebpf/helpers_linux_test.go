package ebpf

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// objectsDir is where bpf2go put the shipped objects (core may not import
// plugins, so the tests read the files).
const objectsDir = "../../plugins/kernel"

// missing skips the test, or fails it when CI=true: in CI the machine is
// supposed to have everything.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and %s", msg)
	}
	t.Skip(msg)
}

// requirePrivilege stops the test unless the process may load tracing programs.
func requirePrivilege(t testing.TB) {
	t.Helper()
	if err := checkPrivilege(); err != nil {
		missing(t, "needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN): run as root: %v", err)
	}
}

// requireTools stops the test unless the commands are on PATH.
func requireTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			missing(t, "needs %s on PATH", n)
		}
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func randomID(t testing.TB) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func randomInt(t testing.TB, n int64) int64 {
	v, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		t.Fatal(err)
	}
	return v.Int64()
}

// newLoader makes a Loader for a node named celtest-<random>, closed by the
// test's cleanup (which also checks that nothing is left pinned).
func newLoader(t testing.TB, cfg Config) *Loader {
	t.Helper()
	requirePrivilege(t)
	if cfg.Node == "" {
		cfg.Node = "celtest-" + randomID(t)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Loader.Close: %v", err)
		}
		if _, err := os.Lstat(l.dir); !os.IsNotExist(err) {
			t.Errorf("%s still exists after Close (%v)", l.dir, err)
		}
	})
	return l
}

// readObject reads a shipped object, e.g. "tcp" for tcp_bpfel.o.
func readObject(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(objectsDir, name+"_bpfel.o"))
	if err != nil {
		t.Fatalf("reading the generated object (run go generate ./plugins/kernel): %v", err)
	}
	return b
}

// load loads a shipped object under owner "celtest". If the test fails,
// its per-port maps are logged.
func load(t testing.TB, l *Loader, name string, vars map[string]any) *Object {
	t.Helper()
	o, err := l.Load(context.Background(), "celtest", name, readObject(t, name), vars)
	if err != nil {
		t.Fatalf("Load %s: %v", name, err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, m := range []string{"cel_tcp_counts", "cel_listen_cnt"} {
			entries, err := o.ReadMap(m)
			if err != nil {
				continue
			}
			for _, e := range entries {
				t.Logf("%s: port %d kind %d: %d", m, binary.NativeEndian.Uint16(e.Key), e.Key[2], sumU64(t, []Entry{e}, e.Key))
			}
		}
	})
	return o
}

// Kinds as in bpf/cel.h.
const (
	kindRetrans     = 1
	kindRstSent     = 2
	kindRstRecv     = 3
	kindSynRetrans  = 8
	kindListenDrop  = 9
	kindQueued      = 10
	kindAcceptqFull = 11
)

// portKey is struct cel_port_key as bytes: u16 port (host order), u8 kind, u8 pad.
func portKey(port uint16, kind uint8) []byte {
	k := binary.NativeEndian.AppendUint16(nil, port)
	return append(k, kind, 0)
}

// sumU64 adds up the per-CPU u64 values of the entry with key, 0 if absent.
func sumU64(t testing.TB, entries []Entry, key []byte) uint64 {
	t.Helper()
	var sum uint64
	for _, e := range entries {
		if !bytes.Equal(e.Key, key) {
			continue
		}
		for _, v := range e.Values {
			if len(v) != 8 {
				t.Fatalf("value of %d bytes, want 8", len(v))
			}
			sum += binary.NativeEndian.Uint64(v)
		}
	}
	return sum
}

// count reads map name of o and sums key's values.
func count(t testing.TB, o *Object, mapName string, key []byte) uint64 {
	t.Helper()
	entries, err := o.ReadMap(mapName)
	if err != nil {
		t.Fatalf("ReadMap %s: %v", mapName, err)
	}
	return sumU64(t, entries, key)
}

// eventually polls cond every 50ms until it holds or limit passes; the limit
// only bounds a failing test, passing never depends on speed.
func eventually(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func run(t testing.TB, stdin string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// netPair is two network namespaces the test created, joined by a veth
// pair with a 10.199.x.y/30 on each end. Nothing touches the host's
// namespace; both namespaces go away in the test's cleanup.
type netPair struct {
	a, b         string // namespace names: celtest-<id>a, celtest-<id>b
	addrA, addrB string
}

func newNetPair(t *testing.T) *netPair {
	t.Helper()
	requirePrivilege(t)
	requireTools(t, "ip")
	id := randomID(t)
	x, y := randomInt(t, 256), 4*randomInt(t, 64)
	n := &netPair{
		a:     "celtest-" + id + "a",
		b:     "celtest-" + id + "b",
		addrA: fmt.Sprintf("10.199.%d.%d", x, y+1),
		addrB: fmt.Sprintf("10.199.%d.%d", x, y+2),
	}
	for _, ns := range []string{n.a, n.b} {
		run(t, "", "ip", "netns", "add", ns)
		t.Cleanup(func() {
			out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput()
			if err != nil {
				t.Errorf("ip netns delete %s: %v: %s", ns, err, out)
			}
		})
	}
	// Created inside namespace a with its peer put straight into b.
	run(t, "", "ip", "-n", n.a, "link", "add", "ve0", "type", "veth", "peer", "name", "ve1", "netns", n.b)
	for _, side := range []struct{ ns, dev, addr string }{{n.a, "ve0", n.addrA}, {n.b, "ve1", n.addrB}} {
		run(t, "", "ip", "-n", side.ns, "addr", "add", side.addr+"/30", "dev", side.dev)
		run(t, "", "ip", "-n", side.ns, "link", "set", side.dev, "up")
		run(t, "", "ip", "-n", side.ns, "link", "set", "lo", "up")
	}
	return n
}

// in runs f on an OS thread moved into namespace ns. Sockets f creates
// belong to ns for their whole life. The thread is never handed back (it
// exits with the goroutine), and f must not start goroutines that create
// sockets: those would run in the host's namespace.
func in(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // no Unlock: the thread dies with this goroutine
		fd, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("opening netns %s: %w", ns, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("entering netns %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// netstat returns a TcpExt or Tcp counter of namespace ns.
func netstat(t *testing.T, ns, group, name string) uint64 {
	t.Helper()
	for _, file := range []string{"/proc/net/netstat", "/proc/net/snmp"} {
		out := run(t, "", "ip", "netns", "exec", ns, "cat", file)
		lines := strings.Split(out, "\n")
		for i := 0; i+1 < len(lines); i += 2 {
			names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			if len(names) == 0 || names[0] != group+":" || len(names) != len(values) {
				continue
			}
			for j := range names {
				if names[j] == name {
					var v uint64
					fmt.Sscan(values[j], &v)
					return v
				}
			}
		}
	}
	t.Fatalf("no %s %s in %s", group, name, ns)
	return 0
}
