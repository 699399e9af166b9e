package maxcompute

import (
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/aliyun-odps-go-sdk/odps/restclient"
	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/testenv/mcemu"
)

// TestTypeMappingValueByValue creates a table from every source kind,
// writes one row through both write paths, and checks the column types
// and every decoded value.
func TestTypeMappingValueByValue(t *testing.T) {
	type tc struct {
		col      change.Column
		mcType   string
		in       change.Value
		want     any
		keyAllow bool
	}
	ts := time.Date(2024, 2, 29, 13, 14, 15, 123456000, time.UTC)
	cases := []tc{
		{col("c_tinyint", change.KindInt, "tinyint(4)", true), "TINYINT", int64(-128), int64(-128), true},
		{col("c_smallint", change.KindInt, "smallint(6)", true), "SMALLINT", int64(32767), int64(32767), true},
		{col("c_mediumint", change.KindInt, "mediumint(9)", true), "INT", int64(-8388608), int64(-8388608), true},
		{col("c_int", change.KindInt, "int(11)", true), "INT", int64(2147483647), int64(2147483647), true},
		{col("c_bigint", change.KindInt, "bigint(20)", true), "BIGINT", int64(-9223372036854775808), int64(-9223372036854775808), true},
		{col("c_utiny", change.KindUint, "tinyint(3) unsigned", true), "SMALLINT", uint64(255), int64(255), true},
		{col("c_uint", change.KindUint, "int(10) unsigned", true), "BIGINT", uint64(4294967295), int64(4294967295), true},
		{col("c_ubig", change.KindUint, "bigint(20) unsigned", true), "DECIMAL(20,0)", uint64(18446744073709551615), "18446744073709551615", true},
		{col("c_year", change.KindYear, "year(4)", true), "INT", int64(2024), int64(2024), true},
		{col("c_float", change.KindFloat, "float", true), "FLOAT", float32(1.5), float32(1.5), false},
		{col("c_double", change.KindDouble, "double", true), "DOUBLE", 2.25, 2.25, false},
		{change.Column{Name: "c_dec", Type: change.Type{Kind: change.KindDecimal, SQL: "decimal(12,3)", Precision: 12, Scale: 3}, Nullable: true}, "DECIMAL(12,3)", change.Decimal("-123456789.125"), "-123456789.125", true},
		{change.Column{Name: "c_bigdec", Type: change.Type{Kind: change.KindDecimal, SQL: "decimal(65,2)", Precision: 65, Scale: 2}, Nullable: true}, "STRING", change.Decimal("1.50"), "1.50", true},
		{col("c_varchar", change.KindString, "varchar(10)", true), "STRING", "héllo 阿里", "héllo 阿里", true},
		{col("c_char", change.KindString, "char(3)", true), "STRING", "abc", "abc", true},
		{col("c_enum", change.KindEnum, "enum('a','b')", true), "STRING", "b", "b", true},
		{col("c_set", change.KindSet, "set('a','b')", true), "STRING", "a,b", "a,b", true},
		{col("c_json", change.KindJSON, "json", true), "STRING", change.JSON(`{"k": [1, 2]}`), `{"k": [1, 2]}`, true},
		{col("c_blob", change.KindBytes, "blob", true), "BINARY", []byte{0, 1, 255}, []byte{0, 1, 255}, false},
		{change.Column{Name: "c_bit1", Type: change.Type{Kind: change.KindBit, SQL: "bit(1)", Length: 1}, Nullable: true}, "BOOLEAN", uint64(1), true, true},
		{change.Column{Name: "c_bit8", Type: change.Type{Kind: change.KindBit, SQL: "bit(8)", Length: 8}, Nullable: true}, "BIGINT", uint64(0xA5), int64(0xA5), true},
		{col("c_date", change.KindDate, "date", true), "DATE", change.Date("2024-02-29"), time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC), true},
		{col("c_zero_date", change.KindDate, "date", true), "DATE", change.Date("0000-00-00"), nil, true},
		{col("c_datetime", change.KindDateTime, "datetime(6)", true), "TIMESTAMP_NTZ", change.DateTime("2024-02-29 13:14:15.123456"), ts, true},
		{col("c_timestamp", change.KindTimestamp, "timestamp(6)", true), "TIMESTAMP", change.Timestamp("2024-02-29 13:14:15.123456"), ts, true},
		{col("c_time", change.KindTime, "time(3)", true), "STRING", change.Time("-838:59:59.000"), "-838:59:59.000", true},
		{col("c_null", change.KindInt, "int(11)", true), "INT", nil, nil, true},
	}
	for _, keyed := range []bool{false, true} {
		e := mcemu.New(mcemu.Options{})
		t.Cleanup(e.Close)
		s := newSink(t, e)
		sc := change.Schema{Columns: []change.Column{
			col("database_name", change.KindString, "varchar(64)", false),
			col("table_name", change.KindString, "varchar(64)", false),
			col("id", change.KindInt, "int", false),
		}}
		row := []change.Value{"db", "tbl", int64(1)}
		for _, c := range cases {
			sc.Columns = append(sc.Columns, c.col)
			row = append(row, c.in)
		}
		if keyed {
			sc.Key = []string{"database_name", "table_name", "id"}
		}
		target := change.TableID{Database: "demo", Table: "types"}
		require.NoError(t, s.ApplySchema(t.Context(), change.TableSchema{Target: target, Schema: sc}))
		info, ok := e.Table("types")
		require.True(t, ok)
		for i, c := range cases {
			require.Equal(t, c.mcType, info.Columns[i+3].Type, "type of %s", c.col.Name)
		}
		runEpoch(t, s, 1, []change.Row{{Op: change.Insert, Target: target, After: row}})
		rows := e.Rows("types")
		require.Len(t, rows, 1)
		for i, c := range cases {
			require.Equal(t, c.want, rows[0][i+3], "value of %s (keyed=%v)", c.col.Name, keyed)
		}
	}
}

func TestSchemaEvolution(t *testing.T) {
	e := mcemu.New(mcemu.Options{})
	t.Cleanup(e.Close)
	s := newSink(t, e)
	v1 := empSchema(true)
	v1.Schema.Columns[3] = col("age", change.KindInt, "smallint(6)", true) // replace name by a small int
	require.NoError(t, s.ApplySchema(t.Context(), v1))
	runEpoch(t, s, 1, []change.Row{{Op: change.Insert, Target: empTarget,
		After: []change.Value{"d", "t", int64(1), int64(30), change.Decimal("1.00")}}})

	// widen age SMALLINT→BIGINT, salary DECIMAL(10,2)→DECIMAL(14,2), add a column at the end
	v2 := v1
	v2.Schema.Columns = append([]change.Column(nil), v1.Schema.Columns...)
	v2.Schema.Columns[3] = col("age", change.KindInt, "bigint(20)", true)
	v2.Schema.Columns[4] = change.Column{Name: "salary", Type: change.Type{Kind: change.KindDecimal, SQL: "decimal(14,2)", Precision: 14, Scale: 2}, Nullable: true}
	v2.Schema.Columns = append(v2.Schema.Columns, col("email", change.KindString, "varchar(100)", true))
	v2.Changes = []change.SchemaChange{{Kind: change.WidenColumn, Column: v2.Schema.Columns[3]},
		{Kind: change.WidenColumn, Column: v2.Schema.Columns[4]}, {Kind: change.AddColumn, Column: v2.Schema.Columns[5]}}
	v2.Cause = "ALTER TABLE employees_1 ..."
	require.NoError(t, s.ApplySchema(t.Context(), v2))
	info, _ := e.Table("all_employees")
	var types []string
	for _, c := range info.Columns {
		types = append(types, c.Name+" "+c.Type)
	}
	require.Equal(t, []string{"database_name STRING", "table_name STRING", "id INT", "age BIGINT", "salary DECIMAL(14,2)", "email STRING"}, types)
	runEpoch(t, s, 2, []change.Row{{Op: change.Insert, Target: empTarget,
		After: []change.Value{"d", "t", int64(2), int64(1) << 40, change.Decimal("123456789012.50"), "x@y"}}})
	rows := e.Rows("all_employees")
	require.Equal(t, []any{"d", "t", int64(1), int64(30), "1.00", nil}, rows[0])
	require.Equal(t, []any{"d", "t", int64(2), int64(1) << 40, "123456789012.50", "x@y"}, rows[1])
	ddl := strings.Join(e.DDLLog(), "\n")
	require.Contains(t, ddl, "change column `age` `age` BIGINT")
	require.Contains(t, ddl, "add columns if not exists (`email` STRING)")

	// the same schema again changes nothing
	n := len(e.DDLLog())
	require.NoError(t, s.ApplySchema(t.Context(), v2))
	require.Len(t, e.DDLLog(), n)

	// incompatible: a number column becoming a string stops with a clear message
	v3 := v2
	v3.Schema.Columns = append([]change.Column(nil), v2.Schema.Columns...)
	v3.Schema.Columns[3] = col("age", change.KindString, "varchar(10)", true)
	v3.Cause = "ALTER TABLE employees_1 MODIFY age varchar(10)"
	err := s.ApplySchema(t.Context(), v3)
	require.ErrorIs(t, err, errSchema)
	require.ErrorContains(t, err, "column age of shardsync.all_employees is BIGINT but the source now needs STRING")
	require.ErrorContains(t, err, "MODIFY age varchar(10)")

	// a different key on an existing table stops too
	v4 := v2
	v4.Schema.Key = []string{"database_name", "table_name", "age"}
	require.ErrorContains(t, s.ApplySchema(t.Context(), v4), "has primary key (database_name, table_name, id) but the target key is (database_name, table_name, age)")
}

func TestConfig(t *testing.T) {
	c, err := FromOptions(map[string]string{"accessId": "id", "access-key": "secret-value", "endpoint": "http://127.0.0.1:1/api",
		"project": "p", "buckets-num": "8", "compress.algorithm": "snappy", "total.buffer-size": "32mb",
		"bucket.buffer-size": "1MB", "flush.concurrent-num": "2", "retries": "5", "tunnelEndpoint": "http://127.0.0.1:1/tunnel"})
	require.NoError(t, err)
	require.NoError(t, c.Validate())
	require.Equal(t, 8, c.BucketsNum)
	require.Equal(t, int64(32<<20), c.TotalBufferSize)
	require.Equal(t, int64(1<<20), c.BucketBufferSize)
	require.NotContains(t, c.String(), "secret-value")

	_, err = FromOptions(map[string]string{"acessId": "typo"})
	require.ErrorContains(t, err, `unknown sink option "acessId"`)

	bad := DefaultConfig()
	bad.CompressAlgorithm = "lz4"
	err = bad.Validate()
	require.ErrorContains(t, err, "accessId and accessKey are required")
	require.ErrorContains(t, err, `compress.algorithm "lz4"`)

	keyFile := t.TempDir() + "/ak"
	require.NoError(t, writeFile(keyFile, "from-file\n"))
	c2 := DefaultConfig()
	c2.AccessKeyFile = keyFile
	require.NoError(t, c2.LoadSecrets(func(k string) string {
		return map[string]string{EnvAccessID: "env-id", EnvStsToken: "tok"}[k]
	}))
	require.Equal(t, "env-id", c2.AccessID)
	require.Equal(t, "from-file", c2.AccessKey)
	require.Equal(t, "tok", c2.StsToken)
}

func TestClassify(t *testing.T) {
	he := func(code int) error {
		return restclient.HttpError{StatusCode: code, Status: http.StatusText(code), Response: &http.Response{Header: http.Header{}}}
	}
	require.Equal(t, retryForever, classify(he(429)))
	require.Equal(t, retryForever, classify(he(308)))
	require.Equal(t, retryReload, classify(he(502)))
	require.Equal(t, retryReload, classify(he(504)))
	require.Equal(t, retryBackoff, classify(he(500)))
	require.Equal(t, retryBackoff, classify(he(503)))
	require.Equal(t, retryNever, classify(he(400)))
	require.Equal(t, retryNever, classify(he(404)))
	require.Equal(t, retryBackoff, classify(errors.Join(errors.New("x"), errUnexpectedEOF())))
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }

func errUnexpectedEOF() error { return io.ErrUnexpectedEOF }

// MaxCompute's ADD COLUMNS leaves existing rows NULL, so a column added
// with a default (which the source wrote into its existing rows) is
// refused with a message naming the column and the ways out, before any
// DDL runs; without a default it is added.
func TestAddColumnWithDefaultRefused(t *testing.T) {
	e := mcemu.New(mcemu.Options{})
	t.Cleanup(e.Close)
	s := newSink(t, e)
	v1 := empSchema(true)
	require.NoError(t, s.ApplySchema(t.Context(), v1))
	n := len(e.DDLLog())
	seven := "7"
	v2 := v1
	v2.Schema.Columns = append(append([]change.Column(nil), v1.Schema.Columns...),
		change.Column{Name: "bonus", Type: change.Type{Kind: change.KindInt, SQL: "int(11)"}, Nullable: true, Default: &seven})
	v2.Changes = []change.SchemaChange{{Kind: change.AddColumn, Column: v2.Schema.Columns[len(v2.Schema.Columns)-1]}}
	v2.Cause = "ALTER TABLE emp_1.employees_1 ADD COLUMN bonus INT NOT NULL DEFAULT 7"
	err := s.ApplySchema(t.Context(), v2)
	require.Error(t, err)
	require.Contains(t, err.Error(), `column bonus was added to the source with default "7"`)
	require.Contains(t, err.Error(), "re-snapshot")
	require.Len(t, e.DDLLog(), n, "nothing altered")

	v2.Schema.Columns[len(v2.Schema.Columns)-1].Default = nil
	v2.Changes[0].Column.Default = nil
	require.NoError(t, s.ApplySchema(t.Context(), v2))
	require.Contains(t, strings.Join(e.DDLLog(), "\n"), "add columns if not exists (`bonus` INT)")
}
