package instrument

import "fmt"

// Plausibility checks for the sections Instrument otherwise copies
// untouched: the type, element and data sections and the name custom
// section. Instrument does not need anything from them, but wazero (v1.12)
// allocates by the counts they declare before it reads the elements, so a
// module of a few hundred bytes that claims a billion function parameters
// makes CompileModule die with a fatal, unrecoverable "out of memory". Since
// Instrument runs first on every module, it rejects sizes and counts larger
// than the rest of the section (and functions with more locals than engines
// accept, see maxLocals), which makes such modules harmless.

// maxLocals is the largest number of locals a function may declare: the
// limit of the WebAssembly JS API, which web engines (and so toolchains)
// observe. wazero accepts up to 2^32 and allocates for all of them.
const maxLocals = 50000

// vecLen reads a vector length at p in in[:end] and checks that the
// vector's elements, each at least one byte, fit in what is left. It
// returns the length and the position after it, or a negative error code
// and the position where the problem is.
func vecLen(in []byte, p, end int) (n uint32, q, code int) {
	n, q = readU32(in[:end], p)
	if q < 0 {
		return 0, p, q
	}
	if uint64(n) > uint64(end-q) {
		return n, q, errCount
	}
	return n, q, 0
}

// vecErr makes the error for a vecLen failure; what says which vector.
// (Formatting only on failure keeps the loops free of allocations.)
func (r *rewriter) vecErr(section string, at int, n uint32, q, code, end int, what string) error {
	if code == errCount {
		return r.exceeds(section, at, "%s: length %d exceeds the %d bytes left in the section", what, n, end-q)
	}
	return r.errAt(section, at, "%s: %s", what, lebProblem(code))
}

// types checks the type section: vec(functype or rec group).
func (r *rewriter) types(p, end int) error {
	in := r.in[:end]
	count, p, err := r.readVecCount("type", p, end, 3)
	if err != nil {
		return err
	}
	index := uint32(0)
	for i := uint32(0); i < count; i++ {
		at := p
		group := uint32(1)
		if p < end && in[p] == 0x4e { // rec group
			var code int
			if group, p, code = vecLen(in, p+1, end); code != 0 {
				return r.vecErr("type", at, group, p, code, end, fmt.Sprintf("rec group at type %d", index))
			}
		}
		for j := uint32(0); j < group; j++ {
			at := p
			if p >= end {
				return r.errAt("type", at, "type %d: unexpected end of data", index)
			}
			if in[p] != 0x60 {
				return r.errAt("type", at, "type %d: unsupported type form %#x (only function types are)", index, in[p])
			}
			p++
			for _, what := range [...]string{"parameters", "results"} {
				n, q, code := vecLen(in, p, end)
				if code != 0 {
					return r.vecErr("type", at, n, q, code, end, fmt.Sprintf("type %d: %s", index, what))
				}
				if what == "parameters" {
					r.typeParams = append(r.typeParams, n)
				}
				p = q
				for k := uint32(0); k < n && p >= 0; k++ {
					p = skipValType(in, p)
				}
				if p < 0 {
					return r.errAt("type", at, "type %d: %s: %s", index, what, lebProblem(p))
				}
			}
			index++
		}
	}
	if p != end {
		return r.errAt("type", p, "%d unexpected bytes after the last type", end-p)
	}
	return nil
}

// elements checks the element section's vectors.
func (r *rewriter) elements(p, end int) error {
	in := r.in[:end]
	count, p, err := r.readVecCount("element", p, end, 2)
	if err != nil {
		return err
	}
	for i := uint32(0); i < count; i++ {
		at := p
		var flags uint32
		if flags, p = readU32(in, p); p < 0 {
			return r.errAt("element", at, "segment %d: flags: %s", i, lebProblem(p))
		}
		if flags > 7 {
			return r.errAt("element", at, "segment %d: unknown flags %d", i, flags)
		}
		if flags&3 == 2 { // active with a table index
			p = skipU32(in, p)
		}
		if p >= 0 && flags&1 == 0 { // active: offset expression
			var serr *scanError
			if p, serr = r.scanExpr(in, p, false); serr != nil {
				return r.errAt("element", serr.pos, "segment %d: offset: %s", i, serr.msg)
			}
		}
		if p >= 0 && flags&3 != 0 { // element kind or reference type
			if flags&4 == 0 {
				if p++; p > end {
					p = errTrunc
				}
			} else {
				p = skipValType(in, p)
			}
		}
		if p < 0 {
			return r.errAt("element", at, "segment %d: %s", i, lebProblem(p))
		}
		n, q, code := vecLen(in, p, end)
		if code != 0 {
			return r.vecErr("element", at, n, q, code, end, fmt.Sprintf("segment %d: elements", i))
		}
		p = q
		for k := uint32(0); k < n; k++ {
			if flags&4 == 0 { // function indices
				if p = skipU32(in, p); p < 0 {
					return r.errAt("element", at, "segment %d: element %d: %s", i, k, lebProblem(p))
				}
				continue
			}
			var serr *scanError
			if p, serr = r.scanExpr(in, p, false); serr != nil {
				return r.errAt("element", serr.pos, "segment %d: element %d: %s", i, k, serr.msg)
			}
		}
	}
	if p != end {
		return r.errAt("element", p, "%d unexpected bytes after the last segment", end-p)
	}
	return nil
}

// data checks the data section's segment sizes.
func (r *rewriter) data(p, end int) error {
	in := r.in[:end]
	count, p, err := r.readVecCount("data", p, end, 2)
	if err != nil {
		return err
	}
	for i := uint32(0); i < count; i++ {
		at := p
		var flags uint32
		if flags, p = readU32(in, p); p < 0 {
			return r.errAt("data", at, "segment %d: flags: %s", i, lebProblem(p))
		}
		switch flags {
		case 0, 2: // active, with a memory index for 2
			if flags == 2 {
				if p = skipU32(in, p); p < 0 {
					return r.errAt("data", at, "segment %d: memory index: %s", i, lebProblem(p))
				}
			}
			var serr *scanError
			if p, serr = r.scanExpr(in, p, false); serr != nil {
				return r.errAt("data", serr.pos, "segment %d: offset: %s", i, serr.msg)
			}
		case 1: // passive
		default:
			return r.errAt("data", at, "segment %d: unknown flags %d", i, flags)
		}
		n, q, code := vecLen(in, p, end)
		if code != 0 {
			return r.vecErr("data", at, n, q, code, end, fmt.Sprintf("segment %d: bytes", i))
		}
		p = q + int(n)
	}
	if p != end {
		return r.errAt("data", p, "%d unexpected bytes after the last segment", end-p)
	}
	return nil
}

// names checks the counts and name lengths in a name section, reading it
// the way wazero does: subsections 0-2 by their contents rather than their
// declared sizes, for as long as the declared sizes say there is more, and
// if the section is inconsistent, on into the bytes after it. Counts and
// lengths must fit in what is left of the module.
func (r *rewriter) names(p, end int) error {
	in := r.in
	short := func(at int) error {
		return r.errAt("name", at, "unexpected end of data in the name section")
	}
	// name checks one name (vec(byte)) at p.
	name := func(p int) (int, error) {
		n, q := readU32(in, p)
		if q < 0 {
			return 0, short(p)
		}
		if uint64(n) > uint64(len(in)-q) {
			return 0, r.exceeds("name", p, "name length %d exceeds the %d bytes left in the module", n, len(in)-q)
		}
		return q + int(n), nil
	}
	// count reads a vector length at p.
	count := func(p int) (uint32, int, error) {
		n, q := readU32(in, p)
		if q < 0 {
			return 0, 0, short(p)
		}
		if uint64(n) > uint64(len(in)-q) {
			return 0, 0, r.exceeds("name", p, "vector length %d exceeds the %d bytes left in the module", n, len(in)-q)
		}
		return n, q, nil
	}
	// nameMap checks vec((index, name)) at p.
	nameMap := func(p int) (int, error) {
		n, p, err := count(p)
		for i := uint32(0); i < n && err == nil; i++ {
			if p = skipU32(in, p); p < 0 {
				return 0, short(p)
			}
			p, err = name(p)
		}
		return p, err
	}
	var err error
	for limit := uint64(end - p); limit > 0; {
		if p >= len(in) {
			return nil
		}
		id := in[p]
		limit--
		size, q := readU32(in, p+1)
		if q < 0 {
			return short(p)
		}
		limit -= uint64(q - (p + 1))
		switch id {
		case 0: // module name
			p, err = name(q)
		case 1: // function names
			p, err = nameMap(q)
		case 2: // local names: vec((function index, name map))
			var n uint32
			n, p, err = count(q)
			for i := uint32(0); i < n && err == nil; i++ {
				if p = skipU32(in, p); p < 0 {
					return short(q)
				}
				p, err = nameMap(p)
			}
		default:
			if uint64(size) > uint64(len(in)-q) {
				return short(q)
			}
			p = q + int(size)
		}
		if err != nil {
			return err
		}
		limit -= uint64(size)
	}
	return nil
}

// takeData collects the data section's segments into r.segments, when
// Options.Snapshot is set and the module can be snapshotted, and reports
// whether it did (the section is then left out of the output). A segment
// that is passive, in another memory, or at an offset that is not a
// constant makes the module one that cannot be snapshotted. The section
// was checked by data.
func (r *rewriter) takeData(p, end int) bool {
	if !r.opts.Snapshot || r.noSnap != "" {
		return false
	}
	in := r.in[:end]
	count, p := readU32(in, p)
	segs := make([]Segment, 0, min(count, 1<<16))
	for i := uint32(0); i < count; i++ {
		var flags uint32
		flags, p = readU32(in, p)
		if flags != 0 {
			r.noSnapshot("data segment %d is not an active segment of memory 0", i)
			return false
		}
		// The offset must be exactly i32.const N; end.
		if p >= end || in[p] != opI32Const {
			r.noSnapshot("data segment %d has an offset that is not a constant", i)
			return false
		}
		off, q := readS33(in, p+1)
		if q < 0 || q >= end || in[q] != opEnd {
			r.noSnapshot("data segment %d has an offset that is not a constant", i)
			return false
		}
		n, q2 := readU32(in, q+1)
		segs = append(segs, Segment{Offset: uint32(off), Bytes: in[q2 : q2+int(n) : q2+int(n)]})
		p = q2 + int(n)
	}
	r.segments = segs
	return true
}
