package twopc_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/ledger"
	"github.com/shardsync/shardsync/twopc"
	"github.com/shardsync/shardsync/twopc/twopctest"
)

// ledgerRecorder records intents straight into the ledger, as the
// coordinator's recorder does.
type ledgerRecorder struct {
	l     *ledger.Ledger
	n     uint64
	start change.Token
}

func (r ledgerRecorder) Intend(ctx context.Context, p twopc.Prepared) error {
	return r.l.Intend(ctx, r.n, r.start, ledger.SinkTxn{Sink: p.Sink, Target: p.Target, Label: p.Label})
}

// epochAt drives one epoch of rows to both tables on sink up to OPEN
// (precommit=false) or PRECOMMITTED.
func epochAt(t *testing.T, l *ledger.Ledger, sink *twopctest.Sink, n uint64, start, end string, precommit bool) []twopc.Prepared {
	t.Helper()
	tx, err := sink.Begin(t.Context(), n, ledgerRecorder{l: l, n: n, start: change.Token(start)})
	require.NoError(t, err)
	rows := []change.Row{{Op: change.Insert, Target: tblA, After: []change.Value{int64(n)}}, {Op: change.Insert, Target: tblB, After: []change.Value{int64(n)}}}
	require.NoError(t, tx.Write(t.Context(), rows))
	if !precommit {
		return nil
	}
	ps, err := tx.PreCommit(t.Context())
	require.NoError(t, err)
	var lt []ledger.SinkTxn
	for _, p := range ps {
		lt = append(lt, ledger.SinkTxn{Sink: p.Sink, Target: p.Target, Label: p.Label, TxnID: p.TxnID})
	}
	require.NoError(t, l.Precommit(t.Context(), n, change.Token(end), lt))
	return ps
}

func commitEpoch(t *testing.T, l *ledger.Ledger, sink *twopctest.Sink, n uint64, ps []twopc.Prepared) {
	for _, p := range ps {
		o, err := sink.Commit(t.Context(), p)
		require.NoError(t, err)
		require.Equal(t, twopc.Committed, o)
	}
	require.NoError(t, l.Commit(t.Context(), n, ""))
}

func states(t *testing.T, l *ledger.Ledger) map[uint64]ledger.State {
	eps, err := l.Epochs()
	require.NoError(t, err)
	out := map[uint64]ledger.State{}
	for _, e := range eps {
		out[e.Number] = e.State
	}
	return out
}

func TestRecoveryTable(t *testing.T) {
	t.Run("PRECOMMITTED is committed, OPEN is aborted", func(t *testing.T) {
		l := openLedger(t, "")
		d := twopctest.NewSink("doris")
		commitEpoch(t, l, d, 1, epochAt(t, l, d, 1, "", "t1", true))
		epochAt(t, l, d, 2, "t1", "t2", true)
		epochAt(t, l, d, 3, "t2", "", false)
		d2 := d.Restart()

		plan, err := twopc.Plan(l)
		require.NoError(t, err)
		require.Len(t, plan.Items, 2)
		require.Equal(t, twopc.ActionCommit, plan.Items[0].Action)
		require.Equal(t, twopc.ActionAbort, plan.Items[1].Action)
		_, err = json.Marshal(plan)
		require.NoError(t, err)

		res, err := twopc.Recover(t.Context(), l, []twopc.Sink{d2}, testLogger(t))
		require.NoError(t, err)
		require.Equal(t, change.Token("t2"), res)
		require.Equal(t, map[uint64]ledger.State{1: ledger.StateCommitted, 2: ledger.StateCommitted, 3: ledger.StateAborted}, states(t, l))
		for _, tx := range d.Txns() {
			want := twopctest.StateCommitted
			if tx.Epoch == 3 {
				want = twopctest.StateAborted
			}
			require.Equal(t, want, tx.State, tx.Label)
		}
	})

	t.Run("destination aborted a PRECOMMITTED epoch: rewind, later epochs abort", func(t *testing.T) {
		l := openLedger(t, "")
		d := twopctest.NewSink("doris")
		commitEpoch(t, l, d, 1, epochAt(t, l, d, 1, "", "t1", true))
		p2 := epochAt(t, l, d, 2, "t1", "t2", true)
		epochAt(t, l, d, 3, "t2", "t3", true)
		for _, p := range p2 {
			require.True(t, d.Expire(p.Label))
		}
		rep, err := twopc.Resolve(t.Context(), l, []twopc.Sink{d.Restart()}, twopc.ResolveOptions{}, testLogger(t))
		require.NoError(t, err)
		require.Equal(t, change.Token("t1"), rep.Resume, "resume at epoch 2's start")
		require.Equal(t, map[uint64]ledger.State{1: ledger.StateCommitted, 2: ledger.StateAborted, 3: ledger.StateAborted}, states(t, l))
		for _, tx := range d.Txns() {
			if tx.Epoch == 3 {
				require.Equal(t, twopctest.StateAborted, tx.State)
			}
		}
		var actions []twopc.Action
		for _, s := range rep.Steps {
			if s.Txn == nil {
				actions = append(actions, s.Action)
			}
		}
		require.Equal(t, []twopc.Action{twopc.ActionCommit, twopc.ActionAbortLater}, actions)
		next, err := l.NextEpoch()
		require.NoError(t, err)
		require.Equal(t, uint64(4), next, "the rewound epoch is re-read under a new number")
	})

	t.Run("later epoch committed after an earlier abort is a protocol violation", func(t *testing.T) {
		l := openLedger(t, "")
		d := twopctest.NewSink("doris")
		p1 := epochAt(t, l, d, 1, "", "t1", true)
		p2 := epochAt(t, l, d, 2, "t1", "t2", true)
		for _, p := range p1 {
			d.Expire(p.Label)
		}
		for _, p := range p2 { // something committed epoch 2 out of order
			_, err := d.Commit(t.Context(), p)
			require.NoError(t, err)
		}
		_, err := twopc.Recover(t.Context(), l, []twopc.Sink{d}, testLogger(t))
		require.ErrorIs(t, err, twopc.ErrProtocol)
		require.Contains(t, err.Error(), "epoch 2")
		require.Equal(t, ledger.StatePrecommitted, states(t, l)[2], "left as is for inspection")
	})

	t.Run("unknown outcome stops in doubt; resolve --assume settles it", func(t *testing.T) {
		l := openLedger(t, "")
		d := twopctest.NewSink("doris")
		p1 := epochAt(t, l, d, 1, "", "t1", true)
		epochAt(t, l, d, 2, "t1", "t2", true)
		d.Forget(p1[0].Label)

		_, err := twopc.Recover(t.Context(), l, []twopc.Sink{d}, testLogger(t))
		var doubt *twopc.InDoubtError
		require.ErrorAs(t, err, &doubt)
		require.Equal(t, uint64(1), doubt.Epoch)
		msg := err.Error()
		for _, want := range []string{"epoch 1", "sink doris", p1[0].Label, "txn_id " + p1[0].TxnID, p1[0].Target.String(),
			"--epoch 1 --assume committed", "--epoch 1 --assume aborted", l.Path()} {
			require.Contains(t, msg, want)
		}
		require.Equal(t, ledger.StatePrecommitted, states(t, l)[1])

		// Dry run: nothing changes.
		rep, err := twopc.Resolve(t.Context(), l, []twopc.Sink{d}, twopc.ResolveOptions{DryRun: true,
			Assume: map[uint64]twopc.Outcome{1: twopc.Committed}}, testLogger(t))
		require.NoError(t, err)
		require.True(t, rep.DryRun)
		for _, s := range rep.Steps {
			require.Equal(t, "dry-run", s.Outcome)
		}
		require.Equal(t, twopc.ActionAssumeCommitted, rep.Steps[0].Action)
		_, err = json.Marshal(rep)
		require.NoError(t, err)
		require.Equal(t, ledger.StatePrecommitted, states(t, l)[1])

		rep, err = twopc.Resolve(t.Context(), l, []twopc.Sink{d}, twopc.ResolveOptions{
			Assume: map[uint64]twopc.Outcome{1: twopc.Committed}}, testLogger(t))
		require.NoError(t, err)
		require.Equal(t, change.Token("t2"), rep.Resume)
		require.Equal(t, map[uint64]ledger.State{1: ledger.StateCommitted, 2: ledger.StateCommitted}, states(t, l))
		e1, err := l.Epoch(1)
		require.NoError(t, err)
		require.Contains(t, e1.Note, "operator")
	})

	t.Run("assume aborted rewinds", func(t *testing.T) {
		l := openLedger(t, "")
		d := twopctest.NewSink("doris")
		p1 := epochAt(t, l, d, 1, "", "t1", true)
		epochAt(t, l, d, 2, "t1", "t2", true)
		d.Forget(p1[0].Label)
		rep, err := twopc.Resolve(t.Context(), l, []twopc.Sink{d}, twopc.ResolveOptions{
			Assume: map[uint64]twopc.Outcome{1: twopc.Aborted}}, testLogger(t))
		require.NoError(t, err)
		require.Nil(t, rep.Resume)
		require.Equal(t, map[uint64]ledger.State{1: ledger.StateAborted, 2: ledger.StateAborted}, states(t, l))
		for _, tx := range d.Txns() {
			require.Equal(t, twopctest.StateAborted, tx.State)
		}
	})

	t.Run("split epoch is in doubt", func(t *testing.T) {
		l := openLedger(t, "")
		d := twopctest.NewSink("doris")
		p1 := epochAt(t, l, d, 1, "", "t1", true)
		d.Expire(p1[1].Label)
		_, err := twopc.Recover(t.Context(), l, []twopc.Sink{d}, testLogger(t))
		require.ErrorIs(t, err, twopc.ErrInDoubt)
		require.Contains(t, err.Error(), "committed")
		require.Contains(t, err.Error(), "aborted")
	})

	t.Run("assumption for an epoch that is not PRECOMMITTED is refused", func(t *testing.T) {
		l := openLedger(t, "")
		d := twopctest.NewSink("doris")
		epochAt(t, l, d, 1, "", "", false)
		_, err := twopc.Resolve(t.Context(), l, []twopc.Sink{d}, twopc.ResolveOptions{
			Assume: map[uint64]twopc.Outcome{1: twopc.Committed}}, testLogger(t))
		require.Error(t, err)
		require.Equal(t, ledger.StateOpen, states(t, l)[1])
	})

	t.Run("unconfigured sink is named", func(t *testing.T) {
		l := openLedger(t, "")
		d := twopctest.NewSink("doris")
		epochAt(t, l, d, 1, "", "t1", true)
		_, err := twopc.Recover(t.Context(), l, []twopc.Sink{twopctest.NewSink("maxcompute")}, testLogger(t))
		require.Error(t, err)
		require.Contains(t, err.Error(), `sink "doris" is not configured`)
	})

	t.Run("unreachable sink decides nothing", func(t *testing.T) {
		l := openLedger(t, "")
		d := twopctest.NewSink("doris")
		epochAt(t, l, d, 1, "", "t1", true)
		d.Crash()
		_, err := twopc.Resolve(t.Context(), l, []twopc.Sink{d}, twopc.ResolveOptions{Retry: testConfig().Commit}, testLogger(t))
		require.ErrorIs(t, err, twopctest.ErrCrashed)
		require.Equal(t, ledger.StatePrecommitted, states(t, l)[1])
	})
}
