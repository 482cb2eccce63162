// Command counter is a reactor cell that shows state kept across requests:
// every request increments an in-memory counter and the response body is
// the new count. The count lives in the instance's linear memory, so it
// restarts from zero when the instance is replaced (a new version, a
// trap, or a memory or time limit), and each instance of a cell that runs
// several instances counts on its own.
//
// Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o counter.wasm .
package main

import (
	"strconv"

	"github.com/celluster/celluster/sdk/cell"
)

// version is reported in the X-Cell-Version header; override it with
// -ldflags='-X main.version=v2'.
var version = "dev"

// count is the number of requests this instance has served.
var count uint64

func init() {
	cell.HandleFunc(serve)
}

func serve(w cell.ResponseWriter, r *cell.Request) {
	count++
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Cell-Version", version)
	w.Write([]byte(strconv.FormatUint(count, 10) + "\n"))
}

// main is required in package main but never runs in a reactor module.
func main() {}
