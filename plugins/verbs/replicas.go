package verbs

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/celluster/celluster/sdk/plugin"
)

// commandABI is the ABI of cells that run a fresh instance per request.
const commandABI = "command"

// spawn brings the cell's live replicas up to max(Warm, MinReplicas),
// capped at MaxReplicas.
func spawn(ctx context.Context, host plugin.Host, c plugin.CellState, args []string) plugin.VerbResult {
	if len(args) > 0 {
		return badArg(spawnForm, args[0], "spawn takes no arguments")
	}
	if c.ABI == commandABI {
		return noop("command cell: each request runs a fresh instance, so it keeps no replicas")
	}
	bounds := fmt.Sprintf("warm %d, min %d", c.Warm, c.MinReplicas)
	want := max(c.Warm, c.MinReplicas)
	if c.MaxReplicas > 0 {
		want = min(want, c.MaxReplicas)
	}
	if c.Replicas >= want {
		return noop("already %d live, %s", c.Replicas, bounds)
	}
	n, err := host.SpawnReplicas(ctx, c.Name, want-c.Replicas)
	if err != nil {
		return failed("spawning %s for cell %s (%d live): %v", plural(want-c.Replicas, "replica"), c.Name, c.Replicas, err)
	}
	if n <= c.Replicas {
		return noop("the host spawned none: %d live, %s", n, bounds)
	}
	return done("spawned %s: %d -> %d live (%s)", plural(n-c.Replicas, "replica"), c.Replicas, n, bounds)
}

// clone adds N replicas (default 1), no more than MaxReplicas allows.
func clone(ctx context.Context, host plugin.Host, c plugin.CellState, args []string) plugin.VerbResult {
	n := 1
	if i := indexOf(args, "on"); i >= 0 {
		return cloneOnPeer(ctx, host, c, args, i)
	}
	switch {
	case len(args) > 1:
		return badArg(cloneForm, args[1], "too many arguments")
	case len(args) == 1:
		var err error
		if n, err = parseCount(args[0]); err != nil {
			return badArg(cloneForm, args[0], "%v", err)
		}
	}
	if c.ABI == commandABI {
		return noop("command cell: each request runs a fresh instance, so it keeps no replicas")
	}
	bound := "no max"
	ask := n
	if c.MaxReplicas > 0 {
		bound = fmt.Sprintf("max %d", c.MaxReplicas)
		if c.Replicas >= c.MaxReplicas {
			return noop("at max replicas %d (%d live)", c.MaxReplicas, c.Replicas)
		}
		ask = min(n, c.MaxReplicas-c.Replicas)
	}
	after, err := host.SpawnReplicas(ctx, c.Name, ask)
	if err != nil {
		return failed("spawning %s for cell %s (%d live): %v", plural(ask, "replica"), c.Name, c.Replicas, err)
	}
	got := after - c.Replicas
	switch {
	case got <= 0:
		return noop("the host spawned none: %d live (%s)", after, bound)
	case got < n:
		return done("spawned %d of %s: %d -> %d live (%s)", got, plural(n, "replica"), c.Replicas, after, bound)
	}
	return done("spawned %s: %d -> %d live (%s)", plural(got, "replica"), c.Replicas, after, bound)
}

// decay drains N replicas (default 1) or all of them; the host decides how
// far down the cell may go.
func decay(ctx context.Context, host plugin.Host, c plugin.CellState, args []string) plugin.VerbResult {
	n := 1
	switch {
	case len(args) > 1:
		return badArg(decayForm, args[1], "too many arguments")
	case len(args) == 1 && args[0] == "all":
		n = c.Replicas
	case len(args) == 1:
		var err error
		if n, err = parseCount(args[0]); err != nil {
			return badArg(decayForm, args[0], "%v", err)
		}
	}
	if c.Replicas == 0 {
		return noop("nothing to drain: 0 live")
	}
	after, err := host.DrainReplicas(ctx, c.Name, n)
	if err != nil {
		return failed("draining %s of cell %s (%d live): %v", plural(n, "replica"), c.Name, c.Replicas, err)
	}
	got := c.Replicas - after
	switch {
	case got <= 0:
		return noop("nothing to drain: %d live, min %d", after, c.MinReplicas)
	case got < n:
		return done("drained %d of %s: %d -> %d live (min %d)", got, plural(n, "replica"), c.Replicas, after, c.MinReplicas)
	}
	return done("drained %s: %d -> %d live", plural(got, "replica"), c.Replicas, after)
}

func indexOf(args []string, s string) int {
	for i, a := range args {
		if a == s {
			return i
		}
	}
	return -1
}

// cloneOnPeer is `clone [N] on NODE|peer`: N replicas on another node of
// the fabric, which fetches the module by hash if it lacks it. "peer" lets
// the core pick the least loaded live node not serving the cell yet.
func cloneOnPeer(ctx context.Context, host plugin.Host, c plugin.CellState, args []string, on int) plugin.VerbResult {
	n := 1
	switch {
	case on > 1:
		return badArg(cloneForm, args[1], "expected on NODE after the count")
	case on == 1:
		var err error
		if n, err = parseCount(args[0]); err != nil {
			return badArg(cloneForm, args[0], "%v", err)
		}
	}
	if on+1 >= len(args) {
		return badArg(cloneForm, "on", "a node name (or peer) must follow on")
	}
	if on+2 < len(args) {
		return badArg(cloneForm, args[on+2], "too many arguments")
	}
	target := args[on+1]
	if target == "peer" {
		nodes, err := host.ListNodes(ctx)
		if err != nil {
			return failed("listing the fabric's nodes: %v", err)
		}
		target = choosePeer(nodes, c)
		if target == "" {
			return noop("no live peer can take %s: every one serves it already or is avoided by the intent", c.Name)
		}
	}
	node, live, err := host.PlaceReplicas(ctx, c.Name, target, n, "clone "+strings.Join(args, " "))
	if err != nil {
		return failed("placing %s of cell %s on %s: %v", plural(n, "replica"), c.Name, dashIfEmpty(target, "a peer"), err)
	}
	return done("node %s serves %s: %d live there", node, c.Name, live)
}

func dashIfEmpty(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// choosePeer picks the node for a replica placed with `clone on peer`: a
// live peer not serving the cell yet and not avoided by the intent, the
// intent's preferred nodes first, then the least loaded (spreading clones
// across nodes). "" when there is none.
func choosePeer(nodes []plugin.NodeState, c plugin.CellState) string {
	var best *plugin.NodeState
	for i := range nodes {
		n := &nodes[i]
		if n.Self || n.State != "alive" || slices.Contains(n.Cells, c.Name) || slices.Contains(c.Avoid, n.Name) {
			continue
		}
		bp, np := best != nil && slices.Contains(c.Prefer, best.Name), slices.Contains(c.Prefer, n.Name)
		if best == nil || (np && !bp) || (np == bp && n.Load < best.Load) {
			best = n
		}
	}
	if best == nil {
		return ""
	}
	return best.Name
}
