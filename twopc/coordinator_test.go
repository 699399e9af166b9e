package twopc_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/ledger"
	"github.com/shardsync/shardsync/twopc"
	"github.com/shardsync/shardsync/twopc/twopctest"
)

func TestRunCommitsEverythingExactlyOnceAcrossTwoSinks(t *testing.T) {
	l := openLedger(t, "")
	d, m := twopctest.NewSink("doris"), twopctest.NewSink("maxcompute")
	obs := &observer{}
	cfg := testConfig()
	cfg.Observer = obs
	c, err := twopc.New(cfg, l, []twopc.Sink{d, m}, testLogger(t))
	require.NoError(t, err)
	s := makeScript(40)
	src := s.open(t, nil)
	// Slow the source a little so several timer epochs happen.
	src.block = func(ctx context.Context, i int, ev change.Event) error {
		if i%10 == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	}
	require.NoError(t, runUntil(t, c, src, src.done))

	requireExactlyOnce(t, d, s, len(s.txns))
	requireExactlyOnce(t, m, s, len(s.txns))
	res, err := l.Resume()
	require.NoError(t, err)
	require.Equal(t, tokenOf(len(s.txns)), res)
	un, err := l.Unfinished()
	require.NoError(t, err)
	require.Empty(t, un)
	require.Empty(t, d.Violations())

	var committed int
	for _, e := range obs.finished() {
		if e.Outcome == "committed" {
			committed++
			require.Positive(t, e.Txns)
		}
	}
	require.Positive(t, committed)
	// Every ledger epoch's labels match the sinks' labels for that epoch.
	eps, err := l.Epochs()
	require.NoError(t, err)
	for _, e := range eps {
		require.Equal(t, ledger.StateCommitted, e.State)
		for _, p := range e.Prepared {
			require.Equal(t, twopctest.Label(p.Sink, p.Target, e.Number), p.Label)
		}
	}
}

func TestSizeCutAtTransactionBoundary(t *testing.T) {
	l := openLedger(t, "")
	d := twopctest.NewSink("doris")
	cfg := testConfig()
	cfg.CheckpointInterval = time.Hour
	cfg.MaxEpochRows = 4
	obs := &observer{}
	cfg.Observer = obs
	c, err := twopc.New(cfg, l, []twopc.Sink{d}, testLogger(t))
	require.NoError(t, err)
	s := makeScript(12) // 1,2,3,1,2,3,... rows = 24
	src := s.open(t, nil)
	require.NoError(t, runUntil(t, c, src, src.done))
	requireExactlyOnce(t, d, s, len(s.txns))

	// Every epoch closed by size holds whole transactions: its end token is
	// a transaction boundary, and it has at least MaxEpochRows rows.
	eps, err := l.Epochs()
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(eps), 4)
	for _, st := range obs.finished() {
		if st.Cut == "size" {
			require.GreaterOrEqual(t, st.Rows, 4)
		}
	}
	for _, e := range eps {
		require.Equal(t, byte('t'), e.End[0])
	}
}

func TestTimerCutInsideTransactionWaitsForBoundary(t *testing.T) {
	l := openLedger(t, "")
	d := twopctest.NewSink("doris")
	c, err := twopc.New(testConfig(), l, []twopc.Sink{d}, testLogger(t))
	require.NoError(t, err)
	s := makeScript(3)
	s.chunk = 1
	src := s.open(t, nil)
	// Stall inside transaction 2 (3 rows) for several checkpoint intervals.
	src.block = func(ctx context.Context, i int, ev change.Event) error {
		if i == 4 { // second row of the third transaction... see open()
			time.Sleep(100 * time.Millisecond)
		}
		return nil
	}
	require.NoError(t, runUntil(t, c, src, src.done))
	requireExactlyOnce(t, d, s, 3)
	eps, err := l.Epochs()
	require.NoError(t, err)
	for _, e := range eps {
		i := indexOf(t, e.End)
		require.Positive(t, i, "epoch %d ends at a transaction boundary", e.Number)
	}
}

func TestSchemaBarrierCommitsBeforeApplySchema(t *testing.T) {
	l := openLedger(t, "")
	d := twopctest.NewSink("doris")
	cfg := testConfig()
	cfg.CheckpointInterval = time.Hour // only the schema event cuts
	c, err := twopc.New(cfg, l, []twopc.Sink{d}, testLogger(t))
	require.NoError(t, err)
	s := makeScript(6)
	ts := change.TableSchema{Target: tblA, Cause: "ALTER TABLE t1 ADD COLUMN c INT",
		Changes: []change.SchemaChange{{Kind: change.AddColumn, Column: change.Column{Name: "c"}}}}
	s.txns[3].schema = &ts
	var visibleAtSchema int
	d.SetFaults(twopctest.Faults{Before: func(op twopctest.Op, _ uint64, _ string) error {
		if op == twopctest.OpApplySchema {
			visibleAtSchema = len(d.Visible())
		}
		return nil
	}})
	src := s.open(t, nil)
	require.NoError(t, runUntil(t, c, src, src.done))
	requireExactlyOnce(t, d, s, 6)
	require.Len(t, d.Schemas(tblA), 1)
	require.Equal(t, 1+2+3, visibleAtSchema, "the three transactions before the schema change were committed first")
	require.Empty(t, d.Violations(), "ApplySchema never runs with an epoch open")
}

func TestPipelinedCommitsStayInOrder(t *testing.T) {
	l := openLedger(t, "")
	d := twopctest.NewSink("doris")
	cfg := testConfig()
	cfg.MaxEpochRows = 1 // every transaction is an epoch
	cfg.CheckpointInterval = time.Hour
	c, err := twopc.New(cfg, l, []twopc.Sink{d}, testLogger(t))
	require.NoError(t, err)
	s := makeScript(8)

	var mu sync.Mutex
	var commitOrder []uint64
	streamedWhileCommitting := false
	inCommit := false
	epochOf := func(label string) uint64 {
		for _, tx := range d.Txns() {
			if tx.Label == label {
				return tx.Epoch
			}
		}
		return 0
	}
	d.SetFaults(twopctest.Faults{
		Before: func(op twopctest.Op, _ uint64, label string) error {
			switch op {
			case twopctest.OpCommit:
				mu.Lock()
				inCommit = true
				mu.Unlock()
				time.Sleep(15 * time.Millisecond) // slow commits: the next epoch streams meanwhile
			case twopctest.OpWrite:
				mu.Lock()
				streamedWhileCommitting = streamedWhileCommitting || inCommit
				mu.Unlock()
			}
			return nil
		},
		After: func(op twopctest.Op, _ uint64, label string) error {
			if op == twopctest.OpCommit {
				mu.Lock()
				inCommit = false
				commitOrder = append(commitOrder, epochOf(label))
				mu.Unlock()
			}
			return nil
		},
	})
	src := s.open(t, nil)
	require.NoError(t, runUntil(t, c, src, src.done))
	requireExactlyOnce(t, d, s, len(s.txns))
	mu.Lock()
	defer mu.Unlock()
	require.IsNonDecreasing(t, commitOrder)
	require.GreaterOrEqual(t, len(commitOrder), 8)
	require.True(t, streamedWhileCommitting, "epoch N+1 streamed while N committed")
}

func TestPreCommitFailureAbortsAndRestartRereads(t *testing.T) {
	path := ""
	l := openLedger(t, path)
	d := twopctest.NewSink("doris")
	cfg := testConfig()
	cfg.MaxEpochRows = 3
	cfg.CheckpointInterval = time.Hour
	c, err := twopc.New(cfg, l, []twopc.Sink{d}, testLogger(t))
	require.NoError(t, err)
	s := makeScript(9)
	failed := false
	d.SetFaults(twopctest.Faults{Before: func(op twopctest.Op, epoch uint64, _ string) error {
		if op == twopctest.OpPreCommit && epoch == 3 && !failed {
			failed = true
			return twopctest.ErrInjected
		}
		return nil
	}})
	src := s.open(t, nil)
	err = c.Run(t.Context(), src)
	require.ErrorIs(t, err, twopctest.ErrInjected)

	e3, err := l.Epoch(3)
	require.NoError(t, err)
	require.Equal(t, ledger.StateAborted, e3.State, "aborted in-process once every label was confirmed aborted")
	for _, tx := range d.Txns() {
		if tx.Epoch == 3 {
			require.Equal(t, twopctest.StateAborted, tx.State)
		}
	}

	// Restart: recover, reopen at the resume position, run to the end.
	res, err := twopc.Recover(t.Context(), l, []twopc.Sink{d}, testLogger(t))
	require.NoError(t, err)
	next, err := l.NextEpoch()
	require.NoError(t, err)
	require.Greater(t, next, uint64(3))
	src = s.open(t, res)
	require.NoError(t, runUntil(t, c, src, src.done))
	requireExactlyOnce(t, d, s, len(s.txns))
}

func TestWriteFailureLeavesOpenEpochForRecoveryWhenAbortFails(t *testing.T) {
	l := openLedger(t, "")
	d := twopctest.NewSink("doris")
	c, err := twopc.New(testConfig(), l, []twopc.Sink{d}, testLogger(t))
	require.NoError(t, err)
	s := makeScript(5)
	d.SetFaults(twopctest.Faults{Before: func(op twopctest.Op, epoch uint64, label string) error {
		switch op {
		case twopctest.OpWrite:
			if label == twopctest.Label("doris", tblB, 1) {
				return twopctest.ErrInjected
			}
		case twopctest.OpAbort, twopctest.OpTxnAbort:
			return errors.New("destination unreachable")
		}
		return nil
	}})
	err = c.Run(t.Context(), s.open(t, nil))
	require.ErrorIs(t, err, twopctest.ErrInjected)
	un, err := l.Unfinished()
	require.NoError(t, err)
	require.Len(t, un, 1)
	require.Equal(t, ledger.StateOpen, un[0].State)
	require.Len(t, un[0].Intents, 2, "both labels were intended before their first byte")

	// Run refuses to start over an unfinished ledger.
	require.ErrorIs(t, c.Run(t.Context(), s.open(t, nil)), twopc.ErrNeedsRecovery)

	d.SetFaults(twopctest.Faults{})
	res, err := twopc.Recover(t.Context(), l, []twopc.Sink{d}, testLogger(t))
	require.NoError(t, err)
	require.Nil(t, res)
	for _, tx := range d.Txns() {
		require.Equal(t, twopctest.StateAborted, tx.State)
	}
}

func TestShutdownFinishesOpenEpoch(t *testing.T) {
	l := openLedger(t, "")
	d := twopctest.NewSink("doris")
	cfg := testConfig()
	cfg.CheckpointInterval = time.Hour // only the shutdown cuts
	c, err := twopc.New(cfg, l, []twopc.Sink{d}, testLogger(t))
	require.NoError(t, err)
	s := makeScript(5)
	src := s.open(t, nil)
	require.NoError(t, runUntil(t, c, src, src.done))
	requireExactlyOnce(t, d, s, 5)
	res, err := l.Resume()
	require.NoError(t, err)
	require.Equal(t, tokenOf(5), res)
	un, err := l.Unfinished()
	require.NoError(t, err)
	require.Empty(t, un)
}

func TestShutdownInsideTransactionAbortsAfterGrace(t *testing.T) {
	l := openLedger(t, "")
	d := twopctest.NewSink("doris")
	cfg := testConfig()
	cfg.CheckpointInterval = time.Hour
	c, err := twopc.New(cfg, l, []twopc.Sink{d}, testLogger(t))
	require.NoError(t, err)
	s := makeScript(3)
	src := s.open(t, nil)
	stuck := make(chan struct{})
	src.block = func(ctx context.Context, i int, ev change.Event) error {
		if i == 3 { // after the rows of the second transaction, before its commit
			close(stuck)
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx, src) }()
	<-stuck
	cancel()
	require.NoError(t, <-errc)
	require.Empty(t, d.Visible(), "the epoch held a partial transaction: all of it is aborted and re-read later")
	require.NotEmpty(t, d.Txns())
	for _, tx := range d.Txns() {
		require.Equal(t, twopctest.StateAborted, tx.State)
	}
	un, err := l.Unfinished()
	require.NoError(t, err)
	require.Empty(t, un)
	res, err := l.Resume()
	require.NoError(t, err)
	require.Nil(t, res, "nothing committed, so the resume position did not move")
}

func TestIdleSourceAdvancesResumeWithoutEpochRecords(t *testing.T) {
	l := openLedger(t, "")
	d := twopctest.NewSink("doris")
	c, err := twopc.New(testConfig(), l, []twopc.Sink{d}, testLogger(t))
	require.NoError(t, err)
	src := &progressSource{}
	require.NoError(t, runUntil(t, c, src, func() bool {
		res, err := l.Resume()
		require.NoError(t, err)
		return string(res) == "p5"
	}))
	eps, err := l.Epochs()
	require.NoError(t, err)
	require.Empty(t, eps, "empty epochs leave no records")
	require.Empty(t, d.Txns())
}

// progressSource emits five progress tokens, slowly, then idles.
type progressSource struct{ n int }

func (p *progressSource) Next(ctx context.Context) (change.Event, error) {
	if p.n >= 5 {
		<-ctx.Done()
		return change.Event{}, ctx.Err()
	}
	select {
	case <-time.After(10 * time.Millisecond):
	case <-ctx.Done():
		return change.Event{}, ctx.Err()
	}
	p.n++
	return change.Event{Kind: change.EventProgress, Token: change.Token("p" + string(rune('0'+p.n)))}, nil
}

func TestCommitAbortedByDestinationRequestsRewind(t *testing.T) {
	l := openLedger(t, "")
	d := twopctest.NewSink("doris")
	cfg := testConfig()
	cfg.MaxEpochRows = 2
	c, err := twopc.New(cfg, l, []twopc.Sink{d}, testLogger(t))
	require.NoError(t, err)
	s := makeScript(6)
	d.SetFaults(twopctest.Faults{Before: func(op twopctest.Op, epoch uint64, label string) error {
		if op == twopctest.OpCommit {
			for _, tx := range d.Txns() {
				if tx.Epoch == 2 {
					d.Expire(tx.Label) // the pre-commit timeout passed while epoch 1 committed
				}
			}
		}
		return nil
	}})
	err = c.Run(t.Context(), s.open(t, nil))
	var rw *twopc.RewindError
	require.ErrorAs(t, err, &rw)
	require.ErrorIs(t, err, twopc.ErrRestart)
	require.Equal(t, uint64(2), rw.Epoch)

	d.SetFaults(twopctest.Faults{})
	res, err := twopc.Recover(t.Context(), l, []twopc.Sink{d}, testLogger(t))
	require.NoError(t, err)
	e2, err := l.Epoch(2)
	require.NoError(t, err)
	require.Equal(t, ledger.StateAborted, e2.State)
	require.Equal(t, e2.Start, res, "resume at the rewound epoch's start")
	src := s.open(t, res)
	require.NoError(t, runUntil(t, c, src, src.done))
	requireExactlyOnce(t, d, s, len(s.txns))
}

func TestCommitUnknownStopsInDoubt(t *testing.T) {
	l := openLedger(t, "")
	d := twopctest.NewSink("doris")
	cfg := testConfig()
	cfg.MaxEpochRows = 2
	c, err := twopc.New(cfg, l, []twopc.Sink{d}, testLogger(t))
	require.NoError(t, err)
	s := makeScript(4)
	d.SetFaults(twopctest.Faults{Before: func(op twopctest.Op, epoch uint64, label string) error {
		if op == twopctest.OpCommit && label == twopctest.Label("doris", tblA, 1) {
			d.Forget(label)
		}
		return nil
	}})
	err = c.Run(t.Context(), s.open(t, nil))
	var doubt *twopc.InDoubtError
	require.ErrorAs(t, err, &doubt)
	require.Equal(t, uint64(1), doubt.Epoch)
	require.Contains(t, err.Error(), "--epoch 1 --assume committed")
	require.Contains(t, err.Error(), twopctest.Label("doris", tblA, 1))
}

func TestConfigValidate(t *testing.T) {
	require.NoError(t, twopc.DefaultConfig().Validate())
	cfg := twopc.DefaultConfig()
	cfg.CheckpointInterval = 0
	require.Error(t, cfg.Validate())
	_, err := twopc.New(twopc.DefaultConfig(), nil, nil, nil)
	require.Error(t, err, "no sinks")
	_, err = twopc.New(twopc.DefaultConfig(), nil, []twopc.Sink{twopctest.NewSink("x"), twopctest.NewSink("x")}, nil)
	require.Error(t, err, "repeated sink names")
}
