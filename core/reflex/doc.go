// Package reflex turns what an operator stated about a cell into rules, and
// evaluates those rules as signals arrive.
//
// Compile translates a cell's IntentSpec into a Program: rules plus the
// replica bounds the core keeps. An Engine holds the rules of every cell;
// Observe hands it readings, and it calls back with a Decision for every
// rule that fires. Running the decided verb is the caller's business
// (core/dispatch).
//
// # Compilation
//
// Each statement of the intent language compiles as follows. T is the p99
// threshold in seconds, E the error-rate threshold as a fraction, D the
// idle duration, R the state's replication interval. Rules are written as Rule.String renders them.
//
//	statement                          rule name        rule / Program field
//	---------------------------------  ---------------  ----------------------------------------------------------
//	keep p99 latency under T           p99-clone        when latency.p99 > T for 2s then clone 1 cooldown 5s
//	                                   p99-decay        when latency.p99 < T/2 for 30s then decay 1 cooldown 30s
//	                                                    UpgradeArgs += "max-p99=T" (seconds, %g)
//	keep error rate under E            errors-reroute   when version.errors.rate > E*100 for 2s then reroute away cooldown 10s
//	                                                    UpgradeArgs += "max-error-rate=E" (%g)
//	decay after D idle                 idle-decay       when idle >= D(seconds) then decay all cooldown D
//	                                                    DecayIdle = D
//	keep state                         -                KeepState = true, StateEvery = 0 (not replicated)
//	keep state replicated every R      -                KeepState = true, StateEvery = R
//	when S OP V [for W] then VERB ...  "line N"         the same rule, the signal name kept as written
//	keep replicas MIN..MAX             -                Min, Max; when unstated, Defaults (else 1 and 8)
//	keep warm N                        -                Warm; when unstated (or 0), Defaults.Warm (else 1);
//	                                                    then clamped into [Min, Max]
//	anything else                      -                nothing
//
// The p99 pair has hysteresis: between T/2 and T neither rule holds, so a
// cell is not cloned and decayed in turn. version.errors.rate is in
// percent (hence E*100, rounded to 12 significant digits) and is published
// per version while a cell routes to more than one, so errors-reroute sees
// each version as a series of its own. When the unstated Defaults give Max
// below Min, Max is raised to Min. With Min 0 (a cell that may scale to
// zero) the clamp only caps Warm at Max: Warm is not lowered to 0.
//
// Rules come in this order: objective rules in the order the objectives
// appear, then idle-decay, then explicit rules in spec order. UpgradeArgs
// follow the objectives' order. Each rule's Origin says what it came from
// in the operator's words: "keep p99 latency under 20ms (line 5)", "keep
// error rate under 1% (line 6)", "decay after 5m idle" (the spec records no
// line for it), "when cpu > 80 for 3s then clone cooldown 10s (line 9)".
// An explicit rule keeps its spec name (the parser's "line N"); an unnamed
// one is named "line N" after its line, or "rule I" (its 1-based position
// among the spec's rules) without one. Generated names contain no space,
// so they never clash with "line N".
//
// Compile reports every problem at once, each naming its rule and line: an
// unknown verb (not spawn, clone, reroute, upgrade or decay), a NaN
// threshold, an unknown comparator, a missing signal, an invalid or
// negative window or cooldown, a non-positive or NaN objective threshold
// (an error rate above 1), a second objective of one kind, MIN above MAX,
// two rules of one name, and of a kept state: an invalid or negative
// replication interval, one outside [MinStateEvery, MaxStateEvery] (100ms
// to 1h), one without keep, and keep in a cell whose spec says abi command.
//
// # Matching
//
// A reading is read only by the rules on its signal name (aliases from
// Options.Aliases resolved in both), found through an index (cell, then
// signal; or signal alone for node-wide readings), never by looking at
// other rules:
//
//   - a reading labelled cell=X is read by cell X's rules on that signal;
//   - a reading without a cell label (node-wide: host.*, kernel.*) is read
//     by every cell's rules on that signal;
//
// in both cases only by rules whose Labels are a subset of the reading's
// labels: a rule on kernel.tcp.retransmits{port=8080} ignores port 9090,
// and a rule on latency.p99 without labels reads latency.p99{cell=X} and
// any other labels it carries.
//
// # Windows, cooldown and hysteresis
//
// Time is the arrival time: one Options.Clock reading per Observe call,
// not the readings' own Time. The condition is "value OP threshold".
// Window state is kept per rule and series, a series being the reading's
// labels (so one rule over kernel.tcp.retransmits sees each port, and
// errors-reroute each version, separately). Cooldown is per rule: after
// firing the rule stays quiet whichever series asks.
//
// For a reading of series s arriving at t:
//
//  1. If the condition is false, s stops holding. Done.
//  2. If s is not holding it starts: since(s) = t.
//  3. If t < QuietUntil, nothing fires (s keeps holding). Done.
//  4. If t - since(s) >= Window the rule fires (Window 0: on the first true
//     arrival): LastFired = t, QuietUntil = t + Cooldown, and s's window
//     restarts at the firing: since(s) = t.
//
// So a rule fires at the first arrival at or after since+Window, never an
// instant before; arrivals before QuietUntil never fire, the first one at
// or after it may; and a condition that keeps holding fires again after
// max(Cooldown, Window). A false reading in between restarts the wait
// from the next true arrival.
//
// Hysteresis lives in the rules, not in the engine: a pair of rules with a
// band between their thresholds (p99-clone and p99-decay) and windows long
// enough to outlast noise. A series whose condition holds and that stops
// reporting stays holding (the engine has no timeout); only a false reading
// of that series, SetRules dropping the rule, or RemoveCell clears it.
//
// # Concurrency
//
// Engine methods are safe for concurrent use. Observe reads an immutable
// index through an atomic pointer and locks only each rule it evaluates,
// one at a time; it calls fire synchronously, holding no lock, so fire may
// call SetRules, RemoveCell or Status (but must not block: it runs on the
// caller's hot path). SetRules and RemoveCell are serialised with each
// other, rebuild the index entries of the signals they touch and publish
// them at once; readings that arrive meanwhile see the old or the new
// rules (one Observe call sees one index throughout), and a removed rule
// fires no more once SetRules returns. A reading that no rule reads costs
// three map lookups; a firing allocates its Decision's Values, and a
// series that starts holding allocates its state once; nothing else on
// the Observe path allocates. SetRules copies the index's per-cell and
// per-signal tables, so it costs in proportion to the number of cells and
// of rules on the signals it touches: cheap next to a deployment, not
// meant to run per reading.
package reflex
