// Package plugin is the Go SDK for Celluster plugins: programs that the
// node daemon (celcore) starts as separate processes and talks to over
// gRPC through hashicorp/go-plugin. A plugin author writes Go-native types
// and one call to [Serve]; the SDK does the handshake, the protobuf
// services of package celluster.pluginapi.v1 and the conversions.
//
// A plugin is one of three kinds, chosen by the interface its
// implementation satisfies:
//
//   - [TelemetrySource] (dev.celluster.telemetry.v1) describes signals and
//     streams samples of them;
//   - [IntentParser] (dev.celluster.intent.v1) turns intent files into a
//     typed [IntentSpec];
//   - [VerbPlugin] (dev.celluster.verb.v1) carries out lifecycle verbs
//     such as spawn or reroute through the [Host].
//
// Any of them may also implement [Configurer] to receive its settings and
// a [Host], the handle on the core. The subpackage plugintest runs an
// implementation through the real gRPC boundary and checks it follows the
// contract; every plugin should call its suite from a test.
//
// # A telemetry source
//
//	package main
//
//	import (
//		"context"
//		"time"
//
//		"github.com/celluster/celluster/sdk/plugin"
//	)
//
//	type ticks struct{ n float64 }
//
//	func (t *ticks) Signals(context.Context) ([]plugin.Signal, error) {
//		return []plugin.Signal{{
//			Name: "example.ticks", Unit: "1", Kind: plugin.Counter,
//			Help: "Ticks since the plugin started.",
//		}}, nil
//	}
//
//	func (t *ticks) Stream(ctx context.Context, interval time.Duration, send func([]plugin.Sample) error) error {
//		tk := time.NewTicker(interval)
//		defer tk.Stop()
//		for {
//			select {
//			case <-ctx.Done():
//				return nil
//			case <-tk.C:
//				t.n++
//				if err := send([]plugin.Sample{{Signal: "example.ticks", Value: t.n}}); err != nil {
//					return err
//				}
//			}
//		}
//	}
//
//	func main() {
//		plugin.Serve(plugin.Info{Name: "ticks", Version: "1.0.0", Description: "counts ticks"}, &ticks{})
//	}
//
// Stream must return nil soon after its ctx ends. A sample with a zero
// Time is stamped when it is sent.
//
// # An intent parser
//
//	package main
//
//	import (
//		"bufio"
//		"bytes"
//		"context"
//		"strings"
//
//		"github.com/celluster/celluster/sdk/plugin"
//	)
//
//	// lines reads intents of the form "cell NAME".
//	type lines struct{}
//
//	func (lines) Accepts() (extensions, mediaTypes []string) {
//		return []string{".cell"}, []string{"text/x-cell"}
//	}
//
//	func (lines) Parse(ctx context.Context, filename, mediaType string, content []byte) (*plugin.IntentSpec, []plugin.Diagnostic, error) {
//		spec := &plugin.IntentSpec{}
//		sc := bufio.NewScanner(bytes.NewReader(content))
//		for line := 1; sc.Scan(); line++ {
//			name, ok := strings.CutPrefix(sc.Text(), "cell ")
//			if !ok || name == "" {
//				return nil, []plugin.Diagnostic{{
//					Line: line, Column: 1, Severity: plugin.Error,
//					Message: "expected \"cell NAME\"", Hint: "e.g. cell hello",
//				}}, nil
//			}
//			spec.Cell = name
//		}
//		if spec.Cell == "" {
//			return nil, []plugin.Diagnostic{{
//				Line: 1, Column: 1, Severity: plugin.Error, Message: "no \"cell NAME\" line",
//			}}, sc.Err()
//		}
//		return spec, nil, sc.Err()
//	}
//
//	func main() {
//		plugin.Serve(plugin.Info{Name: "lines", Version: "1.0.0"}, lines{})
//	}
//
// A Diagnostic without a File gets the filename Parse was given. The error
// result is for failures of the parser itself; problems with the input are
// diagnostics.
//
// # A verb plugin
//
//	package main
//
//	import (
//		"context"
//		"fmt"
//
//		"github.com/celluster/celluster/sdk/plugin"
//	)
//
//	type scale struct{}
//
//	func (scale) Verbs() []string { return []string{"spawn"} }
//
//	func (scale) Execute(ctx context.Context, host plugin.Host, req plugin.VerbRequest) (plugin.VerbResult, error) {
//		n, err := host.SpawnReplicas(ctx, req.Cell, 1)
//		if err != nil {
//			return plugin.VerbResult{Outcome: plugin.Failed, Message: err.Error()}, nil
//		}
//		msg := fmt.Sprintf("spawned a replica of %s (rule %q); %d live", req.Cell, req.Trigger.Rule, n)
//		_ = host.AddJournalNote(ctx, req.Cell, msg)
//		return plugin.VerbResult{Outcome: plugin.Done, Message: msg}, nil
//	}
//
//	func main() {
//		plugin.Serve(plugin.Info{Name: "scale", Version: "1.0.0"}, scale{})
//	}
//
// The SDK answers requests for verbs the plugin does not declare in Verbs
// itself, with an error, and rejects a VerbResult without an Outcome.
//
// # The host
//
// The [Host] a plugin receives in Configure and Execute calls back into
// the core over a second gRPC connection that go-plugin's broker opens.
// It is valid for the life of the process and may be stored. Its calls
// fail with [ErrNoHost] before the host has configured the plugin, and
// with [ErrHostGone], promptly rather than hanging, once the connection to
// the core has ended; each also ends with its ctx.
//
// # Output and logging
//
// go-plugin owns the process's standard output: Serve prints the
// handshake line there and then points os.Stdout and os.Stderr at pipes
// whose contents the host may discard. The host reads the process's
// original standard error and logs each line under the plugin's name;
// lines in hclog's JSON format keep their level and fields. So log with
// [NewLogger] (slog, hclog's format), with an hclog logger created before
// Serve, or with the log package's default logger, and never print to
// standard output.
//
// # Running a plugin
//
// A plugin binary started by hand refuses to serve: go-plugin explains
// that it is a plugin and exits 1. `<binary> describe` prints its
// [Info] and kind as JSON without serving, for installers and listings.
// Binaries that are one command of a larger program (as celcore runs its
// first-party plugins) call [Describe] themselves.
package plugin
