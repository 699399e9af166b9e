package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/maxcompute"
	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
	"github.com/shardsync/shardsync/testenv/mcemu"
	"github.com/shardsync/shardsync/twopc"
)

// TestJobReplacedLedger: a job's ledger is lost and a row is deleted at the
// source meanwhile. A new ledger must not snapshot over the filled target
// (the deleted row would stay): the job stops with one message naming the
// choices; with --recreate-target it empties the target and snapshots
// again, and the target equals the source.
func TestJobReplacedLedger(t *testing.T) {
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{})
	require.NoError(t, m.Exec(testenv.TutorialSQL))
	emu, err := dorisemu.Start(dorisemu.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = emu.Close() })
	dir := t.TempDir()
	count := func() int {
		rows, err := emu.Rows("demo", "all_employees_info")
		if err != nil {
			return -1
		}
		return len(rows)
	}

	// start runs the job with ledger name and extra flags; stop(true)
	// cancels it, stop(false) waits for it to end by itself.
	start := func(name string, extra ...string) (stop func(cancelNow bool) error, out *lockedBuffer) {
		var opts jobOptions
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		opts.addFlags(fs)
		require.NoError(t, fs.Parse(append([]string{
			"--sources", "emp_[0-9]+", "--tables", "employees_[0-9]+", "--target", "demo.all_employees_info",
			"--mysql", m.Addr(), "--doris-fe", emu.FEHTTPAddr(), "--doris-query", emu.QueryAddr(),
			"--ledger", filepath.Join(dir, name), "--checkpoint-interval", "200ms", "--snapshot-mode", "consistent",
		}, extra...)))
		out = &lockedBuffer{}
		j, err := prepare(opts, slog.New(slog.NewTextHandler(out, nil)), out)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- j.run(ctx) }()
		return func(cancelNow bool) error {
			if !cancelNow {
				select {
				case err := <-done:
					cancel()
					return err
				case <-time.After(60 * time.Second):
					t.Error("the job did not stop by itself")
				}
			}
			cancel()
			return <-done
		}, out
	}
	runUntil := func(name string, cond func() bool, extra ...string) {
		stop, out := start(name, extra...)
		require.Eventually(t, cond, 60*time.Second, 100*time.Millisecond, "log:\n%s", out)
		require.NoError(t, stop(true))
	}

	runUntil("first.ledger", func() bool { return count() == testenv.TutorialRows })
	require.NoError(t, m.Exec("DELETE FROM emp_1.employees_1 WHERE emp_no = 10001"))

	// A new ledger: refused before a byte is loaded, with the choices.
	stop, _ := start("second.ledger")
	err = stop(false)
	require.ErrorIs(t, err, twopc.ErrForeignTarget)
	require.ErrorContains(t, err, "demo.all_employees_info holds rows written under ledger")
	require.ErrorContains(t, err, "first.ledger")
	require.ErrorContains(t, err, "Restore the ledger file")
	require.ErrorContains(t, err, "--recreate-target")
	require.Equal(t, testenv.TutorialRows, count())

	// --recreate-target: emptied, snapshotted again, equal to the source.
	runUntil("second.ledger", func() bool { return count() == testenv.TutorialRows-1 }, "--recreate-target")
	rows, err := emu.Rows("demo", "all_employees_info")
	require.NoError(t, err)
	for _, r := range rows {
		require.False(t, r["database_name"] == "emp_1" && r["emp_no"] == int64(10001), "the row deleted while no job ran is gone")
	}
	// The first ledger is now the foreign one.
	stop, _ = start("first.ledger")
	require.ErrorIs(t, stop(false), twopc.ErrForeignTarget)
}

// startTestJob runs a job with args until stop: stop(true) cancels it,
// stop(false) waits for it to end by itself.
func startTestJob(t *testing.T, args ...string) (stop func(cancelNow bool) error, out *lockedBuffer) {
	t.Helper()
	var opts jobOptions
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	opts.addFlags(fs)
	require.NoError(t, fs.Parse(args))
	out = &lockedBuffer{}
	j, err := prepare(opts, slog.New(slog.NewTextHandler(out, nil)), out)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- j.run(ctx) }()
	return func(cancelNow bool) error {
		if !cancelNow {
			select {
			case err := <-done:
				cancel()
				return err
			case <-time.After(60 * time.Second):
				t.Error("the job did not stop by itself")
			}
		}
		cancel()
		return <-done
	}, out
}

// TestJobReplacedLedgerMaxCompute is TestJobReplacedLedger for MaxCompute
// targets: a Delta table partitioned by a source column and a plain table
// in a fixed partition. A new ledger meeting the filled target stops with
// the choices; --recreate-target re-creates the table (same kind, key,
// buckets and partition columns; the old partitions gone) and snapshots it
// again, so that the row deleted while no job ran is gone.
func TestJobReplacedLedgerMaxCompute(t *testing.T) {
	for _, tc := range []struct {
		name      string
		keyed     bool
		partition string
	}{
		{name: "delta partitioned by a column", keyed: true, partition: "gender"},
		{name: "plain in a fixed partition", keyed: false, partition: "ds=20260101"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testenv.StartMariaDB(t, testenv.MariaDBOptions{})
			key := ""
			if tc.keyed {
				key = ", PRIMARY KEY (id)"
			}
			for i := 1; i <= 2; i++ {
				require.NoError(t, m.Exec(fmt.Sprintf("CREATE DATABASE s_%d", i),
					fmt.Sprintf("CREATE TABLE s_%d.t_%d (id INT NOT NULL, gender CHAR(1) NOT NULL, name VARCHAR(20)%s)", i, i, key),
					fmt.Sprintf("INSERT INTO s_%d.t_%d VALUES (1, 'M', 'a'), (2, 'F', 'b'), (3, 'M', 'c')", i, i)))
			}
			memu := mcemu.New(mcemu.Options{})
			t.Cleanup(memu.Close)
			t.Setenv(maxcompute.EnvAccessKey, memu.AccessKey())
			dir := t.TempDir()
			count := func() int { return len(memu.Rows("all")) }
			start := func(name string, extra ...string) (func(bool) error, *lockedBuffer) {
				return startTestJob(t, append([]string{
					"--sources", "s_[0-9]+", "--tables", "t_[0-9]+", "--target", "demo.all", "--sink", "maxcompute",
					"--mysql", m.Addr(), "--maxcompute-endpoint", memu.Endpoint(), "--maxcompute-project", memu.Project(),
					"--maxcompute-access-id", memu.AccessID(), "--maxcompute-buckets", "4", "--maxcompute-option", "partition=" + tc.partition,
					"--ledger", filepath.Join(dir, name), "--checkpoint-interval", "200ms", "--snapshot-mode", "consistent",
				}, extra...)...)
			}
			runUntil := func(name string, cond func() bool, extra ...string) {
				stop, out := start(name, extra...)
				require.Eventually(t, cond, 60*time.Second, 100*time.Millisecond, "log:\n%s", out)
				require.NoError(t, stop(true))
			}

			runUntil("first.ledger", func() bool { return count() == 6 })
			before, ok := memu.Table("all")
			require.True(t, ok)
			require.Equal(t, tc.keyed, before.Transactional && len(before.PrimaryKey) > 0)
			require.Len(t, before.Partitions, 1)
			parts := memu.Partitions("all")
			require.NotEmpty(t, parts)
			require.NoError(t, m.Exec("DELETE FROM s_1.t_1 WHERE id = 1"))

			// A new ledger: refused before a byte is loaded, with the choices.
			stop, _ := start("second.ledger")
			err := stop(false)
			require.ErrorIs(t, err, twopc.ErrForeignTarget)
			require.ErrorContains(t, err, "demo.all (shardsync.all) holds rows written under ledger")
			require.ErrorContains(t, err, "first.ledger")
			require.ErrorContains(t, err, "Restore the ledger file")
			require.ErrorContains(t, err, "--recreate-target")
			require.Equal(t, 6, count())

			// --recreate-target: dropped, created again with the same
			// definition, snapshotted again, equal to the source.
			runUntil("second.ledger", func() bool { return count() == 5 }, "--recreate-target")
			after, ok := memu.Table("all")
			require.True(t, ok)
			require.Equal(t, before, after, "the re-created table has the definition of the old one")
			require.Contains(t, memu.DDLLog(), "drop table shardsync.`all`;")
			require.Equal(t, parts, memu.Partitions("all"))
			for _, r := range memu.Rows("all") {
				require.False(t, r[0] == "s_1" && r[2] == int64(1), "the row deleted while no job ran is gone: %v", r)
			}
			// The first ledger is now the foreign one.
			stop, _ = start("first.ledger")
			require.ErrorIs(t, stop(false), twopc.ErrForeignTarget)
		})
	}
}

// TestJobTwoJobsOneMaxComputeTarget: a second job (another ledger) pointed
// at the target of a running job is refused although the target is still
// empty: the running job claimed it.
func TestJobTwoJobsOneMaxComputeTarget(t *testing.T) {
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{})
	require.NoError(t, m.Exec("CREATE DATABASE s_1", "CREATE TABLE s_1.t_1 (id INT PRIMARY KEY, name VARCHAR(20))"))
	memu := mcemu.New(mcemu.Options{})
	t.Cleanup(memu.Close)
	t.Setenv(maxcompute.EnvAccessKey, memu.AccessKey())
	dir := t.TempDir()
	args := func(name string) []string {
		return []string{
			"--sources", "s_[0-9]+", "--tables", "t_[0-9]+", "--target", "demo.all", "--sink", "maxcompute",
			"--mysql", m.Addr(), "--maxcompute-endpoint", memu.Endpoint(), "--maxcompute-project", memu.Project(),
			"--maxcompute-access-id", memu.AccessID(), "--maxcompute-buckets", "4",
			"--ledger", filepath.Join(dir, name), "--checkpoint-interval", "200ms",
		}
	}
	stopA, outA := startTestJob(t, args("a.ledger")...)
	require.Eventually(t, func() bool { _, ok := memu.Table("all"); return ok }, 60*time.Second, 100*time.Millisecond, "log:\n%s", outA)
	require.Empty(t, memu.Rows("all"))

	stopB, _ := startTestJob(t, args("b.ledger")...)
	err := stopB(false)
	require.ErrorIs(t, err, twopc.ErrForeignTarget)
	require.ErrorContains(t, err, "is empty but is claimed by ledger")
	require.ErrorContains(t, err, "a.ledger")
	require.NoError(t, stopA(true))

	// The first job's ledger still owns the target.
	stopA, outA = startTestJob(t, args("a.ledger")...)
	require.NoError(t, m.Exec("INSERT INTO s_1.t_1 VALUES (1, 'x')"))
	require.Eventually(t, func() bool { return len(memu.Rows("all")) == 1 }, 60*time.Second, 100*time.Millisecond, "log:\n%s", outA)
	require.NoError(t, stopA(true))
}

func TestSequenceColumnKeyAndFlag(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`source:
  type: mysql
  hostname: 10.0.0.1
  tables: emp_[0-9]+.employees_[0-9]+
sink:
  type: doris
  fenodes: fe:8030
  sequence-column: _version
`), 0o600))
	var opts jobOptions
	fs := pflag.NewFlagSet("cli", pflag.ContinueOnError)
	opts.addFlags(fs)
	require.NoError(t, fs.Parse(nil))
	o, _, err := loadPipelineFile(path, mapEnv(nil), fs)
	require.NoError(t, err)
	dc, err := dorisConfig(o, "p")
	require.NoError(t, err)
	require.Equal(t, "_version", dc.SequenceColumn)

	o.sequenceColumn = "database_name"
	_, err = dorisConfig(o, "p")
	require.ErrorContains(t, err, "sequence column")
}
