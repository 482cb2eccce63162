// Package plugintest is the conformance suite of Celluster plugins: each
// plugin calls the suite of its kind from a test, and the suite runs the
// implementation through the real gRPC boundary — go-plugin's server and
// broker, the SDK's own server code, in process — with a client written
// against the generated pluginapiv1 clients, as the core's is.
//
//	func TestConformance(t *testing.T) {
//		plugintest.TelemetrySuite(t, info, &source{})
//	}
//
// [TelemetrySuite], [IntentSuite] and [VerbSuite] list what they check.
// Host callbacks the plugin makes are served by a [RecordingHost] over the
// broker, as the core serves its host service; pass one with [WithHost] to
// give it cells and readings and to assert on the calls it received.
//
//	host := &plugintest.RecordingHost{Cells: []plugin.CellState{{Name: "hello", Replicas: 1}}}
//	plugintest.VerbSuite(t, info, scaler{}, []plugintest.VerbCase{{
//		Request:     plugin.VerbRequest{Verb: "spawn", Cell: "hello"},
//		WantOutcome: plugin.Done,
//	}}, plugintest.WithHost(host))
//	if len(host.CallsTo("SpawnReplicas")) != 1 { ... }
package plugintest
