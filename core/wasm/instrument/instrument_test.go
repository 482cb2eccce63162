package instrument

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const irq = "__celluster_interrupt"

// newGlobal is the interrupt global's definition.
var newGlobal = bs(0x7f, 0x01, 0x41, 0x00, 0x0b)

// wantOneFunc is what Instrument should make of oneFunc(...) with
// InterruptGlobal irq: new global and export sections before the code
// section, and the body code given.
func wantOneFunc(code ...[]byte) []byte {
	return module(
		typeSection,
		section(secFunction, vec(u32(0))),
		section(secGlobal, vec(newGlobal)),
		section(secExport, vec(cat(name(irq), bs(0x03), u32(0)))),
		section(secCode, vec(funcBody(noLocals, code...))),
	)
}

func mustInstrument(t *testing.T, in []byte, opts Options) []byte {
	t.Helper()
	orig := bytes.Clone(in)
	out, err := Instrument(in, opts)
	if err != nil {
		t.Fatalf("Instrument: %v", err)
	}
	if !bytes.Equal(in, orig) {
		t.Fatal("Instrument modified its input")
	}
	return out
}

func TestInjectsChecksAtEntryAndLoopHeaders(t *testing.T) {
	chk := checkFor(0)
	tests := []struct {
		name string
		code [][]byte // segments; a check is expected between consecutive ones
		// entry says whether the function entry gets a check (not when
		// the body starts with a loop).
		entry bool
	}{
		{
			name:  "no loop",
			code:  [][]byte{bs(0x01, 0x0b)},
			entry: true,
		},
		{
			name:  "leading loop",
			code:  [][]byte{bs(0x03, 0x40), bs(0x0c, 0x00, 0x0b, 0x0b)},
			entry: false,
		},
		{
			name: "nested loops after other code",
			code: [][]byte{
				bs(0x01, 0x03, 0x40),                   // nop; loop
				bs(0x03, 0x7f),                         // loop (result i32)
				bs(0x41, 0x00, 0x0b, 0x1a, 0x0b, 0x0b), // i32.const 0; end; drop; end; end
			},
			entry: true,
		},
		{
			name: "loop block types: type index, multi-byte index, (ref null func)",
			code: [][]byte{
				bs(0x03, 0x00),
				bs(0x0b, 0x03, 0xc8, 0x01),
				bs(0x0b, 0x03, 0x63, 0x70),
				bs(0x0b, 0x0b),
			},
			entry: false,
		},
		{
			// Immediates full of 0x03 bytes (the loop opcode) must be
			// skipped, not mistaken for loops.
			name: "immediates that contain the loop opcode",
			code: [][]byte{cat(
				bs(0x41, 0x03, 0x1a),                                           // i32.const 3; drop
				bs(0x42, 0x83, 0x03, 0x1a),                                     // i64.const; drop
				bs(0x43, 0x03, 0x03, 0x03, 0x03, 0x1a),                         // f32.const; drop
				bs(0x44, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x1a), // f64.const
				cat(bs(0xfd, 0x0c), bytes.Repeat(bs(0x03), 16), bs(0x1a)),      // v128.const
				cat(bs(0xfd, 0x0d), bytes.Repeat(bs(0x03), 16)),                // i8x16.shuffle
				bs(0xfd, 0x15, 0x03),                                           // i8x16.extract_lane_s 3
				bs(0xfd, 0x54, 0x00, 0x03, 0x03),                               // v128.load8_lane align=0 offset=3 lane 3
				bs(0xfd, 0x00, 0x04, 0x03),                                     // v128.load align=4 offset=3
				bs(0xfd, 0x5c, 0x02, 0x03),                                     // v128.load32_zero
				bs(0xfd, 0xff, 0x01),                                           // f64x2.promote_low_f32x4 (two-byte sub-opcode)
				bs(0xfd, 0x80, 0x02),                                           // relaxed SIMD i8x16.relaxed_swizzle
				bs(0x28, 0x42, 0x03, 0x03),                                     // i32.load, multi-memory memarg: memory 3, offset 3
				bs(0x28, 0x02, 0x83, 0x03),                                     // i32.load offset=387
				bs(0x0e, 0x03, 0x03, 0x03, 0x03, 0x03),                         // br_table 3 3 3 3
				bs(0x1c, 0x02, 0x7f, 0x63, 0x03),                               // select (result i32 (ref null 3))
				bs(0xd0, 0x70, 0xd0, 0x03),                                     // ref.null func; ref.null 3
				bs(0x11, 0x03, 0x03),                                           // call_indirect type 3 table 3
				bs(0x13, 0x03, 0x03),                                           // return_call_indirect
				bs(0x12, 0x03, 0x10, 0x03, 0x14, 0x03),                         // return_call, call, call_ref
				bs(0xfc, 0x03),                                                 // i32.trunc_sat_f64_u
				bs(0xfc, 0x08, 0x03, 0x00),                                     // memory.init 3
				bs(0xfc, 0x0a, 0x00, 0x03),                                     // memory.copy
				bs(0xfc, 0x0e, 0x03, 0x03),                                     // table.copy
				bs(0xfc, 0x11, 0x03),                                           // table.fill 3
				bs(0x25, 0x03, 0x26, 0x03),                                     // table.get, table.set
				bs(0xfe, 0x03, 0x00),                                           // atomic.fence
				bs(0xfe, 0x1e, 0x02, 0x03),                                     // i32.atomic.rmw.add
				bs(0xfe, 0x00, 0x02, 0x03),                                     // memory.atomic.notify
				bs(0x1f, 0x40, 0x02, 0x00, 0x03, 0x03, 0x03, 0x03, 0x0b),       // try_table with catch, catch_all_ref
				bs(0x06, 0x40, 0x07, 0x03, 0x19, 0x0b),                         // legacy try / catch 3 / catch_all / end
				bs(0x06, 0x40, 0x18, 0x03),                                     // legacy try ... delegate 3
				bs(0xd5, 0x03, 0xd6, 0x03, 0xd4),                               // br_on_null, br_on_non_null, ref.as_non_null
				bs(0xc0, 0xc4, 0x0b),                                           // sign extension; end
			)},
			entry: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var want [][]byte
			if tc.entry {
				want = append(want, chk)
			}
			for i, seg := range tc.code {
				if i > 0 {
					want = append(want, chk)
				}
				want = append(want, seg)
			}
			got := mustInstrument(t, oneFunc(tc.code...), Options{InterruptGlobal: irq})
			if w := wantOneFunc(want...); !bytes.Equal(got, w) {
				t.Errorf("Instrument:\n got %x\nwant %x", got, w)
			}
		})
	}
}

func TestGlobalIndexAfterImportedAndDefinedGlobals(t *testing.T) {
	in := module(
		typeSection,
		section(secImport, vec(
			cat(name("env"), name("f"), bs(0x00), u32(0)),           // function
			cat(name("env"), name("g"), bs(0x03, 0x7f, 0x00)),       // global i32
			cat(name("env"), name("m"), bs(0x02, 0x01, 0x01, 0x02)), // memory 1 2
			cat(name("env"), name("t"), bs(0x01, 0x70, 0x00, 0x01)), // table 1 funcref
			cat(name("env"), name("h"), bs(0x03, 0x63, 0x70, 0x01)), // global (mut (ref null func))
			cat(name("env"), name("x"), bs(0x04, 0x00), u32(0)),     // tag
		)),
		section(secFunction, vec(u32(0))),
		section(secGlobal, vec(
			bs(0x7f, 0x00, 0x23, 0x00, 0x0b),                            // i32 (global.get 0)
			bs(0x7e, 0x01, 0x42, 0x80, 0x80, 0x04, 0x0b),                // mut i64
			cat(bs(0x7b, 0x00, 0xfd, 0x0c), make([]byte, 16), bs(0x0b)), // v128.const
		)),
		section(secExport, vec(cat(name("f"), bs(0x00), u32(0)))),
		section(secCode, vec(funcBody(noLocals, bs(0x0b)))),
	)
	got := mustInstrument(t, in, Options{InterruptGlobal: irq})
	// 2 imported + 3 defined globals: the new one is global 5.
	want := module(
		typeSection,
		section(secImport, vec(
			cat(name("env"), name("f"), bs(0x00), u32(0)),
			cat(name("env"), name("g"), bs(0x03, 0x7f, 0x00)),
			cat(name("env"), name("m"), bs(0x02, 0x01, 0x01, 0x02)),
			cat(name("env"), name("t"), bs(0x01, 0x70, 0x00, 0x01)),
			cat(name("env"), name("h"), bs(0x03, 0x63, 0x70, 0x01)),
			cat(name("env"), name("x"), bs(0x04, 0x00), u32(0)),
		)),
		section(secFunction, vec(u32(0))),
		section(secGlobal, vec(
			bs(0x7f, 0x00, 0x23, 0x00, 0x0b),
			bs(0x7e, 0x01, 0x42, 0x80, 0x80, 0x04, 0x0b),
			cat(bs(0x7b, 0x00, 0xfd, 0x0c), make([]byte, 16), bs(0x0b)),
			newGlobal,
		)),
		section(secExport, vec(
			cat(name("f"), bs(0x00), u32(0)),
			cat(name(irq), bs(0x03), u32(5)),
		)),
		section(secCode, vec(funcBody(noLocals, checkFor(5), bs(0x0b)))),
	)
	if !bytes.Equal(got, want) {
		t.Errorf("Instrument:\n got %x\nwant %x", got, want)
	}
}

func TestKeepsCustomSectionsAndPaddedSizes(t *testing.T) {
	custom1 := section(secCustom, name("first"), []byte("payload one"))
	custom2 := section(secCustom, name("between"), []byte{0x03, 0x40, 0x0b})
	custom3 := section(secCustom, name("name"), []byte{0x00, 0x01, 0x00})
	// A type section whose size is padded to five bytes, as Go's linker does.
	types := vec(typeVoid, typeI32I32)
	paddedTypes := cat(bs(secType, byte(len(types))|0x80, 0x80, 0x80, 0x80, 0x00), types)
	in := module(
		custom1,
		paddedTypes,
		section(secFunction, vec(u32(0))),
		custom2,
		section(secCode, vec(funcBody(noLocals, bs(0x0b)))),
		custom3,
	)
	got := mustInstrument(t, in, Options{InterruptGlobal: irq})
	want := module(
		custom1,
		paddedTypes,
		section(secFunction, vec(u32(0))),
		custom2,
		section(secGlobal, vec(newGlobal)),
		section(secExport, vec(cat(name(irq), bs(0x03), u32(0)))),
		section(secCode, vec(funcBody(noLocals, checkFor(0), bs(0x0b)))),
		custom3,
	)
	if !bytes.Equal(got, want) {
		t.Errorf("Instrument:\n got %x\nwant %x", got, want)
	}
}

func TestZeroOptionsCopiesTheModule(t *testing.T) {
	for _, f := range testdataModules(t) {
		in := readTestdata(t, f)
		got := mustInstrument(t, in, Options{})
		if !bytes.Equal(got, in) {
			t.Errorf("%s: Instrument with zero Options changed the module", f)
		}
		if len(in) > 0 && &got[0] == &in[0] {
			t.Errorf("%s: Instrument returned its input, not a copy", f)
		}
	}
}

func TestMemoryCapRewritesLimits(t *testing.T) {
	mem := func(limits ...[]byte) []byte {
		return module(section(secMemory, vec(limits...)))
	}
	tests := []struct {
		name string
		cap  uint32
		in   [][]byte
		want [][]byte
	}{
		{"no maximum gets the cap", 16, [][]byte{bs(0x00, 0x01)}, [][]byte{bs(0x01, 0x01, 0x10)}},
		{"larger maximum is lowered", 16, [][]byte{bs(0x01, 0x02, 0xe8, 0x07)}, [][]byte{bs(0x01, 0x02, 0x10)}},
		{"smaller maximum is kept", 16, [][]byte{bs(0x01, 0x02, 0x08)}, [][]byte{bs(0x01, 0x02, 0x08)}},
		{"minimum equal to the cap", 16, [][]byte{bs(0x00, 0x10)}, [][]byte{bs(0x01, 0x10, 0x10)}},
		{"shared memory", 16, [][]byte{bs(0x03, 0x01, 0x80, 0x02)}, [][]byte{bs(0x03, 0x01, 0x10)}},
		{"several memories", 300, [][]byte{bs(0x00, 0x01), bs(0x01, 0x00, 0x80, 0x04)},
			[][]byte{cat(bs(0x01, 0x01), u32(300)), cat(bs(0x01, 0x00), u32(300))}},
		{"32-bit memories stop at 65536 pages", 100000, [][]byte{bs(0x00, 0x01)},
			[][]byte{cat(bs(0x01, 0x01), u32(65536))}},
		{"64-bit memories may go beyond", 100000, [][]byte{bs(0x04, 0x01)},
			[][]byte{cat(bs(0x05, 0x01), u32(100000))}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := mustInstrument(t, mem(tc.in...), Options{MaxMemoryPages: tc.cap})
			if want := mem(tc.want...); !bytes.Equal(got, want) {
				t.Errorf("Instrument:\n got %x\nwant %x", got, want)
			}
		})
	}
}

func TestMemoryCapLeavesImportedMemoriesAlone(t *testing.T) {
	in := readTestdata(t, "imported.wasm")
	got := mustInstrument(t, in, Options{MaxMemoryPages: 1})
	if !bytes.Equal(got, in) {
		t.Error("MaxMemoryPages changed a module whose only memory is imported")
	}
}

func TestErrors(t *testing.T) {
	valid := oneFunc(bs(0x0b))
	// Function 2: one imported function plus the second body.
	unknownSIMD := module(
		typeSection,
		section(secImport, vec(cat(name("env"), name("f"), bs(0x00), u32(0)))),
		section(secFunction, vec(u32(0), u32(0))),
		section(secCode, vec(
			funcBody(noLocals, bs(0x0b)),
			funcBody(vec(bs(0x01, 0x7f)), bs(0x41, 0x00, 0x1a, 0xfd, 0xff, 0x03, 0x0b)),
		)),
	)
	tests := []struct {
		name string
		in   []byte
		opts Options
		want string // the whole message, or a part of it after "..."
		is   error
	}{
		{name: "empty", in: nil, want: "instrument: module is 0 bytes, too short for the 8-byte header"},
		{name: "truncated header", in: valid[:6], want: "instrument: module is 6 bytes, too short for the 8-byte header"},
		{name: "bad magic", in: []byte("\x00ASM\x01\x00\x00\x00"),
			want: "instrument: at offset 0x0: bad magic 0x0041534d, not a WebAssembly binary module"},
		{name: "component", in: []byte("\x00asm\x0d\x00\x01\x00"),
			want: "instrument: at offset 0x4: unsupported binary version 0x0d000100 (only version 1 modules are supported)"},
		{name: "truncated section size", in: cat(valid[:8], bs(0x01, 0x80)),
			want: "instrument: at offset 0x8: section id 1: unexpected end of data section size"},
		{name: "overlong section size", in: cat(valid[:8], bs(0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00)),
			want: "instrument: at offset 0x8: section id 1: malformed LEB128 number section size"},
		{name: "section size beyond end", in: cat(valid[:8], bs(0x01, 0x10, 0x00)),
			want: "instrument: at offset 0x8: section id 1: size 16 extends beyond the end of the module (1 bytes left)"},
		{name: "truncated module", in: valid[:len(valid)-1], want: "...extends beyond the end of the module"},
		{name: "unknown section", in: cat(valid, bs(0x0e, 0x00)), want: "...unknown section id 14"},
		{name: "duplicate section", in: cat(valid[:8], typeSection, typeSection), want: "...duplicate type section"},
		{name: "sections out of order", in: module(section(secFunction, vec()), typeSection),
			want: "...type section after function section"},
		{name: "unknown opcode", in: unknownSIMD, opts: Options{InterruptGlobal: irq},
			want: fmt.Sprintf("instrument: code section: function 2 at offset %#x: unknown opcode 0xfd 0x1ff",
				bytes.Index(unknownSIMD, bs(0xfd, 0xff, 0x03)))},
		{name: "unknown single-byte opcode", in: oneFunc(bs(0xd7, 0x0b)), opts: Options{InterruptGlobal: irq},
			want: "...function 0 at offset 0x1c: unknown opcode 0xd7"},
		{name: "unknown 0xfc opcode", in: oneFunc(bs(0xfc, 0x12, 0x0b)), opts: Options{InterruptGlobal: irq},
			want: "...unknown opcode 0xfc 0x12"},
		{name: "unknown 0xfe opcode", in: oneFunc(bs(0xfe, 0x04, 0x0b)), opts: Options{InterruptGlobal: irq},
			want: "...unknown opcode 0xfe 0x04"},
		{name: "unassigned SIMD opcode", in: oneFunc(bs(0xfd, 0x9a, 0x01, 0x0b)), opts: Options{InterruptGlobal: irq},
			want: "...unknown opcode 0xfd 0x9a"},
		{name: "truncated immediate", in: oneFunc(bs(0x41, 0x80, 0x80)), opts: Options{InterruptGlobal: irq},
			want: "...function 0 at offset 0x1c: unexpected end of code in immediate of opcode 0x41"},
		{name: "overlong immediate", in: oneFunc(bs(0x20, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x0b)), opts: Options{InterruptGlobal: irq},
			want: "...malformed immediate of opcode 0x20"},
		{name: "huge br_table", in: oneFunc(bs(0x0e, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x0b)), opts: Options{InterruptGlobal: irq},
			want: "...immediate of opcode 0x0e"},
		{name: "missing end", in: oneFunc(bs(0x02, 0x40, 0x0b)), opts: Options{InterruptGlobal: irq},
			want: "...unexpected end of code: missing end"},
		{name: "bytes after end", in: oneFunc(bs(0x0b, 0x01)), opts: Options{InterruptGlobal: irq},
			want: "...function 0 at offset 0x1d: 1 unexpected bytes after the end of the body"},
		{name: "body count mismatch", in: module(typeSection, section(secFunction, vec(u32(0), u32(0))),
			section(secCode, vec(funcBody(noLocals, bs(0x0b))))), opts: Options{InterruptGlobal: irq},
			want: "...1 function bodies for 2 declared functions"},
		{name: "body size beyond section", in: module(typeSection, section(secFunction, vec(u32(0))),
			section(secCode, bs(0x01, 0x09, 0x00, 0x0b))), opts: Options{InterruptGlobal: irq},
			want: "...body size 9 exceeds the 2 bytes left in the section"},
		{name: "huge locals count", in: module(typeSection, section(secFunction, vec(u32(0))),
			section(secCode, vec(funcBody(bs(0xff, 0xff, 0xff, 0xff, 0x0f, 0x7f), bs(0x0b))))), opts: Options{InterruptGlobal: irq},
			want: "...4294967295 local declarations exceed"},
		{name: "huge vector", in: module(section(secImport, bs(0xff, 0xff, 0xff, 0x0f))),
			want: "...vector length 33554431 exceeds the 0 bytes left in the section"},
		{name: "unknown import kind", in: module(section(secImport, vec(cat(name("a"), name("b"), bs(0x07, 0x00))))),
			want: "...import 0: unknown import kind 0x7"},
		{name: "bad global initializer", in: module(section(secGlobal, vec(bs(0x7f, 0x00, 0x41, 0x00)))),
			opts: Options{InterruptGlobal: irq}, want: "...global 0: initializer: unexpected end of code: missing end"},
		{name: "export collision", in: module(section(secExport, vec(cat(name(irq), bs(0x00), u32(0))))),
			opts: Options{InterruptGlobal: irq}, is: ErrExportExists,
			want: `instrument: export section: at offset 0xb: export 0 is already named "__celluster_interrupt", the InterruptGlobal name`},
		{name: "minimum above cap", in: readTestdata(t, "bigmin.wasm"), opts: Options{MaxMemoryPages: 256}, is: ErrMemoryCap,
			want: "instrument: memory section: at offset 0xb: memory 0: minimum of 300 pages exceeds MaxMemoryPages 256"},
		{name: "unknown limits flags", in: module(section(secMemory, vec(bs(0x08, 0x01)))), opts: Options{MaxMemoryPages: 1},
			want: "...memory 0: unknown limits flags 0x8"},
		{name: "invalid UTF-8 name", in: valid, opts: Options{InterruptGlobal: "\xff"},
			want: `instrument: InterruptGlobal "\xff" is not valid UTF-8`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Instrument(tc.in, tc.opts)
			if err == nil {
				t.Fatalf("Instrument succeeded (%d bytes), want error %q", len(out), tc.want)
			}
			if out != nil {
				t.Error("Instrument returned output with an error")
			}
			msg := err.Error()
			if part, ok := strings.CutPrefix(tc.want, "..."); ok {
				if !strings.Contains(msg, part) {
					t.Errorf("error %q does not contain %q", msg, part)
				}
			} else if msg != tc.want {
				t.Errorf("error\n got %q\nwant %q", msg, tc.want)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Errorf("error is a %T, not an *Error", err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) is false", err, tc.is)
			}
		})
	}
}

// TestTruncationsNeverPanic cuts valid modules at every length and flips
// bytes: Instrument must return, with an error or not, and never panic.
func TestTruncationsNeverPanic(t *testing.T) {
	opts := Options{InterruptGlobal: irq, MaxMemoryPages: 100}
	for _, f := range testdataModules(t) {
		in := readTestdata(t, f)
		for n := 0; n < len(in); n++ {
			_, _ = Instrument(in[:n], opts)
		}
		b := bytes.Clone(in)
		for i := range b {
			for _, v := range []byte{0x00, 0x03, 0x0b, 0x7f, 0x80, 0xff} {
				old := b[i]
				b[i] = v
				_, _ = Instrument(b, opts)
				b[i] = old
			}
		}
	}
}

func testdataModules(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob("testdata/*.wasm")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata modules: %v", err)
	}
	for i, f := range files {
		files[i] = filepath.Base(f)
	}
	return files
}

func readTestdata(t testing.TB, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestYieldInterval(t *testing.T) {
	// irq is global 0, the countdown global 1; 1000 is 0xe8 0x07 as an s32.
	yieldCheck := bs(
		0x23, 0x00, 0x04, 0x40, 0x00, 0x0b, // global.get 0; if; unreachable; end
		0x23, 0x01, 0x45, 0x04, 0x40, // global.get 1; i32.eqz; if
		0x41, 0xe8, 0x07, 0x24, 0x01, // i32.const 1000; global.set 1
		0x41, 0x00, 0x40, 0x00, 0x1a, 0x0b, // i32.const 0; memory.grow 0; drop; end
		0x23, 0x01, 0x41, 0x01, 0x6b, 0x24, 0x01, // global.get 1; i32.const 1; i32.sub; global.set 1
	)
	countdown := bs(0x7f, 0x01, 0x41, 0xe8, 0x07, 0x0b)
	code := [][]byte{bs(0x03, 0x40), bs(0x0c, 0x00, 0x0b, 0x0b)}

	t.Run("with interrupt, no memory", func(t *testing.T) {
		got := mustInstrument(t, oneFunc(code...), Options{InterruptGlobal: irq, YieldInterval: 1000})
		want := module(
			typeSection,
			section(secFunction, vec(u32(0))),
			section(secMemory, vec(bs(0x01, 0x00, 0x00))), // added for memory.grow
			section(secGlobal, vec(newGlobal, countdown)),
			section(secExport, vec(cat(name(irq), bs(0x03), u32(0)))),
			section(secCode, vec(funcBody(noLocals, code[0], yieldCheck, code[1]))),
		)
		if !bytes.Equal(got, want) {
			t.Errorf("Instrument:\n got %x\nwant %x", got, want)
		}
	})

	t.Run("alone, with a memory", func(t *testing.T) {
		mem := section(secMemory, vec(bs(0x00, 0x01)))
		in := module(typeSection, section(secFunction, vec(u32(0))), mem,
			section(secCode, vec(funcBody(noLocals, bs(0x01, 0x0b)))))
		got := mustInstrument(t, in, Options{YieldInterval: 1000})
		// The countdown is global 0; no export.
		want := module(typeSection, section(secFunction, vec(u32(0))), mem,
			section(secGlobal, vec(countdown)),
			section(secCode, vec(funcBody(noLocals, yieldCheck[6:9], bs(0x04, 0x40, 0x41, 0xe8, 0x07, 0x24, 0x00,
				0x41, 0x00, 0x40, 0x00, 0x1a, 0x0b, 0x23, 0x00, 0x41, 0x01, 0x6b, 0x24, 0x00), bs(0x01, 0x0b)))))
		want = bytes.Replace(want, bs(0x23, 0x01, 0x45), bs(0x23, 0x00, 0x45), 1)
		if !bytes.Equal(got, want) {
			t.Errorf("Instrument:\n got %x\nwant %x", got, want)
		}
	})

	t.Run("imported memory is enough", func(t *testing.T) {
		got := mustInstrument(t, readTestdata(t, "imported.wasm"), Options{YieldInterval: 10})
		// The entry of grow and the loop of count (which starts with it).
		if n := bytes.Count(got, bs(0x40, 0x00, 0x1a)); n != 2 {
			t.Errorf("%d memory.grow yields, want 2", n)
		}
		if bytes.Contains(got, bs(secMemory, 0x04, 0x01, 0x01, 0x00, 0x00)) {
			t.Error("a memory was added to a module that imports one")
		}
	})
}

func TestRejectsImplausibleCounts(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"type parameters", module(section(secType, vec(bs(0x60, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x7f, 0x00)))),
			"instrument: type section: at offset 0xb: type 0: parameters: length 4294967295 exceeds the 2 bytes left in the section"},
		{"rec group", module(section(secType, vec(bs(0x4e, 0xff, 0xff, 0x03, 0x60, 0x00, 0x00)))),
			"...rec group at type 0: length 65535 exceeds"},
		{"element indices", module(section(secElement, vec(bs(0x01, 0x00, 0xff, 0xff, 0x03, 0x00)))),
			"...segment 0: elements: length 65535 exceeds the 1 bytes left in the section"},
		{"data bytes", module(section(secData, vec(bs(0x01, 0xff, 0xff, 0x03, 0x00)))),
			"...segment 0: bytes: length 65535 exceeds the 1 bytes left in the section"},
		{"function section", module(section(secFunction, bs(0xff, 0xff, 0x03, 0x00))),
			"instrument: function section: at offset 0xa: vector length 65535 exceeds the 1 bytes left in the section"},
		{"function names", module(section(secCustom, name("name"), bs(0x01, 0x05, 0xff, 0xff, 0xff, 0xff, 0x0f))),
			"...name section: at offset 0x11: vector length 4294967295 exceeds the 0 bytes left in the module"},
		{"locals", module(typeSection, section(secFunction, vec(u32(0))), // 50000 + 1 locals
			section(secCode, vec(funcBody(vec(cat(u32(50000), bs(0x7f)), cat(u32(1), bs(0x7e))), bs(0x0b))))),
			"...function 0 at offset 0x20: more than 50000 locals"},
	}

	for _, tc := range tests {
		for _, opts := range []Options{{}, {InterruptGlobal: irq}} {
			_, err := Instrument(tc.in, opts)
			if err == nil {
				t.Errorf("%s: Instrument with %+v succeeded", tc.name, opts)
				continue
			}
			if !errors.Is(err, errTooLarge) {
				t.Errorf("%s: error %v is not errTooLarge", tc.name, err)
			}
			msg := err.Error()
			if part, ok := strings.CutPrefix(tc.want, "..."); ok {
				if !strings.Contains(msg, part) {
					t.Errorf("%s: error %q does not contain %q", tc.name, msg, part)
				}
			} else if msg != tc.want {
				t.Errorf("%s: error\n got %q\nwant %q", tc.name, msg, tc.want)
			}
		}
	}
}

func TestYieldOn64BitMemory(t *testing.T) {
	in := module(typeSection, section(secFunction, vec(u32(0))),
		section(secMemory, vec(bs(0x04, 0x01))), // (memory i64 1)
		section(secCode, vec(funcBody(noLocals, bs(0x0b)))))
	got := mustInstrument(t, in, Options{YieldInterval: 7})
	// memory.grow on a 64-bit memory takes an i64.
	if !bytes.Contains(got, bs(0x42, 0x00, 0x40, 0x00, 0x1a)) || bytes.Contains(got, bs(0x41, 0x00, 0x40, 0x00)) {
		t.Errorf("no i64.const 0; memory.grow 0 in %x", got)
	}
}

func TestMergedCountdown(t *testing.T) {
	// irq is global 0, the countdown global 1; 1000 is 0xe8 0x07 and 1024
	// 0x80 0x08 as s32s. The function has no params or locals, so the loop
	// counter is local 0.
	check := bs(
		0x23, 0x01, 0x41, 0x01, 0x6b, 0x24, 0x01, // global.get 1; i32.const 1; i32.sub; global.set 1
		0x23, 0x01, 0x41, 0x00, 0x4c, 0x04, 0x40, // global.get 1; i32.const 0; i32.le_s; if
		0x41, 0x00, 0x40, 0x00, 0x1a, // i32.const 0; memory.grow 0; drop
		0x23, 0x00, 0x04, 0x40, 0x00, 0x0b, // global.get 0; if; unreachable; end
		0x41, 0xe8, 0x07, 0x24, 0x01, 0x0b, // i32.const 1000; global.set 1; end
	)
	loopCheck := cat(
		bs(0x20, 0x00, 0x41, 0x01, 0x6a, 0x22, 0x00), // local.get 0; i32.const 1; i32.add; local.tee 0
		bs(0x41, 0xff, 0x07, 0x71, 0x45, 0x04, 0x40), // i32.const 1023; i32.and; i32.eqz; if
		bs(0x23, 0x01, 0x41, 0x80, 0x08, 0x6b),       // global.get 1; i32.const 1024; i32.sub
		check[5:],                                    // global.set 1 ... as the entry check
		bs(0x0b),                                     // end
	)
	countdown := bs(0x7f, 0x01, 0x41, 0xe8, 0x07, 0x0b)
	code := [][]byte{bs(0x03, 0x40), bs(0x0c, 0x00, 0x0b, 0x0b)}
	got := mustInstrument(t, oneFunc(code...), Options{InterruptGlobal: irq, YieldInterval: 1000, CountdownGlobal: "cd"})
	want := module(
		typeSection,
		section(secFunction, vec(u32(0))),
		section(secMemory, vec(bs(0x01, 0x00, 0x00))),
		section(secGlobal, vec(newGlobal, countdown)),
		section(secExport, vec(cat(name(irq), bs(0x03), u32(0)), cat(name("cd"), bs(0x03), u32(1)))),
		section(secCode, vec(funcBody(vec(bs(0x01, 0x7f)), check, code[0], loopCheck, code[1]))),
	)
	if !bytes.Equal(got, want) {
		t.Errorf("Instrument:\n got %x\nwant %x", got, want)
	}
	// Without loops a body keeps its locals and gets the entry check only.
	got = mustInstrument(t, oneFunc(bs(0x01, 0x0b)), Options{InterruptGlobal: irq, YieldInterval: 1000, CountdownGlobal: "cd"})
	if !bytes.Contains(got, cat(bs(0x00), check, bs(0x01, 0x0b))) {
		t.Errorf("loopless body not given just the entry check: %x", got)
	}
	for _, bad := range []Options{
		{CountdownGlobal: "cd", YieldInterval: 10},
		{CountdownGlobal: "cd", InterruptGlobal: irq},
		{CountdownGlobal: irq, InterruptGlobal: irq, YieldInterval: 10},
	} {
		if _, err := Instrument(oneFunc(code...), bad); err == nil {
			t.Errorf("Instrument accepted %+v", bad)
		}
	}
	exporter := readTestdata(t, "exporter.wasm")
	if _, err := Instrument(exporter, Options{InterruptGlobal: "__x", YieldInterval: 10, CountdownGlobal: "mem"}); !errors.Is(err, ErrExportExists) {
		t.Errorf("countdown named like an existing export: %v", err)
	}
}
