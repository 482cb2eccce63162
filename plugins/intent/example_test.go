package intent_test

import (
	"fmt"

	"github.com/celluster/celluster/plugins/intent"
)

func ExampleParseBytes() {
	spec, diags := intent.ParseBytes("hello.intent", []byte(`
cell hello
keep replicas 1..8
when latency.p99 > 20ms for 3s then clone cooldown 10s
keep state replicated every 1s
`))
	fmt.Println(spec.Cell, spec.Replicas.Min, spec.Replicas.Max, len(diags))
	r := spec.Rules[0]
	fmt.Println(r.Name, r.Signal, r.Comparator, r.Threshold, r.Window, r.Verb, r.Cooldown)
	fmt.Println(spec.State.Keep, spec.State.ReplicateEvery)

	_, diags = intent.ParseBytes("bad.intent", []byte("cell hello\nkeep replica 1-8\n"))
	for _, d := range diags {
		fmt.Println(d)
	}
	// Output:
	// hello 1 8 0
	// line 4 latency.p99 > 0.02 3s clone 10s
	// true 1s
	// bad.intent:2:6: found "replica", expected "replicas" or "warm" or "p99" or "error" or "state" (did you mean "replicas"?)
}
