package handover

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// offerEnv carries the offer (without the keeper's pid and time, which
// the keeper fills in) from the stopping node to its keeper.
const offerEnv = "CELLUSTER_HANDOVER_OFFER"

// Descriptors the keeper inherits: its readiness pipe, then the sockets.
const (
	readyFD       = 3
	firstSocketFD = 4
)

// Hold starts a keeper for socks: exe run with args (which must reach
// Keep, e.g. `celcore handover-keeper --dir DIR --hold HOLD`), in a session
// of its own, with no standard streams. It returns once the keeper
// listens on its socket in dir, with the keeper's pid. from is the
// stopping node's pid, reported to its successor.
func Hold(ctx context.Context, exe string, args []string, from int, socks []Held) (int, error) {
	if len(socks) == 0 || len(socks) > maxSockets {
		return 0, fmt.Errorf("handover: %d sockets to hold (1 to %d)", len(socks), maxSockets)
	}
	offer := Offer{Version: Version, From: from}
	files := make([]*os.File, 0, len(socks)+1)
	r, w, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("handover: readiness pipe: %w", err)
	}
	defer r.Close()
	files = append(files, w)
	for _, s := range socks {
		offer.Sockets = append(offer.Sockets, s.Socket)
		files = append(files, s.File)
	}
	b, err := json.Marshal(offer)
	if err != nil {
		w.Close()
		return 0, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), offerEnv+"="+string(b))
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return 0, fmt.Errorf("handover: starting the keeper %s: %w", exe, err)
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // reaped whenever it ends
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(r).ReadString('\n')
		line <- s
	}()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	select {
	case s := <-line:
		if strings.TrimSpace(s) == "ready" {
			return pid, nil
		}
		err := <-exited
		return 0, fmt.Errorf("handover: the keeper (pid %d) exited before it was ready: %v: %s", pid, err, strings.TrimSpace(s))
	case <-ctx.Done():
		cmd.Process.Kill()
		return 0, fmt.Errorf("handover: the keeper (pid %d) was not ready: %w", pid, ctx.Err())
	}
}

// Keep is the keeper's whole life: it holds the sockets it inherited (as
// described by the offer in its environment), serves them on
// <dir>/handover.sock to the first process of its user that asks and
// acknowledges, then exits. After hold without a taker it closes them. A
// failure to start is written to the readiness pipe for Hold to report.
func Keep(dir string, hold time.Duration) error {
	ready := os.NewFile(readyFD, "ready")
	fail := func(err error) error {
		if ready != nil {
			fmt.Fprintf(ready, "%v\n", err)
			ready.Close()
		}
		return err
	}
	if ready == nil {
		return errors.New("handover keeper: no readiness pipe (run only by a stopping node)")
	}
	var offer Offer
	if err := json.Unmarshal([]byte(os.Getenv(offerEnv)), &offer); err != nil {
		return fail(fmt.Errorf("handover keeper: offer: %w", err))
	}
	offer.Keeper = os.Getpid()
	offer.Since = time.Now()
	fds := make([]int, len(offer.Sockets))
	for i := range fds {
		fds[i] = firstSocketFD + i
		if _, err := unix.FcntlInt(uintptr(fds[i]), unix.F_GETFD, 0); err != nil {
			return fail(fmt.Errorf("handover keeper: socket %q (descriptor %d): %w", offer.Sockets[i].Name, fds[i], err))
		}
	}
	payload, err := json.Marshal(offer)
	if err != nil {
		return fail(err)
	}
	path := socketPath(dir)
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path) // a keeper before this one died without cleaning up
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fail(fmt.Errorf("handover keeper: %w", err))
	}
	l.SetUnlinkOnClose(true)
	defer l.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return fail(fmt.Errorf("handover keeper: %w", err))
	}
	fmt.Fprintln(ready, "ready")
	ready.Close()
	ready = nil

	deadline := offer.Since.Add(hold)
	for {
		if err := l.SetDeadline(deadline); err != nil {
			return err
		}
		c, err := l.AcceptUnix()
		if err != nil {
			return fmt.Errorf("handover keeper: no node took the sockets within %v", hold)
		}
		if give(c, payload, fds) {
			return nil
		}
	}
}

// give sends the offer and the descriptors on c if its peer runs as this
// process's user, and reports whether the peer acknowledged them.
func give(c *net.UnixConn, payload []byte, fds []int) bool {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var cerr error
	raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if cerr != nil || cred.Uid != uint32(os.Getuid()) {
		return false
	}
	if _, _, err := c.WriteMsgUnix(payload, unix.UnixRights(fds...), nil); err != nil {
		return false
	}
	ack := make([]byte, 3)
	if _, err := io.ReadFull(c, ack); err != nil {
		return false
	}
	return string(ack) == "ok\n"
}

// Take receives the sockets of the keeper waiting in dir, if any
// (ErrNoKeeper if none), and acknowledges them: the keeper then exits and
// the caller owns every descriptor in the result.
func Take(ctx context.Context, dir string) (*Taken, error) {
	path := socketPath(dir)
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoKeeper
	}
	d := net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			os.Remove(path) // its keeper is gone
			return nil, ErrNoKeeper
		}
		return nil, fmt.Errorf("handover: reaching the keeper at %s: %w", path, err)
	}
	c := conn.(*net.UnixConn)
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, maxOffer+1)
	oob := make([]byte, unix.CmsgSpace(maxSockets*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("handover: reading the keeper's offer at %s: %w", path, err)
	}
	fds, err := parseRights(oob[:oobn])
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), "handover")
	}
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("handover: the keeper's descriptors at %s: %w", path, err)
	}
	offer, err := DecodeOffer(buf[:n], len(files))
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("handover: from the keeper at %s: %w", path, err)
	}
	if _, err := c.Write([]byte("ok\n")); err != nil {
		closeAll()
		return nil, fmt.Errorf("handover: acknowledging to the keeper at %s: %w", path, err)
	}
	t := &Taken{Offer: offer, Files: map[string]*os.File{}, At: time.Now()}
	for i, s := range offer.Sockets {
		t.Files[s.Name] = files[i]
	}
	return t, nil
}

// parseRights returns the descriptors carried by SCM_RIGHTS messages in oob.
func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			return fds, err
		}
		fds = append(fds, got...)
	}
	return fds, nil
}
