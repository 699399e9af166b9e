package merge

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/testenv"
)

// identifyChange names the workload change a row image carries: inserts
// and updates by the token in last_name, deletes by shard, key and the
// before image's last_name (see testenv.Change). Snapshot rows carry the
// token of the last change before their chunk's watermark.
func identifyChange(r change.Row, s change.Schema) []string {
	name := func(vals []change.Value) (string, string) {
		m := rowMap(s, vals)
		return fmt.Sprintf("%s.%s#%v", m["database_name"], m["table_name"], m["emp_no"]), fmt.Sprint(m["last_name"])
	}
	switch r.Op {
	case change.Delete:
		k, ln := name(r.Before)
		return []string{"delete " + k + " " + ln}
	default:
		_, ln := name(r.After)
		if _, ok := testenv.TokenID(ln); ok {
			return []string{"write " + ln}
		}
		return nil
	}
}

func changeIdentity(c testenv.Change) string {
	if c.Op == testenv.OpDelete {
		return fmt.Sprintf("delete %s#%d %s", c.Shard, c.Key, c.Before["last_name"])
	}
	return "write " + c.After["last_name"]
}

// loadSetup creates ≥4 shards with enough rows for many chunks.
func loadSetup(t *testing.T, serverID uint32) (*testenv.MariaDB, testenv.ShardSpec) {
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: serverID})
	spec := testenv.ShardSpec{Databases: 2, Tables: 2, Rows: 2000, Seed: 7}
	require.NoError(t, spec.Create(t.Context(), m))
	return m, spec
}

// snapshotModes are the modes the load tests run in; the MariaDB test
// server supports both.
var snapshotModes = []string{SnapshotConsistent, SnapshotWatermark}

func TestExactnessUnderLoad(t *testing.T) {
	t.Parallel()
	for i, mode := range snapshotModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			exactnessUnderLoad(t, mode, uint32(20+i))
		})
	}
}

func exactnessUnderLoad(t *testing.T, mode string, serverID uint32) {
	m, spec := loadSetup(t, serverID)
	cfg := testConfig(t, m, empRoute(t))
	cfg.ChunkSize = 250
	cfg.SnapshotMode = mode

	// Phase A: writes while the snapshot runs.
	wa := testenv.Workload{Seed: 1, Rate: 400, Duration: 3 * time.Second, MultiShardFraction: 0.2, Conns: 2}
	type res struct {
		r   *testenv.WorkloadResult
		err error
	}
	done := make(chan res, 1)
	go func() { r, err := wa.Run(t.Context(), m, spec); done <- res{r, err} }()
	time.Sleep(300 * time.Millisecond)

	src, err := Open(t.Context(), cfg, nil, nil)
	require.NoError(t, err)
	defer src.Close()
	c := newConsumer(t)
	c.identify = identifyChange
	snapshotWhileLoad := false
	c.run(t.Context(), src, func() bool {
		if src.Progress().Done {
			select {
			case <-done:
				t.Fatal("workload ended before the snapshot: make the snapshot slower or the workload longer")
			default:
				snapshotWhileLoad = true
			}
			return true
		}
		return false
	})
	require.True(t, snapshotWhileLoad)
	a := <-done
	require.NoError(t, a.err)
	require.Positive(t, a.r.Txns)

	// Phase B: writes after the snapshot; every change must appear once.
	wb := testenv.Workload{Seed: 2, Rate: 600, Duration: 2 * time.Second, MultiShardFraction: 0.3, Conns: 2, FirstID: a.r.LastID + 1}
	b, err := wb.Run(t.Context(), m, spec)
	require.NoError(t, err)
	end := currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })

	want, err := testenv.ReadMergedState(t.Context(), m, spec)
	require.NoError(t, err)
	require.Empty(t, want.Diff(c.strState(), 10), "merged stream differs from the source")

	for id, n := range c.seen {
		require.Equal(t, 1, n, "change %s appeared %d times", id, n)
	}
	for _, ch := range b.Changes {
		require.Equal(t, 1, c.seen[changeIdentity(ch)], "change %d (%s %s) after the snapshot", ch.ID, ch.Op, ch.Shard)
	}
	for _, ch := range append(a.r.RolledBackChanges, b.RolledBackChanges...) {
		if ch.Op != testenv.OpDelete {
			require.Zero(t, c.seen[changeIdentity(ch)], "rolled-back change %d appeared", ch.ID)
		}
	}
	if mode == SnapshotWatermark {
		require.Positive(t, src.merged.Load(), "no chunk had a binlog slice merged: the watermark merge was not exercised")
	}
	t.Logf("phase A %d txns (%d changes), phase B %d txns (%d changes), %d source commits seen, %d chunks merged", a.r.Txns, len(a.r.Changes), b.Txns, len(b.Changes), c.commits, src.merged.Load())
}

func TestResumeFromRandomTokens(t *testing.T) {
	t.Parallel()
	for i, mode := range snapshotModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			resumeFromRandomTokens(t, mode, uint32(30+i))
		})
	}
}

func resumeFromRandomTokens(t *testing.T, mode string, serverID uint32) {
	m, spec := loadSetup(t, serverID)
	cfg := testConfig(t, m, empRoute(t))
	cfg.ChunkSize = 200
	cfg.SnapshotMode = mode

	wl := testenv.Workload{Seed: 3, Rate: 300, Duration: 4 * time.Second, MultiShardFraction: 0.2, Conns: 2}
	done := make(chan error, 1)
	var wres *testenv.WorkloadResult
	go func() { var err error; wres, err = wl.Run(t.Context(), m, spec); done <- err }()

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	c := newConsumer(t)
	c.identify = identifyChange
	var tok change.Token
	restarts, midSnapshot, midBinlog := 0, 0, 0
	workloadDone := false
	var end binPos // the binlog end once the workload is done
	for {
		src, err := Open(t.Context(), cfg, tok, nil)
		require.NoError(t, err)
		stopAfter := 1 + rng.IntN(25)
		n := 0
		finish := false
		c.run(t.Context(), src, func() bool {
			if !workloadDone {
				select {
				case err := <-done:
					require.NoError(t, err)
					workloadDone = true
					end = currentPos(t, m)
				default:
				}
			}
			if workloadDone && end.File != "" && c.caughtUp(end) {
				finish = true
				return true
			}
			n++
			return n >= stopAfter && restarts < 40
		})
		if !finish {
			if src.Progress().Done {
				midBinlog++
			} else {
				midSnapshot++
			}
		}
		// Crash: whatever came after the last token is forgotten.
		require.NoError(t, src.Close())
		c.crash()
		tok = c.token
		restarts++
		if finish {
			break
		}
	}
	want, err := testenv.ReadMergedState(context.Background(), m, spec)
	require.NoError(t, err)
	require.Empty(t, want.Diff(c.strState(), 10), "resumed stream differs from the source")
	for id, n := range c.seen {
		require.Equal(t, 1, n, "change %s appeared %d times across restarts", id, n)
	}
	require.Positive(t, midSnapshot, "no restart happened mid-snapshot")
	require.Positive(t, midBinlog, "no restart happened mid-binlog")
	t.Logf("%d restarts (%d mid-snapshot, %d mid-binlog), workload %d txns", restarts, midSnapshot, midBinlog, wres.Txns)
}

// TestWatermarkMergesSlices hammers one table while it is snapshotted in
// small chunks in the watermark mode: rows change between chunks' low and
// high watermarks, so binlog slices must be merged into chunks, and the
// result must still be exact.
func TestWatermarkMergesSlices(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 40})
	spec := testenv.ShardSpec{Databases: 1, Tables: 1, Rows: 1500, Seed: 11}
	require.NoError(t, spec.Create(t.Context(), m))
	cfg := testConfig(t, m, empRoute(t))
	cfg.ChunkSize = 20
	cfg.Readers = 1
	cfg.SnapshotMode = SnapshotWatermark

	wl := testenv.Workload{Seed: 5, Rate: 800, Duration: 3 * time.Second, Conns: 2}
	done := make(chan error, 1)
	go func() { _, err := wl.Run(t.Context(), m, spec); done <- err }()
	time.Sleep(200 * time.Millisecond)

	src, err := Open(t.Context(), cfg, nil, nil)
	require.NoError(t, err)
	defer src.Close()
	c := newConsumer(t)
	c.identify = identifyChange
	c.run(t.Context(), src, func() bool { return src.Progress().Done })
	require.NoError(t, <-done)
	end := currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })

	require.Positive(t, src.merged.Load(), "no chunk had a binlog slice merged")
	want, err := testenv.ReadMergedState(t.Context(), m, spec)
	require.NoError(t, err)
	require.Empty(t, want.Diff(c.strState(), 10), "merged stream differs from the source")
	for id, n := range c.seen {
		require.Equal(t, 1, n, "change %s appeared %d times", id, n)
	}
	t.Logf("%d chunks had a binlog slice merged", src.merged.Load())
}

func TestSnapshotModeConfig(t *testing.T) {
	r := empRoute(t)
	cfg := Config{Addr: "127.0.0.1:3306", User: "u", ServerID: 5400, Routes: []Route{r}}
	require.NoError(t, cfg.Validate())
	cfg.SnapshotMode = "lockless"
	err := cfg.Validate()
	require.ErrorContains(t, err, `snapshot mode "lockless" is unknown`)
	for _, mode := range []string{SnapshotAuto, SnapshotConsistent, SnapshotWatermark} {
		cfg.SnapshotMode = mode
		require.NoError(t, cfg.Validate())
	}
	cfg.SnapshotMode = ""
	cfg.setDefaults()
	require.Equal(t, SnapshotConsistent, cfg.snapshotMode("mariadb"))
	require.Equal(t, SnapshotWatermark, cfg.snapshotMode("mysql"))
	cfg.SnapshotMode = SnapshotWatermark
	require.Equal(t, SnapshotWatermark, cfg.snapshotMode("mariadb"))
	cfg.Readers = 3
	require.Equal(t, []uint32{5401, 5403}, []uint32{cfg.backfillServerID(0), cfg.backfillServerID(2)})
}
