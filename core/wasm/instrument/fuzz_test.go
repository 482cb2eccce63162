package instrument

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/tetratelabs/wazero"
)

// FuzzInstrument checks, for any input, that Instrument does not panic,
// leaves its input alone and returns either an *Error or output; that when
// wazero accepts the input, the output is accepted too; and that when
// wazero accepts an input whose structure Instrument accepts, Instrument
// does not fail (other than by ErrMemoryCap or ErrExportExists), which
// catches opcodes or immediates it decodes wrong.
//
// The seed corpus is testdata/*.wasm plus testdata/fuzz/FuzzInstrument.
func FuzzInstrument(f *testing.F) {
	for _, file := range testdataModules(f) {
		f.Add(readTestdata(f, file))
	}
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler().WithCoreFeatures(allFeatures))
	defer r.Close(ctx)
	optionSets := []Options{
		{InterruptGlobal: irq, YieldInterval: 1000, MaxMemoryPages: 256},
		{InterruptGlobal: irq, YieldInterval: 1000, CountdownGlobal: "cd", MaxMemoryPages: 256},
	}

	f.Fuzz(func(t *testing.T, in []byte) {
		for _, opts := range optionSets {
			fuzzOne(ctx, t, r, in, opts)
		}
	})
}

// fuzzOne checks one input with one set of options.
func fuzzOne(ctx context.Context, t *testing.T, r wazero.Runtime, in []byte, opts Options) {
	orig := bytes.Clone(in)
	out, err := Instrument(in, opts)
	if !bytes.Equal(in, orig) {
		t.Fatal("Instrument modified its input")
	}
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("error %v is a %T, not an *Error", err, err)
		}
		if out != nil {
			t.Fatal("output returned with an error")
		}
		// Only modules whose structure Instrument accepts (all but the
		// code bodies and the options are checked with zero Options)
		// are safe to give wazero: it allocates by counts it has not
		// checked, and dies of a fatal out-of-memory on some garbage.
		if _, err := Instrument(in, Options{}); err != nil {
			return
		}
	}

	cm, cerr := r.CompileModule(ctx, in)
	if cerr != nil {
		return // wazero rejects the input: nothing more to check
	}
	cm.Close(ctx)
	if err != nil {
		if errors.Is(err, ErrMemoryCap) || errors.Is(err, ErrExportExists) {
			return
		}
		t.Fatalf("wazero accepts the input but Instrument fails: %v", err)
	}
	cm, err = r.CompileModule(ctx, out)
	if err != nil {
		t.Fatalf("wazero accepts the input but not the output: %v", err)
	}
	cm.Close(ctx)
}
