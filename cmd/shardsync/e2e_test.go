package main

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
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

func TestJobTutorialInProcess(t *testing.T) {
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
		"--ledger", filepath.Join(t.TempDir(), "job.ledger"), "--checkpoint-interval", "300ms",
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
}
