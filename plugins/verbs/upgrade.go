package verbs

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/celluster/celluster/sdk/plugin"
)

// Upgrade defaults, used when the verb's arguments do not say.
const (
	// DefaultStepTime is how long each traffic step lasts.
	DefaultStepTime = time.Second
	// DefaultMinRequests is how many requests a step must see before its
	// p99 counts.
	DefaultMinRequests = 5
)

// defaultSteps are the upgrade's traffic steps, in percent to the new
// version.
var defaultSteps = []uint32{10, 50, 100}

// restoreTimeout bounds putting traffic back on the old version after the
// verb's ctx has ended.
const restoreTimeout = 10 * time.Second

// upgradeArgs are upgrade's parsed arguments.
type upgradeArgs struct {
	ref          string
	maxErrorRate float64
	maxP99       time.Duration // 0: not checked
	steps        []uint32
	stepTime     time.Duration
	minRequests  uint64
}

func parseUpgrade(args []string) (upgradeArgs, plugin.VerbResult, bool) {
	a := upgradeArgs{
		maxErrorRate: DefaultMaxErrorRate,
		steps:        defaultSteps,
		stepTime:     DefaultStepTime,
		minRequests:  DefaultMinRequests,
	}
	seen := make(map[string]bool)
	for _, arg := range args {
		key, val, ok := strings.Cut(arg, "=")
		if !ok {
			if a.ref != "" {
				return a, badArg(upgradeForm, arg, "one version only (already have %s)", a.ref), false
			}
			if !isVersionRef(arg) {
				return a, badArg(upgradeForm, arg, "want the new version's sha256 or a prefix of it (8 to 64 hex digits)"), false
			}
			a.ref = strings.ToLower(arg)
			continue
		}
		if seen[key] {
			return a, badArg(upgradeForm, arg, "%s is given twice", key), false
		}
		seen[key] = true
		var err error
		switch key {
		case "max-error-rate":
			a.maxErrorRate, err = parseRate(val)
		case "max-p99":
			a.maxP99, err = parseLatency(val)
		case "steps":
			a.steps, err = parseSteps(val)
		case "step-time":
			a.stepTime, err = time.ParseDuration(val)
			if err != nil || a.stepTime <= 0 {
				err = fmt.Errorf("want a duration above zero, such as 1s or 500ms")
			}
		case "min-requests":
			a.minRequests, err = strconv.ParseUint(val, 10, 63)
			if err != nil {
				err = fmt.Errorf("want a whole number 0 or more")
			}
		default:
			err = fmt.Errorf("unknown option %q (have max-error-rate, max-p99, steps, step-time, min-requests)", key)
		}
		if err != nil {
			return a, badArg(upgradeForm, arg, "%v", err), false
		}
	}
	if a.ref == "" {
		return a, failed("no version to upgrade to: expected %s", upgradeForm), false
	}
	return a, plugin.VerbResult{}, true
}

// upgrade shifts the cell's traffic to a staged version in steps, watching
// the new version's errors and p99, and rolls back if it breaks.
func upgrade(ctx context.Context, host plugin.Host, c plugin.CellState, args []string) plugin.VerbResult {
	a, res, ok := parseUpgrade(args)
	if !ok {
		return res
	}
	var matches []plugin.VersionState
	for _, v := range c.Versions {
		if strings.HasPrefix(strings.ToLower(v.SHA256), a.ref) {
			matches = append(matches, v)
		}
	}
	switch {
	case len(matches) == 0:
		return failed("no version %s staged for cell %s (it routes %s)", a.ref, c.Name, joinShort(shas(c.Versions)))
	case len(matches) > 1:
		return failed("version prefix %s of cell %s is ambiguous: it matches %s", a.ref, c.Name, joinShort(shas(matches)))
	case len(c.Versions) == 1:
		return noop("already serving %s", short(matches[0].SHA256))
	}
	u := &upgrader{host: host, cell: c.Name, args: a, next: matches[0]}
	for _, v := range c.Versions {
		if v.SHA256 != u.next.SHA256 {
			u.olds = append(u.olds, v.SHA256)
			u.oldWeights = append(u.oldWeights, v.Weight)
		}
	}
	return u.run(ctx)
}

// upgrader carries out one upgrade.
type upgrader struct {
	host       plugin.Host
	cell       string
	args       upgradeArgs
	next       plugin.VersionState // the new version as first listed
	olds       []string            // the old versions' digests
	oldWeights []uint32            // their weights before the upgrade
	moved      bool                // traffic has been moved to the new version
}

func (u *upgrader) run(ctx context.Context) plugin.VerbResult {
	base := u.next
	var quiet []string // steps that saw no traffic
	// An upgrade cut short (its plugin killed, its node's verb interrupted)
	// resumes: steps at or below the share the new version already has
	// are not taken again, so traffic never moves back to the old version.
	steps := u.args.steps
	resumed := u.next.Weight
	for len(steps) > 0 && steps[0] <= resumed {
		steps = steps[1:]
	}
	if resumed > 0 {
		u.moved = true
		u.note(ctx, "upgrade %s -> %s: resumed with %d%% of traffic already on the new version", joinShort(u.olds), short(u.next.SHA256), resumed)
	}
	for _, p := range steps {
		if err := ctx.Err(); err != nil {
			return u.fail(ctx, "canceled before the %d%% step: %v", p, err)
		}
		if err := u.host.SetRouteWeights(ctx, u.cell, u.weights(p)); err != nil {
			return u.fail(ctx, "setting route weights for the %d%% step: %v", p, err)
		}
		u.moved = true
		if !sleep(ctx, u.args.stepTime) {
			return u.fail(ctx, "canceled during the %d%% step: %v", p, ctx.Err())
		}
		cur, err := u.read(ctx)
		if err != nil {
			return u.fail(ctx, "reading the cell after the %d%% step: %v", p, err)
		}
		reqs, errs := cur.Requests-base.Requests, cur.Errors-base.Errors
		if cur.Requests < base.Requests || cur.Errors < base.Errors {
			reqs, errs = cur.Requests, cur.Errors // the counters restarted
		}
		errs = min(errs, reqs)
		switch {
		case reqs > 0 && float64(errs)/float64(reqs) > u.args.maxErrorRate:
			return u.rollback(ctx, p, fmt.Sprintf("error rate %s (%d of %s) > %s",
				percent(float64(errs)/float64(reqs)), errs, plural(int(reqs), "request"), percent(u.args.maxErrorRate)))
		case u.args.maxP99 > 0 && reqs >= u.args.minRequests && cur.P99 > u.args.maxP99:
			return u.rollback(ctx, p, fmt.Sprintf("p99 %s > %s (%s, %d errors)",
				duration(cur.P99), duration(u.args.maxP99), plural(int(reqs), "request"), errs))
		}
		if reqs == 0 {
			quiet = append(quiet, fmt.Sprintf("%d%%", p))
			u.note(ctx, "upgrade %s -> %s: %d%% step saw no traffic; continuing", joinShort(u.olds), short(u.next.SHA256), p)
		} else {
			u.note(ctx, "upgrade %s -> %s: %d%% step passed: %s, %d errors, p99 %s",
				joinShort(u.olds), short(u.next.SHA256), p, plural(int(reqs), "request"), errs, duration(cur.P99))
		}
		base = cur
	}
	for _, old := range u.olds {
		if err := u.host.RetireVersion(ctx, u.cell, old); err != nil {
			return failed("all traffic of cell %s is on %s, but retiring the old version %s failed: %v", u.cell, short(u.next.SHA256), short(old), err)
		}
	}
	taken := make([]string, len(steps))
	for i, p := range steps {
		taken[i] = fmt.Sprintf("%d%%", p)
	}
	msg := fmt.Sprintf("upgraded %s -> %s in %s (%s); new version: %s, %d errors, p99 %s",
		joinShort(u.olds), short(u.next.SHA256), plural(len(taken), "step"), strings.Join(taken, ", "),
		plural(int(base.Requests), "request"), base.Errors, duration(base.P99))
	if len(taken) == 0 {
		msg = fmt.Sprintf("upgraded %s -> %s: it already had all traffic; the old version is retired", joinShort(u.olds), short(u.next.SHA256))
	}
	if resumed > 0 {
		msg += fmt.Sprintf("; resumed with %d%% already on it", resumed)
	}
	if len(quiet) > 0 {
		msg += "; no traffic during " + strings.Join(quiet, ", ")
	}
	return done("%s", msg)
}

// read returns the new version's state now.
func (u *upgrader) read(ctx context.Context) (plugin.VersionState, error) {
	cells, err := u.host.ListCells(ctx)
	if err != nil {
		return plugin.VersionState{}, err
	}
	i := slices.IndexFunc(cells, func(c plugin.CellState) bool { return c.Name == u.cell })
	if i < 0 {
		return plugin.VersionState{}, fmt.Errorf("cell %s is gone", u.cell)
	}
	j := slices.IndexFunc(cells[i].Versions, func(v plugin.VersionState) bool { return v.SHA256 == u.next.SHA256 })
	if j < 0 {
		return plugin.VersionState{}, fmt.Errorf("version %s is no longer routed", short(u.next.SHA256))
	}
	return cells[i].Versions[j], nil
}

// weights are the route weights with p percent of traffic on the new
// version and the rest shared by the old ones in their old proportions.
func (u *upgrader) weights(p uint32) []plugin.RouteWeight {
	ws := []plugin.RouteWeight{{Target: u.next.SHA256, Weight: p}}
	for i, w := range split(100-p, u.oldWeights) {
		ws = append(ws, plugin.RouteWeight{Target: u.olds[i], Weight: w})
	}
	return ws
}

// serving lists the old versions that take traffic once it is restored.
func (u *upgrader) serving() string {
	var out []string
	for i, w := range split(100, u.oldWeights) {
		if w > 0 {
			out = append(out, u.olds[i])
		}
	}
	if len(out) == 1 {
		return short(out[0]) + " serves"
	}
	return joinShort(out) + " serve"
}

// restoreCtx outlives the verb's ctx, so that traffic can be put back
// after a cancellation, but not by long.
func restoreCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), restoreTimeout)
}

// rollback puts all traffic back on the old versions and retires the new
// one, which broke at step p for the reason why.
func (u *upgrader) rollback(ctx context.Context, p uint32, why string) plugin.VerbResult {
	ctx, cancel := restoreCtx(ctx)
	defer cancel()
	if err := u.host.SetRouteWeights(ctx, u.cell, u.weights(0)); err != nil {
		return failed("%s broke at %d%%: %s; putting traffic back on %s failed: %v", short(u.next.SHA256), p, why, joinShort(u.olds), err)
	}
	msg := fmt.Sprintf("rolled back %s at %d%%: %s; %s all traffic", short(u.next.SHA256), p, why, u.serving())
	if err := u.host.RetireVersion(ctx, u.cell, u.next.SHA256); err != nil {
		msg += fmt.Sprintf("; retiring %s failed: %v", short(u.next.SHA256), err)
	}
	return result(plugin.RolledBack, "%s", msg)
}

// fail ends the upgrade as Failed; if traffic had moved to the new
// version, it first tries to put it back on the old ones.
func (u *upgrader) fail(ctx context.Context, format string, args ...any) plugin.VerbResult {
	msg := fmt.Sprintf("upgrade of cell %s to %s: ", u.cell, short(u.next.SHA256)) + fmt.Sprintf(format, args...)
	if !u.moved {
		return failed("%s", msg)
	}
	ctx, cancel := restoreCtx(ctx)
	defer cancel()
	if err := u.host.SetRouteWeights(ctx, u.cell, u.weights(0)); err != nil {
		return failed("%s; putting traffic back on %s failed too: %v", msg, joinShort(u.olds), err)
	}
	return failed("%s; %s all traffic again", msg, u.serving())
}

// note adds a journal note, best effort: the verb's result is what counts.
func (u *upgrader) note(ctx context.Context, format string, args ...any) {
	_ = u.host.AddJournalNote(ctx, u.cell, fmt.Sprintf(format, args...))
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if ctx.Err() != nil {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// split divides total among parts in proportion to weights (in equal
// shares when every weight is 0), by largest remainder, so that the parts
// add up to total.
func split(total uint32, weights []uint32) []uint32 {
	ws := slices.Clone(weights)
	var sum uint64
	for _, w := range ws {
		sum += uint64(w)
	}
	if sum == 0 {
		for i := range ws {
			ws[i] = 1
		}
		sum = uint64(len(ws))
	}
	out := make([]uint32, len(ws))
	rems := make([]int, len(ws))
	var given uint64
	for i, w := range ws {
		q := uint64(total) * uint64(w)
		out[i] = uint32(q / sum)
		given += q / sum
		rems[i] = i
	}
	slices.SortStableFunc(rems, func(a, b int) int {
		return cmp.Compare(uint64(total)*uint64(ws[b])%sum, uint64(total)*uint64(ws[a])%sum)
	})
	for k := 0; given < uint64(total); k++ {
		out[rems[k]]++
		given++
	}
	return out
}
