package intent

import (
	"fmt"
	"math"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

var (
	cellName   = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$`)
	nodeName   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$`)
	signalName = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$`)
	labelKey   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	hostName   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$`)
	// number is a decimal number with an optional sign, then a unit.
	number = regexp.MustCompile(`^(-?[0-9]+(?:\.[0-9]+)?)(.*)$`)
)

const cellNameRule = "lowercase letters, digits, '-' and '_', starting and ending with a letter or digit, at most 63 characters"

// maxCount bounds counts so they fit the wire's 32-bit fields.
const maxCount = math.MaxInt32

var comparators = []string{">", ">=", "<", "<=", "==", "!="}

// sizeUnits are the multipliers of the size units.
var sizeUnits = map[string]uint64{
	"B":  1,
	"KB": 1000, "MB": 1000 * 1000, "GB": 1000 * 1000 * 1000,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
}

func contains(words []string, w string) bool { return slices.Contains(words, w) }

func isComparator(s string) bool { return contains(comparators, s) }

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// parseCount parses a non-negative whole number that fits the wire.
func parseCount(s string) (int, bool) {
	if !isDigits(s) {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > maxCount {
		return 0, false
	}
	return int(n), true
}

// parseReplicas parses "N" or "MIN..MAX"; msg says what was expected when
// the text is not valid.
func parseReplicas(s string) (lo, hi int, msg, hint string) {
	const want = "a count such as 2 or a range such as 1..8"
	a, b, isRange := strings.Cut(s, "..")
	if !isRange {
		n, ok := parseCount(s)
		switch {
		case !ok:
			hint = "write a range as 1..8"
			return 0, 0, want, hint
		case n == 0:
			return 0, 0, "at least 1 replica", `to scale to zero when idle, write "decay after 5m idle"; to allow zero, write 0..N`
		}
		return n, n, "", ""
	}
	lo, okLo := parseCount(a)
	hi, okHi := parseCount(b)
	switch {
	case !okLo || !okHi:
		return 0, 0, want, "write a range as MIN..MAX, e.g. 1..8"
	case hi == 0:
		return 0, 0, "a maximum of at least 1 replica", `to scale to zero when idle, write "decay after 5m idle"`
	case lo > hi:
		return 0, 0, "a range whose minimum is at most its maximum", fmt.Sprintf("write %d..%d", hi, lo)
	}
	return lo, hi, "", ""
}

// parseDuration parses a Go duration that starts with a digit and has a
// unit; msg explains a failure.
func parseDuration(s string) (time.Duration, string) {
	const units = "durations use ns, us, µs, ms, s, m and h, e.g. 20ms or 1m30s"
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, units
	}
	if number.FindStringSubmatch(s)[2] == "" {
		return 0, "add a unit, e.g. " + s + "s; " + units
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		if strings.Contains(err.Error(), "invalid duration") {
			return 0, units
		}
		return 0, strings.TrimPrefix(err.Error(), "time: ")
	}
	return d, ""
}

// parseSize parses a whole number of bytes with an optional unit.
func parseSize(s string) (uint64, string) {
	const units = "sizes are whole numbers with B, KiB, MiB, GiB, KB, MB or GB, e.g. 64MiB"
	m := number.FindStringSubmatch(s)
	if m == nil || !isDigits(m[1]) {
		return 0, units
	}
	mult, ok := sizeUnits[m[2]]
	if m[2] == "" {
		mult, ok = 1, true
	}
	if !ok {
		for u := range sizeUnits {
			if strings.EqualFold(u, m[2]) {
				return 0, "units are case-sensitive: write " + m[1] + u
			}
		}
		return 0, units
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil || n > math.MaxUint64/mult {
		return 0, "the size is too large"
	}
	return n * mult, ""
}

// parsePercent parses "N%" or "N.N%" into N.
func parsePercent(s string) (float64, bool) {
	num, ok := strings.CutSuffix(s, "%")
	if !ok {
		return 0, false
	}
	m := number.FindStringSubmatch(num)
	if m == nil || m[2] != "" || strings.HasPrefix(num, "-") {
		return 0, false
	}
	v, err := strconv.ParseFloat(num, 64)
	return v, err == nil
}

// parseValue parses a rule's threshold: a number, a percentage (kept in
// percent units), a duration (in seconds) or a size (in bytes).
func parseValue(s string) (float64, string) {
	const units = "write a number, a percentage (80%), a duration (20ms) or a size (64MiB)"
	m := number.FindStringSubmatch(s)
	if m == nil {
		return 0, units
	}
	var v float64
	switch unit := m[2]; {
	case unit == "" || unit == "%":
		f, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			return 0, "the number is out of range"
		}
		v = f
	case sizeUnits[unit] != 0:
		n, msg := parseSize(s)
		if msg != "" {
			return 0, msg
		}
		v = float64(n)
	default:
		if strings.HasPrefix(s, "-") {
			d, err := time.ParseDuration(s)
			if err != nil {
				return 0, units
			}
			return d.Seconds(), ""
		}
		d, msg := parseDuration(s)
		if msg != "" {
			if _, sizeMsg := parseSize(s); strings.HasPrefix(sizeMsg, "units are case-sensitive") {
				return 0, sizeMsg
			}
			return 0, units
		}
		v = d.Seconds()
	}
	if v == 0 {
		v = 0 // no negative zero
	}
	return v, ""
}

// checkAddr checks a listen address such as ":8080" or "127.0.0.1:8080"
// and says what is wrong with it.
func checkAddr(s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "a host and a port separated by ':'"
	}
	if n, ok := parseCount(port); !ok || n < 1 || n > 65535 {
		return "a port from 1 to 65535"
	}
	if host != "" && net.ParseIP(host) == nil && !hostName.MatchString(host) {
		return "an IP address or a host name before the ':'"
	}
	return ""
}

// checkPath checks the path prefix of "serve http": it starts with / and
// routes by whole segments, so it holds no query, wildcard, escape, empty
// segment or dot segment.
func checkPath(s string) (msg, hint string) {
	const want = "a path prefix such as /api/v2"
	switch {
	case strings.ContainsAny(s, "?*%"):
		return want, "a prefix matches whole path segments, as written, without a query, wildcard or %-escape: write e.g. /api"
	case strings.Contains(s, "//"):
		return want, "write one / between segments"
	}
	for seg := range strings.SplitSeq(s, "/") {
		if seg == "." || seg == ".." {
			return want, "write the path without . or .. segments"
		}
	}
	return "", ""
}

// checkHost checks a host name of "serve host": letters, digits and '-'
// in dot-separated labels, optionally starting with the wildcard label *,
// without a port.
func checkHost(s string) (msg, hint string) {
	const want = "a host name such as shop.example or *.shop.example"
	rest, _ := strings.CutPrefix(s, "*.")
	switch {
	case s == "*":
		return want, "leave serve host out to serve the cell for any host"
	case strings.HasPrefix(s, "[") || strings.Count(s, ":") > 1:
		return want, "IPv6 addresses do not route; name the host"
	case strings.Contains(s, ":"):
		h, _, _ := strings.Cut(s, ":")
		return want, "the port does not route: write serve host " + h
	case strings.Contains(rest, "*"):
		return want, "a wildcard stands only for the first label, as in *.shop.example"
	case strings.HasSuffix(s, "."):
		return want, "write the name without the final dot"
	case len(rest) > 253:
		return want, "a host name is at most 253 characters"
	}
	for label := range strings.SplitSeq(rest, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' ||
			strings.Trim(label, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
			return want, "labels are 1 to 63 letters, digits and '-', separated by dots"
		}
	}
	return "", ""
}

// checkIdentity checks cell:NAME, cell:*, node:NAME or node:*.
func checkIdentity(s string) (msg, hint string) {
	const want = "an identity: cell:NAME, cell:*, node:NAME or node:*"
	kind, name, ok := strings.Cut(s, ":")
	switch {
	case !ok:
		if cellName.MatchString(s) {
			return want, "write cell:" + s + " or node:" + s
		}
		return want, "e.g. allow from cell:frontend, node:*"
	case name == "*" && (kind == "cell" || kind == "node"):
		return "", ""
	case kind == "cell":
		if !cellName.MatchString(name) {
			return "a cell name after cell: (" + cellNameRule + ")", nameHint(name)
		}
	case kind == "node":
		if !nodeName.MatchString(name) {
			return "a node name after node:", "a node name is letters, digits, '.', '-' and '_'"
		}
	default:
		return want, suggest(kind, []string{"cell", "node"})
	}
	return "", ""
}

// nameHint suggests a valid cell name for an invalid one, if lowercasing
// makes it valid.
func nameHint(s string) string {
	if l := strings.ToLower(s); l != s && cellName.MatchString(l) {
		return fmt.Sprintf("names are lowercase: write %q", l)
	}
	return "e.g. hello or auth-v2"
}

// suggest returns `did you mean "w"?` for the closest of words, if close.
func suggest(s string, words []string) string {
	if s == "" {
		return ""
	}
	best, bestD := "", 3
	for _, w := range words {
		if strings.EqualFold(s, w) {
			return fmt.Sprintf("keywords are lowercase: write %q", w)
		}
		if d := distance(s, w); d < bestD && d < len([]rune(w)) {
			best, bestD = w, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("did you mean %q?", best)
}

// distance is the Levenshtein distance between a and b, capped for long
// input.
func distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	if len(ra) > 64 || len(rb) > 64 {
		return 1 << 30
	}
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
