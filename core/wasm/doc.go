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
// The same check sites count down and, every yieldInterval checks, make the
// guest return briefly to Go (a memory.grow of zero pages, which wazero runs
// in Go). Without that a looping guest could never be preempted and would
// stall the garbage collector's stop-the-world, and with it the whole node.
package wasm
