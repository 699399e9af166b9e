package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

func TestVersion(t *testing.T) {
	out, err := run(t, "version")
	require.NoError(t, err)
	require.Regexp(t, `^shardsync \S+.* go1\.\d+.* linux/`, out)
}

func TestUnknownFlagIsUsageError(t *testing.T) {
	_, err := run(t, "version", "--no-such-flag")
	require.Error(t, err)
	var buf bytes.Buffer
	require.Equal(t, exitUsage, exitCode(err, &buf))
	require.Contains(t, buf.String(), "no-such-flag")
}

func TestExitCodes(t *testing.T) {
	var buf bytes.Buffer
	require.Equal(t, exitOK, exitCode(nil, &buf))
	require.Equal(t, exitOK, exitCode(fmt.Errorf("stopping: %w", context.Canceled), &buf))
	require.Equal(t, exitFailure, exitCode(errors.New("boom"), &buf))
	require.Equal(t, exitUsage, exitCode(fmt.Errorf("reading flags: %w", usagef("bad regex")), &buf))
	require.Equal(t, exitInDoubt, exitCode(inDoubtError{errors.New("epoch 7 in doubt")}, &buf))
	require.Contains(t, buf.String(), "shardsync: boom")
}

func TestBadInputIsOneClearUsageError(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--sources", "emp_[0-9"}, "not a valid regular expression"},
		{[]string{"--sources", "emp", "--mysql", "nohost"}, "--mysql \"nohost\" must be host:port"},
		{[]string{"--sources", "emp", "--server-id", "0"}, "--server-id must not be 0"},
		{[]string{"--sources", "emp", "--snapshot-mode", "fast"}, "--snapshot-mode \"fast\""},
		{[]string{"--sources", "emp", "--sink", "kafka"}, "--sink \"kafka\""},
		{[]string{"--sources", "emp", "--target", "nodot"}, "must be database.table"},
		{[]string{"--sources", "emp", "--label-prefix", "bad.prefix"}, "label prefix"},
		{[]string{"--sources", "emp", "--checkpoint-interval", "0s"}, "checkpoint interval"},
		{[]string{"--sources", "emp", "--sink", "maxcompute"}, "maxcompute"},
		{[]string{"--sources", "emp", "--mysql-password-file", dir + "/missing"}, "reading the MySQL password file"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			args := append(tc.args, "--ledger", dir+"/l.ledger")
			_, err := run(t, args...)
			require.ErrorContains(t, err, tc.want)
			var buf bytes.Buffer
			require.Equal(t, exitUsage, exitCode(err, &buf))
			require.NoFileExists(t, dir+"/l.ledger", "nothing is written before the input is valid")
		})
	}
}

// TestUnreachableSourceIsClear: a source that is down at start is waited
// out like any outage; with --max-outage the job exits (code 1, not a usage
// error: the address may be right) with an error naming the source, how
// long it was tried and what to check.
func TestUnreachableSourceIsClear(t *testing.T) {
	port, err := freeLoopbackPort()
	require.NoError(t, err)
	out, err := run(t, "--sources", "emp_[0-9]+", "--mysql", fmt.Sprintf("127.0.0.1:%d", port), "--ledger", t.TempDir()+"/l.ledger",
		"--max-outage", "1500ms", "--restart-initial-backoff", "100ms", "--restart-max-backoff", "200ms")
	require.ErrorContains(t, err, "connecting to the source")
	require.ErrorContains(t, err, "check --mysql")
	require.ErrorContains(t, err, "longer than --max-outage 1.5s")
	var buf bytes.Buffer
	require.Equal(t, exitFailure, exitCode(err, &buf))
	require.Contains(t, out, "source is unreachable; waiting it out with backoff")
}

func TestParseMemoryLimit(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "0": 0, "128MiB": 128 << 20, "1GiB": 1 << 30, "512 KiB": 512 << 10, "4096": 4096, "2B": 2} {
		got, err := parseMemoryLimit(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"12MB", "-1", "lots", "9999999TiB"} {
		_, err := parseMemoryLimit(in)
		require.ErrorContains(t, err, "--memory-limit", in)
		require.ErrorAs(t, err, new(usageError))
	}
}
