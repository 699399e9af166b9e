package doris

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
)

// benchRow is a merged employees row (the tutorial's schema plus the
// database_name and table_name columns) as merge emits it.
func benchEncoder(b *testing.B) (*encoder, change.Row) {
	s := schemaOf(
		col("database_name", change.KindString, "varchar(64)"), col("table_name", change.KindString, "varchar(64)"),
		col("emp_no", change.KindInt, "int"), col("birth_date", change.KindDate, "date"),
		col("first_name", change.KindString, "varchar(14)"), col("last_name", change.KindString, "varchar(16)"),
		col("gender", change.KindEnum, "enum('M','F')"), col("hire_date", change.KindDate, "date"),
	)
	enc, err := newEncoder(s, nil, []string{"database_name", "table_name", "emp_no"}, true)
	require.NoError(b, err)
	img := []change.Value{"emp_1", "employees_1", int64(10001), change.Date("1953-09-02"), "Georgi", "O'Connell", "M", change.Date("1986-06-26")}
	return enc, change.Row{Op: change.Insert, After: img}
}

// BenchmarkEncodeRow is the per-row cost of the Stream Load body (NDJSON).
func BenchmarkEncodeRow(b *testing.B) {
	enc, row := benchEncoder(b)
	buf := make([]byte, 0, 64<<10)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		var err error
		if buf, err = enc.appendRow(buf[:0], row, 0); err != nil {
			b.Fatal(err)
		}
		n += len(buf)
	}
	b.SetBytes(int64(n / max(b.N, 1)))
}

// BenchmarkEncodeUpdateKeyChange encodes an update that moves a row to a
// new key: a delete line and an upsert line.
func BenchmarkEncodeUpdateKeyChange(b *testing.B) {
	enc, row := benchEncoder(b)
	before := append([]change.Value(nil), row.After...)
	before[2] = int64(10000)
	row = change.Row{Op: change.Update, Before: before, After: row.After}
	buf := make([]byte, 0, 64<<10)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = enc.appendRow(buf[:0], row, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLabel is the label of one target's transaction per epoch: the
// readable form, and the hashed form for names outside [-_A-Za-z0-9].
func BenchmarkLabel(b *testing.B) {
	for _, tc := range []struct {
		name   string
		target change.TableID
	}{
		{"readable", change.TableID{Database: "demo", Table: "all_employees_info"}},
		{"hashed", change.TableID{Database: "démo", Table: "all employees"}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			if l := Label("shardsync_0123456789", tc.target, 1); !LabelRE.MatchString(l) {
				b.Fatalf("label %q is not a valid Doris label", l)
			}
			b.ReportAllocs()
			var epoch uint64
			for b.Loop() {
				epoch++
				_ = Label("shardsync_0123456789", tc.target, epoch)
			}
		})
	}
}
