//go:build fleet

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/celluster/celluster/core/admin/adminpb"
)

// The fleet runs every node in one network namespace the harness creates,
// so its fixed ports, its nftables counters and the partition's drop rules
// never touch the host's network or another run's nodes.
const (
	fleetFabricBase  = 20000
	fleetHTTPBase    = 21000
	fleetMetricsBase = 22000
)

// fleetNet is the fleet's network namespace.
type fleetNet struct {
	name string
	fd   int // an open handle on /run/netns/NAME, for setns
}

func newFleetNet(tag string) (*fleetNet, error) {
	name := "celfleet-" + tag
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	n := &fleetNet{name: name, fd: -1}
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		n.close()
		return nil, fmt.Errorf("lo up in %s: %v: %s", name, err, out)
	}
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		n.close()
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	n.fd = fd
	return n, nil
}

// close deletes the namespace, and with it every nftables rule in it.
func (n *fleetNet) close() {
	if n.fd >= 0 {
		unix.Close(n.fd)
		n.fd = -1
	}
	_ = exec.Command("ip", "netns", "del", n.name).Run()
}

// dial connects from inside the namespace: a goroutine locked to its own
// OS thread enters the namespace and creates the socket there. The thread
// is never unlocked, so the runtime discards it (and its namespace) when
// the goroutine ends; the connection keeps the namespace it was made in.
func (n *fleetNet) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, fmt.Errorf("setns %s: %w", n.name, err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// nft applies an nftables script inside the namespace.
func (n *fleetNet) nft(script string) error {
	cmd := exec.Command("ip", "netns", "exec", n.name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %v: %s", n.name, err, out)
	}
	return nil
}

// countPorts installs counters for UDP packets from and to each fabric
// port (all fleet traffic crosses the namespace's output hook once).
func (n *fleetNet) countPorts(ports []int) error {
	var b strings.Builder
	b.WriteString("table inet celfleet_count\ndelete table inet celfleet_count\n")
	b.WriteString("table inet celfleet_count {\n chain out {\n  type filter hook output priority -10; policy accept;\n")
	for _, p := range ports {
		fmt.Fprintf(&b, "  udp sport %d counter comment \"tx %d\"\n", p, p)
		fmt.Fprintf(&b, "  udp dport %d counter comment \"rx %d\"\n", p, p)
	}
	b.WriteString(" }\n}\n")
	return n.nft(b.String())
}

// portPackets reads the counters countPorts installed: packets sent from
// and to each port since then.
func (n *fleetNet) portPackets() (tx, rx map[int]uint64, err error) {
	out, err := exec.Command("ip", "netns", "exec", n.name, "nft", "-j", "list", "table", "inet", "celfleet_count").Output()
	if err != nil {
		return nil, nil, fmt.Errorf("nft list in %s: %w", n.name, err)
	}
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Comment string            `json:"comment"`
				Expr    []json.RawMessage `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, nil, fmt.Errorf("nft -j: %w", err)
	}
	tx, rx = map[int]uint64{}, map[int]uint64{}
	for _, e := range doc.Nftables {
		if e.Rule == nil {
			continue
		}
		dir, port, ok := strings.Cut(e.Rule.Comment, " ")
		p, perr := strconv.Atoi(port)
		if !ok || perr != nil {
			continue
		}
		for _, x := range e.Rule.Expr {
			var c struct {
				Counter *struct {
					Packets uint64 `json:"packets"`
				} `json:"counter"`
			}
			if json.Unmarshal(x, &c) == nil && c.Counter != nil {
				if dir == "tx" {
					tx[p] = c.Counter.Packets
				} else {
					rx[p] = c.Counter.Packets
				}
			}
		}
	}
	return tx, rx, nil
}

// partition drops every UDP packet from or to port (the node's fabric)
// until heal; the rules live in a table of their own.
func (n *fleetNet) partition(port int) error {
	return n.nft(fmt.Sprintf("table inet celfleet_part {\n chain out {\n  type filter hook output priority -20; policy accept;\n  udp sport %d drop\n  udp dport %d drop\n }\n}\n", port, port))
}

func (n *fleetNet) heal() error {
	return n.nft("table inet celfleet_part\ndelete table inet celfleet_part\n")
}

// fleetNode is one real celcore process of the fleet.
type fleetNode struct {
	idx     int
	name    string
	dir     string // holds cells/, data/ and the node's log
	args    []string
	bin     string
	net     *fleetNet
	admin   adminpb.AdminClient
	conn    *grpc.ClientConn
	fabricP int
	httpURL string
	metrics string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	ready   chan struct{}
	deaths  []fleetMemberDeath // members this node declared failed, from its log
	running bool
}

// fleetMemberDeath is a memberlist "failed" line in a node's log.
type fleetMemberDeath struct {
	at      time.Time
	member  string
	suspect bool // only suspected, not (yet) declared dead
}

func (n *fleetNode) cellsDir() string { return filepath.Join(n.dir, "cells") }
func (n *fleetNode) dataDir() string  { return filepath.Join(n.dir, "data") }

// fleetForker runs the functions sent to it on one OS thread that never
// exits. Pdeathsig fires when the thread that forked a child exits, not the
// process, and this process ends threads: a dial into the namespace locks
// its thread, enters the namespace and lets the thread go with its
// goroutine. A node forked from such a thread would be SIGKILLed then.
var fleetForker = sync.OnceValue(func() chan<- func() {
	ch := make(chan func())
	go func() {
		runtime.LockOSThread() // never unlocked: the thread lives as long as the process
		for f := range ch {
			f()
		}
	}()
	return ch
})

// fleetStart starts cmd from the forker thread.
func fleetStart(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	fleetForker() <- func() { done <- cmd.Start() }
	return <-done
}

// start launches the node (again, on the same directories after a kill).
func (n *fleetNode) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	logf, err := os.OpenFile(filepath.Join(n.dir, "node.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	argv := append([]string{"netns", "exec", n.net.name, n.bin}, n.args...)
	cmd := exec.Command("ip", argv...)
	// ip netns exec execs the daemon in place: the signal reaches celcore.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	exited, ready := make(chan struct{}), make(chan struct{})
	go n.readLog(pr, logf, ready)
	if err := fleetStart(cmd); err != nil {
		pw.Close()
		return fmt.Errorf("start %s: %w", n.name, err)
	}
	n.cmd, n.exited, n.ready, n.running = cmd, exited, ready, true
	go func() {
		_ = cmd.Wait()
		pw.Close()
		close(exited)
	}()
	return nil
}

// The lines memberlist logs when it declares a member dead ("Marking X as
// failed") and when it starts to suspect one ("Suspect X has failed, no
// acks received").
var (
	fleetDeadLine    = regexp.MustCompile(`Marking (\S+) as failed`)
	fleetSuspectLine = regexp.MustCompile(`Suspect (\S+) has failed`)
)

func (n *fleetNode) readLog(r io.Reader, logf *os.File, ready chan struct{}) {
	defer logf.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	once := sync.Once{}
	for sc.Scan() {
		line := sc.Bytes()
		_, _ = logf.Write(append(line, '\n'))
		var rec struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal(line, &rec) != nil {
			continue
		}
		if rec.Msg == "celcore ready" {
			once.Do(func() { close(ready) })
		}
		if m := fleetDeadLine.FindStringSubmatch(rec.Msg); m != nil {
			n.mu.Lock()
			n.deaths = append(n.deaths, fleetMemberDeath{at: time.Now(), member: m[1]})
			n.mu.Unlock()
		} else if m := fleetSuspectLine.FindStringSubmatch(rec.Msg); m != nil {
			n.mu.Lock()
			n.deaths = append(n.deaths, fleetMemberDeath{at: time.Now(), member: m[1], suspect: true})
			n.mu.Unlock()
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

func (n *fleetNode) awaitReady(timeout time.Duration) error {
	n.mu.Lock()
	ready, exited := n.ready, n.exited
	n.mu.Unlock()
	select {
	case <-ready:
		return nil
	case <-exited:
		return fmt.Errorf("%s exited before ready (log: %s)", n.name, filepath.Join(n.dir, "node.log"))
	case <-time.After(timeout):
		return fmt.Errorf("%s not ready after %s", n.name, timeout)
	}
}

// kill sends SIGKILL and waits for the process to go.
func (n *fleetNode) kill() {
	n.mu.Lock()
	cmd, exited, running := n.cmd, n.exited, n.running
	n.running = false
	n.mu.Unlock()
	if !running {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// stop sends SIGTERM, then SIGKILL after a while.
func (n *fleetNode) stop() {
	n.mu.Lock()
	cmd, exited, running := n.cmd, n.exited, n.running
	n.running = false
	n.mu.Unlock()
	if !running {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

func (n *fleetNode) alive() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.running
}

func (n *fleetNode) pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// deathsSince returns the members this node declared failed since t.
func (n *fleetNode) deathsSince(t time.Time) []fleetMemberDeath {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []fleetMemberDeath
	for _, d := range n.deaths {
		if !d.at.Before(t) {
			out = append(out, d)
		}
	}
	return out
}

// catalog is where the node believes each cell is served (its gossiped
// view of the members, itself included).
func (n *fleetNode) catalog(ctx context.Context) (map[string][]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := n.admin.ListNodes(ctx, &adminpb.ListNodesRequest{})
	if err != nil {
		return nil, err
	}
	m := map[string][]string{}
	for _, nd := range resp.GetNodes() {
		if nd.GetState() != "alive" {
			continue
		}
		for _, c := range nd.GetCells() {
			m[c] = append(m[c], nd.GetName())
		}
	}
	return m, nil
}

// view is what a node's admin API says about the members.
func (n *fleetNode) view(ctx context.Context) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := n.admin.ListNodes(ctx, &adminpb.ListNodesRequest{})
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, nd := range resp.GetNodes() {
		m[nd.GetName()] = nd.GetState()
	}
	return m, nil
}

// serving lists the cells the node itself serves.
func (n *fleetNode) serving(ctx context.Context) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := n.admin.ListCells(ctx, &adminpb.ListCellsRequest{})
	if err != nil {
		return nil, err
	}
	m := map[string]bool{}
	for _, c := range resp.GetCells() {
		if c.GetState() == "serving" {
			m[c.GetName()] = true
		}
	}
	return m, nil
}

// sha returns the hash of the module the node serves as cell.
func (n *fleetNode) sha(ctx context.Context, cell string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := n.admin.ListCells(ctx, &adminpb.ListCellsRequest{})
	if err != nil {
		return "", err
	}
	for _, c := range resp.GetCells() {
		if c.GetName() == cell {
			return c.GetSha256(), nil
		}
	}
	return "", fmt.Errorf("%s does not serve %s", n.short(), cell)
}

// fleetProc is a process's CPU time so far and its parent.
type fleetProc struct {
	ticks uint64 // utime+stime, in clock ticks
	ppid  int
}

// fleetProcScan reads every process's CPU time and parent at once.
func fleetProcScan() map[int]fleetProc {
	out := map[int]fleetProc{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if t, pp, ok := fleetProcStat(p); ok {
			out[p] = fleetProc{t, pp}
		}
	}
	return out
}

// fleetSchedWait sums the time the process's threads have spent waiting
// on a run queue (ns, /proc/PID/task/TID/schedstat): CPU time a node
// wanted but the host did not give it.
func fleetSchedWait(pid int) uint64 {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	var sum uint64
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, e.Name()))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			w, _ := strconv.ParseUint(f[1], 10, 64)
			sum += w
		}
	}
	return sum
}

// fleetHostCPU reads the host's idle (idle+iowait) and total CPU time, in
// clock ticks, from /proc/stat.
func fleetHostCPU() (idle, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, x := range f[1:] {
		v, _ := strconv.ParseUint(x, 10, 64)
		if i >= 8 { // guest time is already in user and nice
			break
		}
		total += v
		if i == 3 || i == 4 {
			idle += v
		}
	}
	return idle, total
}

// fleetProcStat reads utime+stime (ticks) and the parent of a process.
func fleetProcStat(pid int) (ticks uint64, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:])
	// After the command: state(0) ppid(1) ... utime(11) stime(12).
	if len(f) < 13 {
		return 0, 0, false
	}
	pp, _ := strconv.Atoi(f[1])
	u, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return u + st, pp, true
}

// fabricCounters scrapes the node's metrics for celluster_fabric_*_total
// counters (summed over labels); empty when the node exports none.
func (n *fleetNode) fabricCounters(ctx context.Context, c *http.Client) map[string]float64 {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", n.metrics+"/metrics", nil)
	resp, err := c.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "celluster_fabric_") {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexByte(line, '{'); i >= 0 {
			name = line[:i]
			if j := strings.LastIndexByte(line, '}'); j > i {
				rest = line[j+1:]
			}
		} else {
			name, rest, _ = strings.Cut(line, " ")
		}
		if !strings.HasSuffix(name, "_total") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err == nil {
			out[name] += v
		}
	}
	return out
}

func fleetDialAdmin(sock string) (*grpc.ClientConn, adminpb.AdminClient, error) {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, err
	}
	return conn, adminpb.NewAdminClient(conn), nil
}
