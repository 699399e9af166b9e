package ledger

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/shardsync/shardsync/change"
)

func openTest(t *testing.T, path string) *Ledger {
	t.Helper()
	l, err := Open(path, Options{Timeout: 200 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func txn(sink, label string) SinkTxn {
	return SinkTxn{Sink: sink, Target: change.TableID{Database: "d", Table: "t"}, Label: label}
}

func TestFreshLedger(t *testing.T) {
	l := openTest(t, filepath.Join(t.TempDir(), "ledger.db"))
	next, err := l.NextEpoch()
	require.NoError(t, err)
	require.Equal(t, uint64(1), next)
	res, err := l.Resume()
	require.NoError(t, err)
	require.Nil(t, res)
	eps, err := l.Epochs()
	require.NoError(t, err)
	require.Empty(t, eps)
}

func TestEpochLifecycle(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openTest(t, path)

	require.NoError(t, l.Intend(ctx, 1, change.Token("s1"), txn("doris", "p_t_1")))
	require.NoError(t, l.Intend(ctx, 1, change.Token("s1"), txn("doris", "p_t_1")), "repeating an intent is a no-op")
	require.NoError(t, l.Intend(ctx, 1, change.Token("s1"), txn("maxcompute", "p_t_1")))
	e, err := l.Epoch(1)
	require.NoError(t, err)
	require.Equal(t, StateOpen, e.State)
	require.Len(t, e.Intents, 2)
	named := txn("maxcompute", "p_t_1")
	named.TxnID, named.Extra = "S123", []byte(`{"session":"S123"}`)
	require.NoError(t, l.Intend(ctx, 1, change.Token("s1"), named), "a repeated intent may name the destination's txn")
	require.NoError(t, l.Intend(ctx, 1, change.Token("s1"), txn("maxcompute", "p_t_1")), "a bare repeat keeps the name")
	e, err = l.Epoch(1)
	require.NoError(t, err)
	require.Len(t, e.Intents, 2)
	require.Equal(t, "S123", e.Intents[1].TxnID)
	require.JSONEq(t, `{"session":"S123"}`, string(e.Intents[1].Extra))
	next, err := l.NextEpoch()
	require.NoError(t, err)
	require.Equal(t, uint64(2), next)

	p := txn("doris", "p_t_1")
	p.TxnID = "42"
	require.NoError(t, l.Precommit(ctx, 1, change.Token("e1"), []SinkTxn{p}))
	res, err := l.Resume()
	require.NoError(t, err)
	require.Nil(t, res, "the resume position moves only at COMMITTED")

	require.NoError(t, l.Commit(ctx, 1, ""))
	require.NoError(t, l.Commit(ctx, 1, ""), "committing twice is a no-op")
	res, err = l.Resume()
	require.NoError(t, err)
	require.Equal(t, change.Token("e1"), res)

	// Survives a reopen.
	require.NoError(t, l.Close())
	l = openTest(t, path)
	e, err = l.Epoch(1)
	require.NoError(t, err)
	require.Equal(t, StateCommitted, e.State)
	require.Equal(t, "42", e.Prepared[0].TxnID)
	require.Equal(t, change.Token("s1"), e.Start)
	require.Equal(t, change.Token("e1"), e.End)
}

func TestInvalidTransitions(t *testing.T) {
	ctx := t.Context()
	l := openTest(t, filepath.Join(t.TempDir(), "ledger.db"))
	require.NoError(t, l.Intend(ctx, 3, nil, txn("doris", "a")))

	require.ErrorIs(t, l.Commit(ctx, 3, ""), ErrTransition, "OPEN cannot commit")
	require.ErrorIs(t, l.Commit(ctx, 9, ""), ErrNotFound)
	require.ErrorIs(t, l.Intend(ctx, 3, change.Token("other"), txn("doris", "b")), ErrTransition, "start token is fixed")
	require.ErrorIs(t, l.Intend(ctx, 2, nil, txn("doris", "x")), ErrEpochReused, "numbers below next are used")
	require.ErrorIs(t, l.Precommit(ctx, 3, nil, []SinkTxn{txn("doris", "never-intended")}), ErrIntent)
	require.ErrorIs(t, l.Precommit(ctx, 7, nil, []SinkTxn{txn("doris", "x")}), ErrIntent)

	require.NoError(t, l.Precommit(ctx, 3, change.Token("e"), []SinkTxn{txn("doris", "a")}))
	require.ErrorIs(t, l.Precommit(ctx, 3, change.Token("e"), nil), ErrTransition)
	require.ErrorIs(t, l.Intend(ctx, 3, nil, txn("doris", "c")), ErrTransition)
	require.NoError(t, l.Commit(ctx, 3, ""))
	require.ErrorIs(t, l.Abort(ctx, 3, "x"), ErrTransition, "COMMITTED cannot abort")

	require.NoError(t, l.Intend(ctx, 4, change.Token("e"), txn("doris", "a4")))
	require.NoError(t, l.Abort(ctx, 4, "test"))
	require.NoError(t, l.Abort(ctx, 4, "test"), "aborting twice is a no-op")
	require.ErrorIs(t, l.Commit(ctx, 4, ""), ErrTransition)
	require.Error(t, l.Intend(ctx, 5, nil, SinkTxn{Sink: "doris"}), "a label is required")
}

func TestCommitOrderAndAdvance(t *testing.T) {
	ctx := t.Context()
	l := openTest(t, filepath.Join(t.TempDir(), "ledger.db"))
	require.NoError(t, l.Intend(ctx, 1, change.Token("a"), txn("doris", "l1")))
	require.NoError(t, l.Precommit(ctx, 1, change.Token("b"), []SinkTxn{txn("doris", "l1")}))
	require.NoError(t, l.Intend(ctx, 2, change.Token("b"), txn("doris", "l2")))
	require.NoError(t, l.Precommit(ctx, 2, change.Token("c"), []SinkTxn{txn("doris", "l2")}))

	require.ErrorIs(t, l.Commit(ctx, 2, ""), ErrOrder)
	require.ErrorIs(t, l.Advance(ctx, 3, change.Token("d")), ErrOrder)
	require.ErrorIs(t, l.Advance(ctx, 2, change.Token("d")), ErrTransition, "a recorded epoch is finished by Commit")
	require.NoError(t, l.Commit(ctx, 1, ""))
	require.NoError(t, l.Commit(ctx, 2, ""))
	require.NoError(t, l.Advance(ctx, 3, change.Token("d")))
	res, err := l.Resume()
	require.NoError(t, err)
	require.Equal(t, change.Token("d"), res)
	next, err := l.NextEpoch()
	require.NoError(t, err)
	require.Equal(t, uint64(3), next, "an empty epoch does not consume a number")

	un, err := l.Unfinished()
	require.NoError(t, err)
	require.Empty(t, un)
}

func TestPruneKeepsUnfinished(t *testing.T) {
	ctx := t.Context()
	l, err := Open(filepath.Join(t.TempDir(), "ledger.db"), Options{Keep: 3})
	require.NoError(t, err)
	defer l.Close()
	// Epoch 1 stays PRECOMMITTED; 2..10 are aborted (abort needs no order).
	require.NoError(t, l.Intend(ctx, 1, nil, txn("doris", "l1")))
	require.NoError(t, l.Precommit(ctx, 1, nil, []SinkTxn{txn("doris", "l1")}))
	for n := uint64(2); n <= 10; n++ {
		require.NoError(t, l.Intend(ctx, n, nil, txn("doris", "l")))
		require.NoError(t, l.Abort(ctx, n, "test"))
	}
	eps, err := l.Epochs()
	require.NoError(t, err)
	var nums []uint64
	for _, e := range eps {
		nums = append(nums, e.Number)
	}
	require.Equal(t, []uint64{1, 8, 9, 10}, nums)
	next, err := l.NextEpoch()
	require.NoError(t, err)
	require.Equal(t, uint64(11), next, "pruning never lowers the next number")
}

func TestSecondOpenerNamesHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openTest(t, path)
	_, err := Open(path, Options{Timeout: 50 * time.Millisecond})
	require.ErrorIs(t, err, ErrLocked)
	require.Contains(t, err.Error(), path)
	require.Contains(t, err.Error(), "pid "+strconv.Itoa(os.Getpid()))
	host, _ := os.Hostname()
	require.Contains(t, err.Error(), host)

	require.NoError(t, l.Close())
	_, statErr := os.Stat(holderPath(path))
	require.ErrorIs(t, statErr, os.ErrNotExist, "Close removes the holder file")
	l2 := openTest(t, path)
	require.NotNil(t, l2)
}

func TestDamagedLedgerIsReportedNotReset(t *testing.T) {
	ctx := t.Context()
	cases := []struct {
		name    string
		prepare func(t *testing.T, path string)
		want    string
	}{
		{"garbage file", func(t *testing.T, path string) {
			require.NoError(t, os.WriteFile(path, []byte("this is not a bbolt file, it is text repeated ......................."), 0o600))
		}, "damaged"},
		{"foreign bbolt file", func(t *testing.T, path string) {
			db, err := bolt.Open(path, 0o600, nil)
			require.NoError(t, err)
			require.NoError(t, db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("other")); return err }))
			require.NoError(t, db.Close())
		}, "bucket is missing"},
		{"undecodable epoch record", func(t *testing.T, path string) {
			l, err := Open(path, Options{})
			require.NoError(t, err)
			require.NoError(t, l.Intend(ctx, 1, nil, txn("doris", "a")))
			require.NoError(t, l.db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket(bucketEpochs).Put(epochKey(1), []byte(`{"v":1,"epoch":1,"state":"MAYBE"}`))
			}))
			require.NoError(t, l.Close())
		}, "record of epoch 1"},
		{"missing next epoch", func(t *testing.T, path string) {
			l, err := Open(path, Options{})
			require.NoError(t, err)
			require.NoError(t, l.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyNext) }))
			require.NoError(t, l.Close())
		}, "next epoch number"},
		{"future format", func(t *testing.T, path string) {
			l, err := Open(path, Options{})
			require.NoError(t, err)
			require.NoError(t, l.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyFormat, []byte{9}) }))
			require.NoError(t, l.Close())
		}, "format version"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger.db")
			tc.prepare(t, path)
			before, err := os.ReadFile(path)
			require.NoError(t, err)
			_, err = Open(path, Options{Timeout: 100 * time.Millisecond})
			require.ErrorIs(t, err, ErrDamaged)
			require.Contains(t, err.Error(), tc.want)
			require.Contains(t, err.Error(), path)
			require.Contains(t, err.Error(), "Do not delete")
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, before, after, "a damaged ledger is never rewritten")
		})
	}
}

func TestStateText(t *testing.T) {
	for s := StateOpen; s <= StateAborted; s++ {
		b, err := s.MarshalText()
		require.NoError(t, err)
		var got State
		require.NoError(t, got.UnmarshalText(b))
		require.Equal(t, s, got)
	}
	var s State
	require.Error(t, s.UnmarshalText([]byte("DONE")))
	_, err := State(0).MarshalText()
	require.Error(t, err)
}

func TestLedgerID(t *testing.T) {
	dir := t.TempDir()
	a := openTest(t, filepath.Join(dir, "a.db"))
	b := openTest(t, filepath.Join(dir, "b.db"))
	require.Regexp(t, `^[0-9a-f]{16}$`, a.ID())
	require.NotEqual(t, a.ID(), b.ID(), "every ledger gets its own id")
	require.False(t, a.IDAssigned())
	id := a.ID()
	require.NoError(t, a.Close())
	a = openTest(t, filepath.Join(dir, "a.db"))
	require.Equal(t, id, a.ID(), "the id is recorded in the ledger")
}

// TestLedgerIDAssignedToOldLedger opens a ledger as a shardsync from before
// ids wrote it (no id keys): it keeps working, gets an id once, keeps it.
func TestLedgerIDAssignedToOldLedger(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	l := openTest(t, path)
	require.NoError(t, l.Intend(t.Context(), 1, change.Token("s"), txn("doris", "p_d:t_1")))
	require.NoError(t, l.Close())
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		require.NoError(t, m.Delete(keyID))
		return m.Delete(keyIDOrigin)
	}))
	require.NoError(t, db.Close())

	l = openTest(t, path)
	require.Regexp(t, `^[0-9a-f]{16}$`, l.ID())
	require.True(t, l.IDAssigned())
	e, err := l.Epoch(1)
	require.NoError(t, err)
	require.Equal(t, "p_d:t_1", e.Intents[0].Label, "old labels stay as recorded")
	id := l.ID()
	require.NoError(t, l.Close())
	l = openTest(t, path)
	require.Equal(t, id, l.ID())
	require.True(t, l.IDAssigned())
}

func TestDecisionsPersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.db")
	l, err := Open(path, Options{})
	require.NoError(t, err)
	got, err := l.Decisions()
	require.NoError(t, err)
	require.Empty(t, got)
	require.Error(t, l.Decide(t.Context(), Decision{Position: "0-1-5", Action: "maybe"}))
	require.NoError(t, l.Decide(t.Context(), Decision{Position: "0-1-5", Action: "skip"}))
	require.NoError(t, l.Decide(t.Context(), Decision{Position: "0-1-5", Action: "apply", Note: "changed my mind"}))
	require.NoError(t, l.Close())
	l, err = Open(path, Options{})
	require.NoError(t, err)
	defer l.Close()
	got, err = l.Decisions()
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, "apply", got[0].Action)
}
