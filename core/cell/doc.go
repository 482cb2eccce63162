// Package cell owns cells while they serve: each Cell has one current version
// (a compiled module plus, for reactors, a pool of warm instances), a
// concurrency limiter with a bounded queue, per-request time limits and
// request statistics. Loading a new module into a serving cell is an upgrade:
// the new version is compiled and warmed before it takes traffic, the old one
// finishes what it holds and is then closed, and no request fails in between.
//
// A Registry holds the cells of a node by name.
package cell
