package journal

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// lineSuffix matches an origin ending in " (line N)".
var lineSuffix = regexp.MustCompile(`^(.*) \(line (\d+)\)$`)

// Explain renders e as one sentence: when, what, which rule fired and on
// which values (or that it was manual), and how it ended, e.g.
//
//	12:03:04 clone 1 on hello: rule p99-clone (keep p99 latency under 20ms, line 5) fired because latency.p99{cell=hello} was 0.031 (> 0.02); done in 2.1ms: spawned 1 replica, 3 live
func Explain(e Entry) string {
	var b strings.Builder
	if !e.Time.IsZero() {
		b.WriteString(e.Time.Format("15:04:05"))
		b.WriteByte(' ')
	}
	if e.Outcome == Note || (e.Rule == RuleNote && e.Verb == "") {
		b.WriteString("note")
		if e.Cell != "" {
			b.WriteString(" on " + e.Cell)
		}
		if e.Message != "" {
			b.WriteString(": " + e.Message)
		}
		return b.String()
	}

	b.WriteString(strings.Join(append([]string{e.Verb}, e.Args...), " "))
	if e.Cell != "" {
		b.WriteString(" on " + e.Cell)
	}
	b.WriteString(": ")
	switch {
	case e.Manual || e.Rule == RuleManual:
		b.WriteString("manual request")
	case e.Rule == "":
		b.WriteString("request")
	default:
		b.WriteString("rule " + e.Rule)
		if e.Origin != "" {
			if m := lineSuffix.FindStringSubmatch(e.Origin); m != nil {
				b.WriteString(" (" + m[1] + ", line " + m[2] + ")")
			} else {
				b.WriteString(" (" + e.Origin + ")")
			}
		}
		b.WriteString(" fired")
		if len(e.Values) > 0 {
			b.WriteString(" because ")
			writeValues(&b, e.Values)
		}
		if e.Condition != "" {
			b.WriteString(" (" + e.Condition + ")")
		}
	}

	b.WriteString("; ")
	if e.Outcome == "" {
		b.WriteString("no outcome")
	} else {
		b.WriteString(e.Outcome)
	}
	if e.Plugin != "" {
		b.WriteString(" by " + e.Plugin)
	}
	if e.Duration > 0 {
		b.WriteString(" in " + roundDuration(e.Duration).String())
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	return b.String()
}

// writeValues writes values in words; consecutive readings of one series
// (the first and last of a window) read "went from A to B over D".
func writeValues(b *strings.Builder, vs []Value) {
	for i := 0; i < len(vs); {
		k := seriesKey(vs[i])
		j := i + 1
		for j < len(vs) && seriesKey(vs[j]) == k {
			j++
		}
		if i > 0 {
			b.WriteString(" and ")
		}
		first, last := vs[i], vs[j-1]
		b.WriteString(k)
		switch {
		case j-i == 1:
			b.WriteString(" was " + formatFloat(first.Value))
		case !first.Time.IsZero() && last.Time.After(first.Time):
			b.WriteString(" went from " + formatFloat(first.Value) + " to " + formatFloat(last.Value) +
				" over " + roundDuration(last.Time.Sub(first.Time)).String())
		default:
			b.WriteString(" was " + formatFloat(first.Value) + " then " + formatFloat(last.Value))
		}
		i = j
	}
}

// seriesKey renders name{k=v,...} with the labels sorted.
func seriesKey(v Value) string {
	if len(v.Labels) == 0 {
		return v.Signal
	}
	ks := make([]string, 0, len(v.Labels))
	for k := range v.Labels {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var b strings.Builder
	b.WriteString(v.Signal)
	b.WriteByte('{')
	for i, k := range ks {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + v.Labels[k])
	}
	b.WriteByte('}')
	return b.String()
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// roundDuration keeps about two significant digits: 2.1ms, not 2.123456ms.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= time.Minute:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case d >= time.Microsecond:
		return d.Round(100 * time.Nanosecond)
	}
	return d
}
