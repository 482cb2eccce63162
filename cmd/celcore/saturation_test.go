package main

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/celluster/celluster/core/testbuild"
)

// TestUpgradeUnderSaturatedQueue replaces a module while 64 clients keep
// its concurrency slots and queue full: every request is answered, either
// 200 or one of the documented 503s (over the concurrency limit, or no
// replica free in time, each with Retry-After), none is dropped or fails
// otherwise, and the new version ends up serving alone.
func TestUpgradeUnderSaturatedQueue(t *testing.T) {
	n := startNode(t, "", "--limit-concurrency", "8", "--limit-queue", "16", "--limit-queue-time", "100ms", "--upgrade-step-time", "500ms")
	v1 := testbuild.Cell(t, "hello", "-X main.version=v1")
	v2 := testbuild.Cell(t, "hello", "-X main.version=v2")
	n.drop("hello", v1)
	n.waitOnly("hello", sha256hex(v1), "v1")

	documented := []string{
		"celluster: cell hello is over its concurrency limit (queue full); retry later\n",
		"celluster: cell hello is over its concurrency limit (queue wait timed out); retry later\n",
		"celluster: cell hello is busy: no replica free in time; retry later\n",
	}
	var (
		stop             atomic.Bool
		wg               sync.WaitGroup
		ok, ok2, refused atomic.Int64
		mu               sync.Mutex
		failures         []string
	)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				r, err := n.do("GET", "/hello", "")
				switch {
				case err != nil:
					mu.Lock()
					failures = append(failures, "transport: "+err.Error())
					mu.Unlock()
				case r.status == 200:
					ok.Add(1)
					if r.header.Get("X-Cell-Version") == "v2" {
						ok2.Add(1)
					}
				case r.status == 503 && r.header.Get("Retry-After") != "" && contains(documented, r.body):
					refused.Add(1)
				default:
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%d %q", r.status, r.body))
					mu.Unlock()
				}
			}
		}()
	}
	eventually(t, "the queue to overflow", func() bool { return refused.Load() > 0 && ok.Load() > 100 })
	n.drop("hello", v2)
	eventually(t, "v2 to serve alone", func() bool {
		vs := n.versions("hello")
		return len(vs) == 1 && vs[0].SHA256 == sha256hex(v2) && ok2.Load() > 100
	})
	stop.Store(true)
	wg.Wait()
	t.Logf("64 clients across the upgrade: %d answered 200 (%d by v2), %d refused with a documented 503, %d failed", ok.Load(), ok2.Load(), refused.Load(), len(failures))
	if len(failures) > 0 {
		t.Fatalf("%d requests failed otherwise, first: %s", len(failures), strings.Join(failures[:min(5, len(failures))], "; "))
	}
	up := find(n.journal("hello"), func(e journalEntry) bool { return e.Verb == "upgrade" })
	if up == nil || up.Outcome != "done" {
		t.Fatalf("upgrade entry %+v, want done", up)
	}
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}
