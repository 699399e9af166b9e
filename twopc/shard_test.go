package twopc_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/ledger"
	"github.com/shardsync/shardsync/twopc"
	"github.com/shardsync/shardsync/twopc/twopctest"
)

var (
	shard1 = change.TableID{Database: "s1", Table: "t1"}
	shard2 = change.TableID{Database: "s1", Table: "t2"}
)

// deleteScript: rows of two shards, a TRUNCATE of shard1 at txn cut, then
// more rows of both shards.
func deleteScript(n, cut int) *script {
	s := &script{chunk: 2}
	for i := range n {
		if i == cut {
			s.txns = append(s.txns, srcTxn{del: &change.ShardDelete{Target: tblA, Shard: shard1,
				DatabaseColumn: "database_name", TableColumn: "table_name", Cause: "TRUNCATE s1.t1"}})
			continue
		}
		src := shard1
		if i%2 == 1 {
			src = shard2
		}
		s.txns = append(s.txns, srcTxn{rows: []change.Row{{Op: change.Insert, Target: tblA, Source: src, After: []change.Value{int64(i)}}}})
	}
	return s
}

// requireAfterDelete checks that sink shows every row of the script exactly
// once, except shard1's rows before the delete.
func requireAfterDelete(t *testing.T, sink *twopctest.Sink, s *script) {
	t.Helper()
	want := map[int64]int{}
	for _, tx := range s.txns {
		if tx.del != nil {
			for k, v := range want {
				if v == 1 && s.txns[k].rows[0].Source == tx.del.Shard {
					delete(want, k)
				}
			}
			continue
		}
		want[tx.rows[0].After[0].(int64)] = 1
	}
	got := map[int64]int{}
	for _, r := range sink.Visible() {
		got[r.After[0].(int64)]++
	}
	require.Equal(t, want, got, "sink %s", sink.Name())
}

func TestShardDeleteIsOrderedBetweenEpochs(t *testing.T) {
	l := openLedger(t, "")
	d, m := twopctest.NewSink("doris"), twopctest.NewSink("maxcompute")
	c, err := twopc.New(testConfig(), l, []twopc.Sink{d, m}, testLogger(t))
	require.NoError(t, err)
	s := deleteScript(30, 17)
	src := s.open(t, nil)
	require.NoError(t, runUntil(t, c, src, src.done))
	for _, k := range []*twopctest.Sink{d, m} {
		requireAfterDelete(t, k, s)
		require.Len(t, k.Deletes(), 1)
		require.Empty(t, k.Violations())
	}
	res, err := l.Resume()
	require.NoError(t, err)
	require.Equal(t, tokenOf(len(s.txns)), res)
	eps, err := l.Epochs()
	require.NoError(t, err)
	var dels int
	for _, e := range eps {
		require.Equal(t, ledger.StateCommitted, e.State)
		if len(e.Deletes) > 0 {
			dels++
			require.Equal(t, tokenOf(17), e.Start)
			require.Equal(t, tokenOf(18), e.End)
		}
	}
	require.Equal(t, 1, dels)
}

// A crash at each step of the delete epoch: before the delete reached the
// sink, after it did (reply lost), and before COMMITTED was recorded.
// Recovery finishes it, the stream resumes after it, and the target ends
// exact: the delete is neither skipped nor applied after newer rows.
func TestShardDeleteSurvivesCrashes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after bool // fail after the delete took effect
	}{{"before delete", false}, {"after delete", true}} {
		t.Run(tc.name, func(t *testing.T) {
			path := t.TempDir() + "/ledger.db"
			l, err := ledger.Open(path, ledger.Options{})
			require.NoError(t, err)
			d := twopctest.NewSink("doris")
			crash := func(op twopctest.Op, _ uint64, _ string) error {
				if op == twopctest.OpDeleteShard {
					d.Crash()
					return twopctest.ErrInjected
				}
				return nil
			}
			if tc.after {
				d.SetFaults(twopctest.Faults{After: crash})
			} else {
				d.SetFaults(twopctest.Faults{Before: crash})
			}
			cfg := testConfig()
			c, err := twopc.New(cfg, l, []twopc.Sink{d}, testLogger(t))
			require.NoError(t, err)
			s := deleteScript(24, 9)
			src := s.open(t, nil)
			err = runUntil(t, c, src, src.done)
			require.Error(t, err)
			require.True(t, errors.Is(err, twopc.ErrRestart), "%v", err)
			un, err := l.Unfinished()
			require.NoError(t, err)
			require.Len(t, un, 1)
			require.Equal(t, ledger.StatePrecommitted, un[0].State)
			require.Len(t, un[0].Deletes, 1)
			if tc.after {
				require.Len(t, d.Deletes(), 1)
			} else {
				require.Empty(t, d.Deletes())
			}
			require.NoError(t, l.Close())

			// restart: recovery runs the delete (again), then the stream
			// resumes after it
			l, err = ledger.Open(path, ledger.Options{})
			require.NoError(t, err)
			defer l.Close()
			d2 := d.Restart()
			plan, err := twopc.Plan(l)
			require.NoError(t, err)
			require.Equal(t, twopc.ActionDelete, plan.Items[0].Action)
			tok, err := twopc.Recover(context.Background(), l, []twopc.Sink{d2}, testLogger(t))
			require.NoError(t, err)
			require.Equal(t, tokenOf(10), tok)
			require.Len(t, d2.Deletes(), map[bool]int{false: 1, true: 2}[tc.after])
			c, err = twopc.New(cfg, l, []twopc.Sink{d2}, testLogger(t))
			require.NoError(t, err)
			src = s.open(t, tok)
			require.NoError(t, runUntil(t, c, src, src.done))
			requireAfterDelete(t, d2, s)
		})
	}
}

type noDeleteSink struct{ twopc.Sink }

func TestShardDeleteStopsWhenASinkCannotDelete(t *testing.T) {
	l := openLedger(t, "")
	d := twopctest.NewSink("doris")
	c, err := twopc.New(testConfig(), l, []twopc.Sink{noDeleteSink{d}}, testLogger(t))
	require.NoError(t, err)
	s := deleteScript(10, 5)
	src := s.open(t, nil)
	err = runUntil(t, c, src, src.done)
	require.ErrorIs(t, err, twopc.ErrShardDelete)
	require.ErrorContains(t, err, "s1.t1")
	un, err := l.Unfinished()
	require.NoError(t, err)
	require.Empty(t, un, "nothing is recorded for a delete no sink can run")
	res, err := l.Resume()
	require.NoError(t, err)
	require.Equal(t, tokenOf(5), res)
}

// A recorded delete that a sink keeps refusing stops recovery; the
// operator settles it with an assumption (here: aborted, so the source
// re-reads the statement, where skip-event decides it).
func TestShardDeleteRefusedIsResolvedByTheOperator(t *testing.T) {
	l := openLedger(t, "")
	d := twopctest.NewSink("doris")
	refuse := twopctest.Faults{Before: func(op twopctest.Op, _ uint64, _ string) error {
		if op == twopctest.OpDeleteShard {
			return twopc.ErrShardDelete
		}
		return nil
	}}
	d.SetFaults(refuse)
	c, err := twopc.New(testConfig(), l, []twopc.Sink{d}, testLogger(t))
	require.NoError(t, err)
	s := deleteScript(12, 6)
	src := s.open(t, nil)
	err = runUntil(t, c, src, src.done)
	require.ErrorIs(t, err, twopc.ErrShardDelete)
	_, err = twopc.Resolve(context.Background(), l, []twopc.Sink{d}, twopc.ResolveOptions{Retry: testConfig().Commit}, testLogger(t))
	require.ErrorIs(t, err, twopc.ErrShardDelete)
	un, err := l.Unfinished()
	require.NoError(t, err)
	require.Len(t, un, 1)
	rep, err := twopc.Resolve(context.Background(), l, []twopc.Sink{d}, twopc.ResolveOptions{Assume: map[uint64]twopc.Outcome{un[0].Number: twopc.Aborted}, Retry: testConfig().Commit}, testLogger(t))
	require.NoError(t, err)
	require.Equal(t, tokenOf(6), rep.Resume)
	e, err := l.Epoch(un[0].Number)
	require.NoError(t, err)
	require.Equal(t, ledger.StateAborted, e.State)
	require.Empty(t, d.Deletes())
}
