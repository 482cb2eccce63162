package instrument

// LEB128 helpers. Every reader takes the buffer and a position and returns the
// position after the number, or a negative error code (errTrunc, errLEB); the
// callers turn those into messages that say where. Nothing here allocates.

const (
	errTrunc = -1 // the buffer ended inside the number
	errLEB   = -2 // the number is longer than its type allows
	errCount = -3 // a vector length exceeds the bytes left (used by callers)
)

// readU32 decodes an unsigned LEB128 number of at most 32 bits.
func readU32(b []byte, p int) (uint32, int) {
	if p < len(b) && b[p] < 0x80 {
		return uint32(b[p]), p + 1
	}
	var v uint32
	for shift := uint(0); shift < 35; shift += 7 {
		if p >= len(b) {
			return 0, errTrunc
		}
		c := b[p]
		p++
		if shift == 28 && c > 0x0f {
			return 0, errLEB
		}
		v |= uint32(c&0x7f) << shift
		if c < 0x80 {
			return v, p
		}
	}
	return 0, errLEB
}

// readU64 decodes an unsigned LEB128 number of at most 64 bits.
func readU64(b []byte, p int) (uint64, int) {
	var v uint64
	for shift := uint(0); shift < 70; shift += 7 {
		if p >= len(b) {
			return 0, errTrunc
		}
		c := b[p]
		p++
		if shift == 63 && c > 0x01 {
			return 0, errLEB
		}
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v, p
		}
	}
	return 0, errLEB
}

// readS33 decodes a signed LEB128 number of at most 33 bits (block types and
// heap types).
func readS33(b []byte, p int) (int64, int) {
	var v int64
	var shift uint
	for i := 0; i < 5; i++ {
		if p >= len(b) {
			return 0, errTrunc
		}
		c := b[p]
		p++
		v |= int64(c&0x7f) << shift
		shift += 7
		if c < 0x80 {
			if c&0x40 != 0 {
				v |= -1 << shift
			}
			return v, p
		}
	}
	return 0, errLEB
}

// skipLEB skips a LEB128 number of at most max bytes without decoding it.
func skipLEB(b []byte, p, max int) int {
	for i := 0; i < max; i++ {
		if p >= len(b) {
			return errTrunc
		}
		c := b[p]
		p++
		if c < 0x80 {
			return p
		}
	}
	return errLEB
}

// skipU32 skips an unsigned 32-bit LEB128 number.
func skipU32(b []byte, p int) int {
	if p < len(b) && b[p] < 0x80 {
		return p + 1
	}
	return skipLEB(b, p, 5)
}

// appendU32 appends v as a minimal unsigned LEB128 number.
func appendU32(b []byte, v uint32) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// appendS32 appends v as a minimal signed LEB128 number.
func appendS32(b []byte, v int32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// appendU64 appends v as a minimal unsigned LEB128 number.
func appendU64(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// sizeU32 is the length of v as a minimal unsigned LEB128 number.
func sizeU32(v uint32) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
