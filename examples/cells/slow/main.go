// Command slow is a reactor cell that takes its time: GET /slow sleeps for
// the ms query parameter (default 20) before answering, as a cell waiting on
// a backend would. One replica serves one request at a time, so under
// concurrent load its requests queue and latency grows until the node
// clones it; it is the example the reflex rules are shown with.
package main

import (
	"strconv"
	"time"

	"github.com/celluster/celluster/sdk/cell"
)

func init() {
	cell.HandleFunc(slow)
}

func slow(w cell.ResponseWriter, r *cell.Request) {
	ms, err := strconv.Atoi(r.QueryValue("ms"))
	if err != nil || ms < 0 || ms > 10_000 {
		ms = 20
	}
	time.Sleep(time.Duration(ms) * time.Millisecond)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("slept " + strconv.Itoa(ms) + "ms\n"))
}

// main is required in package main but never runs in a reactor module.
func main() {}
