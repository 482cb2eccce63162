package ebpf

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// testPort picks a port for a listener in a namespace the test created.
// The maps are keyed by port across namespaces, so it is random and below
// the usual ephemeral range to stay clear of the host's own traffic.
func testPort(t *testing.T) uint16 { return uint16(20000 + randomInt(t, 10000)) }

func hostPort(addr string, port uint16) string {
	return net.JoinHostPort(addr, strconv.Itoa(int(port)))
}

// listenIn listens on addr:port inside namespace ns.
func listenIn(t *testing.T, ns, addr string, port uint16) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := in(ns, func() (err error) {
		ln, err = net.Listen("tcp4", hostPort(addr, port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dialIn connects from namespace ns.
func dialIn(t *testing.T, ns, addr string, port uint16) net.Conn {
	t.Helper()
	var c net.Conn
	if err := in(ns, func() (err error) {
		c, err = net.DialTimeout("tcp4", hostPort(addr, port), 10*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A sender losing ~30% of its data segments on the way (nftables in the
// receiver's namespace) retransmits; the counter of its local port moves,
// by at least the segments the kernel says it retransmitted.
func TestTCPRetransmitsCounted(t *testing.T) {
	requireTools(t, "ip", "nft")
	n := newNetPair(t)
	o := load(t, newLoader(t, Config{}), "tcp", nil)
	port := testPort(t)

	// The server in b sends; 3 in 10 of its segments that carry no
	// SYN/FIN/RST (so the handshake and teardown are not slowed down) are
	// lost on the way: dropped as they reach a. (Dropped in b's own stack,
	// the sender would be told at once and resend them as unsent data,
	// not as retransmissions.)
	run(t, fmt.Sprintf(`table inet celtest {
	chain lose {
		type filter hook prerouting priority 0; policy accept;
		tcp sport %d tcp flags & (syn | fin | rst) == 0 numgen random mod 10 < 3 drop
	}
}
`, port), "ip", "netns", "exec", n.a, "nft", "-f", "-")

	ln := listenIn(t, n.b, n.addrB, port)
	const size = 2 << 20
	// Heavy loss backs TCP off exponentially: how much arrives before the
	// deadline depends on the machine's load, and does not matter; that
	// segments were lost and resent does.
	deadline := time.Now().Add(8 * time.Second)
	sent := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			sent <- err
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		_, err = c.Write(make([]byte, size))
		sent <- err
	}()
	c := dialIn(t, n.a, n.addrB, port)
	c.SetDeadline(deadline.Add(time.Second))
	got, err := io.Copy(io.Discard, c)
	c.Close()
	t.Logf("received %d of %d bytes (%v); sender: %v", got, size, err, <-sent)
	if got == 0 {
		t.Fatalf("nothing arrived: %v", err)
	}

	// The kernel's count first: a connection cut off by the deadline may
	// still be retransmitting, and whatever the kernel counted by then the
	// program counted too, so reading the map second keeps it at least as
	// high.
	kernel := netstat(t, n.b, "Tcp", "RetransSegs")
	retrans := count(t, o, "cel_tcp_counts", portKey(port, kindRetrans))
	t.Logf("port %d: cel_tcp_counts retransmitted segments %d; the namespace's Tcp RetransSegs %d", port, retrans, kernel)
	// The map counts the port in every namespace, the kernel only this
	// one's (where this is the only connection): at least as many.
	if kernel == 0 || retrans < kernel {
		t.Fatalf("port %d: %d retransmitted segments counted, the kernel counted %d: want > 0 and at least the kernel's", port, retrans, kernel)
	}
}

// A SYN to a closed port is answered with a RST that no socket sends (the
// port is then the segment's destination) and the connecting socket
// receives it; an abortive close (SO_LINGER 0) sends one from a socket.
func TestTCPResetsCounted(t *testing.T) {
	n := newNetPair(t)
	o := load(t, newLoader(t, Config{}), "tcp", nil)
	closed, local := testPort(t), testPort(t)
	for local == closed {
		local = testPort(t)
	}

	if err := in(n.a, func() error {
		d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(n.addrA), Port: int(local)}}
		_, err := d.Dial("tcp4", hostPort(n.addrB, closed))
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("dialing a closed port: %v, want ECONNREFUSED", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "RST to a closed port not counted", func() bool {
		return count(t, o, "cel_tcp_counts", portKey(closed, kindRstSent)) >= 1 &&
			count(t, o, "cel_tcp_counts", portKey(local, kindRstRecv)) >= 1
	})

	port, clientPort := testPort(t), testPort(t)
	for port == closed || port == local || clientPort == port || clientPort == closed || clientPort == local {
		port, clientPort = testPort(t), testPort(t)
	}
	ln := listenIn(t, n.b, n.addrB, port)
	closeNow := make(chan struct{})
	closed2 := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			<-closeNow
			c.(*net.TCPConn).SetLinger(0)
			err = c.Close()
		}
		closed2 <- err
	}()
	if err := in(n.a, func() error {
		d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(n.addrA), Port: int(clientPort)}}
		c, err := d.Dial("tcp4", hostPort(n.addrB, port))
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	close(closeNow)
	if err := <-closed2; err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "abortive close not counted", func() bool {
		return count(t, o, "cel_tcp_counts", portKey(port, kindRstSent)) >= 1 &&
			count(t, o, "cel_tcp_counts", portKey(clientPort, kindRstRecv)) >= 1
	})
}

// listenerIn opens a listener with the given backlog on addr:port inside
// namespace ns, with raw syscalls (net.Listen's backlog is somaxconn).
func listenerIn(t *testing.T, ns, addr string, port uint16, backlog int, deferAccept bool) {
	t.Helper()
	var lfd = -1
	err := in(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		lfd = fd
		if deferAccept {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 10); err != nil {
				return err
			}
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(port), Addr: [4]byte(net.ParseIP(addr).To4())}); err != nil {
			return err
		}
		return unix.Listen(fd, backlog)
	})
	if lfd >= 0 {
		t.Cleanup(func() { unix.Close(lfd) })
	}
	if err != nil {
		t.Fatal(err)
	}
}

// connectIn starts n non-blocking connects from namespace ns and returns
// the sockets (closed in the test's cleanup).
func connectIn(t *testing.T, ns, addr string, port uint16, n int) []int {
	t.Helper()
	var fds []int
	err := in(ns, func() error {
		for range n {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			fds = append(fds, fd)
			err = unix.Connect(fd, &unix.SockaddrInet4{Port: int(port), Addr: [4]byte(net.ParseIP(addr).To4())})
			if err != nil && !errors.Is(err, unix.EINPROGRESS) {
				return err
			}
		}
		return nil
	})
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return fds
}

// A listener with backlog 1 that never accepts, and 16 connections at once:
// two children fill the accept queue, the SYNs after them are dropped, and
// the (local) clients resend them.
func TestListenOverflowCounted(t *testing.T) {
	n := newNetPair(t)
	l := newLoader(t, Config{})
	lo := load(t, l, "listen", nil)
	to := load(t, l, "tcp", nil)
	port := testPort(t)
	listenerIn(t, n.b, n.addrB, port, 1, false)
	connectIn(t, n.a, n.addrB, port, 16)

	c := func(o *Object, m string, kind uint8) uint64 { return count(t, o, m, portKey(port, kind)) }
	// Clients resend a dropped SYN after about 1s.
	eventually(t, 20*time.Second, "listen overflow not counted", func() bool {
		return c(lo, "cel_listen_cnt", kindAcceptqFull) > 0 && c(to, "cel_tcp_counts", kindSynRetrans) > 0
	})
	queued := c(lo, "cel_listen_cnt", kindQueued)
	overflows := netstat(t, n.b, "TcpExt", "ListenOverflows")
	t.Logf("port %d: queued %d, queue filled %d, SYNs resent to it %d; the namespace's ListenOverflows %d",
		port, queued, c(lo, "cel_listen_cnt", kindAcceptqFull), c(to, "cel_tcp_counts", kindSynRetrans), overflows)
	if queued < 2 {
		t.Errorf("%d children queued, want at least 2 (a backlog of 1 holds 2)", queued)
	}
	if overflows == 0 {
		t.Errorf("the kernel counted no ListenOverflows: the test did not overflow the queue")
	}
}

// With TCP_DEFER_ACCEPT a handshake completes only when the client's first
// data arrives. One client connects and waits; two more connect and send,
// filling the (backlog 1) accept queue; then the first sends, and its
// segment is dropped at the listener.
func TestListenDropsCounted(t *testing.T) {
	n := newNetPair(t)
	o := load(t, newLoader(t, Config{}), "listen", nil)
	port := testPort(t)
	listenerIn(t, n.b, n.addrB, port, 1, true)
	c := func(kind uint8) uint64 { return count(t, o, "cel_listen_cnt", portKey(port, kind)) }

	waiting := connectIn(t, n.a, n.addrB, port, 1)[0]
	connected(t, waiting)
	for _, fd := range connectIn(t, n.a, n.addrB, port, 2) {
		connected(t, fd)
		if _, err := unix.Write(fd, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "the accept queue did not fill", func() bool { return c(kindAcceptqFull) > 0 })
	// (The bare ACKs TCP_DEFER_ACCEPT held back were dropped at the
	// listener too.)
	before := c(kindListenDrop)
	if _, err := unix.Write(waiting, []byte("x")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the overflow drop at the listener not counted", func() bool { return c(kindListenDrop) > before })
	overflows := netstat(t, n.b, "TcpExt", "ListenOverflows")
	t.Logf("port %d: drops at the listener %d (%d before the overflow), queued %d; the namespace's ListenOverflows %d",
		port, c(kindListenDrop), before, c(kindQueued), overflows)
	if overflows == 0 {
		t.Errorf("the kernel counted no ListenOverflows: the test did not overflow the queue")
	}
}

// connected waits (10s at most) until a non-blocking connect completes.
func connected(t *testing.T, fd int) {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	if _, err := unix.Poll(pfd, 10_000); err != nil || pfd[0].Revents&unix.POLLOUT == 0 {
		t.Fatalf("connect did not complete: %v (revents %#x)", err, pfd[0].Revents)
	}
	if errno, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || errno != 0 {
		t.Fatalf("connect: %v %v", err, unix.Errno(errno))
	}
}

// Every connection accepted went through the accept queue: N accepted
// means at least N queued, and nothing dropped or full on that port.
func TestHandshakesQueuedCounted(t *testing.T) {
	n := newNetPair(t)
	o := load(t, newLoader(t, Config{}), "listen", nil)
	port := testPort(t)
	ln := listenIn(t, n.b, n.addrB, port)

	const N = 5
	var wg sync.WaitGroup
	wg.Add(1)
	accepted := 0
	go func() {
		defer wg.Done()
		for range N {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted++
			c.Close()
		}
	}()
	for range N {
		dialIn(t, n.a, n.addrB, port)
	}
	wg.Wait()
	if accepted != N {
		t.Fatalf("accepted %d of %d", accepted, N)
	}
	eventually(t, 10*time.Second, "handshakes not counted", func() bool {
		return count(t, o, "cel_listen_cnt", portKey(port, kindQueued)) >= N
	})
	if full, drops := count(t, o, "cel_listen_cnt", portKey(port, kindAcceptqFull)), count(t, o, "cel_listen_cnt", portKey(port, kindListenDrop)); full != 0 || drops != 0 {
		t.Errorf("queue full %d, drops %d on a listener that keeps up, want 0", full, drops)
	}
}

// More runnable threads than CPUs for a moment: both histograms fill, the
// node's and the one for this process (target_tgid = our pid).
func TestRunQueueLatencyCounted(t *testing.T) {
	l := newLoader(t, Config{Vars: map[string]any{"target_tgid": os.Getpid()}})
	o := load(t, l, "runq", nil)

	hist := func(name string) (total uint64) {
		entries, err := o.ReadMap(name)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 32 {
			t.Fatalf("%s: %d slots, want 32", name, len(entries))
		}
		for _, e := range entries {
			if len(e.Key) != 4 || len(e.Values) != ebpf.MustPossibleCPU() {
				t.Fatalf("%s: key %d bytes, %d values; want 4 and one per possible CPU (%d)", name, len(e.Key), len(e.Values), ebpf.MustPossibleCPU())
			}
			for _, v := range e.Values {
				total += binary.NativeEndian.Uint64(v)
			}
		}
		return total
	}
	burn := func() {
		var wg sync.WaitGroup
		for range 4 * runtime.NumCPU() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread() // a thread of our own, waiting its turn
				defer runtime.UnlockOSThread()
				for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
				}
			}()
		}
		wg.Wait()
	}
	eventually(t, 10*time.Second, "run-queue histograms stay empty", func() bool {
		burn()
		return hist("cel_runq_node") > 0 && hist("cel_runq_tgid") > 0
	})
	t.Logf("node: %d wakeup->run samples; this process: %d", hist("cel_runq_node"), hist("cel_runq_tgid"))
}

// The TCP object's ring buffer wakes a reader within the event: a RST to a
// closed port arrives as a record naming the port and kind, and ReadEvents
// returns nothing, without error, when its context ends first.
func TestReadEventsWakesOnReset(t *testing.T) {
	n := newNetPair(t)
	o := load(t, newLoader(t, Config{}), "tcp", nil)
	closed := testPort(t)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	recs, err := o.ReadEvents(ctx, "cel_tcp_events", 0)
	cancel()
	for _, r := range recs { // other namespaces' events may be there: none of ours yet
		if len(r) == 4 && binary.LittleEndian.Uint16(r) == closed {
			t.Fatalf("an event for port %d before any traffic", closed)
		}
	}
	if err != nil {
		t.Fatalf("ReadEvents with nothing to read: %v", err)
	}

	got := make(chan bool, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for ctx.Err() == nil {
			recs, err := o.ReadEvents(ctx, "cel_tcp_events", 0)
			if err != nil {
				break
			}
			for _, r := range recs {
				if len(r) == 4 && binary.LittleEndian.Uint16(r) == closed && r[2] == kindRstSent {
					got <- true
					return
				}
			}
		}
		got <- false
	}()
	if err := in(n.a, func() error {
		_, err := net.DialTimeout("tcp4", hostPort(n.addrB, closed), 5*time.Second)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("dialing a closed port: %v, want ECONNREFUSED", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !<-got {
		t.Fatalf("no ring buffer record for the RST to port %d", closed)
	}
	if _, err := o.ReadEvents(context.Background(), "cel_tcp_counts", 0); err == nil {
		t.Fatal("ReadEvents on a hash map succeeded")
	}
}
