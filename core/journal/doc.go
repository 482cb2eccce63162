// Package journal owns a node's decision log: one entry for every verb the
// node was asked to run, whether by a rule or by hand, saying why (the rule,
// what it came from, the signal values that made it fire) and how it ended
// (done, noop, refused, failed, rolled-back, superseded, coalesced), plus
// free-form notes. It answers "why did this cell just scale?" after the fact,
// and across restarts.
//
// # On disk
//
// A Journal lives in one directory (a node uses <data>/journal). Entries are
// JSON objects, one per line, appended to journal.log. Before an append would
// take journal.log past Options.MaxFileBytes, the file is rotated:
// journal.log.N-1 is deleted, every journal.log.K is renamed journal.log.K+1,
// journal.log becomes journal.log.1, and a new journal.log begins with the
// entry. At most Options.MaxFiles files are kept, journal.log included; a
// single entry larger than MaxFileBytes gets a file of its own. The files
// are readable by the node's user only (FileMode, 0600): Open restricts
// files an earlier version left readable by others.
//
// # Sequence numbers
//
// Append numbers entries 1, 2, 3, ... Open finds the highest number in the
// kept files, so numbering continues across restarts and rotation, and file
// order is sequence order. Query returns entries oldest first.
//
// # Durability and recovery
//
// Each entry is written with a single write call and no fsync: an entry that
// Append returned survives the process crashing, not necessarily the machine
// losing power. Files are fsynced when rotated and on Close.
//
// Open never fails because of what it finds in the files. A last line of
// journal.log without its newline is a torn write: if it still decodes it is
// kept (and terminated), otherwise it is cut off with a warning. Any other
// line that does not decode is skipped by Open and Query alike; Open logs and
// counts them (Corrupt).
//
// # Explain
//
// Explain renders an entry as one sentence for people, e.g.
//
//	12:03:04 clone 1 on hello: rule p99-clone (keep p99 latency under 20ms, line 5) fired because latency.p99{cell=hello} was 0.031 (> 0.02); done in 2.1ms: spawned 1 replica, 3 live
package journal
