package main

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
)

// TestCrashLoopAddColumnDefault runs the real binary in both snapshot
// modes while the shards get `ADD COLUMN bonus INT NOT NULL DEFAULT 7` one
// by one at random points between SIGKILLs — during the snapshot and while
// following the binlog — with a workload writing meanwhile and some bonus
// values set after each ALTER. Restarts whose resume position lies before
// an ALTER must read the older events with their own shape (the schema
// history in the resume token), and the Doris target must end equal to
// the source value by value, bonus included (rows untouched since the
// ALTER carry the default).
func TestCrashLoopAddColumnDefault(t *testing.T) {
	kills := 7
	if testing.Short() {
		kills = 4
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 16))
	for _, mode := range []string{"consistent", "watermark"} {
		t.Run(mode, func(t *testing.T) {
			spec := testenv.ShardSpec{DBPrefix: "demp_", Databases: 2, Tables: 2, Rows: 700, Seed: seed}
			r := newRig(t, spec, dorisemu.Options{}, "--chunk-size", "40", "--snapshot-mode", mode)
			shards := spec.Shards()
			altered := 0
			alter := func() {
				sh := shards[altered]
				altered++
				q := "`" + sh.DB + "`.`" + sh.Table + "`"
				require.NoError(t, r.m.Exec(
					"ALTER TABLE "+q+" ADD COLUMN bonus INT NOT NULL DEFAULT 7",
					fmt.Sprintf("UPDATE %s SET bonus = emp_no %% 13 WHERE emp_no %% 5 = %d", q, rng.IntN(5)),
				))
				t.Logf("altered %s", sh)
			}
			// The first run creates the target from the shards' shape at
			// its start; the ALTERs come after.
			c := r.start(t)
			deadline := time.Now().Add(60 * time.Second)
			for {
				if _, err := r.emu.Rows(rigDB, rigTable); err == nil {
					break
				}
				require.False(t, c.exited(), "shardsync exited:\n%s", bufferTail(c.out.String(), 30))
				require.True(t, time.Now().Before(deadline), "the target was not created")
				time.Sleep(50 * time.Millisecond)
			}
			wl := runWorkload(t, r, testenv.Workload{Seed: seed, Rate: 60, Duration: 8 * time.Second, MaxRowsPerTxn: 5,
				MultiShardFraction: 0.2, KeyUpdateFraction: -1})
			for i := range 2 * kills {
				if i > 0 {
					c = r.start(t)
				}
				time.Sleep(time.Duration(100+rng.IntN(900)) * time.Millisecond)
				if altered < len(shards) && rng.IntN(2) == 0 {
					alter()
				}
				require.False(t, c.exited(), "shardsync exited by itself before the kill:\n%s", bufferTail(c.out.String(), 30))
				c.kill(t)
				if i == kills-1 {
					<-wl // the rest of the kills follow the binlog
				}
			}
			for altered < len(shards) {
				alter()
			}
			c = r.start(t)
			want := sourceWithBonus(t, r)
			deadline = time.Now().Add(90 * time.Second)
			for {
				got, err := targetWithBonus(t, r)
				if err == nil && len(got) == len(want) {
					diff := 0
					var first string
					for k, w := range want {
						if got[k] != w {
							if diff == 0 {
								first = fmt.Sprintf("%s: want %s, got %s", k, w, got[k])
							}
							diff++
						}
					}
					if diff == 0 {
						break
					}
					err = fmt.Errorf("%d rows differ, e.g. %s", diff, first)
				} else if err == nil {
					err = fmt.Errorf("want %d rows, got %d", len(want), len(got))
				}
				require.False(t, c.exited(), "shardsync exited:\n%s", bufferTail(c.out.String(), 30))
				require.True(t, time.Now().Before(deadline), "target did not converge: %v", err)
				time.Sleep(150 * time.Millisecond)
			}
			// (No per-operation count: an UPDATE of bonus re-upserts a row
			// with the same workload token, so counts are not unique.)
			require.Equal(t, 0, c.stop(t), "SIGTERM must stop shardsync cleanly:\n%s", bufferTail(c.out.String(), 20))
		})
	}
}

// sourceWithBonus renders every shard row (the merged columns and bonus)
// as one string per merged key.
func sourceWithBonus(t *testing.T, r *rig) map[string]string {
	t.Helper()
	out := map[string]string{}
	cols := append(append([]string{}, testenv.Columns...), "bonus")
	for _, sh := range r.spec.Shards() {
		rows, err := r.m.Query("SELECT " + strings.Join(cols, ",") + " FROM `" + sh.DB + "`.`" + sh.Table + "`")
		require.NoError(t, err)
		for _, row := range rows {
			out[sh.DB+"."+sh.Table+"#"+row[0]] = strings.Join(row, "|")
		}
	}
	return out
}

// targetWithBonus renders the Doris target like sourceWithBonus.
func targetWithBonus(t *testing.T, r *rig) (map[string]string, error) {
	t.Helper()
	rows, err := r.emu.Rows(rigDB, rigTable)
	if err != nil {
		return nil, err
	}
	cols := append(append([]string{}, testenv.Columns...), "bonus")
	out := map[string]string{}
	for _, row := range rows {
		vals := make([]string, len(cols))
		for i, c := range cols {
			vals[i] = render(row[c])
		}
		out[render(row["database_name"])+"."+render(row["table_name"])+"#"+vals[0]] = strings.Join(vals, "|")
	}
	return out, nil
}
