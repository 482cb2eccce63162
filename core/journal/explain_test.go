package journal

import (
	"testing"
	"time"
)

func TestExplain(t *testing.T) {
	at := time.Date(2026, 5, 1, 12, 3, 4, 0, time.UTC)
	hello := map[string]string{"cell": "hello"}
	for _, tc := range []struct {
		name string
		e    Entry
		want string
	}{{
		name: "rule fired",
		e: Entry{
			Time: at, Cell: "hello", Verb: "clone", Args: []string{"1"}, Rule: "p99-clone",
			Origin: "keep p99 latency under 20ms (line 5)", Condition: "> 0.02",
			Values:  []Value{{Signal: "latency.p99", Labels: hello, Value: 0.031, Time: at}},
			Outcome: Done, Message: "spawned 1 replica, 3 live", Duration: 2123456,
		},
		want: "12:03:04 clone 1 on hello: rule p99-clone (keep p99 latency under 20ms, line 5) fired because latency.p99{cell=hello} was 0.031 (> 0.02); done in 2.1ms: spawned 1 replica, 3 live",
	}, {
		name: "window",
		e: Entry{
			Time: at, Cell: "hello", Verb: "decay", Args: []string{"1"}, Rule: "p99-decay",
			Origin: "when latency.p99 < 0.01 for 30s", Condition: "< 0.01",
			Values: []Value{
				{Signal: "latency.p99", Labels: map[string]string{"version": "abc", "cell": "hello"}, Value: 0.004, Time: at.Add(-30 * time.Second)},
				{Signal: "latency.p99", Labels: map[string]string{"cell": "hello", "version": "abc"}, Value: 0.002, Time: at},
			},
			Outcome: Noop, Message: "at min replicas 1", Plugin: "scaler",
		},
		want: "12:03:04 decay 1 on hello: rule p99-decay (when latency.p99 < 0.01 for 30s) fired because latency.p99{cell=hello,version=abc} went from 0.004 to 0.002 over 30s (< 0.01); noop by scaler: at min replicas 1",
	}, {
		name: "manual",
		e:    Entry{Time: at, Cell: "hello", Verb: "upgrade", Rule: RuleManual, Manual: true, Outcome: RolledBack, Duration: 1500 * time.Millisecond, Message: "error rate 12% over 5%"},
		want: "12:03:04 upgrade on hello: manual request; rolled-back in 1.5s: error rate 12% over 5%",
	}, {
		name: "refused",
		e: Entry{Time: at, Cell: "hello", Verb: "reroute", Args: []string{"away"}, Rule: "errors-reroute",
			Values:  []Value{{Signal: "version.errors.rate", Labels: hello, Value: 7}, {Signal: "rps", Labels: hello, Value: 100}},
			Outcome: Refused, Message: "upgrade in progress"},
		want: "12:03:04 reroute away on hello: rule errors-reroute fired because version.errors.rate{cell=hello} was 7 and rps{cell=hello} was 100; refused: upgrade in progress",
	}, {
		name: "note",
		e:    Entry{Time: at, Cell: "hello", Rule: RuleNote, Outcome: Note, Message: "version abc rolled back"},
		want: "12:03:04 note on hello: version abc rolled back",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Explain(tc.e); got != tc.want {
				t.Errorf("Explain:\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}
