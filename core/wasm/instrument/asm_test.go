package instrument

// A tiny assembler for hand-written test modules.

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func bs(b ...byte) []byte { return b }

func u32(v uint32) []byte { return appendU32(nil, v) }

func name(s string) []byte { return cat(u32(uint32(len(s))), []byte(s)) }

// vec prefixes the concatenated items with their count.
func vec(items ...[]byte) []byte { return cat(u32(uint32(len(items))), cat(items...)) }

// section frames a section with its id and size.
func section(id byte, payload ...[]byte) []byte {
	p := cat(payload...)
	return cat(bs(id), u32(uint32(len(p))), p)
}

// module prepends the header to the sections.
func module(sections ...[]byte) []byte {
	return cat([]byte("\x00asm\x01\x00\x00\x00"), cat(sections...))
}

// funcBody frames a function body: locals (already a vec) and code.
func funcBody(locals []byte, code ...[]byte) []byte {
	b := cat(locals, cat(code...))
	return cat(u32(uint32(len(b))), b)
}

var (
	noLocals    = vec()
	typeVoid    = bs(0x60, 0x00, 0x00)             // (func)
	typeI32I32  = bs(0x60, 0x01, 0x7f, 0x01, 0x7f) // (func (param i32) (result i32))
	typeSection = section(secType, vec(typeVoid, typeI32I32))
)

// checkFor is the injected check sequence for global index g.
func checkFor(g uint32) []byte {
	return cat(bs(opGlobalGet), u32(g), bs(opIf, blockEmpty, opUnreachbl, opEnd))
}

// oneFunc is a module with one () -> () function with the given body code.
func oneFunc(code ...[]byte) []byte {
	return module(
		typeSection,
		section(secFunction, vec(u32(0))),
		section(secCode, vec(funcBody(noLocals, code...))),
	)
}
