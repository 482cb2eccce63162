package verbs

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/celluster/celluster/sdk/plugin"
)

// Info describes the plugin.
var Info = plugin.Info{
	Name:        "verbs",
	Version:     "0.1.0",
	Description: "the lifecycle verbs spawn, clone, reroute, upgrade and decay, as policy over the host API",
}

// The verbs the plugin implements.
const (
	Spawn   = "spawn"
	Clone   = "clone"
	Reroute = "reroute"
	Upgrade = "upgrade"
	Decay   = "decay"
)

// MaxCount is the largest N that clone and decay accept, a guard against
// a typo asking for a million replicas.
const MaxCount = 1000

// Plugin implements [plugin.VerbPlugin] for the five lifecycle verbs. It
// keeps no state between calls: each verb reads the cell from the host,
// decides, and acts through the host. It is safe for concurrent use.
type Plugin struct{}

// New returns the plugin.
func New() *Plugin { return &Plugin{} }

var _ plugin.VerbPlugin = (*Plugin)(nil)

// Verbs implements [plugin.VerbPlugin].
func (*Plugin) Verbs() []string { return []string{Spawn, Clone, Reroute, Upgrade, Decay} }

// Execute implements [plugin.VerbPlugin]. Problems with the request, the
// cell or the host are answered as a [plugin.Failed] result whose message
// says what went wrong; the error result is only for a verb the plugin
// does not implement.
func (*Plugin) Execute(ctx context.Context, host plugin.Host, req plugin.VerbRequest) (plugin.VerbResult, error) {
	var run func(context.Context, plugin.Host, plugin.CellState, []string) plugin.VerbResult
	switch req.Verb {
	case Spawn:
		run = spawn
	case Clone:
		run = clone
	case Decay:
		run = decay
	case Reroute:
		run = reroute
	case Upgrade:
		run = upgrade
	default:
		return plugin.VerbResult{}, fmt.Errorf("plugins/verbs: no verb %q (have spawn, clone, reroute, upgrade, decay)", req.Verb)
	}
	c, res, ok := findCell(ctx, host, req.Cell)
	if !ok {
		return res, nil
	}
	return run(ctx, host, c, req.Args), nil
}

// findCell looks the cell up; when it cannot, the result says why.
func findCell(ctx context.Context, host plugin.Host, name string) (plugin.CellState, plugin.VerbResult, bool) {
	cells, err := host.ListCells(ctx)
	if err != nil {
		return plugin.CellState{}, failed("listing cells: %v", err), false
	}
	for _, c := range cells {
		if c.Name == name {
			return c, plugin.VerbResult{}, true
		}
	}
	return plugin.CellState{}, failed("no cell %s", name), false
}

func result(o plugin.Outcome, format string, args ...any) plugin.VerbResult {
	return plugin.VerbResult{Outcome: o, Message: fmt.Sprintf(format, args...)}
}

func done(format string, args ...any) plugin.VerbResult {
	return result(plugin.Done, format, args...)
}

func noop(format string, args ...any) plugin.VerbResult {
	return result(plugin.Noop, format, args...)
}

func failed(format string, args ...any) plugin.VerbResult {
	return result(plugin.Failed, format, args...)
}

// badArg is the Failed result for an argument that does not parse: it
// names the argument, what was wrong and the verb's form.
func badArg(form, arg, format string, args ...any) plugin.VerbResult {
	return failed("bad argument %q: %s; expected %s", arg, fmt.Sprintf(format, args...), form)
}

// short is a version's sha256 as messages show it: its first 12 digits.
func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// plural returns "1 replica" or "N replicas".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// percent formats a fraction as a percentage with at most two decimals:
// 0.01 -> "1%", 1.0/3 -> "33.33%".
func percent(f float64) string {
	return strconv.FormatFloat(float64(int64(f*10000+0.5))/100, 'f', -1, 64) + "%"
}

// duration formats d with three significant digits: 2.345678ms -> "2.35ms".
func duration(d time.Duration) string {
	unit := time.Duration(1)
	for v := d; v >= 1000; v /= 10 {
		unit *= 10
	}
	return d.Round(unit).String()
}

// joinShort lists versions by their short digests ("none" for none).
func joinShort(shas []string) string {
	if len(shas) == 0 {
		return "none"
	}
	s := make([]string, len(shas))
	for i, sha := range shas {
		s[i] = short(sha)
	}
	return strings.Join(s, ", ")
}
