package maxcompute

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/testenv/mcemu"
	"github.com/shardsync/shardsync/twopc"
)

// An epoch longer than the service's idle timeout: the sink's keep-alive
// reloads keep the session open between writes and until its commit.
func TestLongEpochKeepsSessionAlive(t *testing.T) {
	e := mcemu.New(mcemu.Options{UpsertIdleTimeout: 400 * time.Millisecond})
	t.Cleanup(e.Close)
	s := newSink(t, e, func(c *Config) { c.KeepAliveInterval = 50 * time.Millisecond })
	require.NoError(t, s.ApplySchema(t.Context(), empSchema(true)))
	tx, err := s.Begin(t.Context(), 1, &recorder{})
	require.NoError(t, err)
	require.NoError(t, tx.Write(t.Context(), []change.Row{ins(shard(1), 1, "a", "1.00")}))
	time.Sleep(1200 * time.Millisecond) // three idle timeouts without a write
	require.NoError(t, tx.Write(t.Context(), []change.Row{ins(shard(1), 2, "b", "2.00")}))
	ps, err := tx.PreCommit(t.Context())
	require.NoError(t, err)
	time.Sleep(1200 * time.Millisecond) // and a slow commit
	out, err := s.Commit(t.Context(), ps[0])
	require.NoError(t, err)
	require.Equal(t, twopc.Committed, out)
	require.Len(t, e.Rows("all_employees"), 2)
	sess := e.UpsertSessions()
	require.Len(t, sess, 1, "the session lived through the whole epoch")
	require.Greater(t, e.Requests("GET upserts"), 10, "reloaded by the keep-alive")
	n := e.Requests("GET upserts")
	time.Sleep(200 * time.Millisecond)
	require.Equal(t, n, e.Requests("GET upserts"), "the keep-alive stops with the commit")
}

// A session that reaches session.max-age, or that the service expires, is
// re-opened: the new session gets every record again, the ledger intent
// names it before its first record, and the table ends exact (nothing lost,
// nothing doubled), also when a later process commits it.
func TestSessionReopenedWithoutLossOrDoubles(t *testing.T) {
	for _, how := range []string{"max-age", "expired"} {
		t.Run(how, func(t *testing.T) {
			e := mcemu.New(mcemu.Options{})
			t.Cleanup(e.Close)
			maxAge := time.Hour
			if how == "max-age" {
				maxAge = 300 * time.Millisecond
			}
			s := newSink(t, e, func(c *Config) { c.SessionMaxAge = maxAge; c.SpoolDir = t.TempDir() })
			require.NoError(t, s.ApplySchema(t.Context(), empSchema(true)))
			rec := &recorder{}
			tx, err := s.Begin(t.Context(), 1, rec)
			require.NoError(t, err)
			m := model{}
			var first []change.Row
			for i := int64(1); i <= 400; i++ { // several PUTs (small bucket buffers)
				first = append(first, ins(shard(1), i, fmt.Sprintf("a%d", i), "1.00"))
			}
			first = append(first, upd(shard(1), 7, 7, "a7-v2", "2.00"), del(shard(1), 8))
			require.NoError(t, tx.Write(t.Context(), first))
			m.apply(first)
			require.Greater(t, e.Requests("PUT upserts"), 0, "some buckets were sent to the first session")
			old := rec.intents[len(rec.intents)-1].TxnID
			if how == "max-age" {
				time.Sleep(400 * time.Millisecond)
			} else {
				require.True(t, e.ExpireSession(old))
			}
			second := []change.Row{ins(shard(2), 1, "b", "3.00"), upd(shard(1), 9, 9, "a9-v2", "4.00"), del(shard(1), 10)}
			require.NoError(t, tx.Write(t.Context(), second))
			m.apply(second)
			ps, err := tx.PreCommit(t.Context())
			require.NoError(t, err)
			require.Len(t, ps, 1)
			require.NotEqual(t, old, ps[0].TxnID, "a new session")
			last := rec.intents[len(rec.intents)-1]
			require.Equal(t, ps[0].TxnID, last.TxnID, "the ledger names the new session")
			require.Equal(t, ps[0].Label, last.Label, "under the same label")
			st, ok := e.UpsertSession(old)
			require.True(t, ok)
			require.Contains(t, []string{"aborted", "expired"}, st.Status, "the old session can never commit")

			out, err := newSink(t, e).Commit(t.Context(), ps[0])
			require.NoError(t, err)
			require.Equal(t, twopc.Committed, out)
			require.Equal(t, m.rows(), emuRows(e, "all_employees"))
		})
	}
}

// A plain table's upload session is not re-opened: an epoch older than
// session.max-age fails with the fix, and nothing of it is committed.
func TestPlainEpochOlderThanMaxAgeFails(t *testing.T) {
	e := mcemu.New(mcemu.Options{})
	t.Cleanup(e.Close)
	s := newSink(t, e, func(c *Config) { c.SessionMaxAge = 200 * time.Millisecond })
	require.NoError(t, s.ApplySchema(t.Context(), empSchema(false)))
	tx, err := s.Begin(t.Context(), 1, &recorder{})
	require.NoError(t, err)
	require.NoError(t, tx.Write(t.Context(), []change.Row{ins(shard(1), 1, "a", "1.00")}))
	time.Sleep(300 * time.Millisecond)
	_, err = tx.PreCommit(t.Context())
	require.ErrorContains(t, err, "lower pipeline.checkpoint-interval")
	require.Empty(t, e.Rows("all_employees"))
}
