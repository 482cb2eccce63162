package reflex

import (
	"slices"
	"strconv"
	"strings"
	"time"
)

// Op compares a reading's value with a rule's threshold. The zero Op is
// invalid and never holds.
type Op int

// The comparators of the intent language.
const (
	GT Op = iota + 1 // value > threshold
	GE               // value >= threshold
	LT               // value < threshold
	LE               // value <= threshold
	EQ               // value == threshold
	NE               // value != threshold
)

// String returns the operator as written in an intent: ">", ">=", "<",
// "<=", "==", "!=", or "?" for an invalid Op.
func (o Op) String() string {
	switch o {
	case GT:
		return ">"
	case GE:
		return ">="
	case LT:
		return "<"
	case LE:
		return "<="
	case EQ:
		return "=="
	case NE:
		return "!="
	}
	return "?"
}

// holds reports whether v compares true with threshold.
func (o Op) holds(v, threshold float64) bool {
	switch o {
	case GT:
		return v > threshold
	case GE:
		return v >= threshold
	case LT:
		return v < threshold
	case LE:
		return v <= threshold
	case EQ:
		return v == threshold
	case NE:
		return v != threshold
	}
	return false
}

// Rule is one reflex of one cell: when Signal (carrying Labels) compares
// true with Threshold continuously for Window, run Verb with Args, then stay
// quiet for Cooldown.
type Rule struct {
	// Cell owns the rule; the engine sets it to the cell given to SetRules.
	Cell string
	// Name identifies the rule within its cell in the journal, e.g.
	// "line 9" or "p99-clone".
	Name string
	// Signal is the signal name as written, e.g. "latency.p99".
	Signal string
	// Labels must all be carried by a reading for the rule to read it.
	Labels    map[string]string
	Op        Op
	Threshold float64
	// Window is how long the condition must hold before the rule fires.
	Window time.Duration
	// Cooldown is how long the rule stays quiet after firing.
	Cooldown time.Duration
	Verb     string
	Args     []string
	// Origin says in the operator's words what the rule came from, e.g.
	// "keep p99 latency under 20ms (line 5)".
	Origin string
	// Line is the intent line the rule came from; 0 if unknown.
	Line int
}

// String renders the rule's behaviour in the intent language, e.g.
// "when latency.p99 > 0.02 for 2s then clone 1 cooldown 5s". Labels are
// sorted; a zero window or cooldown is left out. Two rules with the same
// String behave the same (Cell, Name, Origin and Line are not part of it).
func (r Rule) String() string {
	var b strings.Builder
	b.WriteString("when ")
	b.WriteString(r.Signal)
	if len(r.Labels) > 0 {
		keys := make([]string, 0, len(r.Labels))
		for k := range r.Labels {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i == 0 {
				b.WriteByte('{')
			} else {
				b.WriteByte(',')
			}
			b.WriteString(quoteIfNeeded(k))
			b.WriteByte('=')
			b.WriteString(quoteIfNeeded(r.Labels[k]))
		}
		b.WriteByte('}')
	}
	b.WriteByte(' ')
	b.WriteString(r.Op.String())
	b.WriteByte(' ')
	b.WriteString(formatNumber(r.Threshold))
	if r.Window != 0 {
		b.WriteString(" for ")
		b.WriteString(formatDuration(r.Window))
	}
	b.WriteString(" then ")
	b.WriteString(r.Verb)
	for _, a := range r.Args {
		b.WriteByte(' ')
		b.WriteString(quoteIfNeeded(a))
	}
	if r.Cooldown != 0 {
		b.WriteString(" cooldown ")
		b.WriteString(formatDuration(r.Cooldown))
	}
	return b.String()
}

// quoteIfNeeded quotes s when it is empty or holds a character that would
// make String ambiguous.
func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsAny(s, "{},=\" \t\r\n") {
		return strconv.Quote(s)
	}
	return s
}

// formatNumber renders f in the shortest decimal form that parses back to
// it, without an exponent for everyday magnitudes.
func formatNumber(f float64) string {
	if a := abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

// formatDuration is time.Duration.String without trailing zero units:
// "5m" rather than "5m0s", "1h" rather than "1h0m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
