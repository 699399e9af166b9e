package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
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

// TestPostgresNewShardAddColumnAndToast runs one job through the things a
// running PostgreSQL source meets: a shard created while running (picked
// up, published, snapshotted), ADD COLUMN on a shard (the target gains the
// column), and an UPDATE that leaves a large TOASTed value unchanged under
// REPLICA IDENTITY FULL (the stored value is kept, not overwritten).
func TestPostgresNewShardAddColumnAndToast(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	emu, err := dorisemu.Start(dorisemu.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = emu.Close() })
	require.NoError(t, emu.Exec("CREATE DATABASE IF NOT EXISTS dw"))
	// A value PostgreSQL stores out of line: 40 kB of incompressible text.
	big := `(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 1250) g)`
	require.NoError(t, pg.Exec("postgres", `CREATE SCHEMA s_1`,
		`CREATE TABLE s_1.t_1 (id int PRIMARY KEY, doc text, n int)`, `ALTER TABLE s_1.t_1 REPLICA IDENTITY FULL`,
		`INSERT INTO s_1.t_1 VALUES (1, `+big+`, 1), (2, 'small', 2)`))
	j := startPGJob(t, pg, emu, filepath.Join(t.TempDir(), "l"), "--sources", "s_[0-9]+", "--tables", "t_[0-9]+")
	waitRows(t, emu, j, "snapshot", func(r []map[string]any) bool { return len(r) == 2 })

	// TOAST: n changes, doc is left unchanged and arrives only in the old row.
	require.NoError(t, pg.Exec("postgres", `UPDATE s_1.t_1 SET n = 10 WHERE id = 1`))
	rows := waitRows(t, emu, j, "update", func(r []map[string]any) bool { return render(rowByID(r, "1")["n"]) == "10" })
	require.Len(t, render(rowByID(rows, "1")["doc"]), 40000, "the unchanged TOASTed value is kept")

	// ADD COLUMN, then a row using it.
	require.NoError(t, pg.Exec("postgres", `ALTER TABLE s_1.t_1 ADD COLUMN note varchar(20)`,
		`INSERT INTO s_1.t_1 (id, doc, n, note) VALUES (3, 'x', 3, 'added')`))
	rows = waitRows(t, emu, j, "added column", func(r []map[string]any) bool { return rowByID(r, "3") != nil })
	require.Equal(t, "added", render(rowByID(rows, "3")["note"]))
	require.Nil(t, rowByID(rows, "2")["note"])

	// A new shard while running: existing rows and later changes arrive.
	require.NoError(t, pg.Exec("postgres", `CREATE SCHEMA s_2`, `CREATE TABLE s_2.t_1 (id int PRIMARY KEY, doc text, n int)`,
		`INSERT INTO s_2.t_1 VALUES (1, 'new shard', 100)`))
	waitRows(t, emu, j, "new shard snapshot", func(r []map[string]any) bool { return len(r) == 4 })
	require.NoError(t, pg.Exec("postgres", `UPDATE s_2.t_1 SET n = 101 WHERE id = 1`, `INSERT INTO s_2.t_1 VALUES (2, 'later', 102)`))
	rows = waitRows(t, emu, j, "new shard stream", func(r []map[string]any) bool { return len(r) == 5 })
	for _, r := range rows {
		if render(r["database_name"]) == "s_2" && render(r["id"]) == "1" {
			require.Equal(t, "101", render(r["n"]))
		}
	}
	pub, err := pg.Query("postgres", `SELECT count(*) FROM pg_publication_tables WHERE pubname = 'pgjob_pub'`)
	require.NoError(t, err)
	require.Equal(t, "2", pub[0][0], "the new shard was added to the publication")
	require.NoError(t, j.stop())
}

// TestPostgresToastWithoutFullIdentityStops: an UPDATE that leaves a TOASTed
// value unchanged under REPLICA IDENTITY DEFAULT does not carry the value;
// the job stops with an error naming REPLICA IDENTITY FULL rather than
// overwrite the stored value.
func TestPostgresToastWithoutFullIdentityStops(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	emu, err := dorisemu.Start(dorisemu.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = emu.Close() })
	require.NoError(t, emu.Exec("CREATE DATABASE IF NOT EXISTS dw"))
	big := `(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 1250) g)`
	require.NoError(t, pg.Exec("postgres", `CREATE SCHEMA s_1`, `CREATE TABLE s_1.t_1 (id int PRIMARY KEY, doc text, n int)`,
		`INSERT INTO s_1.t_1 VALUES (1, `+big+`, 1)`))
	j := startPGJob(t, pg, emu, filepath.Join(t.TempDir(), "l"), "--sources", "s_[0-9]+", "--tables", "t_[0-9]+")
	waitRows(t, emu, j, "snapshot", func(r []map[string]any) bool { return len(r) == 1 })
	require.NoError(t, pg.Exec("postgres", `UPDATE s_1.t_1 SET n = 2 WHERE id = 1`))
	select {
	case err := <-j.done:
		j.done <- err
		require.ErrorContains(t, err, "REPLICA IDENTITY FULL")
		require.ErrorContains(t, err, "doc")
	case <-time.After(60 * time.Second):
		t.Fatal("the job did not stop")
	}
	rows, err := emu.Rows("dw", "merged")
	require.NoError(t, err)
	require.Len(t, render(rows[0]["doc"]), 40000, "the stored value was not overwritten")
	require.Equal(t, "1", render(rows[0]["n"]))
}

func TestPostgresPipelineFile(t *testing.T) {
	yamlText := `source:
  type: postgres
  hostname: 10.0.0.5
  username: repl
  password: ${PGPW}
  database-name: shop
  schema-name: emp_[0-9]+
  table-name: employees_[0-9]+
  slot.name: orders_slot
  publication.name: orders_pub
  decoding.plugin.name: pgoutput
  scan.incremental.snapshot.chunk.size: 500
sink:
  type: doris
  fenodes: 127.0.0.1:8030
pipeline:
  name: orders
`
	env := func(k string) (string, bool) { return map[string]string{"PGPW": "s3cret"}[k], k == "PGPW" }
	o, _, err := parsePipeline("p.yaml", []byte(yamlText), env)
	require.NoError(t, err)
	require.Equal(t, postgresOptions{addr: "10.0.0.5:5432", user: "repl", database: "shop", slot: "orders_slot", publication: "orders_pub", password: "s3cret"}, o.pg)
	require.Equal(t, "emp_[0-9]+", o.sources)
	require.Equal(t, "employees_[0-9]+", o.tables)
	require.Equal(t, 500, o.chunkSize)

	_, _, err = parsePipeline("p.yaml", []byte(strings.Replace(yamlText, "decoding.plugin.name: pgoutput", "decoding.plugin.name: wal2json", 1)), env)
	require.ErrorContains(t, err, "pgoutput")
}
