package verbs

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/celluster/celluster/sdk/plugin"
)

// DefaultMaxErrorRate is the error share above which reroute away and
// upgrade consider a version unhealthy, unless max-error-rate says
// otherwise.
const DefaultMaxErrorRate = 0.01

// evenWeight is the weight reroute even gives every version.
const evenWeight = 100

// reroute dispatches the three forms of reroute.
func reroute(ctx context.Context, host plugin.Host, c plugin.CellState, args []string) plugin.VerbResult {
	switch {
	case len(args) == 0 || args[0] == "away":
		if len(args) > 0 {
			args = args[1:]
		}
		return rerouteAway(ctx, host, c, args)
	case args[0] == "even":
		if len(args) > 1 {
			return badArg(rerouteForm, args[1], "reroute even takes no further arguments")
		}
		return rerouteEven(ctx, host, c)
	}
	return rerouteTo(ctx, host, c, args)
}

// rerouteTo sets the weights the arguments give.
func rerouteTo(ctx context.Context, host plugin.Host, c plugin.CellState, args []string) plugin.VerbResult {
	weights := make([]plugin.RouteWeight, 0, len(args))
	current := make(map[string]uint32) // version -> its weight now, for versions named
	var total uint64
	for _, arg := range args {
		target, w, ok := strings.Cut(arg, "=")
		if target == "max-error-rate" {
			return badArg(rerouteForm, arg, "max-error-rate is an option of reroute away: write \"reroute away %s\"", arg)
		}
		if !ok {
			return badArg(rerouteForm, arg, "want TARGET=WEIGHT, \"even\" or \"away\"")
		}
		weight, err := strconv.ParseUint(w, 10, 32)
		if err != nil || weight > maxWeight {
			return badArg(rerouteForm, arg, "weight %q is not a whole number 0..%d", w, maxWeight)
		}
		switch {
		case isVersionRef(target):
			v, err := resolveVersion(c, target)
			if err != nil {
				return badArg(rerouteForm, arg, "%v", err)
			}
			target = v.SHA256
			current[target] = v.Weight
		case isNodeName(target):
		default:
			return badArg(rerouteForm, arg, "target %q is neither a version (8 to 64 hex digits) nor a node name", target)
		}
		if slices.ContainsFunc(weights, func(rw plugin.RouteWeight) bool { return rw.Target == target }) {
			return badArg(rerouteForm, arg, "target %s is named twice", short(target))
		}
		weights = append(weights, plugin.RouteWeight{Target: target, Weight: uint32(weight)})
		total += weight
	}
	if total == 0 {
		return result(plugin.Refused, "every weight is 0: the cell would get no traffic")
	}
	if len(current) == len(weights) && len(current) == len(c.Versions) && slices.IndexFunc(weights, func(rw plugin.RouteWeight) bool {
		return current[rw.Target] != rw.Weight
	}) < 0 {
		return noop("route weights already %s", formatWeights(weights))
	}
	if err := host.SetRouteWeights(ctx, c.Name, weights); err != nil {
		return failed("setting route weights %s of cell %s: %v", formatWeights(weights), c.Name, err)
	}
	return done("route weights set: %s", formatWeights(weights))
}

// rerouteEven gives every version the same weight.
func rerouteEven(ctx context.Context, host plugin.Host, c plugin.CellState) plugin.VerbResult {
	if len(c.Versions) < 2 {
		return noop("only one version routed (%s); nothing to share", onlyVersion(c))
	}
	weights := make([]plugin.RouteWeight, len(c.Versions))
	even := true
	for i, v := range c.Versions {
		weights[i] = plugin.RouteWeight{Target: v.SHA256, Weight: evenWeight}
		even = even && v.Weight > 0 && v.Weight == c.Versions[0].Weight
	}
	if even {
		return noop("already even: %s", formatWeights(currentWeights(c)))
	}
	if err := host.SetRouteWeights(ctx, c.Name, weights); err != nil {
		return failed("setting route weights %s of cell %s: %v", formatWeights(weights), c.Name, err)
	}
	return done("rerouted evenly: %s", formatWeights(weights))
}

// rerouteAway takes traffic off versions whose error share exceeds the
// limit, as long as a healthy version keeps serving.
func rerouteAway(ctx context.Context, host plugin.Host, c plugin.CellState, args []string) plugin.VerbResult {
	limit := DefaultMaxErrorRate
	for _, arg := range args {
		val, ok := strings.CutPrefix(arg, "max-error-rate=")
		if !ok {
			return badArg(rerouteForm, arg, "reroute away takes only max-error-rate=RATE")
		}
		var err error
		if limit, err = parseRate(val); err != nil {
			return badArg(rerouteForm, arg, "%v", err)
		}
	}
	if len(args) > 1 {
		return badArg(rerouteForm, args[1], "max-error-rate is given twice")
	}
	if len(c.Versions) < 2 {
		return noop("only one version routed (%s); nowhere to reroute to", onlyVersion(c))
	}
	weights := currentWeights(c)
	var bad, moved []string
	healthyServing := false
	for i, v := range c.Versions {
		if !unhealthy(v, limit) {
			healthyServing = healthyServing || v.Weight > 0
			continue
		}
		bad = append(bad, fmt.Sprintf("%s %s (%d of %d requests)", short(v.SHA256), percent(errorShare(v)), v.Errors, v.Requests))
		if v.Weight > 0 {
			moved = append(moved, short(v.SHA256))
			weights[i].Weight = 0
		}
	}
	switch {
	case len(bad) == 0:
		return noop("no version's error rate is above %s: %s", percent(limit), formatHealth(c.Versions))
	case len(bad) == len(c.Versions):
		return result(plugin.Refused, "would leave no healthy version: every version's error rate is above %s: %s", percent(limit), strings.Join(bad, ", "))
	case len(moved) == 0:
		return noop("versions above error rate %s already get no traffic: %s", percent(limit), strings.Join(bad, ", "))
	case !healthyServing:
		return result(plugin.Refused, "would leave no healthy version serving: the healthy versions have weight 0 and the unhealthy ones (%s) serve all traffic", strings.Join(bad, ", "))
	}
	if err := host.SetRouteWeights(ctx, c.Name, weights); err != nil {
		return failed("setting route weights %s of cell %s: %v", formatWeights(weights), c.Name, err)
	}
	return done("rerouted away from %s: error rate above %s; weights now %s", strings.Join(bad, ", "), percent(limit), formatWeights(weights))
}

// errorShare is a version's errors over its requests, 0 without requests.
func errorShare(v plugin.VersionState) float64 {
	if v.Requests == 0 {
		return 0
	}
	return float64(v.Errors) / float64(v.Requests)
}

// unhealthy reports whether a version's error share exceeds limit. A
// version that served nothing is not unhealthy: there is no evidence.
func unhealthy(v plugin.VersionState, limit float64) bool {
	return v.Requests > 0 && errorShare(v) > limit
}

// currentWeights returns the cell's route weights as they are now.
func currentWeights(c plugin.CellState) []plugin.RouteWeight {
	ws := make([]plugin.RouteWeight, len(c.Versions))
	for i, v := range c.Versions {
		ws[i] = plugin.RouteWeight{Target: v.SHA256, Weight: v.Weight}
	}
	return ws
}

// formatWeights renders weights as "3f2a9c01ab12=90, edge-1=10".
func formatWeights(ws []plugin.RouteWeight) string {
	s := make([]string, len(ws))
	for i, w := range ws {
		s[i] = fmt.Sprintf("%s=%d", short(w.Target), w.Weight)
	}
	return strings.Join(s, ", ")
}

// formatHealth renders versions' error shares.
func formatHealth(vs []plugin.VersionState) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = fmt.Sprintf("%s %s (%d of %d requests)", short(v.SHA256), percent(errorShare(v)), v.Errors, v.Requests)
	}
	return strings.Join(s, ", ")
}

// onlyVersion names the cell's one version (or its module's digest).
func onlyVersion(c plugin.CellState) string {
	if len(c.Versions) == 1 {
		return short(c.Versions[0].SHA256)
	}
	if c.SHA256 != "" {
		return short(c.SHA256)
	}
	return "none listed"
}
