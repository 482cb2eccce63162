package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/celluster/celluster/core/testbuild"
)

// BenchmarkKernelEventToRule: a TCP reset (a dial to a closed port on
// 127.0.0.1) to the reflex engine acting on the kernel signal it causes —
// BPF program, ring buffer wake-up, the kernel plugin's map read over the
// host API, the signal stream, the rule firing — measured from just before
// the dial to the decision's time in the journal. The limit it is held to:
// 1 ms (aim); the plugin's own polling interval (1s) is what it replaces.
// Needs root.
func BenchmarkKernelEventToRule(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: CAP_BPF for the kernel programs")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // now a closed port: a dial is answered with a RST from it

	n := startNode(b, "")
	n.writeIntent("hello", fmt.Sprintf("cell hello\nkeep replicas 1..2\nwhen kernel.tcp.resets{direction=sent,port=%d} > 0 then clone\n", port))
	n.drop("hello", testbuild.Cell(b, "hello"))
	n.waitStatus("/hello", 200)
	eventually(b, "the kernel programs and the rule", func() bool {
		in, ok := n.intent("hello")
		out, _ := n.celctl("status")
		return ok && len(in.Rules) == 1 && strings.Contains(out, "cel_tcp_rst_tx")
	})
	time.Sleep(1500 * time.Millisecond) // the plugin's baselines are set

	fired := func(after time.Time) (time.Time, bool) {
		for _, e := range n.journal("hello") {
			if e.Rule == "line 3" && e.Time.After(after) {
				return e.Time, true
			}
		}
		return time.Time{}, false
	}
	var lat []time.Duration
	for b.Loop() {
		t0 := time.Now()
		_, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			b.Fatalf("dial to the closed port: %v, want ECONNREFUSED", err)
		}
		var at time.Time
		eventually(b, "the rule to fire", func() bool {
			var ok bool
			at, ok = fired(t0)
			return ok
		})
		lat = append(lat, at.Sub(t0))
		time.Sleep(1100 * time.Millisecond) // let the plugin's tick pass before the next reset
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
