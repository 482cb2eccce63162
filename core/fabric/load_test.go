package fabric

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// hogEnv makes TestCPUHogChild spin instead of skipping: the hog processes
// of the load tests are this test binary run again.
const hogEnv = "FABRIC_CPU_HOG"

// TestCPUHogChild is not a test: run with hogEnv set, it is one process of
// a CPU hog, spinning on one thread until killed or until its parent dies.
func TestCPUHogChild(t *testing.T) {
	if os.Getenv(hogEnv) == "" {
		t.Skip("a CPU hog process of the load tests, run by them")
	}
	runtime.GOMAXPROCS(1)
	ppid := os.Getppid()
	x := 0
	for i := 0; ; i++ {
		x += i * i
		if i%(1<<24) == 0 && os.Getppid() != ppid {
			fmt.Println(x)
			return
		}
	}
}

// startCPUHog starts n processes that each spin on one core, at the
// scheduling priority of the test, and returns a func that kills them. The
// cleanup kills them too.
func startCPUHog(t *testing.T, n int) (stop func()) {
	t.Helper()
	var procs []*exec.Cmd
	for range n {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCPUHogChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), hogEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start CPU hog: %v", err)
		}
		procs = append(procs, cmd)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			for _, c := range procs {
				_ = c.Process.Kill()
				_ = c.Wait()
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// busyGoroutines starts n goroutines in this process that spin (yielding
// only when Go preempts them), as a node busy serving requests would, and
// returns a func that stops them and waits for them.
func busyGoroutines(n int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			x := 0
			for i := 0; ; i++ {
				x += i * i
				if i%(1<<16) == 0 {
					select {
					case <-done:
						_ = x
						return
					default:
					}
				}
			}
		})
	}
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// loadAverage returns the host's 1-minute load average.
func loadAverage(t *testing.T) float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		t.Fatalf("load average: %v", err)
	}
	var l float64
	if _, err := fmt.Sscan(string(b), &l); err != nil {
		t.Fatalf("load average %q: %v", b, err)
	}
	return l
}

// cpuTime returns the user+system CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startCluster starts n members named m0, m1, ... and joins them through
// m0, waiting until every one sees all n alive.
func startCluster(t *testing.T, ca *testCA, n int) []*memberNode {
	t.Helper()
	nodes := make([]*memberNode, n)
	for i := range n {
		nodes[i] = startMember(t, ca, fmt.Sprintf("m%d", i))
	}
	for _, m := range nodes[1:] {
		if err := m.Join(t.Context(), []string{nodes[0].addr()}); err != nil {
			t.Fatalf("%s joins %s: %v", m.name, nodes[0].name, err)
		}
	}
	for _, m := range nodes {
		eventually(t, 20*time.Second, fmt.Sprintf("%s sees %d alive", m.name, n), func() bool {
			return allAlive(m.Members(), n)
		})
	}
	return nodes
}

// logStats logs each node's fabric counters.
func logStats(t *testing.T, nodes []*memberNode) {
	for _, m := range nodes {
		var lost uint64
		m.mu.Lock()
		for p := range m.all {
			lost += p.conn.ConnectionStats().PacketsLost
		}
		m.mu.Unlock()
		t.Logf("%s: health score %d, QUIC packets lost %d, %+v", m.name, m.HealthScore(), lost, m.Stats())
	}
}

// leaves returns the "leave" events a node has had.
func (e *eventLog) leaves() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.evs {
		if strings.HasPrefix(ev, "leave ") {
			out = append(out, ev)
		}
	}
	return out
}

// On a host whose CPUs are all taken by busy processes (twice as many as
// cores, at the test's own priority), five members that are slow but alive
// are never declared dead: no member gets an OnLeave for any other during
// the hog. The hog must really have starved the members: their process gets
// less CPU than it would alone. After the hog, a member that crashes is
// declared dead by all others (OnLeave), which proves the same settings still
// detect a real death.
func TestMembershipNoFalseDeathUnderCPUHog(t *testing.T) {
	if testing.Short() {
		t.Skip("loads the host's CPUs for a while")
	}
	// The test's premise is a host loaded by the hog it starts: on a host
	// already oversubscribed many times over by others, no setting that
	// detects a death within 2s can tell a member starved for seconds from
	// a dead one.
	if l := loadAverage(t); l > 4*float64(runtime.NumCPU()) && os.Getenv("CI") != "true" {
		t.Skipf("host already loaded by others (load average %.0f on %d CPUs)", l, runtime.NumCPU())
	}
	const n = 5
	hogFor := 12 * time.Second
	ca := newTestCA(t, testTD)
	nodes := startCluster(t, ca, n)

	wall, cpu := time.Now(), cpuTime()
	stop := startCPUHog(t, 2*runtime.NumCPU())
	stopBusy := busyGoroutines(1)
	defer stopBusy()
	deadline := time.Now().Add(hogFor)
	for time.Now().Before(deadline) {
		for _, m := range nodes {
			if ls := m.events.leaves(); len(ls) > 0 {
				logStats(t, nodes)
				t.Fatalf("under the CPU hog, %s declared a live member dead: %v", m.name, ls)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	stopBusy()
	share := float64(cpuTime()-cpu) / float64(time.Since(wall)) / float64(runtime.NumCPU())
	t.Logf("members' process used %.0f%% of the host's CPU during the hog", 100*share)
	for _, m := range nodes {
		if ls := m.events.leaves(); len(ls) > 0 {
			t.Fatalf("under the CPU hog, %s declared a live member dead: %v", m.name, ls)
		}
		t.Logf("%s: health score %d after the hog", m.name, m.HealthScore())
	}

	// A real death is still detected, by every survivor.
	victim := nodes[n-1]
	start := time.Now()
	victim.udp.Close()
	victim.Close()
	for _, m := range nodes[:n-1] {
		eventually(t, 30*time.Second, m.name+" gets OnLeave for "+victim.name, func() bool {
			return m.events.has("leave " + victim.name)
		})
	}
	t.Logf("crash of %s detected by all %d survivors in %s", victim.name, n-1, time.Since(start).Round(time.Millisecond))
	for _, m := range nodes[:n-1] {
		if ls := m.events.leaves(); !slices.Equal(ls, []string{"leave " + victim.name + " " + fmt.Sprintf(`{"node":%q,"cells":0}`, victim.name)}) {
			t.Errorf("%s leave events %v, want only %s", m.name, ls, victim.name)
		}
	}
}
