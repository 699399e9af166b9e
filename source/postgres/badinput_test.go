package postgres

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/merge"
	"github.com/shardsync/shardsync/testenv"
)

func TestWalLevelNotLogicalIsOneClearError(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{WalLevel: "replica"})
	createShards(t, pg, []string{"s_1.t_1"}, 3)
	_, err := Open(t.Context(), testCfg(t, pg, `s_[0-9]+`, `t_[0-9]+`, "bad_slot"), nil, testLog(t))
	require.True(t, errors.Is(err, merge.ErrPrerequisite), err)
	require.ErrorContains(t, err, "wal_level is replica")
	require.ErrorContains(t, err, "restart PostgreSQL")
}

func TestBadInputsAreOneClearError(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	createShards(t, pg, []string{"s_1.t_1", "s_2.t_1"}, 5)
	require.NoError(t, pg.Exec("postgres",
		`CREATE ROLE norepl LOGIN PASSWORD 'pw'`, `GRANT USAGE ON SCHEMA s_1, s_2 TO norepl`, `GRANT SELECT ON ALL TABLES IN SCHEMA s_1, s_2 TO norepl`,
		`CREATE ROLE repl LOGIN REPLICATION PASSWORD 'right'`))
	ctx := t.Context()

	t.Run("missing REPLICATION privilege", func(t *testing.T) {
		c := testCfg(t, pg, `s_[0-9]+`, `t_[0-9]+`, "np_slot")
		c.User, c.Password = "norepl", "pw"
		_, err := Open(ctx, c, nil, testLog(t))
		require.True(t, errors.Is(err, merge.ErrPrerequisite), err)
		require.ErrorContains(t, err, `ALTER ROLE "norepl" WITH REPLICATION`)
	})
	t.Run("wrong password", func(t *testing.T) {
		c := testCfg(t, pg, `s_[0-9]+`, `t_[0-9]+`, "pw_slot")
		c.User, c.Password = "repl", "wrong"
		_, err := Open(ctx, c, nil, testLog(t))
		require.True(t, errors.Is(err, ErrAuth), err)
		require.ErrorContains(t, err, "SHARDSYNC_POSTGRES_PASSWORD")
		require.NotContains(t, err.Error(), "wrong", "the password is never printed")
	})
	t.Run("regex matching nothing", func(t *testing.T) {
		_, err := Open(ctx, testCfg(t, pg, `emp_*`, `t_[0-9]+`, "re_slot"), nil, testLog(t))
		require.True(t, errors.Is(err, merge.ErrNoShards), err)
		require.ErrorContains(t, err, "s_1, s_2")
		require.ErrorContains(t, err, "not globs")
	})

	// A job that committed a position, then is stopped.
	cfg := testCfg(t, pg, `s_[0-9]+`, `t_[0-9]+`, "job_slot")
	cfg.ConnectTimeout = time.Second
	src, err := Open(ctx, cfg, nil, testLog(t))
	require.NoError(t, err)
	m := newModel(t)
	consume(t, src, m, func() bool { return src.Progress().Done })
	tok := m.last

	t.Run("slot active in another process", func(t *testing.T) {
		_, err := Open(ctx, cfg, tok, testLog(t))
		require.True(t, errors.Is(err, ErrSlot), err)
		require.ErrorContains(t, err, "in use by server process")
	})
	require.NoError(t, src.Close())

	t.Run("slot moved past the ledger by someone else", func(t *testing.T) {
		require.NoError(t, pg.Exec("postgres", `INSERT INTO s_1.t_1 (v) VALUES ('x')`,
			`SELECT pg_replication_slot_advance('job_slot', pg_current_wal_lsn())`))
		_, err := Open(ctx, cfg, tok, testLog(t))
		require.True(t, errors.Is(err, ErrSlot), err)
		require.ErrorContains(t, err, "advanced")
	})
	t.Run("publication dropped while stopped", func(t *testing.T) {
		require.NoError(t, pg.Exec("postgres", `DROP PUBLICATION job_slot_pub`))
		st, err := parseToken(tok)
		require.NoError(t, err)
		st.LSN = 1 << 40 // past the slot, so only the publication is wrong
		_, err = Open(ctx, cfg, change.Token(st.encode()), testLog(t))
		require.True(t, errors.Is(err, ErrSlot), err)
		require.ErrorContains(t, err, "publication job_slot_pub no longer exists")
	})
	t.Run("slot dropped while stopped", func(t *testing.T) {
		require.NoError(t, pg.Exec("postgres", `SELECT pg_drop_replication_slot('job_slot')`))
		_, err := Open(ctx, cfg, tok, testLog(t))
		require.True(t, errors.Is(err, ErrSlot), err)
		require.ErrorContains(t, err, "no longer exists")
		require.ErrorContains(t, err, "does not re-snapshot")
		rows, err := pg.Query("postgres", `SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'job_slot'`)
		require.NoError(t, err)
		require.Equal(t, "0", rows[0][0], "no slot was created behind the operator's back")
	})
	t.Run("drop-slot retires a job", func(t *testing.T) {
		c := testCfg(t, pg, `s_[0-9]+`, `t_[0-9]+`, "retire_slot")
		src, err := Open(ctx, c, nil, testLog(t))
		require.NoError(t, err)
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			for {
				if _, err := src.Next(ctx); err != nil {
					return
				}
			}
		}()
		require.Eventually(t, func() bool { st, err := QuerySlot(ctx, c); return err == nil && st.Active }, 15*time.Second, 50*time.Millisecond)
		_, err = DropSlot(ctx, c)
		require.True(t, errors.Is(err, ErrSlot), "a slot in use is not dropped: %v", err)
		require.NoError(t, src.Close())
		<-drained
		st, err := QuerySlot(ctx, c)
		require.NoError(t, err)
		require.GreaterOrEqual(t, st.RetainedWALBytes, int64(0))
		require.Eventually(t, func() bool { _, err = DropSlot(ctx, c); return err == nil }, 15*time.Second, 200*time.Millisecond, "%v", err)
		rows, err := pg.Query("postgres", `SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'retire_slot'), (SELECT count(*) FROM pg_publication WHERE pubname = 'retire_slot_pub')`)
		require.NoError(t, err)
		require.Equal(t, []string{"0", "0"}, rows[0])
	})
}
