package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
)

// pgJob runs a PostgreSQL job in-process into a Doris emulator.
type pgJob struct {
	out    *lockedBuffer
	done   chan error
	cancel context.CancelFunc
}

func startPGJob(t *testing.T, pg *testenv.Postgres, emu *dorisemu.Emulator, ledger string, args ...string) *pgJob {
	t.Helper()
	var opts jobOptions
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	opts.addFlags(fs)
	require.NoError(t, fs.Parse(append([]string{
		"--postgres", pg.Addr(), "--postgres-user", "postgres", "--postgres-database", "postgres",
		"--target", "dw.merged", "--doris-fe", emu.FEHTTPAddr(), "--doris-query", emu.QueryAddr(),
		"--ledger", ledger, "--checkpoint-interval", "200ms", "--label-prefix", "pgjob",
	}, args...)))
	j := &pgJob{out: &lockedBuffer{}, done: make(chan error, 1)}
	log := slog.New(slog.NewTextHandler(j.out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	jb, err := prepare(opts, log, j.out)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	j.cancel = cancel
	go func() { j.done <- jb.run(ctx) }()
	t.Cleanup(func() {
		j.stop()
		if t.Failed() {
			t.Log(j.out.String())
		}
	})
	return j
}

func (j *pgJob) stop() error {
	j.cancel()
	select {
	case err := <-j.done:
		j.done <- err
		return err
	case <-time.After(60 * time.Second):
		return fmt.Errorf("job did not stop")
	}
}

// waitRows waits until cond holds for the target's rows.
func waitRows(t *testing.T, emu *dorisemu.Emulator, j *pgJob, what string, cond func([]map[string]any) bool) []map[string]any {
	t.Helper()
	var rows []map[string]any
	require.Eventually(t, func() bool {
		select {
		case err := <-j.done:
			j.done <- err
			t.Fatalf("the job ended while waiting for %s: %v\n%s", what, err, j.out.String())
		default:
		}
		var err error
		rows, err = emu.Rows("dw", "merged")
		return err == nil && cond(rows)
	}, 60*time.Second, 100*time.Millisecond, "%s; log:\n%s", what, j.out)
	return rows
}

func rowByID(rows []map[string]any, id string) map[string]any {
	for _, r := range rows {
		if render(r["id"]) == id {
			return r
		}
	}
	return nil
}

// TestPostgresTypesInDoris sends every mapped PostgreSQL type through the
// snapshot and the stream into the Doris emulator and checks each value.
func TestPostgresTypesInDoris(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	emu, err := dorisemu.Start(dorisemu.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = emu.Close() })
	require.NoError(t, emu.Exec("CREATE DATABASE IF NOT EXISTS dw"))
	cols := `id int PRIMARY KEY, c_bool boolean, c_i2 smallint, c_i8 bigint, c_f4 real, c_f8 double precision,
		c_num numeric(20,5), c_numu numeric, c_text text, c_vc varchar(10), c_ch char(3), c_bytea bytea,
		c_date date, c_ts timestamp(3), c_tstz timestamptz, c_time time, c_iv interval, c_uuid uuid,
		c_json json, c_jsonb jsonb, c_arr int[], c_tarr text[], c_mood mood`
	vals := `true, -32768, 9223372036854775807, 1.5, 0.1, 12345.67800, 3.14159265358979323846264338327950288, 'héllo, "world"', 'abc', 'x',
		'\xdeadbeef', '2024-03-10', '2024-03-10 12:34:56.789', '2024-03-10 12:34:56.789012+02', '13:14:15.5',
		'1 year 2 mons 3 days 04:05:06.5', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"k": [1, 2]}', '{"k":  [1,2]}',
		'{1,2,NULL}', '{"a b","c,d",NULL}', 'sad'`
	require.NoError(t, pg.Exec("postgres", `CREATE SCHEMA s_1`, `CREATE TYPE mood AS ENUM ('sad', 'happy')`,
		`CREATE TABLE s_1.t_1 (`+cols+`)`, `INSERT INTO s_1.t_1 VALUES (1, `+vals+`)`,
		`INSERT INTO s_1.t_1 (id) VALUES (3)`))
	j := startPGJob(t, pg, emu, filepath.Join(t.TempDir(), "l"), "--sources", "s_[0-9]+", "--tables", "t_[0-9]+")
	waitRows(t, emu, j, "snapshot rows", func(r []map[string]any) bool { return len(r) == 2 })
	require.NoError(t, pg.Exec("postgres", `INSERT INTO s_1.t_1 VALUES (2, `+vals+`)`))
	rows := waitRows(t, emu, j, "streamed row", func(r []map[string]any) bool { return len(r) == 3 })
	want := map[string]string{
		"c_bool": "1", "c_i2": "-32768", "c_i8": "9223372036854775807", "c_f4": "1.5", "c_f8": "0.1",
		"c_num": "12345.67800", "c_numu": "3.14159265358979323846264338327950288", "c_text": `héllo, "world"`, "c_vc": "abc", "c_ch": "x  ",
		"c_bytea": "DEADBEEF", "c_date": "2024-03-10", "c_ts": "2024-03-10 12:34:56.789", "c_tstz": "2024-03-10 10:34:56.789012",
		"c_time": "13:14:15.500000", "c_iv": "1 year 2 mons 3 days 04:05:06.5", "c_uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
		"c_json": `{"k": [1, 2]}`, "c_jsonb": `{"k": [1, 2]}`, "c_arr": "{1,2,NULL}", "c_tarr": `{"a b","c,d",NULL}`, "c_mood": "sad",
		"database_name": "s_1", "table_name": "t_1",
	}
	for _, id := range []string{"1", "2"} { // snapshot and stream agree
		r := rowByID(rows, id)
		require.NotNil(t, r, "row %s", id)
		got := map[string]string{}
		for c := range want {
			got[c] = render(r[c])
		}
		require.Equal(t, want, got, "row %s", id)
	}
	r3 := rowByID(rows, "3")
	for c := range want {
		if c != "database_name" && c != "table_name" {
			require.Nil(t, r3[c], "NULL %s", c)
		}
	}
	require.NoError(t, j.stop())
}
