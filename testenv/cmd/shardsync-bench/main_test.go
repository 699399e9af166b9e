package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSmoke runs every scenario on a tiny dataset so the benchmark cannot
// rot: the real shardsync binary, MariaDB and the Doris emulator, exact
// row counts and exactly-once freshness matching checked, the table and
// the results file written. The numbers themselves are not judged here.
func TestSmoke(t *testing.T) {
	out := filepath.Join(t.TempDir(), "results.md")
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{
		"-snapshot-rows", "3200", "-binlog-changes", "1600", "-steady-rate", "400", "-steady-duration", "2s",
		"-mem-scale", "0", "-checkpoint-interval", "300ms", "-out", out,
	}, &stdout, io.MultiWriter(&stderr, testWriter{t}))
	require.NoError(t, err, "stderr:\n%s", stderr.String())
	table := stdout.String()
	t.Log("\n" + table)
	for _, want := range []string{"| snapshot | 3200 rows |", "| binlog |", "| steady |", "freshness p50", "snapshot ratio ≥ 0.8", "peak RSS ≤ 150 MiB"} {
		require.Contains(t, table, want)
	}
	require.NotContains(t, table, "failed")
	doc, err := os.ReadFile(out)
	require.NoError(t, err)
	for _, want := range []string{"## Machine", "- CPU: ", "- MariaDB: 10.", "- Go: go1.", "## Results"} {
		require.Contains(t, string(doc), want)
	}
}

func TestRejectsBadFlags(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"-snapshot-rows", "3"}, &stdout, &stderr)
	require.ErrorContains(t, err, "sizes too small")
	err = run(t.Context(), []string{"-scenarios", "nope", "-shardsync", "/bin/true"}, &stdout, &stderr)
	require.ErrorContains(t, err, `unknown scenario "nope"`)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
