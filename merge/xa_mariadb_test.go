package merge

import (
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
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
	var end string // the server's GTID position once the workload is done
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
					end = gtidBinlogPos(t, m)
				default:
				}
			}
			if wres != nil && c.caughtUpGTID(end) {
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

// In the watermark snapshot mode a chunk is merged with the binlog slice
// up to its high watermark. An XA transaction changes the chunk only if its
// XA COMMIT is in the slice: rows of a transaction prepared but not decided
// by the high watermark (or rolled back) were not committed when the chunk
// was read and must not be merged into it.
func TestXAWatermarkSliceAppliesAtCommit(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 64})
	spec := testenv.ShardSpec{Databases: 1, Tables: 1, Rows: 10, Seed: 3}
	require.NoError(t, spec.Create(t.Context(), m))
	cfg := testConfig(t, m, empRoute(t))
	cfg.SnapshotMode = SnapshotWatermark
	src, err := Open(t.Context(), cfg, nil, nil)
	require.NoError(t, err)
	defer src.Close()
	c := newConsumer(t)
	c.run(t.Context(), src, func() bool { return src.Progress().Done })
	src.mu.Lock()
	sh := src.shards[change.TableID{Database: "emp_1", Table: "employees_1"}]
	src.mu.Unlock()
	require.NotNil(t, sh)

	ins := func(k int) string {
		return "INSERT INTO emp_1.employees_1 (emp_no, birth_date, first_name, last_name, gender, hire_date) VALUES (" +
			strconvItoa(k) + ", '1960-01-01', 'X', 'Y', 'M', '1990-01-01')"
	}
	replay := func(from, to binPos) []string {
		var got []string
		_, err := src.replaySlice(t.Context(), 5, sh, from, to, func(_ *shard, before, after []change.Value) {
			switch {
			case after == nil:
				got = append(got, "delete "+strconvItoa(int(before[0].(int64))))
			default:
				got = append(got, "write "+strconvItoa(int(after[0].(int64))))
			}
		})
		require.NoError(t, err)
		return got
	}

	from := currentPos(t, m)
	a, err := m.Connect("")
	require.NoError(t, err)
	defer a.Close()
	for _, q := range []string{"XA START 'p'", ins(1001), "XA END 'p'", "XA PREPARE 'p'"} {
		_, err := a.Execute(q)
		require.NoError(t, err, q)
	}
	require.NoError(t, m.Exec(ins(1002)))
	require.NoError(t, m.Exec("XA START 'r'", ins(1003), "XA END 'r'", "XA PREPARE 'r'", "XA ROLLBACK 'r'"))
	hw1 := currentPos(t, m)
	require.Equal(t, []string{"write 1002"}, replay(from, hw1), "rows of an undecided or rolled-back XA transaction were merged into a chunk")

	require.NoError(t, m.Exec("FLUSH BINARY LOGS"))
	_, err = a.Execute("XA COMMIT 'p'")
	require.NoError(t, err)
	require.NoError(t, m.Exec("XA START 'o'", ins(1004), "XA END 'o'", "XA COMMIT 'o' ONE PHASE"))
	hw2 := currentPos(t, m)
	require.Equal(t, []string{"write 1002", "write 1001", "write 1004"}, replay(from, hw2))
}

// A fresh start takes its position only when no XA transaction is
// prepared: the rows of one prepared before the position are not in the
// binlog it reads.
func TestXAFreshStartWaitsForPreparedXA(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 65})
	spec := testenv.ShardSpec{Databases: 1, Tables: 1, Rows: 10, Seed: 3}
	require.NoError(t, spec.Create(t.Context(), m))
	a, err := m.Connect("")
	require.NoError(t, err)
	defer a.Close()
	for _, q := range []string{"XA START 'early'", "UPDATE emp_1.employees_1 SET last_name='xa' WHERE emp_no=1", "XA END 'early'", "XA PREPARE 'early'"} {
		_, err := a.Execute(q)
		require.NoError(t, err, q)
	}
	cfg := testConfig(t, m, empRoute(t))
	type opening struct {
		src *Source
		err error
	}
	opened := make(chan opening, 1)
	go func() {
		src, err := Open(t.Context(), cfg, nil, nil)
		opened <- opening{src, err}
	}()
	select {
	case <-opened:
		t.Fatal("the stream started while an XA transaction was prepared")
	case <-time.After(time.Second):
	}
	_, err = a.Execute("XA COMMIT 'early'")
	require.NoError(t, err)
	var o opening
	select {
	case o = <-opened:
	case <-time.After(20 * time.Second):
		t.Fatal("the stream did not start after the XA transaction was committed")
	}
	require.NoError(t, o.err)
	src := o.src
	defer src.Close()
	c := newConsumer(t)
	end := currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })
	want, err := testenv.ReadMergedState(t.Context(), m, spec)
	require.NoError(t, err)
	require.Empty(t, want.Diff(c.strState(), 10))
}

func strconvItoa(n int) string { return strconv.Itoa(n) }

// gtidBinlogPos is the server's @@gtid_binlog_pos.
func gtidBinlogPos(t *testing.T, m *testenv.MariaDB) string {
	t.Helper()
	rows, err := m.Query("SELECT @@gtid_binlog_pos")
	require.NoError(t, err)
	return rows[0][0]
}

// caughtUpGTID reports whether the consumer's token has passed every
// transaction of the MariaDB GTID position want. (A file position is not
// enough after FLUSH BINARY LOGS: MariaDB writes a binlog checkpoint event
// after later transactions, so the binlog's end can lie after the last
// transaction boundary for good.)
func (c *consumer) caughtUpGTID(want string) bool {
	if c.token == nil {
		return false
	}
	st, err := parseToken(c.token)
	require.NoError(c.t, err)
	if !st.SnapshotDone {
		return false
	}
	seqs := func(pos string) map[string]uint64 {
		out := map[string]uint64{}
		for g := range strings.SplitSeq(pos, ",") {
			parts := strings.Split(strings.TrimSpace(g), "-")
			if len(parts) != 3 {
				continue
			}
			n, err := strconv.ParseUint(parts[2], 10, 64)
			require.NoError(c.t, err)
			out[parts[0]] = n
		}
		return out
	}
	have := seqs(st.Pos.GTID)
	for d, n := range seqs(want) {
		if have[d] < n {
			return false
		}
	}
	return true
}
