package instrument

import (
	"context"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// BenchmarkGuest measures what the injected code costs the guest, against
// the uninstrumented module and against wazero's own WithCloseOnContextDone:
// a tight loop (sum of 1..1e6, one back-edge per iteration) and a call from
// the host into a tiny function.
func BenchmarkGuest(b *testing.B) {
	ctx := context.Background()
	orig := readTestdata(b, "basic.wasm")
	variants := []struct {
		name  string
		opts  *Options
		close bool
	}{
		{"plain", nil, false},
		{"interrupt", &Options{InterruptGlobal: irq}, false},
		{"interrupt+yield", &Options{InterruptGlobal: irq, YieldInterval: 1000}, false},
		{"closeOnContextDone", nil, true},
	}
	for _, v := range variants {
		wasm := orig
		if v.opts != nil {
			var err error
			if wasm, err = Instrument(orig, *v.opts); err != nil {
				b.Fatal(err)
			}
		}
		cfg := wazero.NewRuntimeConfigCompiler().WithCoreFeatures(api.CoreFeaturesV2).WithCloseOnContextDone(v.close)
		r := wazero.NewRuntimeWithConfig(ctx, cfg)
		mod, err := r.Instantiate(ctx, wasm)
		if err != nil {
			b.Fatal(err)
		}
		sum, get := mod.ExportedFunction("sum"), mod.ExportedFunction("get")
		b.Run("loop1e6/"+v.name, func(b *testing.B) {
			for b.Loop() {
				if res, err := sum.Call(ctx, 1e6); err != nil || res[0] != 500000500000 {
					b.Fatal(res, err)
				}
			}
		})
		b.Run("call/"+v.name, func(b *testing.B) {
			stack := make([]uint64, 1)
			for b.Loop() {
				if err := get.CallWithStack(ctx, stack); err != nil {
					b.Fatal(err)
				}
			}
		})
		r.Close(ctx)
	}
}
