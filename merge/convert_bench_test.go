package merge

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
)

// benchShard is one shard of the tutorial's employees table routed to a
// merged target, as discovery builds it.
func benchShard() *shard {
	cols := []shardCol{
		{name: "emp_no", typ: colType{base: "int"}},
		{name: "birth_date", typ: colType{base: "date"}},
		{name: "first_name", typ: colType{base: "varchar", length: 14, charset: "utf8mb4"}},
		{name: "last_name", typ: colType{base: "varchar", length: 16, charset: "utf8mb4"}},
		{name: "gender", typ: colType{base: "enum", elems: []string{"M", "F"}, charset: "utf8mb4"}},
		{name: "hire_date", typ: colType{base: "date"}},
	}
	t := &target{id: change.TableID{Database: "demo", Table: "all_employees_info"}, cols: cols, key: []string{"emp_no"}}
	sh := &shard{id: change.TableID{Database: "emp_1", Table: "employees_1"}, target: t, cols: cols}
	sh.remap(&Config{})
	return sh
}

// BenchmarkBinlogRowConversion converts one binlog row image as go-mysql
// decodes it (INT as int32, DATE and VARCHAR as string, ENUM as its
// 1-based index) into the merged target row with its metadata columns.
func BenchmarkBinlogRowConversion(b *testing.B) {
	sh := benchShard()
	r, s := &binlogReader{}, &Source{}
	raw := []any{int32(10001), "1953-09-02", "Georgi", "Facello", int64(1), "1986-06-26"}
	vals, err := r.values(sh, raw, nil)
	require.NoError(b, err)
	row := s.targetRow(sh, vals)
	require.Equal(b, []change.Value{"emp_1", "employees_1", int64(10001), change.Date("1953-09-02"), "Georgi", "Facello", "M", change.Date("1986-06-26")}, row)
	b.ReportAllocs()
	var buf []change.Value
	for b.Loop() {
		vals, err := r.values(sh, raw, buf)
		if err != nil {
			b.Fatal(err)
		}
		buf = vals
		_ = s.targetRow(sh, vals)
	}
}
