// Package instrument rewrites WebAssembly binaries so that the cell runtime
// can interrupt guest code cheaply and cap the memory a cell may use.
//
// # Interruption
//
// wazero can stop a running guest when its context is done
// (wazero.RuntimeConfig.WithCloseOnContextDone), but the price is paid on
// every call and every loop iteration: about 0.5µs more per host→guest call
// (1.2µs measured here), and each loop back-edge becomes roughly 100× slower
// because it leaves compiled code to check the module's closed state (wazero
// issue 2466; 35× on the tight loop below). For short request handlers that
// is a large fraction of the total run time.
//
// This package uses the idea of wasmtime's epoch interruption instead:
// Instrument adds one mutable i32 global, exported under
// Options.InterruptGlobal and initially 0, and injects
//
//	global.get $interrupt
//	if
//	  unreachable
//	end
//
// at the start of every function body and at the header of every loop (right
// after the loop's block type, so it runs on every back-edge). Every path of
// unbounded execution in WebAssembly goes through a loop header or a function
// entry, so once the host sets the global to a non-zero value from another
// goroutine, e.g.
//
//	mod.ExportedGlobal(name).(api.MutableGlobal).Set(1)
//
// the guest traps with "unreachable" within a bounded number of instructions
// (about 0.1-0.2 ms after Set in the tests, most of it goroutine wake-up). A
// function whose body starts with a loop does not get the entry check,
// because the loop header's check runs first anyway. wazero's compiler does
// not hoist the global's load out of loops (the package's tests would hang
// if it did), and the check costs nothing on calls from the host.
//
// Measured with wazero v1.12's compiler engine (BenchmarkGuest; sum of
// 1..10⁶, a loop of five instructions, the worst case):
//
//	uninstrumented                0.69 ms
//	interrupt check               1.06 ms   (+0.4 ns per back-edge)
//	interrupt check + yield       1.45 ms   (+0.8 ns per back-edge)
//	WithCloseOnContextDone       24.3  ms
//
// On real code, where loop bodies are longer, the relative cost is smaller.
//
// The check sequence is self-contained (an if block with no results), so it
// is valid at any point where the operand stack is balanced and it does not
// change any branch depth: no label, local, function or global is renumbered.
// The new globals are appended after the module's own globals, so no
// existing global.get/global.set needs rewriting.
//
// The trap leaves the guest in whatever state it had reached; a module
// instance that was interrupted should be discarded, never reused. The host
// can only set the global of an instance it holds, so a start function
// cannot be interrupted while wazero's InstantiateModule runs it: instantiate
// with ModuleConfig.WithStartFunctions() and call _start or _initialize
// afterwards, under the time limit.
//
// # Yielding to the Go scheduler
//
// A check that only reads a global is not enough with wazero's compiler:
// Go cannot preempt a goroutine running compiled guest code (the signal
// handler finds no Go function at the interrupted PC), so a guest that never
// returns holds its thread, and the next stop-the-world phase of the garbage
// collector waits for it forever, with every other goroutine stopped,
// including the one that would set the interrupt global. The whole process
// freezes (TestWithoutYieldGCWaitsForTheGuest shows it; wazero's own
// WithCloseOnContextDone avoids it by leaving compiled code on every
// back-edge, which is where its cost comes from). With N spinning guests
// and GOMAXPROCS ≤ N, the setter does not even get a thread.
//
// Options.YieldInterval fixes this: a private countdown global is decremented
// at every check site, and every YieldInterval-th time the guest executes
// memory.grow 0, which changes nothing but is implemented by a call into Go,
// where the goroutine can be preempted. With it, a host GC completes in about
// 10 ms while guests spin (TestYieldLetsGCFinish). The cell runtime should
// always set it together with InterruptGlobal.
//
// # Memory caps
//
// Options.MaxMemoryPages lowers the declared maximum of every memory the
// module defines (imported memories are left alone, their owner decides), so
// memory.grow beyond the cap returns -1 exactly as the guest's allocator
// expects, instead of the host having to police the size afterwards.
//
// # Decoder
//
// Instrument is a streaming rewriter, not a validator: it decodes what it
// must (imports, globals, exports, memories, and every instruction of every
// function body, to find loops and skip immediates correctly), copies all
// other sections byte for byte in their original order, and leaves
// validation to the engine. It supports the WebAssembly 2.0 instruction set
// (MVP, sign extension, non-trapping conversions, multi-value, bulk memory,
// reference types, SIMD) plus tail calls, multi-memory, threads, relaxed
// SIMD, exception handling (try_table and the legacy try/catch/delegate) and
// typed function references. Malformed input yields an *Error that names the
// section, function index and file offset; it never panics. It runs at about
// 450-550 MB/s: 5-6.5 ms for a 2.8 MB Go-compiled module, with five
// allocations (the output buffer and scratch space).
//
// It also rejects modules that declare more elements than they could hold
// (vector lengths, names, data segments, type parameters larger than the
// bytes left, or more than 50000 locals in a function), even in sections it
// only copies: wazero v1.12 allocates by such counts before reading, and a
// module of a few hundred bytes can make CompileModule die of a fatal,
// unrecoverable out-of-memory error. Running every module through Instrument
// first (even with zero Options) protects the host from that.
//
// DWARF custom sections (.debug_*) are kept but not adjusted, so source
// positions they give for instrumented functions are shifted by the
// injected bytes.
package instrument
