package verbs

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/celluster/celluster/sdk/plugin"
)

// Forms of the verbs' arguments, as error messages quote them.
const (
	spawnForm   = `"spawn" with no arguments`
	cloneForm   = `"clone [N] [on NODE|peer]" with N a whole number 1..1000`
	decayForm   = `"decay [N|all]" with N a whole number 1..1000`
	rerouteForm = `"reroute TARGET=WEIGHT [TARGET=WEIGHT ...]" (TARGET a version sha256 prefix of 8+ hex digits or a node name, WEIGHT 0..1000), "reroute even" or "reroute [away] [max-error-rate=RATE]" (RATE such as 0.01 or 1%)`
	upgradeForm = `"upgrade SHA [max-error-rate=RATE] [max-p99=DURATION] [steps=P,P,...] [step-time=DURATION] [min-requests=N]"`
)

// maxWeight is the largest route weight reroute accepts.
const maxWeight = 1000

// parseCount parses N of clone and decay: a whole number 1..MaxCount.
func parseCount(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxCount {
		return 0, fmt.Errorf("want a whole number 1..%d", MaxCount)
	}
	return n, nil
}

// isHex reports whether s is non-empty and all hex digits (either case).
func isHex(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return true
}

// isVersionRef reports whether s has the form of a version reference: a
// sha256 or a prefix of it, 8 to 64 hex digits.
func isVersionRef(s string) bool { return len(s) >= 8 && len(s) <= 64 && isHex(s) }

// isNodeName reports whether s is a node name as the intent language has
// them: 1-253 letters, digits, '.', '-', '_', starting and ending with a
// letter or digit.
func isNodeName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	alnum := func(b byte) bool {
		return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !alnum(b) && b != '.' && b != '-' && b != '_' {
			return false
		}
	}
	return alnum(s[0]) && alnum(s[len(s)-1])
}

// resolveVersion finds the cell's version that ref (a sha256 or a prefix
// of it, any case) names. It fails when none does or more than one does.
func resolveVersion(c plugin.CellState, ref string) (plugin.VersionState, error) {
	ref = strings.ToLower(ref)
	var found []plugin.VersionState
	for _, v := range c.Versions {
		if strings.HasPrefix(strings.ToLower(v.SHA256), ref) {
			found = append(found, v)
		}
	}
	switch len(found) {
	case 0:
		return plugin.VersionState{}, fmt.Errorf("no version %s of cell %s (it has %s)", ref, c.Name, joinShort(shas(c.Versions)))
	case 1:
		return found[0], nil
	}
	return plugin.VersionState{}, fmt.Errorf("version prefix %s of cell %s is ambiguous: it matches %s", ref, c.Name, joinShort(shas(found)))
}

func shas(vs []plugin.VersionState) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.SHA256
	}
	return out
}

// parseRate parses an error-rate limit: a fraction 0..1 ("0.01") or a
// percentage 0..100% ("1%").
func parseRate(s string) (float64, error) {
	num, pct := strings.CutSuffix(s, "%")
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("want a fraction such as 0.01 or a percentage such as 1%%")
	}
	if pct {
		f /= 100
	}
	if f < 0 || f > 1 {
		return 0, fmt.Errorf("want a rate between 0 and 1 (0%% and 100%%)")
	}
	return f, nil
}

// parseLatency parses a latency limit: a duration with a unit ("50ms")
// or a number of seconds ("0.05"); it must be above zero.
func parseLatency(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || math.IsNaN(f) || math.IsInf(f, 0) || f > math.MaxInt64/1e9 {
			return 0, fmt.Errorf("want a duration such as 50ms or a number of seconds such as 0.05")
		}
		d = time.Duration(f * 1e9)
	}
	if d <= 0 {
		return 0, fmt.Errorf("want a latency above zero")
	}
	return d, nil
}

// parseSteps parses the upgrade's traffic steps: percentages 1..100,
// comma-separated, strictly increasing, ending at 100.
func parseSteps(s string) ([]uint32, error) {
	var steps []uint32
	for _, part := range strings.Split(s, ",") {
		p, err := strconv.Atoi(part)
		if err != nil || p < 1 || p > 100 {
			return nil, fmt.Errorf("want percentages 1..100 separated by commas, such as 10,50,100")
		}
		if len(steps) > 0 && uint32(p) <= steps[len(steps)-1] {
			return nil, fmt.Errorf("steps must increase")
		}
		steps = append(steps, uint32(p))
	}
	if steps[len(steps)-1] != 100 {
		return nil, fmt.Errorf("the last step must be 100")
	}
	return steps, nil
}
