//go:build linux

package handover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the keeper: Hold re-runs it with
// HANDOVER_TEST_KEEPER set to "DIR HOLD".
func TestMain(m *testing.M) {
	if v := os.Getenv("HANDOVER_TEST_KEEPER"); v != "" {
		dir, hold, _ := strings.Cut(v, " ")
		d, err := time.ParseDuration(hold)
		if err == nil {
			err = Keep(dir, d)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// hold hands l to a keeper (this test binary) in dir for hold and closes
// l, as a stopping node does.
func hold(t *testing.T, dir string, d time.Duration, l *net.TCPListener) int {
	t.Helper()
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("HANDOVER_TEST_KEEPER", dir+" "+d.String())
	pid, err := Hold(context.Background(), os.Args[0], []string{"-test.run=^$"}, os.Getpid(),
		[]Held{{Socket: Socket{Name: "http", Network: "tcp", Addr: l.Addr().String()}, File: f}})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	return pid
}

// TestConnectionQueuedWhileHeld: a connection made after the listener's
// process closed it, while a keeper holds the socket, is neither refused
// nor lost: the next process takes the socket and accepts it with the
// bytes the client sent meanwhile.
func TestConnectionQueuedWhileHeld(t *testing.T) {
	dir := t.TempDir()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	keeper := hold(t, dir, time.Minute, l)

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("a connection while the keeper holds the socket: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET / while nobody accepts\n")); err != nil {
		t.Fatal(err)
	}

	taken, err := Take(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if taken.Keeper != keeper || taken.From != os.Getpid() || taken.Held() <= 0 {
		t.Fatalf("offer %+v (keeper pid %d, held %v)", taken.Offer, keeper, taken.Held())
	}
	f, s := taken.Take("http")
	if f == nil || s.Addr != addr || s.Network != "tcp" {
		t.Fatalf("socket http: %v %+v", f, s)
	}
	nl, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	if nl.Addr().String() != addr {
		t.Fatalf("received a listener on %s, want %s", nl.Addr(), addr)
	}
	sc, err := nl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	buf := make([]byte, 64)
	n, err := sc.Read(buf)
	if err != nil || string(buf[:n]) != "GET / while nobody accepts\n" {
		t.Fatalf("queued connection carried %q, %v", buf[:n], err)
	}
	// The keeper has gone, and its socket with it.
	waitGone(t, filepath.Join(dir, SocketName))
	if _, err := Take(context.Background(), dir); !errors.Is(err, ErrNoKeeper) {
		t.Fatalf("a second Take: %v, want ErrNoKeeper", err)
	}
}

// TestWithoutKeeperRefused is the peer of the test above: the same
// listener closed with no keeper refuses the next connection.
func TestWithoutKeeperRefused(t *testing.T) {
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if _, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial after close without a keeper: %v, want connection refused", err)
	}
}

// TestKeeperGivesUp: with no taker within its hold time the keeper closes
// the sockets (connections are refused from then on) and removes its
// socket file.
func TestKeeperGivesUp(t *testing.T) {
	dir := t.TempDir()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	hold(t, dir, 300*time.Millisecond, l)
	waitGone(t, filepath.Join(dir, SocketName))
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
		if err == nil {
			c.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the port still accepts after the keeper gave up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := Take(context.Background(), dir); !errors.Is(err, ErrNoKeeper) {
		t.Fatalf("Take after the keeper gave up: %v", err)
	}
}

// TestStaleKeeperSocket: a socket file left by a keeper that died is
// removed, not mistaken for a keeper.
func TestStaleKeeperSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, SocketName)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := Take(context.Background(), dir); !errors.Is(err, ErrNoKeeper) {
		t.Fatalf("Take with a stale socket: %v, want ErrNoKeeper", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale socket left in place: %v", err)
	}
}

// TestDecodeOfferRefusals: offers a node cannot use are refused, saying
// why.
func TestDecodeOfferRefusals(t *testing.T) {
	for _, tc := range []struct {
		offer string
		n     int
		want  string
	}{
		{`{"version":2,"sockets":[]}`, 0, "version 2"},
		{`{"version":1,"sockets":[{"name":"http","network":"tcp"}]}`, 2, "2 descriptors"},
		{`{"version":1,"sockets":[{"name":"a","network":"tcp"},{"name":"a","network":"udp"}]}`, 2, "repeated"},
		{`{"version":1,"sockets":[{"name":"a","network":"sctp"}]}`, 1, "neither tcp nor udp"},
		{`not json`, 0, "handover offer"},
		{strings.Repeat(" ", maxOffer+1), 0, "more than"},
	} {
		_, err := DecodeOffer([]byte(tc.offer), tc.n)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DecodeOffer(%.40q, %d) = %v, want an error containing %q", tc.offer, tc.n, err, tc.want)
		}
	}
	if _, err := DecodeOffer([]byte(`{"version":1,"from":3,"sockets":[{"name":"http","network":"tcp","addr":"127.0.0.1:1"}]}`), 1); err != nil {
		t.Fatal(err)
	}
}

// FuzzDecodeOffer: an offer is peer input (whatever listens on the
// socket in the data directory); no input makes the decoder panic, and
// an accepted offer is consistent.
func FuzzDecodeOffer(f *testing.F) {
	f.Add([]byte(`{"version":1,"from":3,"keeper":4,"since":"2026-01-01T00:00:00Z","sockets":[{"name":"http","network":"tcp","addr":"127.0.0.1:8080"}]}`), 1)
	f.Add([]byte(`{"version":1,"sockets":[{"name":"https","network":"tcp"},{"name":"h3","network":"udp"}]}`), 2)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		o, err := DecodeOffer(b, n)
		if err != nil {
			return
		}
		if len(o.Sockets) != n || o.Version != Version {
			t.Fatalf("accepted %+v for %d descriptors", o, n)
		}
	})
}

// waitGone waits until path no longer exists.
func waitGone(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still exists", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
