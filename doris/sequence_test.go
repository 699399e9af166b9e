package doris_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/doris"
	"github.com/shardsync/shardsync/testenv/dorisemu"
	"github.com/shardsync/shardsync/twopc"
)

// checkLateLoadsCannotGoBack commits loads out of order, as a replayed or
// re-ordered load would land: an older version of a row, and an older
// delete, committed after a newer version, must not replace it.
func checkLateLoadsCannotGoBack(t *testing.T, e *dorisemu.Emulator, s *doris.Sink, id change.TableID) {
	t.Helper()
	old := epoch(t, s, 1, ins(id, "emp_1", 1, "v1"))[0]
	require.Equal(t, twopc.Committed, commit(t, s, epoch(t, s, 2, ins(id, "emp_1", 1, "v2"))[0]))
	require.Equal(t, twopc.Committed, commit(t, s, old), "the late load commits")
	require.Equal(t, "v2", rowsByKey(t, e, id)["emp_1/employees_1/1"]["name"], "an older version never replaces a newer one")

	oldDel := epoch(t, s, 3, change.Row{Op: change.Delete, Target: id, Before: ins(id, "emp_1", 1, "v2").After})[0]
	require.Equal(t, twopc.Committed, commit(t, s, epoch(t, s, 4, ins(id, "emp_1", 1, "v4"))[0]))
	require.Equal(t, twopc.Committed, commit(t, s, oldDel))
	require.Equal(t, "v4", rowsByKey(t, e, id)["emp_1/employees_1/1"]["name"], "an older delete never removes a newer version")

	// In order, deletes and updates apply as before.
	require.Equal(t, twopc.Committed, commit(t, s, epoch(t, s, 5, change.Row{Op: change.Delete, Target: id, Before: ins(id, "emp_1", 1, "v4").After})[0]))
	require.NotContains(t, rowsByKey(t, e, id), "emp_1/employees_1/1")
	late := epoch(t, s, 6, ins(id, "emp_1", 1, "v6"))[0]
	require.Equal(t, twopc.Committed, commit(t, s, late))
	require.Equal(t, "v6", rowsByKey(t, e, id)["emp_1/employees_1/1"]["name"])
}

func TestEmuSequenceColumnCreated(t *testing.T) {
	e := startEmu(t, dorisemu.Options{})
	s, logs := emuSink(t, e, func(c *doris.Config) { c.SequenceColumn = "_version" })
	require.NoError(t, s.ApplySchema(t.Context(), empSchema(target)))
	require.Contains(t, logs.String(), "sequence_column=_version")
	// The table property is there: a sink without the flag discovers it.
	other, otherLogs := emuSink(t, e, nil)
	require.NoError(t, other.ApplySchema(t.Context(), empSchema(target)))
	require.Contains(t, otherLogs.String(), "sequence_column=_version")
	checkLateLoadsCannotGoBack(t, e, s, target)
	r := rowsByKey(t, e, target)["emp_1/employees_1/1"]
	require.NotNil(t, r["_version"], "shardsync filled the sequence column")

	// A source column of that name is refused.
	sch := empSchema(change.TableID{Database: "demo", Table: "other"})
	sch.Schema.Columns[3].Name = "_version"
	require.ErrorContains(t, s.ApplySchema(t.Context(), sch), "also a source column")
}

func TestEmuSequenceColumnDiscovered(t *testing.T) {
	e := startEmu(t, dorisemu.Options{})
	require.NoError(t, e.Exec("CREATE DATABASE demo"))
	require.NoError(t, e.Exec("CREATE TABLE demo.all_emp (database_name VARCHAR(64), table_name VARCHAR(64), id INT, "+
		"name VARCHAR(32) NULL, salary DECIMAL(12,2) NULL, hired DATETIME(6) NULL, ver BIGINT NULL) "+
		"UNIQUE KEY(database_name, table_name, id) DISTRIBUTED BY HASH(id) BUCKETS 1 "+
		`PROPERTIES ("replication_num" = "1", "function_column.sequence_col" = "ver")`))
	s, _ := emuSink(t, e, nil)
	require.NoError(t, s.ApplySchema(t.Context(), empSchema(target)))
	checkLateLoadsCannotGoBack(t, e, s, target)

	// A hidden sequence column (sequence_type) has nothing to fill it from.
	require.NoError(t, e.Exec("CREATE TABLE demo.hidden (database_name VARCHAR(64), table_name VARCHAR(64), id INT, name VARCHAR(32) NULL) "+
		"UNIQUE KEY(database_name, table_name, id) DISTRIBUTED BY HASH(id) BUCKETS 1 "+
		`PROPERTIES ("function_column.sequence_type" = "bigint")`))
	require.ErrorContains(t, s.ApplySchema(t.Context(), empSchema(change.TableID{Database: "demo", Table: "hidden"})), "hidden sequence column")
	// A sequence column of a type shardsync cannot fill.
	require.NoError(t, e.Exec("CREATE TABLE demo.dated (database_name VARCHAR(64), table_name VARCHAR(64), id INT, name VARCHAR(32) NULL, d DATE NULL) "+
		"UNIQUE KEY(database_name, table_name, id) DISTRIBUTED BY HASH(id) BUCKETS 1 "+
		`PROPERTIES ("function_column.sequence_col" = "d")`))
	require.ErrorContains(t, s.ApplySchema(t.Context(), empSchema(change.TableID{Database: "demo", Table: "dated"})), "make it BIGINT")
}
