// Command hello is a reactor cell that greets: GET /hello (or any path
// below it) answers "Hello, <name>!" where name is the name query
// parameter, default "world".
//
// Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -ldflags='-X main.version=v2' -o hello.wasm .
//
// The X-Cell-Version response header carries version, so a rolling update
// can be watched from the client side. Built with -ldflags='-X
// main.broken=true' it answers every request 500: a bad release, for
// showing an upgrade being rolled back.
package main

import (
	"github.com/celluster/celluster/sdk/cell"
)

// version is reported in the X-Cell-Version header; override it with
// -ldflags='-X main.version=v2'.
var version = "dev"

// broken, set to "true" with -ldflags, makes every request fail.
var broken = ""

func init() {
	cell.HandleFunc(hello)
}

func hello(w cell.ResponseWriter, r *cell.Request) {
	name := r.QueryValue("name")
	if name == "" {
		name = "world"
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Cell-Version", version)
	if broken == "true" {
		w.WriteHeader(500)
		w.Write([]byte("this build of hello is broken\n"))
		return
	}
	w.Write([]byte("Hello, " + name + "!\n"))
}

// main is required in package main but never runs in a reactor module;
// init registers the handler instead.
func main() {}
