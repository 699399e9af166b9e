package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/maxcompute"
	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
	"github.com/shardsync/shardsync/testenv/mcemu"
)

// pgRig is a PostgreSQL cluster with shards s_<i>.t_<j> (id int key, name
// text: a unique token per row image, v int), the Doris and MaxCompute
// emulators and the arguments of a shardsync child merging the shards
// into crash.pgmerged.
type pgRig struct {
	pg     *testenv.Postgres
	emu    *dorisemu.Emulator
	mc     *mcemu.Emulator
	tables []string
	dir    string
	args   []string
	env    []string
	runs   []*child
}

const pgRigTable = "pgmerged"

func newPGRig(t *testing.T, rows int, extra ...string) *pgRig {
	t.Helper()
	r := &pgRig{dir: t.TempDir(), tables: []string{"s_1.t_1", "s_1.t_2", "s_2.t_1", "s_2.t_2"}}
	r.pg = testenv.StartPostgres(t, testenv.PostgresOptions{})
	for i, tb := range r.tables {
		require.NoError(t, r.pg.Exec("postgres",
			`CREATE SCHEMA IF NOT EXISTS `+tb[:3],
			`CREATE TABLE `+tb+` (id int PRIMARY KEY, name text NOT NULL, v int)`,
			`ALTER TABLE `+tb+` REPLICA IDENTITY FULL`, // deletes carry the old name, which the checks count
			fmt.Sprintf(`INSERT INTO %s SELECT g, 'i%d_' || g, g FROM generate_series(1, %d) g`, tb, i, rows)))
	}
	var err error
	r.emu, err = dorisemu.Start(dorisemu.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.emu.Close() })
	r.mc = mcemu.New(mcemu.Options{})
	t.Cleanup(r.mc.Close)
	r.args = append([]string{
		"--postgres", r.pg.Addr(), "--postgres-user", "postgres", "--postgres-database", "postgres",
		"--sources", "s_[0-9]+", "--tables", "t_[0-9]+", "--target", rigDB + "." + pgRigTable,
		"--doris-fe", r.emu.FEHTTPAddr(), "--doris-query", r.emu.QueryAddr(),
		"--sink", "doris,maxcompute", "--maxcompute-endpoint", r.mc.Endpoint(),
		"--maxcompute-project", r.mc.Project(), "--maxcompute-access-id", r.mc.AccessID(), "--maxcompute-buckets", "4",
		"--ledger", filepath.Join(r.dir, "job.ledger"), "--checkpoint-interval", "150ms", "--log-level", "debug",
	}, extra...)
	r.env = []string{maxcompute.EnvAccessKey + "=" + r.mc.AccessKey()}
	t.Cleanup(func() {
		for _, c := range r.runs {
			if !c.exited() {
				c.kill(t)
			}
		}
		if t.Failed() {
			for i, c := range r.runs {
				t.Logf("run %d output (tail):\n%s", i, bufferTail(c.out.String(), 40))
			}
		}
	})
	return r
}

func (r *pgRig) start(t *testing.T) *child {
	t.Helper()
	c := startChild(t, r.args, r.env...)
	r.runs = append(r.runs, c)
	return c
}

// pgRow is a merged row: schema, table, id → name, v.
type pgKey struct {
	schema, table string
	id            int64
}

type pgState map[pgKey]string // "name|v"

func (r *pgRig) source(t *testing.T) pgState {
	t.Helper()
	st := pgState{}
	for _, tb := range r.tables {
		rows, err := r.pg.Query("postgres", `SELECT id, name, coalesce(v::text, 'NULL') FROM `+tb)
		require.NoError(t, err)
		for _, row := range rows {
			id, _ := strconv.ParseInt(row[0], 10, 64)
			st[pgKey{tb[:3], tb[4:], id}] = row[1] + "|" + row[2]
		}
	}
	return st
}

func (r *pgRig) dorisState(t *testing.T) (pgState, error) {
	rows, err := r.emu.Rows(rigDB, pgRigTable)
	if err != nil {
		return nil, err
	}
	st := pgState{}
	for _, row := range rows {
		st[pgKey{render(row["database_name"]), render(row["table_name"]), toInt(t, row["id"])}] = render(row["name"]) + "|" + render(row["v"])
	}
	return st, nil
}

func (r *pgRig) mcState(t *testing.T) (pgState, error) {
	ti, ok := r.mc.Table(pgRigTable)
	if !ok {
		return nil, fmt.Errorf("maxcompute table %s does not exist yet", pgRigTable)
	}
	st := pgState{}
	for _, row := range r.mc.Rows(pgRigTable) {
		m := map[string]any{}
		for i, c := range ti.Columns {
			m[c.Name] = row[i]
		}
		st[pgKey{render(m["database_name"]), render(m["table_name"]), toInt(t, m["id"])}] = render(m["name"]) + "|" + render(m["v"])
	}
	return st, nil
}

func diffStates(want, got pgState) string {
	var out []string
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			out = append(out, fmt.Sprintf("%v: want %s, got %q", k, w, g))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			out = append(out, fmt.Sprintf("%v: want none, got %s", k, g))
		}
	}
	sort.Strings(out)
	if len(out) > 10 {
		out = out[:10]
	}
	return fmt.Sprintf("want %d rows, got %d; %v", len(want), len(got), out)
}

func (r *pgRig) waitConverged(t *testing.T, c *child, want pgState, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, err := r.dorisState(t)
		diff := ""
		switch {
		case err != nil:
			diff = err.Error()
		case len(diffStates(want, got)) > 0 && !equalStates(want, got):
			diff = "doris: " + diffStates(want, got)
		default:
			got, err = r.mcState(t)
			if err != nil {
				diff = err.Error()
			} else if !equalStates(want, got) {
				diff = "maxcompute: " + diffStates(want, got)
			}
		}
		if diff == "" {
			return
		}
		require.False(t, c.exited(), "shardsync exited:\n%s", bufferTail(c.out.String(), 30))
		if time.Now().After(deadline) {
			t.Fatalf("targets did not converge to the source within %s:\n%s", within, diff)
		}
		time.Sleep(150 * time.Millisecond)
	}
}

func equalStates(a, b pgState) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// pgOp is one row operation a Doris load applied.
type pgOp struct {
	del  bool
	key  pgKey
	name string
}

func (r *pgRig) appliedOps(t *testing.T) map[pgOp]int {
	n := map[pgOp]int{}
	for _, l := range r.emu.Loads() {
		if l.DB != rigDB || l.Table != pgRigTable {
			continue
		}
		for _, op := range l.Ops {
			row := op.Row
			n[pgOp{del: op.Delete, name: render(row["name"]), key: pgKey{render(row["database_name"]), render(row["table_name"]), toInt(t, row["id"])}}]++
		}
	}
	return n
}

// pgWorkload runs random transactions (inserts, updates that may move the
// key, deletes) until stop, recording the row operations each committed
// transaction must cause at a Unique Key target.
func pgWorkload(t *testing.T, r *pgRig, seed int64, firstID int, stop <-chan struct{}) (*sync.WaitGroup, *[]pgOp) {
	var wg sync.WaitGroup
	var ops []pgOp
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(uint64(seed), 1))
		ctx := context.Background()
		conn, err := r.pg.Connect(ctx, "postgres")
		if err != nil {
			t.Errorf("workload: %v", err)
			return
		}
		defer conn.Close(ctx)
		next := firstID
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Errorf("workload: %v", err)
				return
			}
			var txOps []pgOp
			for range 1 + rng.IntN(5) {
				tb := r.tables[rng.IntN(len(r.tables))]
				sch, tbl := tb[:3], tb[4:]
				name := fmt.Sprintf("c%d_%d_%d", seed, n, len(txOps))
				switch rng.IntN(5) {
				case 0, 1:
					next++
					if _, err := tx.Exec(ctx, `INSERT INTO `+tb+` VALUES ($1, $2, $3)`, next, name, rng.IntN(1000)); err != nil {
						t.Errorf("insert: %v", err)
						return
					}
					txOps = append(txOps, pgOp{key: pgKey{sch, tbl, int64(next)}, name: name})
				case 2, 3:
					move := rng.IntN(4) == 0
					newID := "t.id"
					if move {
						next++
						newID = strconv.Itoa(next)
					}
					var oldID, nid int64
					var oldName string
					err := tx.QueryRow(ctx, `WITH old AS (SELECT id, name FROM `+tb+` ORDER BY random() LIMIT 1 FOR UPDATE)
						UPDATE `+tb+` t SET id = `+newID+`, name = $1, v = coalesce(t.v, 0) + 1 FROM old WHERE t.id = old.id
						RETURNING old.id, old.name, t.id`, name).Scan(&oldID, &oldName, &nid)
					if errors.Is(err, pgx.ErrNoRows) {
						continue // an empty table
					} else if err != nil {
						t.Errorf("update: %v", err)
						return
					}
					if oldID != nid {
						txOps = append(txOps, pgOp{del: true, key: pgKey{sch, tbl, oldID}, name: oldName})
					}
					txOps = append(txOps, pgOp{key: pgKey{sch, tbl, nid}, name: name})
				case 4:
					var id int64
					var old string
					if err := tx.QueryRow(ctx, `DELETE FROM `+tb+` WHERE id = (SELECT id FROM `+tb+` ORDER BY random() LIMIT 1) RETURNING id, name`).Scan(&id, &old); errors.Is(err, pgx.ErrNoRows) {
						continue
					} else if err != nil {
						t.Errorf("delete: %v", err)
						return
					}
					txOps = append(txOps, pgOp{del: true, key: pgKey{sch, tbl, id}, name: old})
				}
			}
			if rng.IntN(8) == 0 {
				_ = tx.Rollback(ctx)
			} else if err := tx.Commit(ctx); err != nil {
				t.Errorf("commit: %v", err)
				return
			} else {
				ops = append(ops, txOps...)
			}
			time.Sleep(time.Duration(5+rng.IntN(15)) * time.Millisecond)
		}
	})
	return &wg, &ops
}

// TestPostgresCrashRecoveryExactlyOnce SIGKILLs the real shardsync binary
// reading PostgreSQL at random moments (during the snapshot and while
// streaming) under a mixed workload, restarts it each time, and then
// requires both Doris and MaxCompute to equal the source, no row operation
// applied twice, and every streamed change applied exactly once.
func TestPostgresCrashRecoveryExactlyOnce(t *testing.T) {
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
	r := newPGRig(t, 1500, "--chunk-size", "100")
	crashLoop := func(kills int) {
		for range kills {
			c := r.start(t)
			time.Sleep(time.Duration(150+rng.IntN(1300)) * time.Millisecond)
			require.False(t, c.exited(), "shardsync exited by itself before the kill:\n%s", bufferTail(c.out.String(), 30))
			c.kill(t)
		}
	}
	converge := func() {
		want := r.source(t)
		c := r.start(t)
		r.waitConverged(t, c, want, 90*time.Second)
		require.Equal(t, 0, c.stop(t), "SIGTERM must stop shardsync cleanly:\n%s", bufferTail(c.out.String(), 20))
	}
	requireOnce := func(expected []pgOp) int {
		all := r.appliedOps(t)
		for k, n := range all {
			require.Equal(t, 1, n, "%+v was applied %d times", k, n)
		}
		for _, k := range expected {
			require.Equal(t, 1, all[k], "change %+v applied %d times", k, all[k])
		}
		return len(expected)
	}

	// Phase 1: kills during the snapshot, with changes arriving meanwhile.
	stop1 := make(chan struct{})
	wg1, _ := pgWorkload(t, r, seed, 100_000, stop1)
	crashLoop(kills1)
	close(stop1)
	wg1.Wait()
	converge()
	requireOnce(nil)

	// Phase 2: kills while streaming; every change is counted.
	stop2 := make(chan struct{})
	wg2, ops := pgWorkload(t, r, seed+1, 200_000, stop2)
	crashLoop(kills2)
	close(stop2)
	wg2.Wait()
	converge()
	n := requireOnce(*ops)
	require.Positive(t, n)
	t.Logf("%d kills, %d runs; %d streamed changes each applied exactly once", kills1+kills2, len(r.runs), n)
}
