package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/shardsync/shardsync/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// workload runs random transactions of inserts, updates (some moving the
// key), and deletes on tables until stop is closed.
func workload(t *testing.T, pg *testenv.Postgres, tables []string, seed uint64, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(seed, seed))
		ctx := context.Background()
		conn, err := pg.Connect(ctx, "postgres")
		if err != nil {
			t.Errorf("workload: %v", err)
			return
		}
		defer conn.Close(ctx)
		for i := 0; ; i++ {
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
			for range 1 + rng.IntN(4) {
				tb := tables[rng.IntN(len(tables))]
				var q string
				switch rng.IntN(6) {
				case 0, 1:
					q = fmt.Sprintf(`INSERT INTO %s (v, n, ts) VALUES ('w%d', %d.25, now())`, tb, i, rng.IntN(1000))
				case 2:
					q = fmt.Sprintf(`UPDATE %s SET v = v || 'u', n = n + 1 WHERE id = (SELECT id FROM %s ORDER BY random() LIMIT 1)`, tb, tb)
				case 3:
					q = fmt.Sprintf(`UPDATE %s SET id = id + 100000 WHERE id = (SELECT id FROM %s WHERE id < 100000 ORDER BY random() LIMIT 1)`, tb, tb)
				case 4:
					q = fmt.Sprintf(`DELETE FROM %s WHERE id = (SELECT id FROM %s ORDER BY random() LIMIT 1)`, tb, tb)
				case 5:
					q = fmt.Sprintf(`UPDATE %s SET ts = ts + interval '1 second' WHERE id %% 7 = %d`, tb, rng.IntN(7))
				}
				if _, err := tx.Exec(ctx, q); err != nil {
					t.Errorf("workload %q: %v", q, err)
					_ = tx.Rollback(ctx)
					return
				}
			}
			if rng.IntN(10) == 0 {
				_ = tx.Rollback(ctx) // aborted transactions never show
			} else if err := tx.Commit(ctx); err != nil {
				t.Errorf("workload commit: %v", err)
				return
			}
			time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
		}
	})
	return &wg
}

func createShards(t *testing.T, pg *testenv.Postgres, tables []string, rows int) {
	for _, tb := range tables {
		require.NoError(t, pg.Exec("postgres",
			fmt.Sprintf(`CREATE SCHEMA IF NOT EXISTS %s`, tb[:3]),
			fmt.Sprintf(`CREATE TABLE %s (id serial PRIMARY KEY, v text, n numeric(12,2), ts timestamptz)`, tb),
			fmt.Sprintf(`INSERT INTO %s (v, n, ts) SELECT 'r' || g, g * 1.5, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute' FROM generate_series(1, %d) g`, tb, rows)))
	}
}

// checkAgainstFreshSnapshot reads the tables again through a new slot and
// requires the same rows as the model.
func checkAgainstFreshSnapshot(t *testing.T, pg *testenv.Postgres, m *model, schemas, tables string) {
	t.Helper()
	cfg := testCfg(t, pg, schemas, tables, "check_slot")
	src, err := Open(t.Context(), cfg, nil, testLog(t))
	require.NoError(t, err)
	defer src.Close()
	m2 := newModel(t)
	consume(t, src, m2, func() bool { return m2.snapshotDone() })
	require.Equal(t, m2.lines(), m.lines(), "the streamed rows equal a fresh snapshot")
}

func TestSnapshotAndStreamExactUnderRandomWorkload(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	tables := []string{"s_1.t_1", "s_2.t_1", "s_2.t_2"}
	createShards(t, pg, tables, 40)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	stop := make(chan struct{})
	wg := workload(t, pg, tables, seed, stop)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	cfg := testCfg(t, pg, `s_[0-9]+`, `t_[0-9]+`, "exact_slot")
	m := newModel(t)
	var tok []byte
	// Open, read a while, close, resume from the last commit: three times,
	// the first during the snapshot.
	for round, n := range []int{3, 40, 80} {
		src, err := Open(t.Context(), cfg, tok, testLog(t))
		require.NoError(t, err, "round %d", round)
		start := m.commits
		consume(t, src, m, func() bool { return m.commits >= start+n })
		require.NoError(t, src.Close())
		tok = m.last
		m.pending = nil // uncommitted rows are read again
	}
	close(stop)
	wg.Wait()
	require.NoError(t, pg.Exec("postgres", `INSERT INTO s_1.t_1 (id, v) VALUES (-1, 'marker')`))
	src, err := Open(t.Context(), cfg, tok, testLog(t))
	require.NoError(t, err)
	consume(t, src, m, func() bool { return m.has("marker") })
	require.NoError(t, src.Close())
	checkAgainstFreshSnapshot(t, pg, m, `s_[0-9]+`, `t_[0-9]+`)
}
