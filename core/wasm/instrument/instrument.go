package instrument

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Options selects what Instrument injects. The zero value injects nothing:
// Instrument then only checks the module's structure (sections, imports,
// exports, globals, local declarations, and that no count or size is larger
// than the input can hold) and returns a copy.
type Options struct {
	// InterruptGlobal, if non-empty, adds a mutable i32 global, initial 0,
	// exported under this name. Every function body entry and every loop
	// header gets: global.get $g; if; unreachable; end (i.e. trap when the
	// host sets it non-zero). The function entry check is skipped when the
	// body's first instruction is a loop, whose header check covers it.
	//
	// With wazero's compiler engine, set YieldInterval too: compiled guest
	// code cannot be preempted by the Go scheduler, so without yields a
	// guest that never returns holds its thread through any stop-the-world
	// phase of the garbage collector, which then stops every other
	// goroutine, including the one that would set this global, for good.
	InterruptGlobal string

	// YieldInterval, if non-zero, adds a private mutable i32 countdown
	// global and makes every check site (the same function entries and loop
	// headers as InterruptGlobal's) decrement it; when it reaches zero it
	// is reset to YieldInterval and the guest executes
	//
	//	i32.const 0; memory.grow 0; drop
	//
	// which changes nothing but, in wazero's compiler engine, returns to Go
	// code, where the goroutine can be preempted and a pending
	// stop-the-world can proceed. A module with no memory gets an empty one
	// (minimum and maximum 0) for this. The countdown costs about as much
	// as the interrupt check (a fraction of a nanosecond per back-edge);
	// with values around 1000 the exit itself (tens of nanoseconds) adds
	// next to nothing, while a spinning guest still yields every few
	// microseconds.
	YieldInterval uint32

	// CountdownGlobal, if non-empty (it needs InterruptGlobal and
	// YieldInterval), exports the countdown global under this name and
	// merges the two checks into one: each check site then only decrements
	// the countdown and tests it, and the interrupt global is read on the
	// slow path, right after the yield:
	//
	//	global.get $countdown; i32.const 1; i32.sub; global.set $countdown
	//	global.get $countdown; i32.const 0; i32.le_s
	//	if
	//	  i32.const 0; memory.grow 0; drop
	//	  global.get $interrupt; if; unreachable; end
	//	  i32.const YieldInterval; global.set $countdown
	//	end
	//
	// Loop headers are cheaper still: each function with a loop gets one
	// extra i32 local counting its iterations, and runs the sequence above
	// (decrementing by loopPrefilter instead of 1) only every loopPrefilter
	// iterations — register arithmetic on the hot path, no memory traffic.
	//
	// To stop the guest the host sets the interrupt global to 1 and then the
	// countdown to 0. A decrement racing that store may overwrite the 0, in
	// which case the guest stops at the next natural yield, at most
	// YieldInterval checks later.
	CountdownGlobal string

	// MaxMemoryPages, if non-zero, caps the maximum of every memory the
	// module defines (not imports) at this many 64 KiB pages: a memory with
	// no maximum gets this one, a larger maximum is lowered. A memory whose
	// minimum exceeds it is an error naming both numbers. For 32-bit
	// memories a cap above 65536 pages acts as 65536, the largest maximum
	// they can declare.
	MaxMemoryPages uint32

	// Snapshot prepares the module for pre-initialised snapshots (see
	// Prepare): every mutable global the module defines is exported as
	// SnapshotGlobalPrefix followed by its index, and the data section is
	// taken out of the module and returned in Prepared.Data, for the host to
	// lay into memory itself. When the module's state cannot be captured
	// soundly, nothing is taken out and Prepared.NoSnapshot says why.
	Snapshot bool
}

// SnapshotGlobalPrefix starts the export names Options.Snapshot gives the
// module's mutable globals: "__cel_g3" is global 3.
const SnapshotGlobalPrefix = "__cel_g"

// Prepared is a rewritten module and what a host needs to snapshot it.
type Prepared struct {
	// Module is the rewritten module.
	Module []byte
	// NoSnapshot, when not empty, says why the module's state cannot be
	// captured (Options.Snapshot was set); Module then keeps its data
	// section and Data and Globals are empty.
	NoSnapshot string
	// Data are the module's active data segments, in order, when they were
	// taken out of Module: the host lays them into memory 0 before the
	// first instruction runs, as instantiation would have.
	Data []Segment
	// Globals are the indices of the module's mutable globals, each
	// exported as SnapshotGlobalPrefix followed by the index.
	Globals []uint32
	// MemoryPages is the minimum size of memory 0 in 64 KiB pages.
	MemoryPages uint32
}

// Segment is an active data segment of memory 0.
type Segment struct {
	// Offset is where the segment starts in memory.
	Offset uint32
	// Bytes are its contents (a slice of the input module).
	Bytes []byte
}

var (
	// ErrMemoryCap is matched (errors.Is) by the error Instrument returns
	// when a memory's minimum size exceeds Options.MaxMemoryPages.
	ErrMemoryCap = errors.New("instrument: memory minimum exceeds MaxMemoryPages")

	// ErrExportExists is matched (errors.Is) by the error Instrument returns
	// when Options.InterruptGlobal names an export the module already has.
	ErrExportExists = errors.New("instrument: export name already in use")

	// errTooLarge marks errors where a size or count read from the input
	// is too large to be real: larger than what is left of the input, or
	// (locals) beyond what engines accept. Engines that allocate by such a
	// count before reading the elements, as wazero does, can run out of
	// memory on them (see sizes.go).
	errTooLarge = errors.New("instrument: size or count too large")
)

// Error is the type of every error Instrument returns. Its message says what
// went wrong and where, e.g.
//
//	instrument: code section: function 12 at offset 0x1a2b: unknown opcode 0xfd 0x1ff
type Error struct {
	// Section is the name of the section being decoded ("code", "import",
	// ...), or "" for problems with the module header or options.
	Section string
	// Offset is the byte offset in the input module where the problem is,
	// or -1 if it is not about one place.
	Offset int
	// Func is the function index (in the module's function index space,
	// imports included) for problems inside a function body, else -1.
	Func int
	// Msg describes the problem.
	Msg string

	kind error
}

// Error implements error.
func (e *Error) Error() string {
	s := "instrument: "
	if e.Section != "" {
		s += e.Section + " section: "
	}
	switch {
	case e.Func >= 0:
		s += fmt.Sprintf("function %d at offset %#x: ", e.Func, e.Offset)
	case e.Offset >= 0:
		s += fmt.Sprintf("at offset %#x: ", e.Offset)
	}
	return s + e.Msg
}

// Unwrap returns ErrMemoryCap or ErrExportExists for those problems, else nil.
func (e *Error) Unwrap() error { return e.kind }

// Section ids.
const (
	secCustom    = 0
	secType      = 1
	secImport    = 2
	secFunction  = 3
	secTable     = 4
	secMemory    = 5
	secGlobal    = 6
	secExport    = 7
	secStart     = 8
	secElement   = 9
	secCode      = 10
	secData      = 11
	secDataCount = 12
	secTag       = 13
)

var sectionNames = [...]string{
	secCustom:    "custom",
	secType:      "type",
	secImport:    "import",
	secFunction:  "function",
	secTable:     "table",
	secMemory:    "memory",
	secGlobal:    "global",
	secExport:    "export",
	secStart:     "start",
	secElement:   "element",
	secCode:      "code",
	secData:      "data",
	secDataCount: "data count",
	secTag:       "tag",
}

// hasVector says which sections are a vector.
var hasVector = [...]bool{
	secType: true, secImport: true, secFunction: true, secTable: true, secMemory: true,
	secGlobal: true, secExport: true, secElement: true, secCode: true, secData: true, secTag: true,
	secCustom: false, secStart: false, secDataCount: false,
}

// sectionRank is the position a non-custom section must have in the module.
var sectionRank = [...]int{
	secType:      1,
	secImport:    2,
	secFunction:  3,
	secTable:     4,
	secMemory:    5,
	secTag:       6,
	secGlobal:    7,
	secExport:    8,
	secStart:     9,
	secElement:   10,
	secDataCount: 11,
	secCode:      12,
	secData:      13,
}

// rewriter holds the state of one Instrument call.
type rewriter struct {
	in   []byte
	out  []byte
	opts Options

	importedFuncs    uint32
	importedMemories uint32
	importedGlobals  uint32
	definedGlobals   uint32
	definedMemories  uint32
	declaredFuncs    uint32

	needGlobals bool   // the new globals are still to be written
	needExport  bool   // the interrupt global's export(s) are still to be written
	needMemory  bool   // the yield needs a memory and none was seen yet
	memory0Is64 bool   // memory 0 is a 64-bit memory (memory.grow takes an i64)
	irqIndex    uint32 // the interrupt global's index
	cntIndex    uint32 // the countdown global's index
	check       []byte // the sequence injected at each check site

	tooBig bool // a rewritten section outgrew the 32-bit size field

	noSnap     string   // why the module cannot be snapshotted (Options.Snapshot)
	mutGlobals []uint32 // indices of the defined mutable globals (Options.Snapshot)
	segments   []Segment
	memPages   uint32
	tableFn    int // the function being scanned, for noSnapshot

	locs []int // scratch: loop header positions of the current body

	typeParams []uint32 // parameter count of each type
	funcTypes  []uint32 // type index of each declared function
	loopCheck  []byte   // the loop header prefilter, when merged (see loopPrefilter)
	hdr        []byte   // scratch: a body's rewritten local declarations
	scratch    []byte   // scratch: a body's loop header sequence
}

// Instrument returns a rewritten copy of the module. The input is never
// modified. See the package documentation for what is injected.
func Instrument(wasm []byte, opts Options) ([]byte, error) {
	p, err := Prepare(wasm, opts)
	if err != nil {
		return nil, err
	}
	return p.Module, nil
}

// Prepare is Instrument that also returns what Options.Snapshot found. A
// module can be snapshotted when it defines exactly one 32-bit, unshared
// memory and imports none; imports no globals; has no start function; its
// data segments are all active, at constant offsets in memory 0, without a
// data count section (so no memory.init or data.drop can refer to them);
// and no function changes a table (table.set, table.grow, table.fill,
// table.copy, table.init, elem.drop), since tables are not captured.
func Prepare(wasm []byte, opts Options) (*Prepared, error) {
	if len(wasm) < 8 {
		return nil, &Error{Offset: -1, Func: -1, Msg: fmt.Sprintf("module is %d bytes, too short for the 8-byte header", len(wasm))}
	}
	if string(wasm[:4]) != "\x00asm" {
		return nil, &Error{Offset: 0, Func: -1, Msg: fmt.Sprintf("bad magic %#x, not a WebAssembly binary module", wasm[:4])}
	}
	if string(wasm[4:8]) != "\x01\x00\x00\x00" {
		return nil, &Error{Offset: 4, Func: -1, Msg: fmt.Sprintf("unsupported binary version %#x (only version 1 modules are supported)", wasm[4:8])}
	}
	if opts.InterruptGlobal != "" && !utf8.ValidString(opts.InterruptGlobal) {
		return nil, &Error{Offset: -1, Func: -1, Msg: fmt.Sprintf("InterruptGlobal %q is not valid UTF-8", opts.InterruptGlobal)}
	}
	if opts.CountdownGlobal != "" {
		switch {
		case opts.InterruptGlobal == "" || opts.YieldInterval == 0:
			return nil, &Error{Offset: -1, Func: -1, Msg: "CountdownGlobal needs InterruptGlobal and YieldInterval"}
		case opts.CountdownGlobal == opts.InterruptGlobal:
			return nil, &Error{Offset: -1, Func: -1, Msg: fmt.Sprintf("CountdownGlobal and InterruptGlobal are both %q", opts.CountdownGlobal)}
		case !utf8.ValidString(opts.CountdownGlobal):
			return nil, &Error{Offset: -1, Func: -1, Msg: fmt.Sprintf("CountdownGlobal %q is not valid UTF-8", opts.CountdownGlobal)}
		}
	}
	r := &rewriter{
		in:   wasm,
		opts: opts,
		// Loop and entry checks add a few percent to code; the slack
		// avoids regrowing the buffer for typical modules.
		out:         make([]byte, 0, len(wasm)+len(wasm)/8+64),
		needGlobals: opts.InterruptGlobal != "" || opts.YieldInterval != 0,
		needExport:  opts.InterruptGlobal != "" || opts.Snapshot,
		needMemory:  opts.YieldInterval != 0,
	}
	if err := r.run(); err != nil {
		return nil, err
	}
	p := &Prepared{Module: r.out}
	if !opts.Snapshot {
		return p, nil
	}
	if r.noSnap == "" && r.memPages == 0 && r.importedMemories+r.definedMemories == 0 {
		r.noSnap = "the module has no memory"
	}
	if r.noSnap != "" {
		// The data section was kept when the reason was found before it;
		// a reason found after it (none today) would need a second pass.
		p.NoSnapshot = r.noSnap
		return p, nil
	}
	p.Data, p.Globals, p.MemoryPages = r.segments, r.mutGlobals, r.memPages
	return p, nil
}

// noSnapshot records the first reason the module cannot be snapshotted.
func (r *rewriter) noSnapshot(format string, args ...any) {
	if r.opts.Snapshot && r.noSnap == "" {
		r.noSnap = fmt.Sprintf(format, args...)
	}
}

func (r *rewriter) run() error {
	in := r.in
	r.out = append(r.out, in[:8]...)
	lastRank, lastID := 0, -1
	for p := 8; p < len(in); {
		start := p
		id := in[p]
		size, q := readU32(in, p+1)
		if q < 0 {
			return r.errAt("", start, "section id %d: %s section size", id, lebProblem(q))
		}
		if uint64(size) > uint64(len(in)-q) {
			return r.exceeds("", start, "section id %d: size %d extends beyond the end of the module (%d bytes left)", id, size, len(in)-q)
		}
		if int(id) >= len(sectionNames) {
			return r.errAt("", start, "unknown section id %d", id)
		}
		end := q + int(size)
		if id != secCustom {
			rank := sectionRank[id]
			if rank <= lastRank {
				if rank == lastRank {
					return r.errAt("", start, "duplicate %s section", sectionNames[id])
				}
				return r.errAt("", start, "%s section after %s section", sectionNames[id], sectionNames[lastID])
			}
			lastRank, lastID = rank, int(id)
			r.flushNew(rank)
		}
		var err error
		if hasVector[id] {
			// Every section but custom, start and data count is a vector
			// whose elements take at least a byte each.
			if _, _, err := r.readVecCount(sectionNames[id], q, end, 1); err != nil {
				return err
			}
		}
		switch id {
		case secCustom:
			err = r.custom(q, end)
			r.out = append(r.out, in[start:end]...)
		case secType:
			err = r.types(q, end)
			r.out = append(r.out, in[start:end]...)
		case secElement:
			err = r.elements(q, end)
			r.out = append(r.out, in[start:end]...)
		case secData:
			if err = r.data(q, end); err == nil && !r.takeData(q, end) {
				r.out = append(r.out, in[start:end]...)
			}
		case secStart:
			r.noSnapshot("the module has a start function, which would run again on every restore")
			r.out = append(r.out, in[start:end]...)
		case secDataCount:
			r.noSnapshot("the module has a data count section (bulk-memory data segments)")
			r.out = append(r.out, in[start:end]...)
		case secImport:
			err = r.imports(q, end)
			r.out = append(r.out, in[start:end]...)
		case secFunction:
			n, c := readU32(in[:end], q)
			if c < 0 {
				err = r.errAt("function", q, "function count: %s", lebProblem(c))
			}
			r.declaredFuncs = n
			if err == nil {
				err = r.functions(c, n, end)
			}
			r.out = append(r.out, in[start:end]...)
		case secMemory:
			r.needMemory = false
			err = r.memories(start, q, end)
		case secGlobal:
			err = r.globals(start, q, end)
		case secExport:
			err = r.exports(start, q, end)
		case secCode:
			err = r.code(start, q, end)
		default:
			r.out = append(r.out, in[start:end]...)
		}
		if err != nil {
			return err
		}
		p = end
	}
	r.flushNew(1 << 30)
	if r.tooBig {
		return &Error{Offset: -1, Func: -1, Msg: "a rewritten section exceeds 4 GiB"}
	}
	return nil
}

// flushNew writes the sections Instrument adds when the module has none of
// their kind (a memory for the yield, a global section, an export section)
// before the first section that must follow them.
func (r *rewriter) flushNew(nextRank int) {
	if r.needMemory && nextRank > sectionRank[secMemory] {
		if r.importedMemories == 0 {
			// (memory 0 0), for the yield's memory.grow.
			r.out = append(r.out, secMemory, 0x04, 0x01, 0x01, 0x00, 0x00)
		}
		r.needMemory = false
	}
	if r.needGlobals && nextRank > sectionRank[secGlobal] {
		start := r.openSection(secGlobal)
		r.out = appendU32(r.out, r.newGlobals())
		r.appendGlobals()
		r.closeSection(start)
	}
	if r.needExport && nextRank > sectionRank[secExport] {
		start := r.openSection(secExport)
		r.out = appendU32(r.out, r.newExports())
		r.appendExport()
		r.closeSection(start)
	}
}

// newGlobals is the number of globals Instrument adds.
func (r *rewriter) newGlobals() uint32 {
	n := uint32(0)
	if r.opts.InterruptGlobal != "" {
		n++
	}
	if r.opts.YieldInterval != 0 {
		n++
	}
	return n
}

// appendGlobals appends the new globals, after every imported and defined
// global so that no index changes, and builds the check sequence that uses
// them:
//
//	(global $interrupt (mut i32) (i32.const 0))
//	(global $countdown (mut i32) (i32.const YieldInterval))
//
//	global.get $interrupt
//	if
//	  unreachable
//	end
//	global.get $countdown
//	i32.eqz
//	if
//	  i32.const YieldInterval
//	  global.set $countdown
//	  i32.const 0          (i64.const 0 for a 64-bit memory)
//	  memory.grow 0
//	  drop
//	end
//	global.get $countdown
//	i32.const 1
//	i32.sub
//	global.set $countdown
func (r *rewriter) appendGlobals() {
	idx := r.importedGlobals + r.definedGlobals
	r.check = r.check[:0]
	if r.opts.InterruptGlobal != "" {
		r.out = append(r.out, 0x7f, 0x01, opI32Const, 0x00, opEnd)
		r.irqIndex = idx
		r.check = append(r.check, opGlobalGet)
		r.check = appendU32(r.check, idx)
		r.check = append(r.check, opIf, blockEmpty, opUnreachbl, opEnd)
		idx++
	}
	if n := r.opts.YieldInterval; n != 0 && r.merged() {
		r.out = append(r.out, 0x7f, 0x01, opI32Const)
		r.out = appendS32(r.out, int32(n))
		r.out = append(r.out, opEnd)
		r.cntIndex = idx
		c := appendU32(append(r.check[:0], opGlobalGet), idx)
		c = append(c, opI32Const, 0x01, opI32Sub)
		c = appendU32(append(c, opGlobalSet), idx)
		c = appendU32(append(c, opGlobalGet), idx)
		c = append(c, opI32Const, 0x00, opI32LeS, opIf, blockEmpty)
		if r.memory0Is64 {
			c = append(c, opI64Const, 0x00, opMemoryGrow, 0x00, opDrop)
		} else {
			c = append(c, opI32Const, 0x00, opMemoryGrow, 0x00, opDrop)
		}
		c = appendU32(append(c, opGlobalGet), r.irqIndex)
		c = append(c, opIf, blockEmpty, opUnreachbl, opEnd, opI32Const)
		c = appendS32(c, int32(n))
		c = appendU32(append(c, opGlobalSet), idx)
		c = append(c, opEnd)
		r.check = c
		// The loop header's full check is the same, but it accounts for the
		// loopPrefilter iterations its prefilter let pass.
		lc := appendU32(append([]byte(nil), opGlobalGet), idx)
		lc = appendS32(append(lc, opI32Const), loopPrefilter)
		lc = append(lc, c[len(appendU32([]byte{opGlobalGet}, idx))+2:]...) // past "i32.const 1"
		r.loopCheck = lc
	} else if n != 0 {
		r.out = append(r.out, 0x7f, 0x01, opI32Const)
		r.out = appendS32(r.out, int32(n))
		r.out = append(r.out, opEnd)
		c := r.check
		c = appendU32(append(c, opGlobalGet), idx)
		c = append(c, opI32Eqz, opIf, blockEmpty, opI32Const)
		c = appendS32(c, int32(n))
		c = appendU32(append(c, opGlobalSet), idx)
		if r.memory0Is64 {
			c = append(c, opI64Const, 0x00, opMemoryGrow, 0x00, opDrop, opEnd)
		} else {
			c = append(c, opI32Const, 0x00, opMemoryGrow, 0x00, opDrop, opEnd)
		}
		c = appendU32(append(c, opGlobalGet), idx)
		c = append(c, opI32Const, 0x01, opI32Sub)
		c = appendU32(append(c, opGlobalSet), idx)
		r.check = c
	}
	r.needGlobals = false
}

// merged reports whether the countdown carries the interrupt check.
func (r *rewriter) merged() bool {
	return r.opts.CountdownGlobal != "" && r.opts.InterruptGlobal != "" && r.opts.YieldInterval != 0
}

// newExports is the number of exports Instrument adds.
func (r *rewriter) newExports() uint32 {
	n := uint32(0)
	if r.opts.InterruptGlobal != "" {
		n++
	}
	if r.merged() {
		n++
	}
	if r.noSnap == "" {
		n += uint32(len(r.mutGlobals))
	}
	return n
}

// appendExport appends the export of the interrupt global (and of the
// countdown, when merged) and the snapshot exports of mutable globals.
func (r *rewriter) appendExport() {
	r.needExport = false
	if r.noSnap == "" {
		var name []byte
		for _, g := range r.mutGlobals {
			name = strconv.AppendUint(append(name[:0], SnapshotGlobalPrefix...), uint64(g), 10)
			r.out = appendU32(r.out, uint32(len(name)))
			r.out = append(r.out, name...)
			r.out = append(r.out, 0x03)
			r.out = appendU32(r.out, g)
		}
	}
	if r.opts.InterruptGlobal == "" {
		return
	}
	r.out = appendU32(r.out, uint32(len(r.opts.InterruptGlobal)))
	r.out = append(r.out, r.opts.InterruptGlobal...)
	r.out = append(r.out, 0x03) // global
	r.out = appendU32(r.out, r.irqIndex)
	if r.merged() {
		r.out = appendU32(r.out, uint32(len(r.opts.CountdownGlobal)))
		r.out = append(r.out, r.opts.CountdownGlobal...)
		r.out = append(r.out, 0x03)
		r.out = appendU32(r.out, r.cntIndex)
	}
}

// openSection starts a section whose size is not known yet, reserving five
// bytes for it, and returns the position of its contents.
func (r *rewriter) openSection(id byte) int {
	r.out = append(r.out, id, 0, 0, 0, 0, 0)
	return len(r.out)
}

// closeSection writes the size of the section opened at start, moving its
// contents back if the size takes fewer than the five bytes reserved.
func (r *rewriter) closeSection(start int) {
	size := len(r.out) - start
	if uint64(size) > 0xffffffff {
		r.tooBig = true
		return
	}
	n := sizeU32(uint32(size))
	appendU32(r.out[start-5:start-5], uint32(size))
	if n < 5 {
		copy(r.out[start-5+n:], r.out[start:])
		r.out = r.out[:len(r.out)-(5-n)]
	}
}

func (r *rewriter) errAt(section string, off int, format string, args ...any) *Error {
	return &Error{Section: section, Offset: off, Func: -1, Msg: fmt.Sprintf(format, args...)}
}

// exceeds is errAt for a size or count larger than the rest of the input.
func (r *rewriter) exceeds(section string, off int, format string, args ...any) *Error {
	e := r.errAt(section, off, format, args...)
	e.kind = errTooLarge
	return e
}

// lebProblem describes a negative position returned by the LEB readers.
func lebProblem(code int) string {
	if code == errTrunc {
		return "unexpected end of data"
	}
	return "malformed LEB128 number"
}

// readVecCount reads a vector length at p in in[:end]. Each element takes
// at least minSize bytes, which bounds the count by the bytes left, so a
// corrupt count cannot make a caller loop for billions of iterations.
func (r *rewriter) readVecCount(section string, p, end, minSize int) (uint32, int, error) {
	n, q := readU32(r.in[:end], p)
	if q < 0 {
		return 0, 0, r.errAt(section, p, "vector length: %s", lebProblem(q))
	}
	if uint64(n)*uint64(minSize) > uint64(end-q) {
		return 0, 0, r.exceeds(section, p, "vector length %d exceeds the %d bytes left in the section", n, end-q)
	}
	return n, q, nil
}

// custom checks that a custom section's name fits in the section, and the
// counts in a name section.
func (r *rewriter) custom(p, end int) error {
	n, q := readU32(r.in[:end], p)
	if q < 0 {
		return r.errAt("custom", p, "name length: %s", lebProblem(q))
	}
	if uint64(n) > uint64(end-q) {
		return r.exceeds("custom", p, "name length %d exceeds the %d bytes left in the section", n, end-q)
	}
	if string(r.in[q:q+int(n)]) == "name" {
		return r.names(q+int(n), end)
	}
	return nil
}

// imports counts the imported functions, memories and globals.
func (r *rewriter) imports(p, end int) error {
	in := r.in[:end]
	count, p, err := r.readVecCount("import", p, end, 4)
	if err != nil {
		return err
	}
	for i := uint32(0); i < count; i++ {
		at := p
		// Module and field names.
		for j := 0; j < 2; j++ {
			var n uint32
			if n, p = readU32(in, p); p < 0 {
				return r.errAt("import", at, "import %d: name length: %s", i, lebProblem(p))
			}
			if uint64(n) > uint64(end-p) {
				return r.exceeds("import", at, "import %d: name length %d exceeds the %d bytes left in the section", i, n, end-p)
			}
			p += int(n)
		}
		if p >= end {
			return r.errAt("import", at, "import %d: unexpected end of data", i)
		}
		kind := in[p]
		p++
		switch kind {
		case 0x00: // function: type index
			p = skipU32(in, p)
			r.importedFuncs++
		case 0x01: // table: reference type, limits
			if p = skipValType(in, p); p >= 0 {
				_, _, _, p = readLimits(in, p)
			}
		case 0x02: // memory: limits
			var flags byte
			flags, _, _, p = readLimits(in, p)
			if r.importedMemories == 0 {
				r.memory0Is64 = flags&4 != 0
			}
			r.importedMemories++
			r.noSnapshot("the module imports a memory")
		case 0x03: // global: value type, mutability
			r.noSnapshot("the module imports a global")
			if p = skipValType(in, p); p >= 0 {
				if p++; p > end {
					p = errTrunc
				}
			}
			r.importedGlobals++
		case 0x04: // tag: attribute, type index
			if p++; p > end {
				p = errTrunc
			} else {
				p = skipU32(in, p)
			}
		default:
			return r.errAt("import", at, "import %d: unknown import kind %#x", i, kind)
		}
		if p < 0 {
			return r.errAt("import", at, "import %d: %s", i, lebProblem(p))
		}
	}
	if p != end {
		return r.errAt("import", p, "%d unexpected bytes after the last import", end-p)
	}
	return nil
}

// readLimits reads limits: a flags byte (bit 0: has maximum, bit 1: shared,
// bit 2: 64-bit), the minimum and the optional maximum.
func readLimits(b []byte, p int) (flags byte, min, max uint64, q int) {
	if p >= len(b) {
		return 0, 0, 0, errTrunc
	}
	flags = b[p]
	if flags > 7 {
		return 0, 0, 0, errLEB
	}
	p++
	read := func() uint64 {
		var v uint64
		if flags&4 != 0 {
			v, p = readU64(b, p)
		} else {
			var v32 uint32
			v32, p = readU32(b, p)
			v = uint64(v32)
		}
		return v
	}
	min = read()
	if p >= 0 && flags&1 != 0 {
		max = read()
	}
	return flags, min, max, p
}

// memories rewrites the memory section, capping every maximum at
// MaxMemoryPages.
func (r *rewriter) memories(sec, p, end int) error {
	in := r.in[:end]
	count, p, err := r.readVecCount("memory", p, end, 2)
	if err != nil {
		return err
	}
	r.definedMemories = count
	rewrite := r.opts.MaxMemoryPages != 0
	start := 0
	if rewrite {
		start = r.openSection(secMemory)
		r.out = appendU32(r.out, count)
	}
	for i := uint32(0); i < count; i++ {
		at := p
		idx := r.importedMemories + i
		var flags byte
		var min, max uint64
		if flags, min, max, p = readLimits(in, p); p < 0 {
			if p == errLEB && at < end && in[at] > 7 {
				return r.errAt("memory", at, "memory %d: unknown limits flags %#x", idx, in[at])
			}
			return r.errAt("memory", at, "memory %d: limits: %s", idx, lebProblem(p))
		}
		if idx == 0 {
			r.memory0Is64 = flags&4 != 0
			r.memPages = uint32(min)
		}
		switch {
		case idx > 0:
			r.noSnapshot("the module defines %d memories", r.importedMemories+count)
		case flags&4 != 0:
			r.noSnapshot("memory 0 is a 64-bit memory")
		case flags&2 != 0:
			r.noSnapshot("memory 0 is shared")
		}
		if !rewrite {
			continue
		}
		limit := uint64(r.opts.MaxMemoryPages)
		if min > limit {
			return &Error{Section: "memory", Offset: at, Func: -1, kind: ErrMemoryCap,
				Msg: fmt.Sprintf("memory %d: minimum of %d pages exceeds MaxMemoryPages %d", idx, min, limit)}
		}
		if flags&4 == 0 && limit > 65536 {
			limit = 65536
		}
		if flags&1 == 0 || max > limit {
			flags |= 1
			max = limit
		}
		r.out = append(r.out, flags)
		r.out = appendU64(r.out, min)
		r.out = appendU64(r.out, max)
	}
	if p != end {
		return r.errAt("memory", p, "%d unexpected bytes after the last memory", end-p)
	}
	if !rewrite {
		r.out = append(r.out, r.in[sec:end]...)
		return nil
	}
	r.closeSection(start)
	return nil
}

// globals copies the global section, counting its globals, and appends the
// interrupt global.
func (r *rewriter) globals(sec, p, end int) error {
	in := r.in[:end]
	count, body, err := r.readVecCount("global", p, end, 3)
	if err != nil {
		return err
	}
	p = body
	for i := uint32(0); i < count; i++ {
		at := p
		if p = skipValType(in, p); p >= 0 {
			if p++; p > end {
				p = errTrunc
			} else if in[p-1] == 1 && r.opts.Snapshot {
				r.mutGlobals = append(r.mutGlobals, r.importedGlobals+i)
			}
		}
		if p < 0 {
			return r.errAt("global", at, "global %d: type: %s", r.importedGlobals+i, lebProblem(p))
		}
		var serr *scanError
		if p, serr = r.scanExpr(in, p, false); serr != nil {
			return r.errAt("global", serr.pos, "global %d: initializer: %s", r.importedGlobals+i, serr.msg)
		}
	}
	if p != end {
		return r.errAt("global", p, "%d unexpected bytes after the last global", end-p)
	}
	r.definedGlobals = count
	if !r.needGlobals {
		r.out = append(r.out, r.in[sec:end]...)
		return nil
	}
	if uint64(count)+uint64(r.newGlobals()) > 0xffffffff {
		return r.errAt("global", body, "too many globals to add more")
	}
	start := r.openSection(secGlobal)
	r.out = appendU32(r.out, count+r.newGlobals())
	r.out = append(r.out, in[body:end]...)
	r.appendGlobals()
	r.closeSection(start)
	return nil
}

// exports copies the export section, checking that the interrupt global's
// name is free, and appends its export.
func (r *rewriter) exports(sec, p, end int) error {
	in := r.in[:end]
	count, body, err := r.readVecCount("export", p, end, 3)
	if err != nil {
		return err
	}
	p = body
	for i := uint32(0); i < count; i++ {
		at := p
		var n uint32
		if n, p = readU32(in, p); p < 0 {
			return r.errAt("export", at, "export %d: name length: %s", i, lebProblem(p))
		}
		if uint64(n) > uint64(end-p) {
			return r.exceeds("export", at, "export %d: name length %d exceeds the %d bytes left in the section", i, n, end-p)
		}
		name := in[p : p+int(n)]
		p += int(n)
		if r.needExport && string(name) == r.opts.InterruptGlobal {
			return &Error{Section: "export", Offset: at, Func: -1, kind: ErrExportExists,
				Msg: fmt.Sprintf("export %d is already named %q, the InterruptGlobal name", i, r.opts.InterruptGlobal)}
		}
		if r.needExport && r.merged() && string(name) == r.opts.CountdownGlobal {
			return &Error{Section: "export", Offset: at, Func: -1, kind: ErrExportExists,
				Msg: fmt.Sprintf("export %d is already named %q, the CountdownGlobal name", i, r.opts.CountdownGlobal)}
		}
		if r.opts.Snapshot && len(name) > len(SnapshotGlobalPrefix) && string(name[:len(SnapshotGlobalPrefix)]) == SnapshotGlobalPrefix {
			r.noSnapshot("export %d is named %q, a name snapshots use", i, name)
		}
		if p >= end {
			return r.errAt("export", at, "export %d: unexpected end of data", i)
		}
		p++ // kind
		if p = skipU32(in, p); p < 0 {
			return r.errAt("export", at, "export %d: index: %s", i, lebProblem(p))
		}
	}
	if p != end {
		return r.errAt("export", p, "%d unexpected bytes after the last export", end-p)
	}
	if !r.needExport {
		r.out = append(r.out, r.in[sec:end]...)
		return nil
	}
	if uint64(count)+uint64(r.newExports()) > 0xffffffff {
		return r.errAt("export", body, "too many exports to add %d", r.newExports())
	}
	start := r.openSection(secExport)
	r.out = appendU32(r.out, count+r.newExports())
	r.out = append(r.out, in[body:end]...)
	r.appendExport()
	r.closeSection(start)
	return nil
}

// code rewrites the code section, injecting the check sequence at every
// function entry and loop header; or, if there is nothing to inject, checks
// the bodies' local declarations and copies the section.
func (r *rewriter) code(sec, p, end int) error {
	rewrite := len(r.check) != 0
	in := r.in[:end]
	count, p, err := r.readVecCount("code", p, end, 2)
	if err != nil {
		return err
	}
	if count != r.declaredFuncs {
		return r.errAt("code", p, "%d function bodies for %d declared functions", count, r.declaredFuncs)
	}
	start := 0
	if rewrite {
		start = r.openSection(secCode)
		r.out = appendU32(r.out, count)
	}
	for i := uint32(0); i < count; i++ {
		at := p
		size, q := readU32(in, p)
		if q < 0 {
			return &Error{Section: "code", Offset: at, Func: int(r.importedFuncs + i), Msg: "body size: " + lebProblem(q)}
		}
		if uint64(size) > uint64(end-q) {
			return &Error{Section: "code", Offset: at, Func: int(r.importedFuncs + i), kind: errTooLarge,
				Msg: fmt.Sprintf("body size %d exceeds the %d bytes left in the section", size, end-q)}
		}
		p = q + int(size)
		fn := int(r.importedFuncs + i)
		if !rewrite {
			expr, err := r.locals(q, p, fn)
			if err != nil {
				return err
			}
			if r.opts.Snapshot && r.noSnap == "" {
				r.tableFn = fn
				if _, serr := r.scanExpr(r.in[q:p], expr, false); serr != nil {
					return bodyError(fn, q+serr.pos, nil, "%s", serr.msg)
				}
			}
			continue
		}
		r.tableFn = fn
		if err := r.body(q, p, fn); err != nil {
			return err
		}
	}
	if p != end {
		return r.errAt("code", p, "%d unexpected bytes after the last function body", end-p)
	}
	if !rewrite {
		r.out = append(r.out, r.in[sec:end]...)
		return nil
	}
	r.closeSection(start)
	return nil
}

// prefilteredBody writes a body with loops when checks are merged: it adds
// one i32 local, the loop counter, after the function's own locals; the
// entry gets the full check, and each loop header
//
//	local.get $n; i32.const 1; i32.add; local.tee $n
//	i32.const loopPrefilter-1; i32.and; i32.eqz
//	if <the countdown check, decrementing by loopPrefilter> end
func (r *rewriter) prefilteredBody(b []byte, start, expr, fn int) error {
	groups, p := readU32(b, 0) // validated by locals
	total := uint64(0)
	for q := p; q < expr; {
		var count uint32
		count, q = readU32(b, q)
		q = skipValType(b, q)
		total += uint64(count)
	}
	f := fn - int(r.importedFuncs)
	if f < 0 || f >= len(r.funcTypes) || int(r.funcTypes[f]) >= len(r.typeParams) {
		return bodyError(fn, start, nil, "function %d has no valid type", fn)
	}
	total += uint64(r.typeParams[r.funcTypes[f]])
	if total+1 > maxLocals {
		return bodyError(fn, start, errTooLarge, "more than %d locals", maxLocals)
	}
	local := uint32(total)
	r.hdr = appendU32(r.hdr[:0], groups+1)
	r.hdr = append(r.hdr, b[p:expr]...)
	r.hdr = append(r.hdr, 0x01, 0x7f) // one i32
	pre := appendU32(append(r.scratch[:0], opLocalGet), local)
	pre = append(pre, opI32Const, 0x01, opI32Add)
	pre = appendU32(append(pre, opLocalTee), local)
	pre = appendS32(append(pre, opI32Const), loopPrefilter-1)
	pre = append(pre, opI32And, opI32Eqz, opIf, blockEmpty)
	pre = append(pre, r.loopCheck...)
	pre = append(pre, opEnd)
	r.scratch = pre
	size := uint64(len(r.hdr)) + uint64(len(b)-expr) + uint64(len(r.check)) + uint64(len(r.locs))*uint64(len(pre))
	if size > 0xffffffff {
		return bodyError(fn, start, nil, "instrumented body exceeds 4 GiB")
	}
	r.out = appendU32(r.out, uint32(size))
	r.out = append(r.out, r.hdr...)
	r.out = append(r.out, r.check...)
	last := expr
	for _, l := range r.locs {
		r.out = append(r.out, b[last:l]...)
		r.out = append(r.out, pre...)
		last = l
	}
	r.out = append(r.out, b[last:]...)
	return nil
}

// functions records the type index of each of the n declared functions,
// whose vector starts at in[p].
func (r *rewriter) functions(p int, n uint32, end int) error {
	in := r.in[:end]
	if uint64(n) > uint64(end-p) {
		return r.exceeds("function", p, "%d functions exceed the %d bytes left in the section", n, end-p)
	}
	r.funcTypes = make([]uint32, 0, n)
	for i := uint32(0); i < n; i++ {
		at := p
		var t uint32
		if t, p = readU32(in, p); p < 0 {
			return r.errAt("function", at, "function %d: type index: %s", i, lebProblem(p))
		}
		r.funcTypes = append(r.funcTypes, t)
	}
	return nil
}

// loopPrefilter is how many iterations of a loop pass between full checks
// when the checks are merged (a power of two): each loop header counts in a
// local of its function — register arithmetic, no memory traffic — and runs
// the countdown check, with the countdown decremented by loopPrefilter,
// once every loopPrefilter iterations. The interrupt then lands within that
// many iterations of a loop, and the yield bound in checks is unchanged.
const loopPrefilter = 1024

// bodyError is an error in the body of function fn at in[at].
func bodyError(fn, at int, kind error, format string, args ...any) *Error {
	return &Error{Section: "code", Offset: at, Func: fn, kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// locals checks the local declarations of the body in[start:end] and returns
// the position in the body where its code starts.
func (r *rewriter) locals(start, end, fn int) (int, error) {
	b := r.in[start:end]
	n, p := readU32(b, 0)
	if p < 0 {
		return 0, bodyError(fn, start, nil, "local declarations: %s", lebProblem(p))
	}
	if uint64(n)*2 > uint64(len(b)-p) {
		return 0, bodyError(fn, start, errTooLarge, "%d local declarations exceed the %d bytes left in the body", n, len(b)-p)
	}
	total := uint64(0)
	for j := uint32(0); j < n; j++ {
		at := p
		var count uint32
		if count, p = readU32(b, p); p >= 0 {
			p = skipValType(b, p)
		}
		if p < 0 {
			return 0, bodyError(fn, start+at, nil, "local declaration %d: %s", j, lebProblem(p))
		}
		if total += uint64(count); total > maxLocals {
			return 0, bodyError(fn, start+at, errTooLarge, "more than %d locals", maxLocals)
		}
	}
	return p, nil
}

// body rewrites one function body, in[start:end], without its size.
func (r *rewriter) body(start, end, fn int) error {
	b := r.in[start:end]
	expr, err := r.locals(start, end, fn)
	if err != nil {
		return err
	}
	r.locs = r.locs[:0]
	p, serr := r.scanExpr(b, expr, true)
	if serr != nil {
		var kind error
		if serr.exceeds {
			kind = errTooLarge
		}
		return bodyError(fn, start+serr.pos, kind, "%s", serr.msg)
	}
	if p != len(b) {
		return bodyError(fn, start+p, nil, "%d unexpected bytes after the end of the body", len(b)-p)
	}
	if r.loopCheck != nil && len(r.locs) > 0 {
		return r.prefilteredBody(b, start, expr, fn)
	}
	entry := b[expr] != opLoop // a leading loop's header check covers the entry
	checks := len(r.locs)
	if entry {
		checks++
	}
	size := uint64(len(b)) + uint64(checks)*uint64(len(r.check))
	if size > 0xffffffff {
		return bodyError(fn, start, nil, "instrumented body exceeds 4 GiB")
	}
	r.out = appendU32(r.out, uint32(size))
	r.out = append(r.out, b[:expr]...)
	if entry {
		r.out = append(r.out, r.check...)
	}
	last := expr
	for _, l := range r.locs {
		r.out = append(r.out, b[last:l]...)
		r.out = append(r.out, r.check...)
		last = l
	}
	r.out = append(r.out, b[last:]...)
	return nil
}
