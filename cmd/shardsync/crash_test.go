package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
)

// opKey identifies one row operation a load applied: an upsert of a row
// image or a delete of one, by merged key and last_name (the workload's
// per-change token, or an initial row's generated name).
type opKey struct {
	del  bool
	key  testenv.MergedKey
	name string
}

func (k opKey) String() string {
	op := "upsert"
	if k.del {
		op = "delete"
	}
	return fmt.Sprintf("%s %s last_name=%s", op, k.key, k.name)
}

// appliedOps counts every row operation in the emulator's committed loads
// of one target.
func appliedOps(t *testing.T, emu *dorisemu.Emulator, db, table string) map[opKey]int {
	t.Helper()
	n := map[opKey]int{}
	for _, l := range emu.Loads() {
		if l.DB != db || l.Table != table {
			continue
		}
		for _, op := range l.Ops {
			r := op.Row
			k := opKey{del: op.Delete, name: render(r["last_name"]),
				key: testenv.MergedKey{DB: render(r["database_name"]), Table: render(r["table_name"]), Key: toInt(t, r["emp_no"])}}
			n[k]++
		}
	}
	return n
}

// expectedOps is what a workload's changes must have applied to a merged
// Unique Key table: an upsert per insert and update, a delete per delete,
// and delete-then-upsert for an update that changed the key.
func expectedOps(res *testenv.WorkloadResult) []opKey {
	var out []opKey
	for _, c := range res.Changes {
		old := testenv.MergedKey{DB: c.Shard.DB, Table: c.Shard.Table, Key: c.Key}
		switch c.Op {
		case testenv.OpDelete:
			out = append(out, opKey{del: true, key: old, name: c.Before["last_name"]})
		case testenv.OpUpdate:
			if c.KeyChanged {
				out = append(out, opKey{del: true, key: old, name: c.Before["last_name"]})
			}
			out = append(out, opKey{key: c.MergedKey(), name: c.After["last_name"]})
		case testenv.OpInsert:
			out = append(out, opKey{key: c.MergedKey(), name: c.After["last_name"]})
		}
	}
	return out
}

// TestCrashRecoveryExactlyOnce runs the real shardsync binary against a
// real MariaDB and the Doris emulator (which lives in this process, so its
// state outlives the child), SIGKILLs it at random moments while a random
// workload runs, restarts it each time, and then checks that the target
// equals the merged source and that every change was applied exactly once.
func TestCrashRecoveryExactlyOnce(t *testing.T) {
	kills1, kills2 := 10, 22
	if testing.Short() {
		kills1, kills2 = 4, 8
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv("SHARDSYNC_CRASH_SEED"); s != "" {
		var err error
		seed, err = strconv.ParseInt(s, 10, 64)
		require.NoError(t, err)
	}
	t.Logf("seed %d (rerun with SHARDSYNC_CRASH_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))

	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{})
	spec := testenv.ShardSpec{DBPrefix: "cemp_", Databases: 2, Tables: 2, Rows: 3000, Seed: seed}
	require.NoError(t, spec.Create(t.Context(), m))
	emu, err := dorisemu.Start(dorisemu.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = emu.Close() })

	dir := t.TempDir()
	args := []string{
		"--sources", "cemp_[0-9]+", "--tables", "employees_[0-9]+", "--target", "crash.merged",
		"--mysql", m.Addr(), "--doris-fe", emu.FEHTTPAddr(), "--doris-query", emu.QueryAddr(),
		"--ledger", filepath.Join(dir, "crash.ledger"), "--checkpoint-interval", "150ms",
		"--chunk-size", "250", "--server-id", "777", "--log-level", "debug",
	}
	var runs []*child
	defer func() {
		if t.Failed() {
			for i, c := range runs {
				t.Logf("run %d output (tail):\n%s", i, bufferTail(c.out.String(), 40))
			}
		}
	}()
	crashLoop := func(kills int) {
		for range kills {
			c := startChild(t, args)
			runs = append(runs, c)
			time.Sleep(time.Duration(100+rng.IntN(1400)) * time.Millisecond)
			require.False(t, c.exited(), "shardsync exited by itself before the kill:\n%s", bufferTail(c.out.String(), 30))
			c.kill(t)
		}
	}
	converge := func(want testenv.MergedState) {
		c := startChild(t, args)
		runs = append(runs, c)
		deadline := time.Now().Add(90 * time.Second)
		for {
			got := targetState(t, emu, "crash", "merged")
			ok, diff := sameState(want, got)
			if ok {
				break
			}
			require.False(t, c.exited(), "shardsync exited:\n%s", bufferTail(c.out.String(), 30))
			if time.Now().After(deadline) {
				t.Fatalf("target did not converge to the source within 90s:\n%s", diff)
			}
			time.Sleep(200 * time.Millisecond)
		}
		require.Equal(t, 0, c.stop(t), "SIGTERM must stop shardsync cleanly with exit 0:\n%s", bufferTail(c.out.String(), 20))
	}
	workload := func(ctx context.Context, w testenv.Workload) <-chan *testenv.WorkloadResult {
		ch := make(chan *testenv.WorkloadResult, 1)
		go func() {
			res, err := w.Run(ctx, m, spec)
			if err != nil {
				t.Errorf("workload: %v", err)
			}
			ch <- res
		}()
		return ch
	}

	// Phase 1: crashes during the snapshot, with changes arriving meanwhile.
	res1 := <-func() <-chan *testenv.WorkloadResult {
		ch := workload(t.Context(), testenv.Workload{Seed: seed, Rate: 80, Duration: 6 * time.Second, MaxRowsPerTxn: 8, MultiShardFraction: 0.2})
		crashLoop(kills1)
		return ch
	}()
	require.NotNil(t, res1)
	want1, err := testenv.ReadMergedState(t.Context(), m, spec)
	require.NoError(t, err)
	converge(want1)
	phase1 := appliedOps(t, emu, "crash", "merged")
	for k, n := range phase1 {
		require.Equal(t, 1, n, "after the snapshot phase, %s was applied %d times", k, n)
	}

	// Phase 2: crashes while following the binlog; every change counted.
	res2 := <-func() <-chan *testenv.WorkloadResult {
		ch := workload(t.Context(), testenv.Workload{Seed: seed + 1, Rate: 120, Duration: 10 * time.Second,
			MaxRowsPerTxn: 20, MultiShardFraction: 0.3, FirstID: res1.LastID + 1})
		crashLoop(kills2)
		return ch
	}()
	require.NotNil(t, res2)
	want2, err := testenv.ReadMergedState(t.Context(), m, spec)
	require.NoError(t, err)
	require.Equal(t, res2.Expected(want1), want2, "the workload model agrees with the source")
	converge(want2)

	all := appliedOps(t, emu, "crash", "merged")
	for k, n := range all {
		require.Equal(t, 1, n, "%s was applied %d times", k, n)
	}
	exp := expectedOps(res2)
	for _, k := range exp {
		require.Equal(t, 1, all[k], "binlog-phase change %s applied %d times", k, all[k])
	}
	t.Logf("%d kills, %d runs; %d row operations applied, %d binlog-phase changes each applied exactly once; %d + %d source txns",
		kills1+kills2, len(runs), len(all), len(exp), res1.Txns, res2.Txns)
}
