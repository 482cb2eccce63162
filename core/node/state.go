package node

import (
	"fmt"
	"time"

	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/journal"
)

// journalState writes what happened to a cell's kept state to the journal
// (verb "state"): captures, saves, restores with the state's age, and
// refusals with the reason. Captures are journaled in the background (a
// clone or a decay does not wait on the journal's disk); saves, restores
// and refusals before the call returns, so that a drain's save is
// journaled before the journal closes.
func (n *Node) journalState(ev cell.StateEvent) {
	e := journal.Entry{Time: time.Now(), Cell: ev.Cell, Verb: "state", Args: []string{ev.What}, Rule: journal.RuleNote, Outcome: journal.Note}
	switch ev.What {
	case "refused":
		e.Outcome = journal.Refused
		e.Message = ev.Err + "; the cell starts fresh"
	case "restored":
		e.Message = fmt.Sprintf("restored state %s (%s), taken %s ago", ev.ID, sizeMiB(ev.Size), time.Since(ev.Taken).Round(time.Millisecond))
	case "saved":
		e.Message = fmt.Sprintf("saved state %s (%s) for a restart", ev.ID, sizeMiB(ev.Size))
	default:
		e.Message = fmt.Sprintf("captured state %s (%s) at %s", ev.ID, sizeMiB(ev.Size), ev.What)
	}
	write := func() {
		if _, err := n.journal.Append(e); err != nil {
			n.log.Warn("cannot journal a kept state's event", "cell", ev.Cell, "event", ev.What, "err", err)
		}
	}
	switch ev.What {
	case "saved", "restored", "refused", "drain":
		write()
	default:
		go write()
	}
}

func sizeMiB(b int) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
