// Command spin is a reactor cell for exercising celcore's limits. Each
// route misbehaves in one specific way:
//
//	/spin, /spin/loop  loop forever on arithmetic, without calling into
//	                   the host: only the host's time limit stops it (with
//	                   wazero, RuntimeConfig.WithCloseOnContextDone(true)
//	                   is required; the call then fails with a
//	                   *sys.ExitError whose code is
//	                   sys.ExitCodeDeadlineExceeded); expect a 504.
//	/spin/work?n=N     run N rounds of xorshift64 (default 1000000) and
//	                   answer the result as decimal text: a CPU-bound
//	                   request of adjustable cost, for benchmarks.
//	/spin/panic        panic on a new goroutine, which the SDK cannot
//	                   recover. The Go runtime prints "panic: ..." to
//	                   stderr and, because c-shared builds default to
//	                   GOTRACEBACK=crash, aborts with a wasm "unreachable"
//	                   trap (not a WASI exit).
//	/spin/exit?code=N  call os.Exit(N) (default 3): WASI proc_exit(N),
//	                   which wazero reports as a *sys.ExitError with that
//	                   code, closing the module.
//	/spin/trap         load from an address beyond linear memory: a wasm
//	                   "out of bounds memory access" trap.
//	/spin/grow?mb=N    allocate N MiB (1..4096) and touch every page, to
//	                   run into the cell's memory limit: when memory.grow
//	                   fails the Go runtime prints "fatal error: out of
//	                   memory" and aborts with an "unreachable" trap.
//
// Anything else is 404. After any trap the instance's state is unusable
// and the host must discard it.
//
// Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o spin.wasm .
package main

import (
	"os"
	"strconv"

	"github.com/celluster/celluster/sdk/cell"
)

// sink receives the results of the busy loops so the compiler cannot
// remove them.
var sink uint64

// ballast holds the memory /spin/grow allocated, until the next grow.
var ballast []byte

func init() {
	mux := cell.NewServeMux()
	mux.HandleFunc("/spin", loop)
	mux.HandleFunc("/spin/loop", loop)
	mux.HandleFunc("/spin/work", serveWork)
	mux.HandleFunc("/spin/panic", goroutinePanic)
	mux.HandleFunc("/spin/exit", exit)
	mux.HandleFunc("/spin/trap", func(w cell.ResponseWriter, r *cell.Request) {
		trap()
		cell.Error(w, "trap did not trap", 500)
	})
	mux.HandleFunc("/spin/grow", grow)
	cell.Handle(mux)
}

// loop never returns and never calls the host. It reads and writes a
// package variable on every round so the loop cannot be optimised away.
func loop(cell.ResponseWriter, *cell.Request) {
	for {
		sink = sink*6364136223846793005 + 1442695040888963407
	}
}

// work runs n rounds of Marsaglia's xorshift64 from a fixed seed.
func work(n uint64) uint64 {
	x := uint64(88172645463325252)
	for range n {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

func serveWork(w cell.ResponseWriter, r *cell.Request) {
	n := uint64(1000000)
	if s := r.Query().Get("n"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			cell.Error(w, "n must be a non-negative integer", 400)
			return
		}
		n = v
	}
	x := work(n)
	sink = x
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(strconv.FormatUint(x, 10) + "\n"))
}

// goroutinePanic panics where the SDK's recover cannot see it.
func goroutinePanic(cell.ResponseWriter, *cell.Request) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		panic("spin: deliberate panic on a goroutine")
	}()
	<-done
}

func exit(w cell.ResponseWriter, r *cell.Request) {
	code := 3
	if s := r.Query().Get("code"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 || v > 255 {
			cell.Error(w, "code must be 0..255", 400)
			return
		}
		code = v
	}
	os.Exit(code)
}

func grow(w cell.ResponseWriter, r *cell.Request) {
	mb, err := strconv.Atoi(r.Query().Get("mb"))
	if err != nil || mb < 1 || mb > 4096 {
		cell.Error(w, "mb must be 1..4096", 400)
		return
	}
	ballast = nil
	b := make([]byte, mb<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = byte(i >> 12)
	}
	ballast = b
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("allocated " + strconv.Itoa(mb) + " MiB\n"))
}

// main is required in package main but never runs in a reactor module.
func main() {}
