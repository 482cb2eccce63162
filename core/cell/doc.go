// Package cell owns cells while they serve: each Cell has one current version
// (a compiled module plus, for reactors, a pool of warm instances), a
// concurrency limiter with a bounded queue, per-request time limits and
// request statistics. Loading a new module into a serving cell is an upgrade:
// the new version is compiled and warmed before it takes traffic, the old one
// finishes what it holds and is then closed, and no request fails in between.
//
// A request reaches a cell in one of two forms: HTTP (ServeHTTP, from the
// node's ingress) or a request envelope (ServeEnvelope: a cel.call from
// another cell, or a request a peer forwarded over the fabric). The
// envelope is handed to a reactor as it came, with no HTTP round trip. A
// call from a cell carries the caller as a From (from the fabric's frame,
// never from a header); the cell checks its `allow from` (CallPolicy)
// before it runs, and its limits and statistics are those of HTTP.
//
// A Registry holds the cells of a node by name.
package cell
