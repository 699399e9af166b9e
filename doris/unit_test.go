package doris

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
)

func TestLabel(t *testing.T) {
	tid := func(db, tb string) change.TableID { return change.TableID{Database: db, Table: tb} }
	require.Equal(t, "job1_demo:all_employees_info_7", Label("job1", tid("demo", "all_employees_info"), 7))

	seen := map[string]change.TableID{}
	long := strings.Repeat("x", 200)
	targets := []change.TableID{
		tid("demo", "t"), tid("a_b", "c"), tid("a", "b_c"), tid("a.b", "c"), tid("a_b", "c_"),
		tid("d", "t.x"), tid("d", "t_x"), tid("数据", "表"), tid("数据", "表2"), tid(long, "t"), tid(long, "u"),
		tid("d", long), tid("d", long+"y"), tid("a:b", "c"), tid("a", "b:c"), tid("", ""),
	}
	for _, tg := range targets {
		for _, ep := range []uint64{0, 1, 10, math.MaxUint64} {
			for _, prefix := range []string{"p", strings.Repeat("P", 64)} {
				l := Label(prefix, tg, ep)
				require.Regexp(t, LabelRE, l, "target %v", tg)
				require.LessOrEqual(t, len(l), MaxLabelLen)
				require.True(t, strings.HasPrefix(l, prefix+"_"))
				if prev, dup := seen[l]; dup {
					t.Fatalf("label %s for %v and %v", l, prev, tg)
				}
				seen[l] = tg
				require.Equal(t, l, Label(prefix, tg, ep), "deterministic")
			}
		}
	}
}

func schemaOf(cols ...change.Column) change.Schema { return change.Schema{Columns: cols} }

func col(name string, k change.Kind, sql string) change.Column {
	return change.Column{Name: name, Type: change.Type{Kind: k, SQL: sql}, Nullable: true}
}

func TestEncodeValues(t *testing.T) {
	s := schemaOf(
		col("i", change.KindInt, "int"), col("u", change.KindUint, "bigint unsigned"),
		col("f", change.KindFloat, "float"), col("d", change.KindDouble, "double"),
		col("dec", change.KindDecimal, "decimal(40,10)"), col("s", change.KindString, "varchar(10)"),
		col("e", change.KindString, "varchar(10)"), col("n", change.KindString, "varchar(10)"),
		col("b", change.KindBytes, "varbinary(4)"), col("dt", change.KindDateTime, "datetime(6)"),
		col("z", change.KindDate, "date"), col("tm", change.KindTime, "time"), col("j", change.KindJSON, "json"),
		col("emoji", change.KindString, "varchar(4)"),
	)
	enc, err := newEncoder(s, nil, nil, true)
	require.NoError(t, err)
	row := change.Row{Op: change.Insert, After: []change.Value{
		int64(-5), uint64(math.MaxUint64), float32(0.1), 1e300,
		change.Decimal("123456789012345678901234567890.0000000001"), "a\"b\\c\n\t\x01<&>",
		"", nil, []byte{0x00, 0xff, 0x10}, change.DateTime("2024-02-29 23:59:59.000001"),
		change.Date("0000-00-00"), change.Time("-838:59:59.000000"), change.JSON(`{"a": [1, 2]}`), "😀𝄞",
	}}
	line, err := enc.appendRow(nil, row, 0)
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(string(line), "}\n"))
	require.Contains(t, string(line), `"u":18446744073709551615`)
	require.Contains(t, string(line), `"dec":"123456789012345678901234567890.0000000001"`)
	require.Contains(t, string(line), `"f":0.1,`)
	require.Contains(t, string(line), `"b":"00FF10"`)
	require.Contains(t, string(line), `"e":"","n":null`)
	require.Contains(t, string(line), `"emoji":"😀𝄞"`)

	var got map[string]any
	dec := json.NewDecoder(strings.NewReader(string(line)))
	dec.UseNumber()
	require.NoError(t, dec.Decode(&got))
	require.Equal(t, "a\"b\\c\n\t\x01<&>", got["s"])
	require.Equal(t, "2024-02-29 23:59:59.000001", got["dt"])
	require.Nil(t, got["z"], "zero date is NULL")
	require.Equal(t, `{"a": [1, 2]}`, got["j"])
	require.Equal(t, json.Number("0"), got[DeleteSign])
	require.Equal(t, json.Number("1e+300"), got["d"])

	_, err = enc.appendRow(nil, change.Row{Op: change.Insert, After: []change.Value{
		int64(1), nil, nil, nil, nil, "bad \xff utf8", nil, nil, nil, nil, nil, nil, nil, nil}}, 0)
	require.ErrorContains(t, err, "UTF-8")
	_, err = enc.appendRow(nil, change.Row{Op: change.Insert, After: []change.Value{int64(1)}}, 0)
	require.ErrorContains(t, err, "values")
}

func TestEncodeOps(t *testing.T) {
	s := schemaOf(col("database_name", change.KindString, "varchar(64)"), col("id", change.KindInt, "int"),
		col("v", change.KindString, "text"))
	enc, err := newEncoder(s, nil, []string{"database_name", "id"}, true)
	require.NoError(t, err)
	lines := func(r change.Row) string {
		b, err := enc.appendRow(nil, r, 0)
		require.NoError(t, err)
		return string(b)
	}
	require.Equal(t, `{"database_name":"d","id":1,"v":"x","__DORIS_DELETE_SIGN__":0}`+"\n",
		lines(change.Row{Op: change.Insert, After: []change.Value{"d", int64(1), "x"}}))
	require.Equal(t, `{"database_name":"d","id":1,"v":"x","__DORIS_DELETE_SIGN__":1}`+"\n",
		lines(change.Row{Op: change.Delete, Before: []change.Value{"d", int64(1), "x"}}))
	require.Equal(t, `{"database_name":"d","id":1,"v":"y","__DORIS_DELETE_SIGN__":0}`+"\n",
		lines(change.Row{Op: change.Update, Before: []change.Value{"d", int64(1), "x"}, After: []change.Value{"d", int64(1), "y"}}))
	require.Equal(t, `{"database_name":"d","id":1,"v":"x","__DORIS_DELETE_SIGN__":1}`+"\n"+
		`{"database_name":"d","id":2,"v":"x","__DORIS_DELETE_SIGN__":0}`+"\n",
		lines(change.Row{Op: change.Update, Before: []change.Value{"d", int64(1), "x"}, After: []change.Value{"d", int64(2), "x"}}))

	dup, err := newEncoder(s, func(n string) bool { return n != "v" }, []string{"id"}, false)
	require.NoError(t, err)
	b, err := dup.appendRow(nil, change.Row{Op: change.Insert, After: []change.Value{"d", int64(1), "x"}}, 0)
	require.NoError(t, err)
	require.Equal(t, `{"database_name":"d","id":1}`+"\n", string(b), "columns the target lacks are left out; no sign")
	// A target that is not Unique Key is an append log: a delete appends
	// nothing (docs/shard-merging.md, tables without a primary key).
	b, err = dup.appendRow(nil, change.Row{Op: change.Delete, Before: []change.Value{"d", int64(1), "x"}}, 0)
	require.NoError(t, err)
	require.Empty(t, b)
}

func TestDorisType(t *testing.T) {
	cases := []struct {
		c    change.Column
		key  bool
		want string
	}{
		{col("a", change.KindInt, "tinyint(4)"), false, "TINYINT"},
		{col("a", change.KindInt, "mediumint(9)"), false, "INT"},
		{col("a", change.KindInt, "int(11)"), true, "INT"},
		{col("a", change.KindInt, "bigint(20)"), false, "BIGINT"},
		{col("a", change.KindUint, "tinyint(3) unsigned"), false, "SMALLINT"},
		{col("a", change.KindUint, "int(10) unsigned"), false, "BIGINT"},
		{col("a", change.KindUint, "bigint(20) unsigned"), true, "LARGEINT"},
		{change.Column{Name: "d", Type: change.Type{Kind: change.KindDecimal, SQL: "decimal(10,2)", Precision: 10, Scale: 2}}, false, "DECIMAL(10,2)"},
		{change.Column{Name: "d", Type: change.Type{Kind: change.KindDecimal, SQL: "decimal(65,30)", Precision: 65, Scale: 30}}, false, "STRING"},
		{change.Column{Name: "s", Type: change.Type{Kind: change.KindString, SQL: "varchar(255)", Length: 255}}, false, "VARCHAR(1020)"},
		{change.Column{Name: "s", Type: change.Type{Kind: change.KindString, SQL: "varchar(20000)", Length: 20000}}, false, "STRING"},
		{change.Column{Name: "s", Type: change.Type{Kind: change.KindString, SQL: "varchar(20000)", Length: 20000}}, true, "VARCHAR(65533)"},
		{col("s", change.KindString, "longtext"), false, "STRING"},
		{change.Column{Name: "b", Type: change.Type{Kind: change.KindBytes, SQL: "binary(16)", Length: 16}}, true, "VARCHAR(32)"},
		{col("b", change.KindBytes, "blob"), false, "STRING"},
		{change.Column{Name: "t", Type: change.Type{Kind: change.KindDateTime, SQL: "datetime(3)", Precision: 3}}, false, "DATETIME(3)"},
		{col("t", change.KindTimestamp, "timestamp"), false, "DATETIME(0)"},
		{col("t", change.KindDate, "date"), false, "DATE"},
		{col("t", change.KindTime, "time"), false, "VARCHAR(16)"},
		{col("y", change.KindYear, "year(4)"), false, "SMALLINT"},
		{change.Column{Name: "e", Type: change.Type{Kind: change.KindEnum, SQL: "enum('a','bbb')", Elems: []string{"a", "bbb"}}}, false, "VARCHAR(12)"},
		{change.Column{Name: "e", Type: change.Type{Kind: change.KindSet, SQL: "set('a','bb')", Elems: []string{"a", "bb"}}}, false, "VARCHAR(20)"},
		{col("j", change.KindJSON, "json"), false, "STRING"},
		{change.Column{Name: "b", Type: change.Type{Kind: change.KindBit, SQL: "bit(8)", Length: 8}}, false, "BIGINT"},
		{change.Column{Name: "b", Type: change.Type{Kind: change.KindBit, SQL: "bit(64)", Length: 64}}, false, "LARGEINT"},
		{col("f", change.KindDouble, "double"), false, "DOUBLE"},
	}
	for _, tc := range cases {
		got, err := DorisType(tc.c, tc.key)
		require.NoError(t, err, tc.c.Type.SQL)
		require.Equal(t, tc.want, got, tc.c.Type.SQL)
	}
	_, err := DorisType(col("f", change.KindFloat, "float"), true)
	require.ErrorContains(t, err, "key")
}

func TestCreateTableSQL(t *testing.T) {
	s := change.Schema{
		Columns: []change.Column{
			{Name: "id", Type: change.Type{Kind: change.KindInt, SQL: "int(11)"}},
			{Name: "name", Type: change.Type{Kind: change.KindString, SQL: "varchar(20)", Length: 20}, Nullable: true},
			{Name: "born", Type: change.Type{Kind: change.KindDate, SQL: "date"}},
			{Name: "database_name", Type: change.Type{Kind: change.KindString, SQL: "varchar(64)", Length: 64}},
			{Name: "table_name", Type: change.Type{Kind: change.KindString, SQL: "varchar(64)", Length: 64}},
		},
		Key: []string{"id"},
	}
	key := TableKey(s, "database_name", "table_name")
	require.Equal(t, []string{"database_name", "table_name", "id"}, key)
	q, err := CreateTableSQL(change.TableID{Database: "demo", Table: "all`emp"}, s, key, 0, 1, map[string]string{"light_schema_change": "true"})
	require.NoError(t, err)
	require.Equal(t, "CREATE TABLE IF NOT EXISTS `demo`.`all``emp` (\n"+
		"  `database_name` VARCHAR(256) NOT NULL,\n"+
		"  `table_name` VARCHAR(256) NOT NULL,\n"+
		"  `id` INT NOT NULL,\n"+
		"  `name` VARCHAR(80) NULL,\n"+
		"  `born` DATE NULL\n"+
		")\nUNIQUE KEY(`database_name`, `table_name`, `id`)\n"+
		"DISTRIBUTED BY HASH(`database_name`, `table_name`, `id`) BUCKETS AUTO\n"+
		`PROPERTIES ("light_schema_change" = "true", "replication_num" = "1")`, q)

	_, err = CreateTableSQL(change.TableID{Database: "d", Table: "t"}, change.Schema{Columns: s.Columns[:1]}, nil, 1, 1, nil)
	require.ErrorContains(t, err, "no key")

	a, err := AddColumnSQL(change.TableID{Database: "d", Table: "t"}, change.Column{Name: "x", Type: change.Type{Kind: change.KindInt, SQL: "bigint"}})
	require.NoError(t, err)
	require.Equal(t, "ALTER TABLE `d`.`t` ADD COLUMN `x` BIGINT NULL", a)
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	require.Error(t, c.Validate())
	c.FENodes = []string{"127.0.0.1:8030"}
	c.LabelPrefix = "job1"
	require.NoError(t, c.Validate())
	bad := c
	bad.LabelPrefix = "a:b"
	require.Error(t, bad.Validate())
	bad = c
	bad.Headers = map[string]string{"Label": "x"}
	require.ErrorContains(t, bad.Validate(), "cannot be overridden")
	bad = c
	bad.FENodes = []string{"http://u:p@h:1"}
	require.Error(t, bad.Validate())
	require.Equal(t, "http://root:xxxxx@127.0.0.2:8040/api/d/t/_stream_load?", Redact("http://root:s3cret@127.0.0.2:8040/api/d/t/_stream_load?"))
}
