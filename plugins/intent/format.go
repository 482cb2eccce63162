package intent

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/celluster/celluster/sdk/plugin"
)

// Format renders spec in the intent language, one statement per line in a
// fixed order. Parsing the result gives back spec, except for the Line
// fields and rule names, which follow the new text. Format renders only
// what the language can say: it is meant for specs that ParseBytes
// produced.
func Format(spec *plugin.IntentSpec) []byte {
	var b bytes.Buffer
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("cell %s", spec.Cell)
	if m := spec.Module; m.Path != "" {
		if m.SHA256 != "" {
			line("module %s sha256 %s", m.Path, m.SHA256)
		} else {
			line("module %s", m.Path)
		}
	}
	if spec.ABI != "" {
		line("abi %s", spec.ABI)
	}
	for _, e := range spec.Endpoints {
		if e.Listen != "" {
			line("serve %s %s %s", e.Protocol, e.Listen, e.Path)
		} else {
			line("serve %s %s", e.Protocol, e.Path)
		}
	}
	if len(spec.Hosts) > 0 {
		line("serve host %s", strings.Join(spec.Hosts, ", "))
	}
	switch r := spec.Replicas; {
	case r.Max > 0 && r.Min == r.Max:
		line("keep replicas %d", r.Max)
	case r.Max > 0:
		line("keep replicas %d..%d", r.Min, r.Max)
	}
	if spec.Warm != 0 {
		line("keep warm %d", spec.Warm)
	}
	for _, o := range spec.Objectives {
		switch o.Kind {
		case plugin.LatencyP99:
			line("keep p99 latency under %s", formatSeconds(o.Threshold))
		case plugin.ErrorRate:
			line("keep error rate under %s%%", formatPercent(o.Threshold))
		}
	}
	switch st := spec.State; {
	case st.Keep && st.ReplicateEvery != 0:
		line("keep state replicated every %s", st.ReplicateEvery)
	case st.Keep:
		line("keep state")
	}
	if d := spec.Limits.RequestTime; d != 0 {
		line("limit request time %s", d)
	}
	if m := spec.Limits.Memory; m != 0 {
		line("limit memory %s", formatSize(m))
	}
	if c := spec.Limits.Concurrency; c != 0 {
		line("limit concurrency %d", c)
	}
	if m := spec.Limits.KV; m != 0 {
		line("limit kv %s", formatSize(m))
	}
	if n := spec.Limits.Body; n != 0 {
		line("limit body %s", formatSize(n))
	}
	for _, r := range spec.Rules {
		var w strings.Builder
		w.WriteString("when " + r.Signal)
		if len(r.Labels) > 0 {
			keys := make([]string, 0, len(r.Labels))
			for k := range r.Labels {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for i, k := range keys {
				w.WriteString(map[bool]string{true: "{", false: ","}[i == 0] + k + "=" + r.Labels[k])
			}
			w.WriteString("}")
		}
		w.WriteString(" " + string(r.Comparator) + " " + strconv.FormatFloat(r.Threshold, 'f', -1, 64))
		if r.Window != 0 {
			w.WriteString(" for " + r.Window.String())
		}
		w.WriteString(" then " + r.Verb)
		for _, a := range r.Args {
			w.WriteString(" " + a)
		}
		if r.Cooldown != 0 {
			w.WriteString(" cooldown " + r.Cooldown.String())
		}
		line("%s", w.String())
	}
	if d := spec.DecayAfterIdle; d != 0 {
		line("decay after %s idle", d)
	}
	if len(spec.Grants) > 0 {
		var caps []string
		for _, g := range spec.Grants {
			if len(g.Targets) == 0 {
				caps = append(caps, g.Capability)
			}
			for _, t := range g.Targets {
				caps = append(caps, g.Capability+" "+t)
			}
		}
		line("grant %s", strings.Join(caps, ", "))
	}
	if len(spec.AllowFrom) > 0 {
		line("allow from %s", strings.Join(spec.AllowFrom, ", "))
	}
	if n := spec.Placement.SpreadMinNodes; n > 0 {
		line("spread across %d nodes", n)
	} else if spec.Placement.SpreadAcrossNodes {
		line("spread across nodes")
	}
	for _, n := range spec.Placement.PreferNodes {
		line("prefer node %s", n)
	}
	for _, n := range spec.Placement.AvoidNodes {
		line("avoid node %s", n)
	}
	return b.Bytes()
}

// formatSeconds renders seconds as a duration that parses back to them.
func formatSeconds(s float64) string {
	d := time.Duration(math.Round(s * 1e9))
	for _, c := range []time.Duration{d, d - 1, d + 1} {
		if c.Seconds() == s {
			return c.String()
		}
	}
	return d.String()
}

// formatPercent renders a fraction as the shortest percentage that parses
// back to it.
func formatPercent(f float64) string {
	for prec := 0; prec <= 20; prec++ {
		s := strconv.FormatFloat(f*100, 'f', prec, 64)
		if v, err := strconv.ParseFloat(s, 64); err == nil && v/100 == f {
			return s
		}
	}
	return strconv.FormatFloat(f*100, 'f', -1, 64)
}

// formatSize renders bytes in the largest unit that divides them.
func formatSize(n uint64) string {
	for _, u := range []struct {
		name string
		mult uint64
	}{{"GiB", 1 << 30}, {"GB", 1e9}, {"MiB", 1 << 20}, {"MB", 1e6}, {"KiB", 1 << 10}, {"KB", 1e3}} {
		if n%u.mult == 0 {
			return strconv.FormatUint(n/u.mult, 10) + u.name
		}
	}
	return strconv.FormatUint(n, 10) + "B"
}
