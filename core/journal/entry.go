package journal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Outcomes: how a request ended. Every request ends as exactly one entry.
const (
	// Done: the verb ran and did what it was asked.
	Done = "done"
	// Noop: nothing needed doing (e.g. already at the maximum replicas).
	Noop = "noop"
	// Refused: the request conflicted with work in progress or could not be
	// queued, and did not run.
	Refused = "refused"
	// Failed: the verb, or the plugin carrying it, returned an error.
	Failed = "failed"
	// RolledBack: the verb ran, went wrong and was undone (e.g. an upgrade).
	RolledBack = "rolled-back"
	// Superseded: a later or running request made this one pointless.
	Superseded = "superseded"
	// Coalesced: an identical request was already waiting to run.
	Coalesced = "coalesced"
	// Note: not a verb; Message says what happened.
	Note = "note"
)

// Rule names that are not rules.
const (
	// RuleManual is the Rule of a request made by hand.
	RuleManual = "manual"
	// RuleNote is the Rule of a note.
	RuleNote = "note"
)

// Value is one signal reading that led to a decision.
type Value struct {
	// Signal is the signal's name, e.g. "latency.p99".
	Signal string `json:"signal"`
	// Labels are the reading's labels, e.g. {"cell": "hello"}.
	Labels map[string]string `json:"labels,omitempty"`
	// Value is the reading. NaN and ±Inf are stored as the JSON strings
	// "NaN", "+Inf" and "-Inf".
	Value float64 `json:"value"`
	// Time is when the reading was taken.
	Time time.Time `json:"time"`
}

// wireValue is Value with a float that JSON can always carry.
type wireValue struct {
	Signal string            `json:"signal"`
	Labels map[string]string `json:"labels,omitempty"`
	Value  jsonFloat         `json:"value"`
	Time   time.Time         `json:"time"`
}

// MarshalJSON encodes v, writing non-finite values as strings.
func (v Value) MarshalJSON() ([]byte, error) {
	return json.Marshal(wireValue{Signal: v.Signal, Labels: v.Labels, Value: jsonFloat(v.Value), Time: v.Time})
}

// UnmarshalJSON decodes what MarshalJSON wrote.
func (v *Value) UnmarshalJSON(b []byte) error {
	var w wireValue
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*v = Value{Signal: w.Signal, Labels: w.Labels, Value: float64(w.Value), Time: w.Time}
	return nil
}

// jsonFloat is a float64 whose NaN and infinities survive JSON.
type jsonFloat float64

func (f jsonFloat) MarshalJSON() ([]byte, error) {
	switch x := float64(f); {
	case math.IsNaN(x):
		return []byte(`"NaN"`), nil
	case math.IsInf(x, 1):
		return []byte(`"+Inf"`), nil
	case math.IsInf(x, -1):
		return []byte(`"-Inf"`), nil
	default:
		return json.Marshal(x)
	}
}

func (f *jsonFloat) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		switch s {
		case "NaN":
			*f = jsonFloat(math.NaN())
		case "+Inf", "Inf":
			*f = jsonFloat(math.Inf(1))
		case "-Inf":
			*f = jsonFloat(math.Inf(-1))
		default:
			return fmt.Errorf("value %s is not a number", strconv.Quote(s))
		}
		return nil
	}
	var x float64
	if err := json.Unmarshal(b, &x); err != nil {
		return err
	}
	*f = jsonFloat(x)
	return nil
}

// Entry is one decision: a verb request and how it ended, or a note.
type Entry struct {
	// Seq numbers entries from 1, without gaps or reuse, across restarts.
	Seq uint64 `json:"seq"`
	// Time is when the request was made (Append sets it when zero).
	Time time.Time `json:"time"`
	// Cell is the cell the verb acted on.
	Cell string `json:"cell"`
	// Verb is the verb's name, e.g. "clone".
	Verb string `json:"verb"`
	// Args are the verb's arguments.
	Args []string `json:"args,omitempty"`
	// Rule is the rule's name, RuleManual or RuleNote.
	Rule string `json:"rule"`
	// Origin says in words what the rule came from, e.g.
	// "keep p99 latency under 20ms (line 5)".
	Origin string `json:"origin,omitempty"`
	// Condition is the rule's test against its signal, e.g. "> 0.02".
	Condition string `json:"condition,omitempty"`
	// Manual is true for a request made by hand.
	Manual bool `json:"manual,omitempty"`
	// Values are the readings that made the rule fire.
	Values []Value `json:"values,omitempty"`
	// Outcome is how the request ended: Done, Noop, Refused, ...
	Outcome string `json:"outcome"`
	// Message says what happened, e.g. "spawned 1 replica, 3 live".
	Message string `json:"message,omitempty"`
	// Duration is how long the verb ran; 0 when it did not run.
	Duration time.Duration `json:"duration_ns"`
	// Plugin names the plugin that carried the verb out.
	Plugin string `json:"plugin,omitempty"`
	// TraceID is the OpenTelemetry trace of the decision, when traced
	// (hex).
	TraceID string `json:"trace_id,omitempty"`
}

// errNoSeq rejects lines that decode but are not entries (e.g. "{}").
var errNoSeq = errors.New("entry has no seq")

// encode returns e as one JSON line, newline included.
func encode(e Entry) ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// decode parses one line (with or without its newline) into an entry.
func decode(line []byte) (Entry, error) {
	var e Entry
	line = bytes.TrimSuffix(line, []byte("\n"))
	if err := json.Unmarshal(line, &e); err != nil {
		return Entry{}, err
	}
	if e.Seq == 0 {
		return Entry{}, errNoSeq
	}
	return e, nil
}
