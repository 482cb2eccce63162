// Package verbs is the first-party verb plugin (kind dev.celluster.verb.v1):
// the five lifecycle verbs spawn, clone, reroute, upgrade and decay, as
// policy. It holds no mechanism and no state: each verb reads the cell
// with Host.ListCells, decides, and acts only through the [plugin.Host]
// (SpawnReplicas, DrainReplicas, SetRouteWeights, RetireVersion,
// AddJournalNote). The core enforces `keep replicas` bounds itself; the
// plugin reads them too, so that it answers Noop with a reason instead of
// asking for the impossible.
//
// Operators write the arguments in intents (`when cpu > 80% for 3s then
// clone 2 cooldown 10s`) and with celctl. README.md next to this file is
// the full reference; in short:
//
//	spawn                                  live replicas up to max(warm, min)
//	clone [N] [on NODE|peer]               N more replicas (default 1), up to max; on another node
//	decay [N|all]                          drain N replicas (default 1) or all
//	reroute TARGET=WEIGHT [TARGET=WEIGHT ...]
//	                                       set route weights (0..1000) exactly
//	reroute even                           equal weights over all versions
//	reroute [away] [max-error-rate=RATE]   weight 0 for versions erring above RATE
//	upgrade SHA [max-error-rate=RATE] [max-p99=DURATION] [steps=P,P,...]
//	        [step-time=DURATION] [min-requests=N]
//	                                       shift traffic to version SHA in steps,
//	                                       rolling back if it breaks
//
// N is a whole number 1..[MaxCount]. TARGET is a version (8 to 64 hex
// digits: a sha256 or a unique prefix of one) or a node name. RATE is a
// fraction ("0.01") or a percentage ("1%"), default [DefaultMaxErrorRate].
// Upgrade's defaults are steps=10,50,100, step-time=[DefaultStepTime],
// min-requests=[DefaultMinRequests] and no p99 limit.
//
// Every verb answers with an outcome and a one-line message for the
// decision journal: Done, Noop (with the reason nothing was needed),
// Refused (policy said no), Failed (bad arguments, naming the argument
// and the expected form; an unknown cell; a host error, with context) or,
// for upgrade, RolledBack (with the version, the step, the measured value
// against its limit and the request and error counts).
package verbs
