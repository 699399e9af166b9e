package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
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
