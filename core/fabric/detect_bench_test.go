package fabric

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// BenchmarkFailureDetection measures how long a cluster of N nodes on
// loopback takes to detect a node that crashes: from the moment the node's
// UDP socket is closed (no goodbye, no QUIC close, as in
// TestMembershipDetectsCrash) until every surviving node's Members reports it
// Dead. Each iteration starts N fresh fabrics, joins them through the first
// one and waits until all see N alive members, then crashes the last node;
// only the detection is timed. Survivors are polled every detectPoll, so a
// detection time is accurate to a few milliseconds.
//
// It runs two configurations side by side: config=fabric, the package's
// defaults (Membership{}), and its peer config=memberlist-lan, memberlist's
// own DefaultLANConfig timing (1s probes, 500ms probe timeout, suspicion 4×
// with 6× unconfirmed, 200ms gossip, 30s push/pull) over the same fabric.
// The aim for config=fabric is 2s at N = 10 (the package comment derives the
// expected 1.2s to 1.9s).
//
// Besides ns/op (the mean detection time) it reports the mean as s/detect and
// the median and 99th percentile over the iterations as p50-s and p99-s
// (nearest rank: with fewer than 100 iterations p99 is the slowest one).
//
// A detection that takes longer than detectDeadline (20s) fails the
// benchmark, as does a cluster that does not converge within that time or an
// iteration that leaves goroutines or sockets behind after its fabrics are
// closed.
func BenchmarkFailureDetection(b *testing.B) {
	lan := memberlist.DefaultLANConfig()
	configs := []struct {
		name string
		mem  Membership
	}{
		{"fabric", Membership{}},
		{"memberlist-lan", Membership{
			ProbeInterval:           lan.ProbeInterval,
			ProbeTimeout:            lan.ProbeTimeout,
			IndirectChecks:          lan.IndirectChecks,
			SuspicionMult:           lan.SuspicionMult,
			SuspicionMaxTimeoutMult: lan.SuspicionMaxTimeoutMult,
			AwarenessMaxMultiplier:  lan.AwarenessMaxMultiplier,
			GossipInterval:          lan.GossipInterval,
			PushPullInterval:        lan.PushPullInterval,
		}},
	}
	for _, n := range []int{3, 10} {
		for _, c := range configs {
			b.Run(fmt.Sprintf("nodes=%d/config=%s", n, c.name), func(b *testing.B) { benchDetect(b, n, c.mem) })
		}
	}
}

const (
	detectDeadline = 20 * time.Second     // per convergence and per detection
	detectPoll     = 2 * time.Millisecond // how often survivors are asked
	leakDeadline   = 5 * time.Second      // for goroutines and sockets to go after Close
)

func benchDetect(b *testing.B, n int, mem Membership) {
	b.StopTimer()
	ca := newTestCA(b, testTD)
	roots := pool(ca)
	names := make([]string, n)
	certs := make([]tls.Certificate, n)
	for i := range n {
		names[i] = fmt.Sprintf("n%02d", i)
		certs[i] = ca.node(b, names[i])
	}

	baseGoroutines := runtime.NumGoroutine()
	baseSockets := openSockets()
	durs := make([]time.Duration, 0, b.N)
	for range b.N {
		durs = append(durs, detectOnce(b, ca, roots, names, certs, mem))
		checkNoLeaks(b, baseGoroutines, baseSockets)
	}

	slices.Sort(durs)
	var sum time.Duration
	for _, d := range durs {
		sum += d
	}
	b.ReportMetric((sum / time.Duration(len(durs))).Seconds(), "s/detect")
	b.ReportMetric(percentile(durs, 0.50).Seconds(), "p50-s")
	b.ReportMetric(percentile(durs, 0.99).Seconds(), "p99-s")
}

// percentile returns the nearest-rank p-quantile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// detectOnce runs one iteration with the benchmark timer stopped, starting it
// only around the crash and its detection, and returns the detection time.
// Every fabric it started is closed when it returns, failed or not.
func detectOnce(b *testing.B, ca *testCA, roots *x509.CertPool, names []string, certs []tls.Certificate, mem Membership) time.Duration {
	ctx, cancel := context.WithCancel(b.Context())
	nodes := make([]*Fabric, 0, len(names))
	logs := make([]*logRecorder, 0, len(names))
	crashed := make(chan struct{}) // closed when the crashed node's Close returns
	crashing := false
	defer func() {
		var wg sync.WaitGroup
		for i, f := range nodes {
			if crashing && i == len(nodes)-1 {
				continue
			}
			wg.Go(func() { f.Close() })
		}
		wg.Wait()
		if crashing {
			<-crashed
		}
		cancel()
		if b.Failed() {
			for i, l := range logs {
				b.Logf("--- logs of %s", names[i])
				l.dump(b)
			}
		}
	}()

	for i, name := range names {
		cert := certs[i]
		rec := newLogRecorder()
		f, err := Listen(ctx, Config{
			Addr:       "127.0.0.1:0",
			Node:       name,
			TLSServer:  func() *tls.Config { return serverTLS(cert, roots) },
			TLSClient:  func() *tls.Config { return clientTLS(cert, roots) },
			VerifyPeer: verifyPeer(ca.td),
			Logger:     slog.New(rec),
			Membership: mem,
		})
		if err != nil {
			b.Fatalf("Listen %s: %v", name, err)
		}
		nodes = append(nodes, f)
		logs = append(logs, rec)
	}
	seed := []string{nodes[0].Addr().String()}
	for _, f := range nodes[1:] {
		jctx, jcancel := context.WithTimeout(ctx, detectDeadline)
		err := f.Join(jctx, seed)
		jcancel()
		if err != nil {
			b.Fatalf("%s joins %s: %v", f.Node(), names[0], err)
		}
	}
	deadline := time.Now().Add(detectDeadline)
	for _, f := range nodes {
		for !allAlive(f.Members(), len(nodes)) {
			if time.Now().After(deadline) {
				b.Fatalf("not within %s: %s sees %d alive members: %v", detectDeadline, f.Node(), len(nodes), f.Members())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	victim := nodes[len(nodes)-1]
	survivors := slices.Clone(nodes[:len(nodes)-1])
	b.StartTimer()
	start := time.Now()
	crashing = true
	victim.udp.Close() // the crash: nothing more leaves the victim
	go func() {
		defer close(crashed)
		victim.Close()
	}()
	deadline = start.Add(detectDeadline)
	pending := survivors
	for len(pending) > 0 {
		pending = slices.DeleteFunc(pending, func(f *Fabric) bool { return seesDead(f, victim.Node()) })
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.StopTimer()
			var who []string
			for _, f := range pending {
				who = append(who, f.Node())
			}
			b.Fatalf("not within %s: %s still do not see %s dead", detectDeadline, strings.Join(who, ", "), victim.Node())
		}
		time.Sleep(detectPoll)
	}
	d := time.Since(start)
	b.StopTimer()
	return d
}

func allAlive(ms []Member, n int) bool {
	return len(ms) == n && !slices.ContainsFunc(ms, func(m Member) bool { return m.State != StateAlive })
}

func seesDead(f *Fabric, name string) bool {
	for _, m := range f.Members() {
		if m.Name == name {
			return m.State == StateDead
		}
	}
	return false
}

// checkNoLeaks waits until the goroutines and sockets are back to what they
// were before the first iteration, and fails the benchmark if they are not
// within leakDeadline.
func checkNoLeaks(b *testing.B, goroutines, sockets int) {
	b.Helper()
	deadline := time.Now().Add(leakDeadline)
	for {
		g, s := runtime.NumGoroutine(), openSockets()
		if g <= goroutines && s <= sockets {
			return
		}
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
			b.Fatalf("leak after closing the fabrics: %d goroutines (had %d), %d sockets (had %d)\n%s",
				g, goroutines, s, sockets, buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// openSockets counts this process's open sockets (Linux; 0 elsewhere).
func openSockets() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}
