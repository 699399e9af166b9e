package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestValidateListsEveryProblem: one validate run names every problem of
// a file, each with its line: unknown keys (top level, source, pipeline),
// a bad value, a bad value only the job's checks see (a regex), a route
// without its sink-table, and the hosts that cannot be reached.
func TestValidateListsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	srcPort, err := freeLoopbackPort()
	require.NoError(t, err)
	fePort, err := freeLoopbackPort()
	require.NoError(t, err)
	path := filepath.Join(dir, "pipeline.yaml")
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(`source:
  type: mysql
  hostname: 127.0.0.1
  port: %d
  tables: emp_[0-9+.employees_[0-9]+
  hostnme: typo
sink:
  type: doris
  fenodes: 127.0.0.1:%d
  sink.label-prefix: ok_prefix
route:
  - source-table: emp_[0-9]+.employees_[0-9]+
pipeline:
  checkpoint-interval: soon
  max-outage: 5m
  local-time-zone: Mars/Olympus
  parallelizm: 4
extra: 1
`, srcPort, fePort)), 0o600))

	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"validate", "-f", path, "--ledger", filepath.Join(dir, "job.ledger")})
	err = cmd.ExecuteContext(t.Context())
	require.Error(t, err)
	var buf bytes.Buffer
	require.Equal(t, exitUsage, exitCode(err, &buf))
	text := out.String()
	t.Log(text)
	for _, want := range []string{
		path + `:6: unknown key "hostnme" in source:`,
		path + `:12: a route needs source-table and sink-table`,
		path + `:14: pipeline.checkpoint-interval "soon"`,
		path + `:17: unknown key "parallelizm" in pipeline:`,
		path + `:18: unknown key "extra" at the top level`,
		path + `:16: --local-time-zone "Mars/Olympus"`,
		path + `:5: `, // the bad regex, reported by the job's checks with the line of source.tables
		fmt.Sprintf("FAIL source 127.0.0.1:%d", srcPort),
		fmt.Sprintf("FAIL doris FE 127.0.0.1:%d", fePort),
	} {
		require.Contains(t, text, want)
	}
	require.Contains(t, text, "configuration: 7 problem(s)")
}
