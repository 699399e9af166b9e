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
