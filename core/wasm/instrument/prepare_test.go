package instrument

import (
	"context"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// snapModule is a module with one memory of 1 page, a mutable and an
// immutable global, one export and the data and code sections given.
func snapModule(extra ...[]byte) []byte {
	secs := [][]byte{
		typeSection,
		section(secFunction, vec(u32(0))),
		section(secMemory, vec(bs(0x00, 0x01))),
		section(secGlobal, vec(
			bs(0x7f, 0x00, opI32Const, 0x07, opEnd), // global 0: const 7
			bs(0x7f, 0x01, opI32Const, 0x05, opEnd), // global 1: mut 5
		)),
		section(secExport, vec(cat(name("memory"), bs(0x02), u32(0)))),
	}
	return module(append(secs, extra...)...)
}

var snapCode = section(secCode, vec(funcBody(noLocals, bs(opEnd))))

func TestPrepareTakesDataAndExportsMutableGlobals(t *testing.T) {
	data := section(secData, vec(
		cat(u32(0), bs(opI32Const), u32(16), bs(opEnd), vec(bs('h'), bs('i'))),
		cat(u32(0), bs(opI32Const, 0x80, 0x02, opEnd), vec(bs('!'))), // offset 256
	))
	p, err := Prepare(snapModule(snapCode, data), Options{Snapshot: true, InterruptGlobal: "__irq"})
	if err != nil {
		t.Fatal(err)
	}
	if p.NoSnapshot != "" {
		t.Fatalf("NoSnapshot = %q", p.NoSnapshot)
	}
	if len(p.Data) != 2 || p.Data[0].Offset != 16 || string(p.Data[0].Bytes) != "hi" || p.Data[1].Offset != 256 || string(p.Data[1].Bytes) != "!" {
		t.Fatalf("Data = %+v", p.Data)
	}
	if len(p.Globals) != 1 || p.Globals[0] != 1 || p.MemoryPages != 1 {
		t.Fatalf("Globals = %v, MemoryPages = %d", p.Globals, p.MemoryPages)
	}
	// The module compiles without its data and exports global 1.
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	mod, err := r.Instantiate(ctx, p.Module)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := mod.Memory().Read(16, 2); string(b) != "\x00\x00" {
		t.Fatalf("data was applied: %q", b)
	}
	g, ok := mod.ExportedGlobal(SnapshotGlobalPrefix + "1").(api.MutableGlobal)
	if !ok || g.Get() != 5 {
		t.Fatalf("global 1 not exported as mutable 5: %v", g)
	}
	if mod.ExportedGlobal(SnapshotGlobalPrefix+"0") != nil {
		t.Fatal("immutable global 0 exported")
	}
	if mod.ExportedGlobal("__irq") == nil {
		t.Fatal("interrupt global lost")
	}
}

func TestPrepareRefusesWhatCannotBeCaptured(t *testing.T) {
	activeData := section(secData, vec(cat(u32(0), bs(opI32Const), u32(0), bs(opEnd), vec(bs(1)))))
	cases := []struct {
		name   string
		module []byte
		reason string
	}{
		{"passive segment", snapModule(snapCode, section(secData, vec(cat(u32(1), vec(bs(1)))))), "not an active segment"},
		{"global offset", snapModule(snapCode, section(secData, vec(cat(u32(0), bs(opGlobalGet), u32(0), bs(opEnd), vec(bs(1)))))), "not a constant"},
		{"start", module(typeSection, section(secFunction, vec(u32(0))), section(secMemory, vec(bs(0x00, 0x01))),
			section(secStart, u32(0)), snapCode, activeData), "start function"},
		{"table.set", module(typeSection, section(secFunction, vec(u32(0))),
			section(secTable, vec(bs(0x70, 0x00, 0x01))), section(secMemory, vec(bs(0x00, 0x01))),
			section(secCode, vec(funcBody(noLocals, bs(opI32Const, 0, 0xd0, 0x70, 0x26, 0, opEnd)))), activeData), "table.set"},
		{"table.grow", module(typeSection, section(secFunction, vec(u32(0))),
			section(secTable, vec(bs(0x70, 0x00, 0x01))), section(secMemory, vec(bs(0x00, 0x01))),
			section(secCode, vec(funcBody(noLocals, bs(0xd0, 0x70, opI32Const, 1, 0xfc, 15, 0, opDrop, opEnd)))), activeData), "0xfc 15"},
		{"two memories", module(typeSection, section(secFunction, vec(u32(0))), section(secMemory, vec(bs(0x00, 0x01), bs(0x00, 0x01))), snapCode), "2 memories"},
		{"shared memory", module(typeSection, section(secFunction, vec(u32(0))), section(secMemory, vec(bs(0x03, 0x01, 0x01))), snapCode), "shared"},
		{"imported global", module(typeSection, section(secImport, vec(cat(name("env"), name("g"), bs(0x03, 0x7f, 0x00)))),
			section(secFunction, vec(u32(0))), section(secMemory, vec(bs(0x00, 0x01))), snapCode), "imports a global"},
		{"name taken", module(typeSection, section(secFunction, vec(u32(0))), section(secMemory, vec(bs(0x00, 0x01))),
			section(secExport, vec(cat(name(SnapshotGlobalPrefix+"9"), bs(0x00), u32(0)))), snapCode), "a name snapshots use"},
		{"no memory", module(typeSection, section(secFunction, vec(u32(0))), snapCode), "no memory"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Both with the checks injected (the node's setting) and without.
			for _, opts := range []Options{{Snapshot: true}, {Snapshot: true, InterruptGlobal: "__irq", YieldInterval: 1000, CountdownGlobal: "__cd"}} {
				p, err := Prepare(tc.module, opts)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(p.NoSnapshot, tc.reason) {
					t.Fatalf("NoSnapshot = %q, want it to say %q", p.NoSnapshot, tc.reason)
				}
				if p.Data != nil || p.Globals != nil {
					t.Fatalf("a module that cannot be snapshotted returned Data %v, Globals %v", p.Data, p.Globals)
				}
				if _, hasData := sectionIDs(p.Module)[secData]; hasData != (len(tc.module) > 0 && sectionIDs(tc.module)[secData]) {
					t.Fatal("the data section was taken out of a module that cannot be snapshotted")
				}
			}
		})
	}
}

func sectionIDs(m []byte) map[byte]bool {
	ids := map[byte]bool{}
	for p := 8; p < len(m); {
		size, q := readU32(m, p+1)
		ids[m[p]] = true
		p = q + int(size)
	}
	return ids
}
