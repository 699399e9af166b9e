package merge

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
)

// TestColumnTypeFromText checks canal-json's text values convert by
// mysqlType to the kinds and Go values the MySQL source produces for the
// same stored values (value.go), in both the full type form (Canal,
// TiCDC content-compatible) and TiCDC's bare form.
func TestColumnTypeFromText(t *testing.T) {
	shanghai, err := time.LoadLocation("Asia/Shanghai")
	require.NoError(t, err)
	cases := []struct {
		typ, in string
		loc     *time.Location
		kind    change.Kind
		want    change.Value
	}{
		{"bigint(20)", "-42", nil, change.KindInt, int64(-42)},
		{"bigint unsigned", "18446744073709551615", nil, change.KindUint, uint64(18446744073709551615)},
		{"int(10) unsigned zerofill", "7", nil, change.KindUint, uint64(7)},
		{"tinyint(1)", "1", nil, change.KindInt, int64(1)},
		{"float", "1.5", nil, change.KindFloat, float32(1.5)},
		{"double", "2.25", nil, change.KindDouble, 2.25},
		{"decimal(10,4)", "123.456", nil, change.KindDecimal, change.Decimal("123.4560")},
		{"decimal", "123.4560", nil, change.KindDecimal, change.Decimal("123.4560")},
		{"char(4)", "ab  ", nil, change.KindString, "ab"},
		{"varchar(16)", "héllo", nil, change.KindString, "héllo"},
		{"varchar", "x", nil, change.KindString, "x"},
		{"varbinary(8)", "\u00ff\u0000<", nil, change.KindBytes, []byte{0xff, 0, '<'}},
		{"binary(4)", "ab", nil, change.KindBytes, []byte{'a', 'b', 0, 0}},
		{"blob", "\u0080", nil, change.KindBytes, []byte{0x80}},
		{"date", "2024-08-20", nil, change.KindDate, change.Date("2024-08-20")},
		{"datetime(3)", "2024-08-20 10:00:00.5", nil, change.KindDateTime, change.DateTime("2024-08-20 10:00:00.500")},
		{"datetime", "2024-08-20 10:00:00.123456", nil, change.KindDateTime, change.DateTime("2024-08-20 10:00:00.123456")},
		{"timestamp(0)", "2024-08-20 10:00:00", shanghai, change.KindTimestamp, change.Timestamp("2024-08-20 02:00:00")},
		{"timestamp(2)", "2024-08-20 10:00:00.25", nil, change.KindTimestamp, change.Timestamp("2024-08-20 10:00:00.25")},
		{"time(1)", "-838:59:59.0", nil, change.KindTime, change.Time("-838:59:59.0")},
		{"year(4)", "2024", nil, change.KindYear, int64(2024)},
		{"enum('a','b','c')", "2", nil, change.KindEnum, "b"},
		{"set('a','b','c')", "5", nil, change.KindSet, "a,c"},
		{"bit(7)", "65", nil, change.KindBit, uint64(65)},
		{"json", `{"a": 1}`, nil, change.KindJSON, change.JSON(`{"a": 1}`)},
	}
	for _, c := range cases {
		ct, err := ParseColumnType(c.typ)
		require.NoError(t, err, c.typ)
		require.Equal(t, c.kind, ct.Kind(), c.typ)
		got, err := ct.ValueFromText(c.in, c.loc)
		require.NoError(t, err, c.typ)
		require.Equal(t, c.want, got, c.typ)
	}
	_, err = ParseColumnType("enum")
	require.ErrorContains(t, err, "content-compatible=true")
	_, err = ParseColumnType("geometry")
	require.ErrorContains(t, err, "not one shardsync captures")
	ct, _ := ParseColumnType("int")
	_, err = ct.ValueFromText("x", nil)
	require.Error(t, err)
}

// TestMergerUnion checks shards learnt from a stream merge like the MySQL
// source's: metadata columns, merged key, union, widening, refused change.
func TestMergerUnion(t *testing.T) {
	r, err := NewRoute(`emp_[0-9]+`, `t_[0-9]+`, change.TableID{Database: "d", Table: "all"})
	require.NoError(t, err)
	m, err := NewMerger(Config{Routes: []Route{r}})
	require.NoError(t, err)
	col := func(n, typ string, null bool) Column {
		ct, err := ParseColumnType(typ)
		require.NoError(t, err)
		return Column{Name: n, Type: ct, Nullable: null}
	}
	a := change.TableID{Database: "emp_1", Table: "t_1"}
	b := change.TableID{Database: "emp_2", Table: "t_1"}
	require.Equal(t, 0, m.Route(a))
	require.Equal(t, -1, m.Route(change.TableID{Database: "x", Table: "t_1"}))
	sa, ann, err := m.AddShard(a, 0, []Column{col("id", "int", false), col("v", "int", true)}, []string{"id"}, "")
	require.NoError(t, err)
	require.Equal(t, []string{"database_name", "table_name", "id"}, ann.Schema.Key)
	_, ann, err = m.AddShard(b, 0, []Column{col("id", "int", false), col("v", "bigint", true), col("w", "varchar(3)", true)}, []string{"id"}, "")
	require.NoError(t, err)
	require.Len(t, ann.Changes, 2) // v widened, w added
	require.Equal(t, []change.Value{"emp_1", "t_1", int64(1), int64(2), nil}, sa.TargetRow([]change.Value{int64(1), int64(2)}))
	_, err = m.ChangeShard(sa, []Column{col("id", "int", false)}, []string{"id"}, "ALTER TABLE t_1 DROP COLUMN v")
	require.ErrorIs(t, err, ErrIncompatibleSchema)
	require.ErrorContains(t, err, "lost column v")
}
