// Package cell is the Go SDK for reactor cells: WebAssembly modules that
// celcore loads once and then calls for every request, keeping their memory
// (and so any Go package variables) between requests.
//
// Its API is shaped like net/http's server side but does not import
// net/http, which would add megabytes to every cell. A cell registers its
// handler from an init function and keeps an empty main:
//
//	package main
//
//	import "github.com/celluster/celluster/sdk/cell"
//
//	func init() {
//		cell.HandleFunc(func(w cell.ResponseWriter, r *cell.Request) {
//			w.Header().Set("Content-Type", "text/plain")
//			w.Write([]byte("Hello, world!\n"))
//		})
//	}
//
//	func main() {}
//
// and is built as a WASI reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o hello.wasm .
//
// With -buildmode=c-shared the module exports _initialize instead of
// _start. The host calls _initialize once, which initialises the Go runtime
// and runs every package's init functions; main.main is never called. That
// is why [Handle] and [HandleFunc] must be called from init (or from a
// package variable initialiser), and why "func main() {}" is still needed:
// package main must declare it even though it never runs.
//
// # How a request is served
//
// For each request the host calls the module's cel_alloc export for a
// buffer, writes a request envelope (package
// github.com/celluster/celluster/pluginapi/cellabi) into it, and calls
// cel_handle. The SDK decodes the envelope into a [Request], calls the
// registered [Handler] with a buffering [ResponseWriter], and returns the
// encoded response envelope. The Request, the ResponseWriter and their
// Header maps are reused from request to request, so a handler must not
// keep them after it returns (see [Handler]). The complete ABI, enough to write a cell in
// any language, is in this package's README.md.
//
// A panic in the handler is recovered: the response becomes a 500 with the
// panic message as a text/plain body, whatever the handler had written,
// and the panic and its stack are logged at [LevelError]. What cannot be
// recovered — a panic on another goroutine, a Go fatal error such as
// running out of memory, os.Exit — ends the module; the host answers 500
// and replaces the instance, losing its state.
//
// # Goroutines and blocking
//
// A reactor module runs only while the host is inside one of its exports.
// Goroutines a handler starts make progress only while some cel_handle call
// is running, so a handler must wait for any goroutine whose work it needs
// before returning. time.Sleep and timers work (the runtime blocks in WASI
// poll_oneoff), but nothing else can wake a handler that blocks forever.
//
// # Native builds
//
// The package also builds for ordinary GOOS values so that a cell's
// handlers can be unit-tested with go test. There [Log] writes to standard
// error and [Now] is time.Now; the subpackage celltest runs a handler
// through the same envelope encoding and decoding as the wasm exports.
package cell
