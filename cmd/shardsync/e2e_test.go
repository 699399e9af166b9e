package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/maxcompute"
	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
	"github.com/shardsync/shardsync/testenv/mcemu"
)

// lockedBuffer is a bytes.Buffer safe for the job's and the test's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestJobTutorialInProcess runs the job in both snapshot modes: the
// tutorial's 116 rows arrive, then deletes and an update follow.
func TestJobTutorialInProcess(t *testing.T) {
	for _, mode := range []string{"consistent", "watermark"} {
		t.Run(mode, func(t *testing.T) {
			m := testenv.StartMariaDB(t, testenv.MariaDBOptions{})
			require.NoError(t, m.Exec(testenv.TutorialSQL))
			emu, err := dorisemu.Start(dorisemu.Options{})
			require.NoError(t, err)
			t.Cleanup(func() { _ = emu.Close() })

			var opts jobOptions
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			opts.addFlags(fs)
			require.NoError(t, fs.Parse([]string{
				"--sources", "emp_[0-9]+", "--tables", "employees_[0-9]+", "--target", "demo.all_employees_info",
				"--mysql", m.Addr(), "--doris-fe", emu.FEHTTPAddr(), "--doris-query", emu.QueryAddr(),
				"--ledger", filepath.Join(t.TempDir(), "job.ledger"), "--checkpoint-interval", "300ms", "--snapshot-mode", mode,
			}))
			require.NoError(t, emu.Exec("CREATE DATABASE IF NOT EXISTS demo"))
			var out lockedBuffer
			log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
			j, err := prepare(opts, log, &out)
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- j.run(ctx) }()
			defer func() {
				cancel()
				require.NoError(t, <-done)
				t.Log(out.String())
			}()
			require.Eventually(t, func() bool {
				rows, err := emu.Rows("demo", "all_employees_info")
				return err == nil && len(rows) == testenv.TutorialRows
			}, 60*time.Second, 200*time.Millisecond, "116 rows in the target; log:\n%s", &out)
			require.NoError(t, m.Exec("DELETE FROM emp_1.employees_1 WHERE emp_no IN (10001,10002,10003)",
				"UPDATE emp_2.employees_2 SET first_name='Changed' WHERE emp_no=10101"))
			require.Eventually(t, func() bool {
				rows, err := emu.Rows("demo", "all_employees_info")
				if err != nil || len(rows) != testenv.TutorialRows-3 {
					return false
				}
				for _, r := range rows {
					if r["first_name"] == "Changed" {
						return true
					}
				}
				return false
			}, 30*time.Second, 200*time.Millisecond)
		})
	}
}

// mcState reads a MaxCompute emulator table as column-name maps.
func mcState(emu *mcemu.Emulator, table string) []map[string]any {
	ti, ok := emu.Table(table)
	if !ok {
		return nil
	}
	var out []map[string]any
	for _, r := range emu.Rows(table) {
		m := map[string]any{}
		for i, c := range ti.Columns {
			m[c.Name] = r[i]
		}
		out = append(out, m)
	}
	return out
}

func TestJobBothSinksInOneEpochStream(t *testing.T) {
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{})
	require.NoError(t, m.Exec(testenv.TutorialSQL))
	demu, err := dorisemu.Start(dorisemu.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = demu.Close() })
	memu := mcemu.New(mcemu.Options{})
	t.Cleanup(memu.Close)
	t.Setenv(maxcompute.EnvAccessKey, memu.AccessKey())

	var opts jobOptions
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	opts.addFlags(fs)
	require.NoError(t, fs.Parse([]string{
		"--sources", "emp_[0-9]+.employees_[0-9]+", "--target", "demo.all_employees_info", "--sink", "doris,maxcompute",
		"--mysql", m.Addr(), "--doris-fe", demu.FEHTTPAddr(), "--doris-query", demu.QueryAddr(),
		"--maxcompute-endpoint", memu.Endpoint(), "--maxcompute-project", memu.Project(),
		"--maxcompute-access-id", memu.AccessID(), "--maxcompute-buckets", "4",
		"--ledger", filepath.Join(t.TempDir(), "job.ledger"), "--checkpoint-interval", "300ms",
	}))
	var out lockedBuffer
	j, err := prepare(opts, slog.New(slog.NewTextHandler(&out, nil)), &out)
	require.NoError(t, err)
	require.NotContains(t, out.String(), memu.AccessKey())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- j.run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
		require.NotContains(t, out.String(), memu.AccessKey(), "the access key never appears in output")
	}()
	both := func(n int, check func(r map[string]any) bool) func() bool {
		return func() bool {
			drows, err := demu.Rows("demo", "all_employees_info")
			mrows := mcState(memu, "all_employees_info")
			if err != nil || len(drows) != n || len(mrows) != n {
				return false
			}
			dn, mn := 0, 0
			for _, r := range drows {
				if check(r) {
					dn++
				}
			}
			for _, r := range mrows {
				if check(r) {
					mn++
				}
			}
			return dn == 1 && mn == 1
		}
	}
	isGeorgi := func(r map[string]any) bool { return fmt.Sprint(r["first_name"]) == "Georgi" }
	require.Eventually(t, both(testenv.TutorialRows, isGeorgi), 60*time.Second, 200*time.Millisecond, "116 rows in both sinks; log:\n%s", &out)
	ti, _ := memu.Table("all_employees_info")
	require.Equal(t, []string{"database_name", "table_name", "emp_no"}, ti.PrimaryKey, "Delta table keyed by shard and source key")
	require.True(t, ti.Transactional)

	require.NoError(t, m.Exec("DELETE FROM emp_1.employees_1 WHERE emp_no IN (10001,10002,10003)",
		"UPDATE emp_2.employees_2 SET first_name='Changed' WHERE emp_no=10101"))
	isChanged := func(r map[string]any) bool { return fmt.Sprint(r["first_name"]) == "Changed" }
	require.Eventually(t, both(testenv.TutorialRows-3, isChanged), 30*time.Second, 200*time.Millisecond, "log:\n%s", &out)
}
