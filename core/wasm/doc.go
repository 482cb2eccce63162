// Package wasm owns the WebAssembly engine of a node: one wazero runtime, the
// compile cache (in memory per content hash, on disk across restarts), the
// classification of modules into the reactor and command ABIs, the `cel` host
// module, and calls into instances under a time limit.
//
// Time limits do not use wazero's WithCloseOnContextDone, which puts a
// trampoline on every loop back-edge. Modules are instead rewritten once, at
// compile time, by package instrument: every function entry and loop header
// reads one exported mutable global and traps when the host has set it. A call
// arms a timer that sets the global; the guest stops at its next loop header or
// call, the call returns ErrTimeout, and the instance must be discarded.
//
// Concretely each check site only decrements a countdown global and tests it
// (one load, one store, one branch). When it runs out — every yieldInterval
// checks, or at once when the host zeroes it after setting the interrupt
// global — the guest returns briefly to Go (a memory.grow of zero pages, which
// wazero runs in Go), then reads the interrupt global and traps if it is set.
// Without those returns a looping guest could never be preempted and would
// stall the garbage collector's stop-the-world, and with it the whole node.
package wasm
