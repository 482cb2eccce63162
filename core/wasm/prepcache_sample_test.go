package wasm

import "github.com/celluster/celluster/core/wasm/instrument"

func instrumentPreparedSample() instrument.Prepared {
	return instrument.Prepared{
		Module:      []byte("\x00asm\x01\x00\x00\x00"),
		Data:        []instrument.Segment{{Offset: 16, Bytes: []byte("hi")}},
		Globals:     []uint32{0, 3},
		MemoryPages: 2,
	}
}
