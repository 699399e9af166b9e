package twopc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/ledger"
)

// Recovery follows design.md §4, epoch by epoch in ascending order:
//
//	OPEN                       abort every recorded label → ABORTED
//	PRECOMMITTED               commit every txn; all Committed → COMMITTED
//	  … a sink says Aborted    rewind: ABORTED, and every later epoch is aborted;
//	                           the resume position stays at this epoch's start
//	  … Unknown, or a mix      stop with an *InDoubtError (txn resolve --assume decides)
//	after an epoch that did not commit, every later epoch is aborted: with
//	commits in order none of them can have committed; a sink that says
//	otherwise is reported as ErrProtocol.
//
// The resume position is the ledger's: the end of the last committed epoch.
// It never moved past an unfinished epoch, so a rewind needs no write of it;
// recovery checks that it equals the rewound epoch's start.

// Action is what recovery does with one unfinished epoch.
type Action string

// The recovery actions.
const (
	// ActionAbort aborts every recorded label of an OPEN epoch.
	ActionAbort Action = "abort"
	// ActionCommit commits every prepared txn of a PRECOMMITTED epoch; a
	// sink answering Aborted turns it into a rewind, Unknown into a stop.
	ActionCommit Action = "commit"
	// ActionAbortLater aborts a PRECOMMITTED epoch that follows an epoch
	// that did not commit.
	ActionAbortLater Action = "abort-after-rewind"
	// ActionAssumeCommitted marks an in-doubt epoch COMMITTED on the
	// operator's word (after trying Commit on each txn once more).
	ActionAssumeCommitted Action = "assume-committed"
	// ActionAssumeAborted aborts an in-doubt epoch on the operator's word
	// and rewinds to its start.
	ActionAssumeAborted Action = "assume-aborted"
	// ActionDelete runs the shard deletes of a PRECOMMITTED delete epoch
	// again on every sink (idempotent: no later epoch can have committed)
	// and marks it COMMITTED.
	ActionDelete Action = "delete"
)

// PlanItem is recovery's intended action for one unfinished epoch.
type PlanItem struct {
	Epoch  uint64       `json:"epoch"`
	State  ledger.State `json:"state"`
	Action Action       `json:"action"`
	Start  change.Token `json:"start"`
	End    change.Token `json:"end,omitempty"`
	// Txns are the labels (OPEN) or prepared txns (PRECOMMITTED) acted on.
	Txns []Prepared `json:"txns"`
	// Deletes are the shard deletes of a delete epoch.
	Deletes []change.ShardDelete `json:"deletes,omitempty"`
	// Explain says, in words, what will happen and what could change it.
	Explain string `json:"explain"`
}

// RecoveryPlan is what the ledger holds that is not finished and what
// recovery would do with it. It contacts no sink, so outcomes that depend on
// a sink's answer (rewind, in doubt) are described, not predicted.
type RecoveryPlan struct {
	Ledger string       `json:"ledger"`
	Resume change.Token `json:"resume"`
	Next   uint64       `json:"next_epoch"`
	Items  []PlanItem   `json:"items"`
}

// Plan reads the ledger and describes recovery's action per unfinished
// epoch (`shardsync txn list`).
func Plan(l *ledger.Ledger) (*RecoveryPlan, error) {
	return plan(l, nil)
}

func plan(l *ledger.Ledger, assume map[uint64]Outcome) (*RecoveryPlan, error) {
	un, err := l.Unfinished()
	if err != nil {
		return nil, err
	}
	res, err := l.Resume()
	if err != nil {
		return nil, err
	}
	next, err := l.NextEpoch()
	if err != nil {
		return nil, err
	}
	p := &RecoveryPlan{Ledger: l.Path(), Resume: res, Next: next, Items: []PlanItem{}}
	stopped := uint64(0) // an earlier epoch that will not commit
	for _, e := range un {
		it := PlanItem{Epoch: e.Number, State: e.State, Start: e.Start, End: e.End}
		switch {
		case e.State == ledger.StateOpen:
			it.Action, it.Txns = ActionAbort, convert(e.Intents)
			it.Explain = fmt.Sprintf("never reached its commit point: abort %d label(s) at the sinks, mark ABORTED; its rows are read again", len(e.Intents))
		case stopped != 0:
			it.Action, it.Txns, it.Deletes = ActionAbortLater, convert(e.Prepared), e.Deletes
			it.Explain = fmt.Sprintf("earlier epoch %d does not commit, so this one cannot either: abort its %d txn(s), mark ABORTED", stopped, len(e.Prepared))
		case assume[e.Number] == Committed:
			it.Action, it.Txns = ActionAssumeCommitted, convert(e.Prepared)
			it.Explain = "operator says its rows are in the targets: try Commit on each txn once more, then mark COMMITTED whatever they answer"
		case assume[e.Number] == Aborted:
			it.Action, it.Txns = ActionAssumeAborted, convert(e.Prepared)
			it.Explain = "operator says its rows are not in the targets: abort each txn, mark ABORTED and re-read from its start"
		case len(e.Deletes) > 0:
			it.Action, it.Txns, it.Deletes = ActionDelete, convert(e.Prepared), e.Deletes
			it.Explain = fmt.Sprintf("a shard delete whose decision was recorded: run its %d delete(s) on every sink again (safe: no later rows of the shard were committed), mark COMMITTED", len(e.Deletes))
		default:
			it.Action, it.Txns = ActionCommit, convert(e.Prepared)
			it.Explain = fmt.Sprintf("reached its commit point: commit %d txn(s), mark COMMITTED; if a sink says a txn was aborted, "+
				"rewind to its start and abort later epochs; if a sink cannot tell, stop for the operator", len(e.Prepared))
		}
		if it.Action == ActionAbort || it.Action == ActionAssumeAborted {
			if stopped == 0 {
				stopped = e.Number
			}
		}
		p.Items = append(p.Items, it)
	}
	return p, nil
}

func convert(ts []ledger.SinkTxn) []Prepared {
	out := make([]Prepared, len(ts))
	for i, t := range ts {
		out[i] = fromLedger(t)
	}
	return out
}

// ResolveOptions tune Resolve.
type ResolveOptions struct {
	// DryRun lists the actions without contacting sinks or writing the ledger.
	DryRun bool
	// Assume settles in-doubt epochs on the operator's word: Committed or
	// Aborted per epoch number. Only PRECOMMITTED epochs take an assumption.
	Assume map[uint64]Outcome
	// Retry bounds each sink call; zero means DefaultRetry.
	Retry RetryPolicy
}

// Step is one action of a resolve run and its outcome.
type Step struct {
	Epoch  uint64    `json:"epoch"`
	Action Action    `json:"action"`
	Txn    *Prepared `json:"txn,omitempty"` // nil for the ledger step
	// Outcome is the sink's answer ("committed", "aborted", "unknown"), or
	// for the ledger step the state written; "dry-run" when not attempted.
	Outcome string    `json:"outcome"`
	Error   string    `json:"error,omitempty"`
	Time    time.Time `json:"time"`
}

// Report is the result of Resolve: every step taken, in order, and the
// resume position afterwards.
type Report struct {
	Ledger string       `json:"ledger"`
	DryRun bool         `json:"dry_run"`
	Steps  []Step       `json:"steps"`
	Resume change.Token `json:"resume"`
}

// Recover settles every unfinished epoch as design.md §4 says and returns
// the token the source must resume from. It is Resolve without assumptions,
// logging each step. An *InDoubtError or ErrProtocol means the job must not
// start.
func Recover(ctx context.Context, l *ledger.Ledger, sinks []Sink, log *slog.Logger) (change.Token, error) {
	rep, err := Resolve(ctx, l, sinks, ResolveOptions{}, log)
	if err != nil {
		return nil, err
	}
	return rep.Resume, nil
}

// Resolve settles the unfinished epochs now, without starting the stream
// (`shardsync txn resolve`), and reports each action and its outcome. It
// stops at the first epoch it cannot settle; the report then holds the steps
// done so far, and the error says why.
func Resolve(ctx context.Context, l *ledger.Ledger, sinks []Sink, opts ResolveOptions, log *slog.Logger) (*Report, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for n, o := range opts.Assume {
		if o != Committed && o != Aborted {
			return nil, fmt.Errorf("resolving epoch %d: an assumption must be committed or aborted, not %s", n, o)
		}
	}
	p, err := plan(l, opts.Assume)
	if err != nil {
		return nil, err
	}
	for n := range opts.Assume {
		found := false
		for _, it := range p.Items {
			found = found || (it.Epoch == n && it.State == ledger.StatePrecommitted)
		}
		if !found {
			return nil, fmt.Errorf("resolving epoch %d: the ledger has no PRECOMMITTED epoch %d to assume an outcome for (see `shardsync txn list`)", n, n)
		}
	}
	rv := &resolver{l: l, opts: opts, log: log, sinks: map[string]Sink{},
		rep: &Report{Ledger: l.Path(), DryRun: opts.DryRun, Steps: []Step{}, Resume: p.Resume}}
	for _, s := range sinks {
		rv.sinks[s.Name()] = s
	}
	if opts.DryRun {
		for _, it := range p.Items {
			for _, t := range it.Txns {
				rv.step(it.Epoch, it.Action, &t, "dry-run", nil)
			}
			rv.step(it.Epoch, it.Action, nil, "dry-run", nil)
		}
		return rv.rep, nil
	}
	for _, it := range p.Items {
		if err := rv.settle(ctx, it); err != nil {
			return rv.rep, err
		}
	}
	res, err := l.Resume()
	if err != nil {
		return rv.rep, err
	}
	rv.rep.Resume = res
	return rv.rep, nil
}

type resolver struct {
	l       *ledger.Ledger
	opts    ResolveOptions
	log     *slog.Logger
	sinks   map[string]Sink
	rep     *Report
	rewound uint64 // the first epoch that did not commit, 0 for none
}

func (rv *resolver) step(n uint64, a Action, t *Prepared, outcome string, err error) {
	s := Step{Epoch: n, Action: a, Txn: t, Outcome: outcome, Time: time.Now().UTC()}
	if err != nil {
		s.Error = err.Error()
	}
	rv.rep.Steps = append(rv.rep.Steps, s)
	args := []any{"epoch", n, "action", string(a), "outcome", outcome}
	if t != nil {
		args = append(args, "sink", t.Sink, "target", t.Target.String(), "label", t.Label, "txn_id", t.TxnID)
	}
	if err != nil {
		rv.log.Warn("recovery step failed", append(args, "err", err)...)
		return
	}
	rv.log.Info("recovery step", args...)
}

// call runs one sink call with retries and records the step.
func (rv *resolver) call(ctx context.Context, it PlanItem, p Prepared, commit bool) (Outcome, error) {
	s, ok := rv.sinks[p.Sink]
	if !ok {
		err := fmt.Errorf("epoch %d has %s, but sink %q is not configured; configure it so recovery can reach it", it.Epoch, p, p.Sink)
		rv.step(it.Epoch, it.Action, &p, "error", err)
		return Unknown, err
	}
	op, verb := s.Abort, "aborting"
	if commit {
		op, verb = s.Commit, "committing"
	}
	o, err := settle(ctx, rv.opts.Retry, rv.log, fmt.Sprintf("%s epoch %d %s", verb, it.Epoch, p), func(ctx context.Context) (Outcome, error) {
		return op(ctx, p)
	})
	if err != nil {
		rv.step(it.Epoch, it.Action, &p, "error", err)
		return Unknown, fmt.Errorf("recovering epoch %d: %w; nothing was decided, run again when the sink is reachable", it.Epoch, err)
	}
	rv.step(it.Epoch, it.Action, &p, o.String(), nil)
	return o, nil
}

func (rv *resolver) mark(ctx context.Context, it PlanItem, state ledger.State, note string) error {
	var err error
	if state == ledger.StateCommitted {
		err = rv.l.Commit(ctx, it.Epoch, note)
	} else {
		err = rv.l.Abort(ctx, it.Epoch, note)
	}
	rv.step(it.Epoch, it.Action, nil, state.String(), err)
	return err
}

// abortAll aborts every txn of it; every one must come back Aborted.
func (rv *resolver) abortAll(ctx context.Context, it PlanItem) error {
	for _, p := range it.Txns {
		o, err := rv.call(ctx, it, p, false)
		if err != nil {
			return err
		}
		if o == Committed {
			return fmt.Errorf("epoch %d (%s, action %s): sink %s says %s label %s txn_id %s is COMMITTED, "+
				"but it never reached its commit point or an earlier epoch (%d) did not commit; its rows may be in the target "+
				"out of order or twice; the ledger is left as is for inspection: %w",
				it.Epoch, it.State, it.Action, p.Sink, p.Target, p.Label, orDash(p.TxnID), rv.rewound, ErrProtocol)
		}
	}
	return nil
}

func (rv *resolver) settle(ctx context.Context, it PlanItem) error {
	switch it.Action {
	case ActionAbort:
		if err := rv.abortAll(ctx, it); err != nil {
			return err
		}
		rv.stopAt(it.Epoch)
		return rv.mark(ctx, it, ledger.StateAborted, "recovery: OPEN at start-up, labels aborted")
	case ActionAbortLater:
		if err := rv.abortAll(ctx, it); err != nil {
			return err
		}
		return rv.mark(ctx, it, ledger.StateAborted, fmt.Sprintf("recovery: aborted because earlier epoch %d did not commit", rv.rewound))
	case ActionAssumeCommitted:
		for _, p := range it.Txns {
			o, err := rv.call(ctx, it, p, true)
			if err != nil {
				return err
			}
			if o != Committed {
				rv.log.Warn("operator assumed committed; sink disagrees and its rows stay missing",
					"epoch", it.Epoch, "sink", p.Sink, "target", p.Target.String(), "label", p.Label, "txn_id", p.TxnID, "outcome", o.String())
			}
		}
		return rv.mark(ctx, it, ledger.StateCommitted, "resolved by operator: assumed committed")
	case ActionAssumeAborted:
		for _, p := range it.Txns {
			o, err := rv.call(ctx, it, p, false)
			if err != nil {
				return err
			}
			if o == Committed {
				rv.log.Warn("operator assumed aborted; sink says committed, so these rows will be applied again",
					"epoch", it.Epoch, "sink", p.Sink, "target", p.Target.String(), "label", p.Label, "txn_id", p.TxnID)
			}
		}
		if err := rv.checkRewind(it); err != nil {
			return err
		}
		rv.stopAt(it.Epoch)
		return rv.mark(ctx, it, ledger.StateAborted, "resolved by operator: assumed aborted; re-read from its start")
	case ActionDelete:
		if rv.rewound != 0 {
			it.Action = ActionAbortLater
			return rv.settle(ctx, it)
		}
		var sinks []Sink
		for _, s := range rv.sinks {
			sinks = append(sinks, s)
		}
		slices.SortFunc(sinks, func(a, b Sink) int { return strings.Compare(a.Name(), b.Name()) })
		c := &Coordinator{log: rv.log, obs: NopObserver{}}
		if err := runDeletes(ctx, sinks, rv.opts.Retry, c, it.Epoch, it.Deletes); err != nil {
			rv.step(it.Epoch, it.Action, nil, "error", err)
			return fmt.Errorf("recovering delete epoch %d: %w; nothing was decided, run again when the sinks are reachable", it.Epoch, err)
		}
		rv.step(it.Epoch, it.Action, nil, "deleted", nil)
		return rv.mark(ctx, it, ledger.StateCommitted, "recovery: shard delete run again")
	case ActionCommit:
		if rv.rewound != 0 {
			// An earlier epoch was rewound during this run: plan could not know.
			it.Action = ActionAbortLater
			return rv.settle(ctx, it)
		}
		outcomes := make([]Outcome, len(it.Txns))
		for i, p := range it.Txns {
			o, err := rv.call(ctx, it, p, true)
			if err != nil {
				return err
			}
			outcomes[i] = o
		}
		err := judge(it.Epoch, it.Txns, outcomes, rv.l.Path())
		if err == nil {
			return rv.mark(ctx, it, ledger.StateCommitted, "")
		}
		var rw *RewindError
		if !errors.As(err, &rw) {
			return err
		}
		if err := rv.checkRewind(it); err != nil {
			return err
		}
		rv.stopAt(it.Epoch)
		return rv.mark(ctx, it, ledger.StateAborted, "rewound: a sink aborted its pre-committed transactions; re-read from its start")
	}
	return fmt.Errorf("recovering epoch %d: unknown action %q", it.Epoch, it.Action)
}

func (rv *resolver) stopAt(n uint64) {
	if rv.rewound == 0 {
		rv.rewound = n
	}
}

// checkRewind verifies that re-reading from it's start loses nothing: the
// resume position must be exactly there.
func (rv *resolver) checkRewind(it PlanItem) error {
	res, err := rv.l.Resume()
	if err != nil {
		return err
	}
	if !bytes.Equal(res, it.Start) {
		return fmt.Errorf("rewinding epoch %d: the ledger's resume position %x is not the epoch's start %x, so re-reading "+
			"would skip or repeat rows; the ledger is left as is: %w", it.Epoch, res, it.Start, ErrProtocol)
	}
	return nil
}
