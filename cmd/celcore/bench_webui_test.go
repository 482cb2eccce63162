package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/celluster/celluster/core/testbuild"
)

// BenchmarkWebViewCost measures what watching a node costs the cells it
// serves: GET /hello through the node's ingress from 8 concurrent
// clients (keep-alive), with no web view client (viewers=0) and with 10
// clients attached to the view's event stream (viewers=10), each reading
// every snapshot and journal entry as a browser would, on the same node in
// the same run. The node (race-free build) and the viewers start outside
// the timed span. req/s is the node's throughput.
//
// Aim: 10 viewers cost at most a few percent of throughput.
func BenchmarkWebViewCost(b *testing.B) {
	n := startMeasuredNode(b, "--ui", "127.0.0.1:0", "--telemetry-interval", "200ms")
	n.drop("hello", testbuild.Cell(b, "hello"))
	n.waitStatus("/hello", 200)
	ui := "http://" + n.uiAddr() + "/events"
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	for _, viewers := range []int{0, 10} {
		b.Run("viewers="+map[int]string{0: "0", 10: "10"}[viewers], func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			started := make(chan struct{}, viewers)
			for range viewers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req, _ := http.NewRequestWithContext(ctx, "GET", ui, nil)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						b.Error(err)
						started <- struct{}{}
						return
					}
					defer resp.Body.Close()
					r := bufio.NewReader(resp.Body)
					first := true
					for {
						line, err := r.ReadString('\n')
						if err != nil {
							return
						}
						if first && strings.HasPrefix(line, "data:") {
							first = false
							started <- struct{}{}
						}
					}
				}()
			}
			for range viewers {
				<-started
			}
			b.SetParallelism(4) // 8 clients on 2 CPUs
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Get(n.base + "/hello")
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
			b.StopTimer()
			cancel()
			wg.Wait()
		})
	}
}
