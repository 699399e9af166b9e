package merge

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/testenv"
)

// TestXAExactAcrossRestarts runs a workload in which a third of the
// transactions are XA transactions (a fifth of those rolled back after
// their prepare; some with FLUSH BINARY LOGS between the prepare and the
// decision, so the XA COMMIT is in another binlog file than the rows; all
// held prepared for a moment while the other connections commit) against
// real MariaDB, while the stream is read and restarted from the last token
// at random points, often while XA transactions are prepared and
// undecided. The merged result must equal the source, every change must
// appear exactly once, and no rolled-back change may appear.
func TestXAExactAcrossRestarts(t *testing.T) {
	t.Parallel()
	for i, mode := range snapshotModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			xaExactAcrossRestarts(t, mode, uint32(60+i))
		})
	}
}

func xaExactAcrossRestarts(t *testing.T, mode string, serverID uint32) {
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: serverID})
	spec := testenv.ShardSpec{Databases: 2, Tables: 2, Rows: 800, Seed: 11}
	require.NoError(t, spec.Create(t.Context(), m))
	cfg := testConfig(t, m, empRoute(t))
	cfg.ChunkSize = 100
	cfg.SnapshotMode = mode

	wl := testenv.Workload{Seed: 5, Rate: 250, Duration: 4 * time.Second, MultiShardFraction: 0.2, Conns: 3,
		XAFraction: 1.0 / 3, XAFlushFraction: 0.15}
	type result struct {
		r   *testenv.WorkloadResult
		err error
	}
	done := make(chan result, 1)
	go func() { r, err := wl.Run(t.Context(), m, spec); done <- result{r, err} }()
	time.Sleep(200 * time.Millisecond)

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 21))
	c := newConsumer(t)
	c.identify = identifyChange
	var tok change.Token
	var wres *testenv.WorkloadResult
	restarts, withPendingXA, midSnapshot := 0, 0, 0
	var end binPos
	for {
		src, err := Open(t.Context(), cfg, tok, nil)
		require.NoError(t, err)
		stopAfter := 1 + rng.IntN(40)
		n := 0
		finish := false
		c.run(t.Context(), src, func() bool {
			if wres == nil {
				select {
				case d := <-done:
					require.NoError(t, d.err)
					wres = d.r
					end = currentPos(t, m)
				default:
				}
			}
			if wres != nil && c.caughtUp(end) {
				finish = true
				return true
			}
			n++
			return n >= stopAfter && restarts < 60
		})
		if !src.Progress().Done {
			midSnapshot++
		}
		require.NoError(t, src.Close())
		c.crash() // whatever came after the last token is forgotten
		tok = c.token
		if st, err := parseToken(tok); err == nil && len(st.XA) > 0 {
			withPendingXA++
		}
		restarts++
		if finish {
			break
		}
	}

	want, err := testenv.ReadMergedState(context.Background(), m, spec)
	require.NoError(t, err)
	require.Empty(t, want.Diff(c.strState(), 10), "merged stream differs from the source")
	for id, n := range c.seen {
		require.Equal(t, 1, n, "change %s appeared %d times", id, n)
	}
	for _, ch := range wres.RolledBackChanges {
		if ch.Op != testenv.OpDelete {
			require.Zero(t, c.seen[changeIdentity(ch)], "rolled-back change %d appeared", ch.ID)
		}
	}
	require.Positive(t, wres.XATxns, "no XA transaction committed")
	require.Positive(t, wres.XARolledBack, "no XA transaction rolled back")
	require.Positive(t, wres.XAFlushed, "no XA decision landed in another binlog file")
	require.Positive(t, withPendingXA, "no restart happened while an XA transaction was prepared and undecided")
	t.Logf("%d restarts (%d mid-snapshot, %d with prepared XA transactions in the token); workload %d txns, %d XA committed, %d XA rolled back, %d XA across a binlog flush",
		restarts, midSnapshot, withPendingXA, wres.Txns, wres.XATxns, wres.XARolledBack, wres.XAFlushed)
}
