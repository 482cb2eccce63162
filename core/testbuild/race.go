//go:build race

package testbuild

// Race is true when the test binary is built with the race detector: the
// daemons it starts should be too, so that a race in them shows.
const Race = true
