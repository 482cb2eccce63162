package instrument

import "fmt"

// Immediate classes of single-byte opcodes. scanExpr switches on these (a
// dense switch compiles to a jump table) instead of on the opcodes
// themselves.
const (
	immInvalid  = iota // not an opcode we know
	immNone            // no immediates
	immEnd             // end
	immBlock           // block, if, legacy try: block type, opens a block
	immLoop            // loop: block type, opens a block, gets a check
	immTryTable        // try_table: block type, vec(catch), opens a block
	immDelegate        // legacy delegate: label, closes a block
	immU32             // one u32 index
	immU32x2           // two u32 indices
	immBrTable         // vec(label) label
	immSelectT         // vec(valtype)
	immMemarg          // memarg
	immI32             // s32
	immI64             // s64
	immF32             // 4 bytes
	immF64             // 8 bytes
	immHeapType        // ref.null: heap type (s33)
	immPrefixFC        // 0xFC: misc (saturating truncation, bulk memory, tables)
	immPrefixFD        // 0xFD: SIMD
	immPrefixFE        // 0xFE: threads
	immTableSet        // table.set: one u32 index; changes a table
)

// Opcodes that matter to the rewriter.
const (
	opLoop       = 0x03
	opIf         = 0x04
	opEnd        = 0x0b
	opGlobalGet  = 0x23
	opGlobalSet  = 0x24
	opUnreachbl  = 0x00
	opDrop       = 0x1a
	opMemoryGrow = 0x40
	opI32Const   = 0x41
	opI64Const   = 0x42
	opI32Eqz     = 0x45
	opI32Sub     = 0x6b
	opI32LeS     = 0x4c
	opI32Add     = 0x6a
	opI32And     = 0x71
	opLocalGet   = 0x20
	opLocalTee   = 0x22
	blockEmpty   = 0x40
)

var opClass = func() (t [256]uint8) {
	set := func(c uint8, ops ...int) {
		for _, op := range ops {
			t[op] = c
		}
	}
	span := func(c uint8, from, to int) {
		for op := from; op <= to; op++ {
			t[op] = c
		}
	}
	set(immNone,
		0x00, // unreachable
		0x01, // nop
		0x05, // else
		0x0a, // throw_ref
		0x0f, // return
		0x19, // legacy catch_all
		0x1a, // drop
		0x1b, // select
		0xd1, // ref.is_null
		0xd4, // ref.as_non_null
	)
	span(immNone, 0x45, 0xc4) // numeric, including sign extension 0xc0-0xc4
	set(immEnd, 0x0b)
	set(immBlock, 0x02, 0x04, 0x06) // block, if, legacy try
	set(immLoop, 0x03)
	set(immTryTable, 0x1f)
	set(immDelegate, 0x18)
	set(immU32,
		0x07, // legacy catch (tag)
		0x08, // throw (tag)
		0x09, // legacy rethrow (label)
		0x0c, // br
		0x0d, // br_if
		0x10, // call
		0x12, // return_call
		0x14, // call_ref (type)
		0x15, // return_call_ref (type)
		0x25, // table.get
		0x3f, // memory.size (memory index; a zero byte before multi-memory)
		0x40, // memory.grow
		0xd2, // ref.func
		0xd5, // br_on_null
		0xd6, // br_on_non_null
	)
	span(immU32, 0x20, 0x24) // local.get/set/tee, global.get/set
	set(immU32x2,
		0x11, // call_indirect (type, table)
		0x13, // return_call_indirect
	)
	set(immBrTable, 0x0e)
	set(immSelectT, 0x1c)
	span(immMemarg, 0x28, 0x3e)
	set(immI32, 0x41)
	set(immI64, 0x42)
	set(immF32, 0x43)
	set(immF64, 0x44)
	set(immHeapType, 0xd0)
	set(immPrefixFC, 0xfc)
	set(immPrefixFD, 0xfd)
	set(immPrefixFE, 0xfe)
	set(immTableSet, 0x26)
	return t
}()

// Immediate classes of 0xFD (SIMD) sub-opcodes.
const (
	simdInvalid  = iota
	simdNone     // no immediates
	simdMemarg   // loads and stores
	simdBytes16  // v128.const, i8x16.shuffle
	simdLane     // extract_lane / replace_lane
	simdMemLane  // load_lane / store_lane
	simdMaxSubop = 0x113
)

var simdClass = func() (t [simdMaxSubop + 1]uint8) {
	for i := range t {
		t[i] = simdNone
	}
	for op := 0x00; op <= 0x0b; op++ {
		t[op] = simdMemarg
	}
	t[0x0c] = simdBytes16 // v128.const
	t[0x0d] = simdBytes16 // i8x16.shuffle
	for op := 0x15; op <= 0x22; op++ {
		t[op] = simdLane
	}
	for op := 0x54; op <= 0x5b; op++ {
		t[op] = simdMemLane
	}
	t[0x5c] = simdMemarg // v128.load32_zero
	t[0x5d] = simdMemarg // v128.load64_zero
	// Opcodes the final SIMD proposal left unassigned.
	for _, op := range []int{0x9a, 0xa2, 0xa5, 0xa6, 0xaf, 0xb0, 0xb2, 0xb3, 0xb4,
		0xbb, 0xc2, 0xc5, 0xc6, 0xcf, 0xd0, 0xd2, 0xd3, 0xd4, 0xe2, 0xee} {
		t[op] = simdInvalid
	}
	// 0x100-0x113 are relaxed SIMD, all without immediates.
	return t
}()

// scanError is a decoding failure inside an expression, at pos (relative to
// the scanned buffer). Callers add the section, function and file offset.
type scanError struct {
	pos     int
	msg     string
	exceeds bool // a count exceeds the rest of the code
}

func (s *rewriter) immErr(start, code int, format string, args ...any) *scanError {
	what := "malformed immediate"
	switch code {
	case errTrunc:
		what = "unexpected end of code in immediate"
	case errCount:
		what = "vector length exceeding the rest of the code in immediate"
	}
	return &scanError{pos: start, msg: fmt.Sprintf(what+" of opcode "+format, args...), exceeds: code == errCount}
}

// scanExpr decodes the instructions of b starting at p up to and including
// the end that closes the expression, and returns the position after it. If
// collect is set, the position right after each loop's block type (where the
// header check goes) is appended to s.locs.
func (s *rewriter) scanExpr(b []byte, p int, collect bool) (int, *scanError) {
	depth := 0
	n := len(b)
	for p < n {
		start := p
		op := b[p]
		p++
		switch opClass[op] {
		case immNone:
			continue
		case immEnd:
			if depth == 0 {
				return p, nil
			}
			depth--
			continue
		case immU32:
			if p < n && b[p] < 0x80 {
				p++
				continue
			}
			p = skipLEB(b, p, 5)
		case immTableSet:
			s.noSnapshot("function %d changes a table (table.set), and tables are not captured", s.tableFn)
			p = skipU32(b, p)
		case immLoop:
			depth++
			p = skipBlockType(b, p)
			if collect && p >= 0 {
				s.locs = append(s.locs, p)
			}
		case immBlock:
			depth++
			p = skipBlockType(b, p)
		case immMemarg:
			p = skipMemarg(b, p)
		case immI32:
			p = skipLEB(b, p, 5)
		case immI64:
			p = skipLEB(b, p, 10)
		case immF32:
			p += 4
			if p > n {
				p = errTrunc
			}
		case immF64:
			p += 8
			if p > n {
				p = errTrunc
			}
		case immU32x2:
			if p = skipU32(b, p); p >= 0 {
				p = skipU32(b, p)
			}
		case immBrTable:
			var count uint32
			count, p = readU32(b, p)
			if p >= 0 && uint64(count) >= uint64(n-p) {
				// Every label takes at least one byte.
				p = errCount
			}
			for i := uint32(0); p >= 0 && i <= count; i++ {
				p = skipU32(b, p)
			}
		case immSelectT:
			var count uint32
			count, p = readU32(b, p)
			if p >= 0 && uint64(count) > uint64(n-p) {
				p = errCount
			}
			for i := uint32(0); p >= 0 && i < count; i++ {
				p = skipValType(b, p)
			}
		case immHeapType:
			_, p = readS33(b, p)
		case immTryTable:
			depth++
			p = skipTryTable(b, p)
		case immDelegate:
			if depth == 0 {
				return 0, &scanError{pos: start, msg: "delegate outside of a block"}
			}
			depth--
			p = skipU32(b, p)
		case immPrefixFC:
			var sub uint32
			if sub, p = readU32(b, p); p < 0 {
				return 0, s.immErr(start, p, "0xfc")
			}
			if sub >= 12 && sub <= 17 && sub != 16 {
				s.noSnapshot("function %d changes a table (0xfc %d), and tables are not captured", s.tableFn, sub)
			}
			switch {
			case sub <= 7: // saturating truncation
			case sub == 9 || sub == 11 || sub == 13 || (sub >= 15 && sub <= 17):
				// data.drop, memory.fill, elem.drop, table.grow/size/fill
				p = skipU32(b, p)
			case sub == 8 || sub == 10 || sub == 12 || sub == 14:
				// memory.init, memory.copy, table.init, table.copy
				if p = skipU32(b, p); p >= 0 {
					p = skipU32(b, p)
				}
			default:
				return 0, &scanError{pos: start, msg: fmt.Sprintf("unknown opcode 0xfc 0x%02x", sub)}
			}
			if p < 0 {
				return 0, s.immErr(start, p, "0xfc 0x%02x", sub)
			}
			continue
		case immPrefixFD:
			var sub uint32
			if sub, p = readU32(b, p); p < 0 {
				return 0, s.immErr(start, p, "0xfd")
			}
			class := uint8(simdInvalid)
			if sub <= simdMaxSubop {
				class = simdClass[sub]
			}
			switch class {
			case simdNone:
			case simdMemarg:
				p = skipMemarg(b, p)
			case simdBytes16:
				if p += 16; p > n {
					p = errTrunc
				}
			case simdLane:
				if p++; p > n {
					p = errTrunc
				}
			case simdMemLane:
				if p = skipMemarg(b, p); p >= 0 {
					if p++; p > n {
						p = errTrunc
					}
				}
			default:
				return 0, &scanError{pos: start, msg: fmt.Sprintf("unknown opcode 0xfd 0x%02x", sub)}
			}
			if p < 0 {
				return 0, s.immErr(start, p, "0xfd 0x%02x", sub)
			}
			continue
		case immPrefixFE:
			var sub uint32
			if sub, p = readU32(b, p); p < 0 {
				return 0, s.immErr(start, p, "0xfe")
			}
			switch {
			case sub <= 2 || (sub >= 0x10 && sub <= 0x4e): // notify, wait, loads, stores, rmw
				p = skipMemarg(b, p)
			case sub == 3: // atomic.fence: a zero byte
				if p++; p > n {
					p = errTrunc
				}
			default:
				return 0, &scanError{pos: start, msg: fmt.Sprintf("unknown opcode 0xfe 0x%02x", sub)}
			}
			if p < 0 {
				return 0, s.immErr(start, p, "0xfe 0x%02x", sub)
			}
			continue
		default:
			return 0, &scanError{pos: start, msg: fmt.Sprintf("unknown opcode 0x%02x", op)}
		}
		if p < 0 {
			return 0, s.immErr(start, p, "0x%02x", op)
		}
	}
	return 0, &scanError{pos: n, msg: "unexpected end of code: missing end"}
}

// skipBlockType skips a block type: 0x40, a value type, or an s33 type index.
func skipBlockType(b []byte, p int) int {
	if p < len(b) {
		if c := b[p]; c&0xc0 == 0x40 && c != 0x63 && c != 0x64 {
			return p + 1 // empty or a one-byte value type: the common case
		}
	}
	v, p := readS33(b, p)
	if p >= 0 && (v == -29 || v == -28) { // (ref null ht) or (ref ht)
		_, p = readS33(b, p)
	}
	return p
}

// skipValType skips a value type: one byte, or 0x63/0x64 and a heap type.
func skipValType(b []byte, p int) int {
	if p >= len(b) {
		return errTrunc
	}
	if c := b[p]; c == 0x63 || c == 0x64 {
		_, p = readS33(b, p+1)
		return p
	}
	return p + 1
}

// skipMemarg skips a memarg: alignment flags (bit 6 means a memory index
// follows), then the offset (u64 to allow memory64).
func skipMemarg(b []byte, p int) int {
	flags, p := readU32(b, p)
	if p < 0 {
		return p
	}
	if flags&0x40 != 0 {
		if p = skipU32(b, p); p < 0 {
			return p
		}
	}
	if p < len(b) && b[p] < 0x80 {
		return p + 1
	}
	return skipLEB(b, p, 10)
}

// skipTryTable skips try_table's block type and catch clauses.
func skipTryTable(b []byte, p int) int {
	if p = skipBlockType(b, p); p < 0 {
		return p
	}
	count, p := readU32(b, p)
	if p >= 0 && uint64(count) > uint64(len(b)-p) {
		return errCount
	}
	for i := uint32(0); p >= 0 && i < count; i++ {
		if p >= len(b) {
			return errTrunc
		}
		kind := b[p]
		p++
		switch kind {
		case 0, 1: // catch tag label, catch_ref tag label
			if p = skipU32(b, p); p >= 0 {
				p = skipU32(b, p)
			}
		case 2, 3: // catch_all label, catch_all_ref label
			p = skipU32(b, p)
		default:
			return errLEB
		}
	}
	return p
}
