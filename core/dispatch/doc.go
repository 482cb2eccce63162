// Package dispatch owns the verb dispatch loop: it takes verb requests from
// the reflex engine (Submit, which never blocks) and from people (Do, which
// waits), decides what each request conflicts with, runs the survivors
// through an Executor one at a time per cell, and records every request as
// exactly one journal entry.
//
// # Ordering
//
// Each cell has a FIFO queue. Its verbs run one at a time, in the order they
// were submitted, on a worker goroutine that the cell's first queued request
// starts and that exits as soon as the queue is empty: an idle cell costs no
// goroutine. Different cells run in parallel. A queue holds at most
// Options.QueueLimit requests besides the one running; a request arriving at
// a full queue is journaled refused ("queue full").
//
// # Conflicts
//
// When a request arrives for a cell, in this order:
//
//  1. After Close: refused ("dispatcher closed").
//  2. A reroute while an upgrade of the cell is running or queued: refused
//     ("upgrade in progress"). This applies to manual reroutes too; clone
//     and decay simply queue behind the upgrade.
//  3. A decay while a clone is running or queued: superseded (message e.g.
//     "clone 1 (rule p99-clone) is running").
//  4. A request identical to one already queued (same verb and arguments;
//     a running one does not count): coalesced (the message names the
//     queued request).
//  5. A full queue: refused ("queue full"). Decays that step 6 would drop do
//     not count towards the limit.
//  6. Otherwise the request is queued. A clone first drops every queued
//     decay, journaling each superseded with a message naming the clone
//     ("clone 1 (rule p99-clone) came in after it").
//
// Manual requests (Request.Manual) are never coalesced (step 4) or
// superseded (steps 3 and 6); they are journaled with Rule "manual".
//
// # Running a request
//
// The cell's worker calls Options.Precheck, if set; when it says no, its
// result is journaled (outcome noop unless it says otherwise) and Execute is
// not called. Otherwise Execute runs under Options.Timeout. An Execute error
// is journaled failed with the error as message; a result without outcome is
// journaled done.
//
// Every request ends as exactly one journal entry: Time is the request's
// time (Request.Time, or the Clock when Submit received it), Duration is how
// long Execute ran (at least 1ns) or 0 when it did not run. Options.OnResult
// is called after each entry is journaled, on the goroutine that journaled
// it: the cell's worker, or the caller of Submit, Do or Close for requests
// that never queued or were dropped from a queue.
//
// # Closing
//
// Close stops accepting requests, journals the queued ones refused
// ("dispatcher closed"), and waits for the running ones; if its context ends
// first, the running verbs' contexts are cancelled and Close returns
// without waiting for them.
package dispatch
