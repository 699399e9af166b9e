package dorisemu

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSequenceColumn pins Unique Key sequence-column semantics: per key the
// version with the highest sequence value stays (equal: the later load
// wins), a delete needs a value at least the current one, a hidden
// sequence column (sequence_type) is fed through the
// function_column.sequence_col header, and the header is refused where it
// does not fit.
func TestSequenceColumn(t *testing.T) {
	e := startEmu(t, Options{})
	require.NoError(t, e.Exec("CREATE DATABASE IF NOT EXISTS demo"))
	require.NoError(t, e.Exec(`CREATE TABLE demo.m (k INT, v VARCHAR(10) NULL, s BIGINT NULL) UNIQUE KEY(k) DISTRIBUTED BY HASH(k) BUCKETS 1 PROPERTIES ("function_column.sequence_col" = "s")`))
	require.NoError(t, e.Exec(`CREATE TABLE demo.h (k INT, v VARCHAR(10) NULL, s BIGINT NULL) UNIQUE KEY(k) DISTRIBUTED BY HASH(k) BUCKETS 1 PROPERTIES ("function_column.sequence_type" = "bigint")`))
	require.NoError(t, e.Exec(`CREATE TABLE demo.p (k INT, v VARCHAR(10) NULL) UNIQUE KEY(k) DISTRIBUTED BY HASH(k) BUCKETS 1`))
	require.Error(t, e.Exec(`CREATE TABLE demo.d (k INT, s BIGINT) DUPLICATE KEY(k) DISTRIBUTED BY HASH(k) BUCKETS 1 PROPERTIES ("function_column.sequence_col" = "s")`))
	require.Error(t, e.Exec(`CREATE TABLE demo.x (k INT, s VARCHAR(3)) UNIQUE KEY(k) DISTRIBUTED BY HASH(k) BUCKETS 1 PROPERTIES ("function_column.sequence_col" = "s")`))

	json := map[string]string{"format": "json", "read_json_by_line": "true", "hidden_columns": DeleteSignColumn}
	with := func(k, v string) map[string]string {
		h := map[string]string{k: v}
		for a, b := range json {
			h[a] = b
		}
		return h
	}
	value := func(table string) any {
		rows, err := e.Rows("demo", table)
		require.NoError(t, err)
		if len(rows) == 0 {
			return "<deleted>"
		}
		return rows[0]["v"]
	}
	for _, c := range []struct {
		table string
		hdr   map[string]string
	}{{"m", json}, {"h", with("function_column.sequence_col", "s")}} {
		load := func(label, row string) {
			r := beLoad(t, e, c.table, c.table+label, row, c.hdr)
			require.Equal(t, "Success", r.str("Status"), r.str("Message"))
		}
		load("1", `{"k":1,"v":"ten","s":10,"__DORIS_DELETE_SIGN__":0}`)
		load("2", `{"k":1,"v":"five","s":5,"__DORIS_DELETE_SIGN__":0}`)
		require.Equal(t, "ten", value(c.table), "%s: a lower sequence value does not replace", c.table)
		load("3", `{"k":1,"v":"ten2","s":10,"__DORIS_DELETE_SIGN__":0}`)
		require.Equal(t, "ten2", value(c.table), "%s: equal: the later load wins", c.table)
		load("4", `{"k":1,"v":"x","s":9,"__DORIS_DELETE_SIGN__":1}`)
		require.Equal(t, "ten2", value(c.table), "%s: an older delete does not delete", c.table)
		load("5", `{"k":1,"v":"x","s":11,"__DORIS_DELETE_SIGN__":1}`)
		require.Equal(t, "<deleted>", value(c.table))
		load("6", `{"k":1,"v":"old","s":7,"__DORIS_DELETE_SIGN__":0}`)
		require.Equal(t, "<deleted>", value(c.table), "%s: an older version does not revive a deleted row", c.table)
		load("7", `{"k":1,"v":"new","s":12,"__DORIS_DELETE_SIGN__":0}`)
		require.Equal(t, "new", value(c.table))
	}

	r := beLoad(t, e, "h", "h8", `{"k":2,"v":"a","s":1}`, json)
	require.Equal(t, "Fail", r.str("Status"))
	require.Contains(t, r.str("Message"), "Table h has sequence column, need to specify the sequence column")
	r = beLoad(t, e, "p", "p1", `{"k":2,"v":"a"}`, with("function_column.sequence_col", "v"))
	require.Equal(t, "Fail", r.str("Status"))
	require.Contains(t, r.str("Message"), "There is no sequence column in the table p")
}
