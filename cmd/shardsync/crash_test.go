package main

import (
	"fmt"
	"math/rand/v2"
	"os"
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
// real MariaDB and the Doris and MaxCompute emulators (which live in this
// process, so their state outlives the child), SIGKILLs it at random moments while a random
// workload runs, restarts it each time, and then checks that the target
// equals the merged source and that every change was applied exactly once.
// A third of the workload's transactions are XA transactions (a fifth of
// those rolled back after their prepare, some decided after FLUSH BINARY
// LOGS), so kills land while XA transactions are prepared and undecided.
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

	spec := testenv.ShardSpec{DBPrefix: "cemp_", Databases: 2, Tables: 2, Rows: 3000, Seed: seed}
	r := newRig(t, spec, dorisemu.Options{}, "--chunk-size", "250")
	r.withMaxCompute(t) // both sinks in the same epochs: each must end exact
	crashLoop := func(kills int) {
		for range kills {
			c := r.start(t)
			time.Sleep(time.Duration(100+rng.IntN(1400)) * time.Millisecond)
			require.False(t, c.exited(), "shardsync exited by itself before the kill:\n%s", bufferTail(c.out.String(), 30))
			c.kill(t)
		}
	}
	converge := func() testenv.MergedState {
		want := r.source(t)
		c := r.start(t)
		r.waitConverged(t, c, want, 90*time.Second)
		require.Equal(t, 0, c.stop(t), "SIGTERM must stop shardsync cleanly with exit 0:\n%s", bufferTail(c.out.String(), 20))
		return want
	}

	// Phase 1: crashes during the snapshot, with changes arriving meanwhile.
	wl1 := runWorkload(t, r, testenv.Workload{Seed: seed, Rate: 80, Duration: 6 * time.Second, MaxRowsPerTxn: 8, MultiShardFraction: 0.2,
		XAFraction: 1.0 / 3})
	crashLoop(kills1)
	res1 := <-wl1
	require.NotNil(t, res1)
	want1 := converge()
	r.requireExactlyOnce(t) // nothing applied twice, snapshot rows included

	// Phase 2: crashes while following the binlog; every change counted.
	wl2 := runWorkload(t, r, testenv.Workload{Seed: seed + 1, Rate: 120, Duration: 10 * time.Second,
		MaxRowsPerTxn: 20, MultiShardFraction: 0.3, FirstID: res1.LastID + 1, XAFraction: 1.0 / 3})
	crashLoop(kills2)
	res2 := <-wl2
	require.NotNil(t, res2)
	require.Equal(t, res2.Expected(want1), r.source(t), "the workload model agrees with the source")
	converge()
	n := r.requireExactlyOnce(t, res2)
	applied := map[string]bool{}
	for k := range appliedOps(t, r.emu, rigDB, rigTable) {
		applied[k.name] = true
	}
	for _, ch := range append(res1.RolledBackChanges, res2.RolledBackChanges...) {
		if ch.Op != testenv.OpDelete {
			require.False(t, applied[ch.After["last_name"]], "rolled-back change %d (%s %s) was applied", ch.ID, ch.Op, ch.Shard)
		}
	}
	require.Positive(t, res2.XATxns, "no XA transaction committed while following the binlog")
	require.Positive(t, res1.XARolledBack+res2.XARolledBack, "no XA transaction rolled back")
	t.Logf("%d kills, %d runs; %d binlog-phase changes each applied exactly once; %d + %d source txns (%d + %d XA committed, %d + %d XA rolled back)",
		kills1+kills2, len(r.runs), n, res1.Txns, res2.Txns, res1.XATxns, res2.XATxns, res1.XARolledBack, res2.XARolledBack)
}
