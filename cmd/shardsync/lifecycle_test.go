package main

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/ledger"
	"github.com/shardsync/shardsync/merge"
)

func TestSchemaChangeBehaviorOptions(t *testing.T) {
	base := []string{"--sources", "emp_[0-9]+", "--tables", "employees_[0-9]+", "--target", "demo.t"}
	for _, b := range merge.Behaviors {
		o := flagOptions(t, append(base, "--schema-change-behavior", b))
		_, err := prepare(o, quietLog(), io.Discard)
		require.NoError(t, err, b)
	}
	o := flagOptions(t, append(base, "--schema-change-behavior", "EVOLVE", "--dropped-shard-rows", "delete"))
	_, err := prepare(o, quietLog(), io.Discard)
	require.NoError(t, err, "values are case-insensitive as in Flink CDC")
	_, err = prepare(flagOptions(t, append(base, "--schema-change-behavior", "strict")), quietLog(), io.Discard)
	require.ErrorContains(t, err, `"strict": use exception, evolve, try_evolve, lenient, ignore`)
	_, err = prepare(flagOptions(t, append(base, "--dropped-shard-rows", "drop")), quietLog(), io.Discard)
	require.ErrorContains(t, err, "--dropped-shard-rows")

	// the pipeline key sets the same option
	yaml := "source:\n  type: mysql\n  hostname: h\n  port: 3306\n  username: u\n  tables: emp_[0-9]+.employees_[0-9]+\n" +
		"sink:\n  type: doris\n  fenodes: 127.0.0.1:8030\n" +
		"pipeline:\n  schema.change.behavior: exception\n  dropped-shard-rows: delete\n"
	fo, _, err := parsePipeline("p.yaml", []byte(yaml), mapEnv(nil))
	require.NoError(t, err)
	require.Equal(t, "exception", fo.schemaChange)
	require.Equal(t, "delete", fo.droppedRows)
}

func TestSkipEventRecordsTheDecision(t *testing.T) {
	path := filepath.Join(t.TempDir(), "job.ledger")
	for _, args := range [][]string{
		{"skip-event", "--ledger", path, "--position", "0-1-42"},
		{"skip-event", "--ledger", path, "--position", "mysql-bin.000002:1234", "--apply", "--note", "truncate of a test shard"},
	} {
		var out bytes.Buffer
		root := newRootCommand()
		root.SetArgs(args)
		root.SetOut(&out)
		require.NoError(t, root.ExecuteContext(t.Context()))
		require.Contains(t, out.String(), "start the job again")
	}
	l, err := ledger.Open(path, ledger.Options{})
	require.NoError(t, err)
	defer l.Close()
	ds, err := decisions(l)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"0-1-42": merge.DecisionSkip, "mysql-bin.000002:1234": merge.DecisionApply}, ds)

	// a stop message names the ledger in its commands
	stop := &merge.EventStopError{GTID: "0-1-42", File: "mysql-bin.000001", Pos: 77, Statement: "TRUNCATE t", Reason: "why", Apply: "a", Skip: "s"}
	err = withWayForward(errors.Join(stop), path)
	require.ErrorIs(t, err, merge.ErrIncompatibleSchema)
	require.Contains(t, err.Error(), "shardsync skip-event --ledger "+path+" --position 0-1-42 --apply")
	require.Contains(t, err.Error(), "mysql-bin.000001:77")
}
