// Command jobs is a reactor cell that keeps a queue of pending jobs and
// publishes its length as its own signal, jobs.pending, with cel.signal;
// its intent (jobs.intent) grants signal and clones the cell while the
// queue is long:
//
//	grant signal
//	when jobs.pending > 5 for 1s then clone cooldown 10s
//
// POST /jobs?n=N queues N jobs (default 1), GET /jobs takes one (204 when
// none is left); every answer is the queue's length.
//
// Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o jobs.wasm .
package main

import (
	"strconv"

	"github.com/celluster/celluster/sdk/cell"
)

// pending is the queue's length; it lives in this replica's linear memory.
var pending int

func init() {
	cell.HandleFunc(jobs)
}

func jobs(w cell.ResponseWriter, r *cell.Request) {
	switch r.Method {
	case "POST":
		n, err := strconv.Atoi(r.QueryValue("n"))
		if err != nil || n < 1 {
			n = 1
		}
		pending += n
	default:
		if pending == 0 {
			publish()
			w.WriteHeader(204)
			return
		}
		pending--
	}
	publish()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(strconv.Itoa(pending) + "\n"))
}

// publish reports the queue's length; a refusal (no grant, rate limit) is
// logged, the request is served anyway.
func publish() {
	if err := cell.Signal("jobs.pending", float64(pending)); err != nil {
		cell.Log(cell.LevelWarn, err.Error())
	}
}

// main is required in package main but never runs in a reactor module;
// init registers the handler instead.
func main() {}
