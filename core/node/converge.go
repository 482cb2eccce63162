package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/cellwatch"
	"github.com/celluster/celluster/core/dispatch"
	"github.com/celluster/celluster/core/journal"
)

// A cell converges to the module file on disk. Replacing the file stages
// the new version and dispatches the upgrade verb; whatever interrupts the
// upgrade, the node looks again:
//
//   - after every upgrade verb ends (done, failed, refused, rolled back), the
//     cell's file is read again and compared with what the cell routes;
//   - the file's version already routed beside others (an upgrade cut short
//     by a killed plugin, at whatever weights it left) resumes: the upgrade
//     verb is dispatched to it again, and takes traffic on from the share
//     the version already has;
//   - an upgrade that fails (not rolled back: the plugin died, a host call
//     failed) is retried after 0.5 s, 1 s, 2 s, 4 s and 8 s; after
//     maxUpgradeFailures failures in a row the node promotes the file's
//     version by mechanism, at once, and journals why;
//   - a version the upgrade rolled back is not tried again until its file is
//     written again (the rollback's reason stays in `celctl cells`);
//   - a node stopped mid-upgrade starts from the file on disk, and journals
//     that the upgrade it had staged did not finish.
//
// Every step is in the journal: the staging note, the verb's entry, each
// retry and the promotion.

// maxUpgradeFailures is how many failed upgrades in a row the node retries
// before it promotes the file's version at once.
const maxUpgradeFailures = 5

// upgradeRetryBase is the first retry's delay; each later one doubles it.
const upgradeRetryBase = 500 * time.Millisecond

// stagedNote starts the journal note written when an upgrade is staged; a
// node that finds it last for a cell at start knows the upgrade did not end.
const stagedNote = "upgrade staged: "

// upgradeState is what the node remembers about a cell's upgrades.
type upgradeState struct {
	inFlight   string // the version of the upgrade dispatched and not yet ended
	rolledBack string // the last version rolled back: not retried until its file is written again
	failTarget string // the version the failures below were upgrades to
	failures   int    // failed upgrades to failTarget in a row
	retry      *time.Timer
}

// upgrades returns the cell's upgrade state; n.umu is held.
func (n *Node) upgradeStateLocked(name string) *upgradeState {
	st := n.ups[name]
	if st == nil {
		st = &upgradeState{}
		n.ups[name] = st
	}
	return st
}

func shaOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// upgrade brings a serving cell to the module src read from path: it stages
// the module beside the serving version (unless it is already routed) and
// dispatches the upgrade verb, which shifts traffic and rolls back if the
// new version breaks the cell's objectives. fromFile says the module file
// itself changed (rather than its intent, or a look after a verb ended).
func (n *Node) upgrade(ctx context.Context, c *cell.Cell, src []byte, path string, fromFile bool) {
	sha := shaOf(src)
	name := c.Name()
	in := c.Info()
	routed := -1
	for i, v := range in.Versions {
		if v.SHA256 == sha {
			routed = i
		}
	}
	n.umu.Lock()
	st := n.upgradeStateLocked(name)
	if fromFile {
		st.rolledBack = ""
	}
	if !strings.HasPrefix(sha, st.failTarget) || st.failTarget == "" {
		st.failTarget, st.failures = sha, 0
	}
	switch {
	case routed >= 0 && len(in.Versions) == 1:
		st.failures = 0
		n.umu.Unlock()
		// Converged: an error about an earlier file (refused, rolled
		// back, retried) no longer holds.
		c.ClearError()
		return
	case st.rolledBack != "" && strings.HasPrefix(sha, st.rolledBack):
		n.umu.Unlock()
		return // rolled back; waits for the file to be written again
	case st.inFlight == sha:
		n.umu.Unlock()
		return // its end brings the node back here
	}
	n.umu.Unlock()

	rule := "module-changed"
	origin := "module " + filepath.Base(path) + " replaced (sha256 " + sha[:12] + ")"
	if routed < 0 {
		staged, ok, err := c.Stage(ctx, src, path)
		if err != nil {
			n.log.Error("rejected cell module; the serving version keeps serving", "cell", name, "path", path, "err", err)
			return
		}
		if !ok {
			return
		}
		sha = staged
	} else {
		rule = "converge"
		origin = fmt.Sprintf("module %s (sha256 %s) is routed beside %s with weights %s, but is the only version on disk: resuming its upgrade",
			filepath.Base(path), sha[:12], joinOthers(in.Versions, sha), weights(in.Versions))
	}
	args := []string{sha}
	n.imu.Lock()
	if ist := n.intents[name]; ist != nil && ist.applied != nil {
		args = append(args, ist.applied.UpgradeArgs...)
	}
	n.imu.Unlock()
	if n.cfg.UpgradeStepTime > 0 {
		args = append(args, "step-time="+n.cfg.UpgradeStepTime.String())
	}
	n.umu.Lock()
	st.inFlight = sha
	n.umu.Unlock()
	n.note(name, stagedNote+sha+" ("+origin+")")
	n.disp.Submit(dispatch.Request{Cell: name, Verb: "upgrade", Args: args, Rule: rule, Origin: origin})
}

// upgradeEnded runs after an upgrade verb ended: it records the outcome
// and looks at the cell's file again, at once or, after a failure, later;
// after too many failures it promotes the file's version by mechanism.
func (n *Node) upgradeEnded(req dispatch.Request, res dispatch.Result) {
	sha := req.Args[0] // a full sha256, or a prefix given by hand
	if res.Outcome == journal.Coalesced {
		return // the identical request queued ends it
	}
	n.umu.Lock()
	st := n.upgradeStateLocked(req.Cell)
	if st.inFlight != "" && strings.HasPrefix(st.inFlight, sha) {
		st.inFlight = ""
	}
	var delay time.Duration
	promote := false
	switch res.Outcome {
	case journal.RolledBack:
		st.rolledBack = sha
		st.failures = 0
	case journal.Done, journal.Noop:
		st.failures = 0
	default:
		if st.failTarget == "" || !strings.HasPrefix(st.failTarget, sha) {
			st.failTarget, st.failures = sha, 0
		}
		st.failures++
		if st.failures > maxUpgradeFailures {
			promote = true
			st.failures = 0
		} else {
			delay = upgradeRetryBase << (st.failures - 1)
		}
	}
	failures := st.failures
	n.umu.Unlock()

	if promote {
		n.promoteFromDisk(req.Cell, sha, res)
		return
	}
	if delay > 0 {
		if c := n.reg.Lookup(req.Cell); c != nil {
			c.NoteError(fmt.Sprintf("upgrade to %s %s: %s; retrying in %s", short(sha), res.Outcome, res.Message, delay))
		}
		n.note(req.Cell, fmt.Sprintf("upgrade to %s %s (%d in a row); the node looks at %s again in %s",
			short(sha), res.Outcome, failures, req.Cell+cellwatch.Ext, delay))
		n.umu.Lock()
		if st.retry != nil {
			st.retry.Stop()
		}
		st.retry = time.AfterFunc(delay, func() { n.recheck(req.Cell) })
		n.umu.Unlock()
		return
	}
	n.recheck(req.Cell)
}

// recheck has the node look at a cell's file again.
func (n *Node) recheck(name string) {
	n.submit(cellwatch.Event{Cell: name, Path: filepath.Join(n.cfg.CellsDir, name+".recheck"), Op: cellwatch.Changed})
}

// promoteFromDisk routes all of a cell's traffic to the version of its file,
// at once, after the upgrade verb failed too often.
func (n *Node) promoteFromDisk(name, sha string, last dispatch.Result) {
	c := n.reg.Lookup(name)
	if c == nil {
		return
	}
	path := filepath.Join(n.cfg.CellsDir, name+cellwatch.Ext)
	src, err := readModule(path)
	if err != nil || !strings.HasPrefix(shaOf(src), sha) {
		n.recheck(name) // the file changed meanwhile: start over
		return
	}
	e := journal.Entry{Cell: name, Verb: "upgrade", Args: []string{sha}, Rule: "converge", Plugin: "core",
		Origin: fmt.Sprintf("the upgrade verb failed %d times in a row (last: %s)", maxUpgradeFailures+1, last.Message)}
	if err := c.Promote(sha); err != nil {
		e.Outcome, e.Message = journal.Failed, "promoting "+short(sha)+" by mechanism: "+err.Error()
	} else {
		e.Outcome, e.Message = journal.Done, "promoted "+short(sha)+" at once, without traffic steps, so that the cell serves "+filepath.Base(path)
		c.ClearError()
	}
	n.log.Warn("upgrade verb kept failing; "+e.Message, "cell", name, "outcome", e.Outcome)
	if _, err := n.journal.Append(e); err != nil {
		n.log.Error("journal", "err", err)
	}
}

// noteInterrupted journals, at a cell's first load, an upgrade the node had
// staged before it stopped and that never ended.
func (n *Node) noteInterrupted(name, sha string) {
	es := n.journal.Query(journal.Query{Cell: name, Limit: 64})
	for i := len(es) - 1; i >= 0; i-- {
		e := es[i]
		if e.Verb == "upgrade" {
			return
		}
		if e.Outcome == journal.Note && e.Plugin == "core" && strings.HasPrefix(e.Message, stagedNote) {
			staged, _, _ := strings.Cut(strings.TrimPrefix(e.Message, stagedNote), " ")
			n.note(name, fmt.Sprintf("the upgrade to %s staged at %s did not end before the node stopped; the cell now serves %s from %s",
				short(staged), e.Time.Format(time.RFC3339), short(sha), name+cellwatch.Ext))
			return
		}
	}
}

// note appends a note of the core's to the journal.
func (n *Node) note(name, msg string) {
	if _, err := n.journal.Append(journal.Entry{Cell: name, Rule: journal.RuleNote, Outcome: journal.Note, Message: msg, Plugin: "core"}); err != nil {
		n.log.Error("journal", "err", err)
	}
}

// stopRetries stops pending upgrade retries (the node is stopping).
func (n *Node) stopRetries() {
	n.umu.Lock()
	defer n.umu.Unlock()
	for _, st := range n.ups {
		if st.retry != nil {
			st.retry.Stop()
		}
	}
}

func joinOthers(vs []cell.VersionInfo, sha string) string {
	var out []string
	for _, v := range vs {
		if v.SHA256 != sha {
			out = append(out, short(v.SHA256))
		}
	}
	return strings.Join(out, ", ")
}

func weights(vs []cell.VersionInfo) string {
	var out []string
	for _, v := range vs {
		out = append(out, fmt.Sprintf("%s=%d", short(v.SHA256), v.Weight))
	}
	return strings.Join(out, " ")
}
