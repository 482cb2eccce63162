// Package wasm owns the WebAssembly engine of a node: one wazero runtime, the
// compile cache (in memory per content hash, on disk across restarts), the
// classification of modules into the reactor and command ABIs, the `cel` host
// module, and calls into instances under a time limit.
//
// Time limits do not use wazero's WithCloseOnContextDone, which puts a
// trampoline on every loop back-edge (about 13 times slower on a tight loop).
// Modules are instead rewritten once, at compile time, by package instrument.
// Each function entry decrements an exported countdown global and tests it
// (one load, one store, one branch); each loop header counts its iterations
// in a local and does the same only every 1024 iterations. When the countdown
// runs out — every yieldInterval checks, or at once when the host zeroes it —
// the guest returns briefly to Go (a memory.grow of zero pages, which wazero
// runs in Go), then reads the exported interrupt global and traps if it is
// set.
//
// A call arms a timer that sets the interrupt global and zeroes the
// countdown; the guest stops within a loop's 1024 iterations or at its next
// call, the call returns ErrTimeout, and the instance must be discarded.
// Without the returns to Go a looping guest could never be preempted and
// would stall the garbage collector's stop-the-world, and with it the whole
// node, timers included.
package wasm
