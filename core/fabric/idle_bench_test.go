package fabric

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"testing"
	"time"
)

// BenchmarkIdleCost measures what an idle cluster of N members costs each
// member: QUIC packets sent per second and CPU milliseconds per second
// (this process's CPU time divided by N), over a window (idleTimes) after the members
// have converged and settled; starting and joining the members
// is not measured. config=fabric runs the package's defaults (no QUIC
// keep-alives); its peer config=keepalive-5s adds the 5s keep-alive every
// connection sent before, with the same membership settings. The aim is a
// per-member cost flat in N.
func BenchmarkIdleCost(b *testing.B) {
	for _, n := range []int{4, 12, 24} {
		for _, c := range []struct {
			name string
			ka   time.Duration
		}{{"fabric", 0}, {"keepalive-5s", 5 * time.Second}} {
			b.Run(fmt.Sprintf("nodes=%d/config=%s", n, c.name), func(b *testing.B) { benchIdle(b, n, c.ka) })
		}
	}
}

// idleTimes returns how long members settle and how long the idle cost
// is measured: 3 s and 10 s, or 1 s and 2 s with -short (make test's
// once-over of every benchmark, which only checks it still runs).
func idleTimes() (settle, window time.Duration) {
	if testing.Short() {
		return time.Second, 2 * time.Second
	}
	return 3 * time.Second, 10 * time.Second
}

func benchIdle(b *testing.B, n int, keepAlive time.Duration) {
	ca := newTestCA(b, testTD)
	roots := pool(ca)
	nodes := make([]*Fabric, n)
	for i := range n {
		name := fmt.Sprintf("n%02d", i)
		cert := ca.node(b, name)
		f, err := Listen(b.Context(), Config{
			Addr:            "127.0.0.1:0",
			Node:            name,
			TLSServer:       func() *tls.Config { return serverTLS(cert, roots) },
			TLSClient:       func() *tls.Config { return clientTLS(cert, roots) },
			VerifyPeer:      verifyPeer(ca.td),
			Logger:          slog.New(slog.DiscardHandler),
			KeepAlivePeriod: keepAlive,
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		nodes[i] = f
	}
	for _, f := range nodes[1:] {
		if err := f.Join(b.Context(), []string{nodes[0].Addr().String()}); err != nil {
			b.Fatal(err)
		}
	}
	for _, f := range nodes {
		eventually(b, 30*time.Second, f.Node()+" sees all alive", func() bool { return allAlive(f.Members(), n) })
	}
	idleSettle, idleWindow := idleTimes()
	time.Sleep(idleSettle)
	var pkts, dgrams float64
	var cpu time.Duration
	var elapsed time.Duration
	for b.Loop() {
		p0, d0 := sumPackets(nodes)
		c0, t0 := cpuTime(), time.Now()
		time.Sleep(idleWindow)
		p1, d1 := sumPackets(nodes)
		cpu += cpuTime() - c0
		elapsed += time.Since(t0)
		pkts += float64(p1 - p0)
		dgrams += float64(d1 - d0)
	}
	secs := elapsed.Seconds()
	b.ReportMetric(pkts/secs/float64(n), "pkts/s/node")
	b.ReportMetric(dgrams/secs/float64(n), "dgrams/s/node")
	b.ReportMetric(float64(cpu.Milliseconds())/secs/float64(n), "cpu-ms/s/node")
}

func sumPackets(nodes []*Fabric) (packets, datagrams uint64) {
	for _, f := range nodes {
		s := f.Stats()
		packets += s.PacketsSent
		datagrams += s.DatagramsSent
	}
	return packets, datagrams
}
