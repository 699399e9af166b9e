package merge

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/testenv"
)

const fidelityDDL = `CREATE TABLE types_db.types_t (
  id INT NOT NULL PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT, miu MEDIUMINT UNSIGNED,
  i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
  f FLOAT, d DOUBLE, dec1 DECIMAL(65,30), dec2 DECIMAL(20,6),
  dt DATE, dtm0 DATETIME, dtm3 DATETIME(3), dtm6 DATETIME(6), ts6 TIMESTAMP(6) NULL, tm3 TIME(3), tm0 TIME, yr YEAR,
  en ENUM('a','b','c d'), st SET('x','y','z'), js JSON, b10 BIT(10), b64 BIT(64),
  bin4 BINARY(4), vb VARBINARY(10), bl BLOB, ch5 CHAR(5), vc VARCHAR(20), tx TEXT, lat VARCHAR(10) CHARACTER SET latin1
) DEFAULT CHARSET=utf8mb4`

// fidelityValues are the rows inserted (by id offset 0) as SQL and the
// values expected in the stream.
var fidelityRows = []struct {
	sql  string
	want map[string]change.Value
}{
	{
		sql: `(1, 127, 255, 32767, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807, 18446744073709551615,
  1.2345678, 3.141592653589793, '12345678901234567890123456789012345.123456789012345678901234567891', '-0.000001',
  '2024-02-29', '2024-01-02 03:04:05', '2024-01-02 03:04:05.678', '9999-12-31 23:59:59.999999', '2024-01-02 03:04:05.123456', '838:59:59.999', '-12:34:56', 2155,
  'c d', 'x,z', '{"a": [1, 2.5, "é"]}', b'1010101010', b'1111111111111111111111111111111111111111111111111111111111111111',
  'ab', X'00FF7F', X'DEADBEEF00', 'ab', '😀 héllo', 'line1\nline2 ✓', 'café')`,
		want: map[string]change.Value{
			"ti": int64(127), "tiu": uint64(255), "si": int64(32767), "mi": int64(8388607), "miu": uint64(16777215),
			"i": int64(2147483647), "iu": uint64(4294967295), "bi": int64(9223372036854775807), "biu": uint64(18446744073709551615),
			"f": float32(1.2345678), "d": 3.141592653589793,
			"dec1": change.Decimal("12345678901234567890123456789012345.123456789012345678901234567891"), "dec2": change.Decimal("-0.000001"),
			"dt": change.Date("2024-02-29"), "dtm0": change.DateTime("2024-01-02 03:04:05"), "dtm3": change.DateTime("2024-01-02 03:04:05.678"),
			"dtm6": change.DateTime("9999-12-31 23:59:59.999999"),
			// inserted under session time_zone +05:00
			"ts6": change.Timestamp("2024-01-01 22:04:05.123456"), "tm3": change.Time("838:59:59.999"), "tm0": change.Time("-12:34:56"), "yr": int64(2155),
			"en": "c d", "st": "x,z", "js": `{"a": [1, 2.5, "é"]}`, "b10": uint64(0b1010101010), "b64": uint64(18446744073709551615),
			"bin4": []byte("ab\x00\x00"), "vb": []byte{0, 0xff, 0x7f}, "bl": []byte{0xde, 0xad, 0xbe, 0xef, 0}, "ch5": "ab", "vc": "😀 héllo",
			"tx": "line1\nline2 ✓", "lat": "café",
		},
	},
	{
		sql: `(2, -128, 0, -32768, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
  -3.4e38, -1.7976931348623157e308, '-0.000000000000000000000000000001', '99999999999999.999999',
  '0000-00-00', '0000-00-00 00:00:00', '1000-01-01 00:00:00.001', '1970-01-01 00:00:00.000001', '1970-01-01 05:00:01.000000', '-838:59:59.000', '00:00:00', 0,
  '', '', '[]', b'0', b'0',
  X'00000000', '', '', '', '', '', '')`,
		want: map[string]change.Value{
			"ti": int64(-128), "tiu": uint64(0), "si": int64(-32768), "mi": int64(-8388608), "miu": uint64(0),
			"i": int64(-2147483648), "iu": uint64(0), "bi": int64(-9223372036854775808), "biu": uint64(0),
			"f": float32(-3.4e38), "d": -1.7976931348623157e308,
			"dec1": change.Decimal("-0.000000000000000000000000000001"), "dec2": change.Decimal("99999999999999.999999"),
			"dt": change.Date("0000-00-00"), "dtm0": change.DateTime("0000-00-00 00:00:00"), "dtm3": change.DateTime("1000-01-01 00:00:00.001"),
			"dtm6": change.DateTime("1970-01-01 00:00:00.000001"), "ts6": change.Timestamp("1970-01-01 00:00:01.000000"),
			"tm3": change.Time("-838:59:59.000"), "tm0": change.Time("00:00:00"), "yr": int64(0),
			"en": "", "st": "", "js": "[]", "b10": uint64(0), "b64": uint64(0),
			"bin4": []byte{0, 0, 0, 0}, "vb": []byte{}, "bl": []byte{}, "ch5": "", "vc": "", "tx": "", "lat": "",
		},
	},
	{
		sql:  `(3` + strings.Repeat(", NULL", 33) + `)`,
		want: map[string]change.Value{},
	},
}

func TestTypeFidelity(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 4, TimeZone: "+08:00"})
	require.NoError(t, m.Exec("CREATE DATABASE types_db", fidelityDDL))
	insert := func(offset int) {
		c, err := m.Connect("")
		require.NoError(t, err)
		defer c.Close()
		_, err = c.Execute("SET NAMES utf8mb4")
		require.NoError(t, err)
		_, err = c.Execute("SET SESSION time_zone='+05:00', sql_mode=''")
		require.NoError(t, err)
		for _, r := range fidelityRows {
			q := r.sql
			if offset > 0 {
				q = fmt.Sprintf("(%d%s", offset+int(q[1]-'0'), q[2:])
			}
			_, err := c.Execute("INSERT INTO types_db.types_t VALUES " + q)
			require.NoError(t, err, q)
		}
	}
	insert(0)
	route, err := NewRoute(`types_db`, `types_t`, change.TableID{Database: "t", Table: "types"})
	require.NoError(t, err)
	src, err := Open(t.Context(), testConfig(t, m, route), nil, nil)
	require.NoError(t, err)
	defer src.Close()
	c := newConsumer(t)
	end := currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })
	require.Len(t, c.state, 3)
	insert(10) // the same values through the binlog
	end = currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })
	require.Len(t, c.state, 6)

	schema := c.schemas[change.TableID{Database: "t", Table: "types"}]
	kinds := map[string]change.Kind{}
	for _, col := range schema.Columns {
		kinds[col.Name] = col.Type.Kind
	}
	require.Equal(t, change.KindUint, kinds["biu"])
	require.Equal(t, change.KindDecimal, kinds["dec1"])
	require.Equal(t, change.KindTimestamp, kinds["ts6"])
	require.Equal(t, change.KindEnum, kinds["en"])
	require.Equal(t, change.KindBit, kinds["b64"])
	require.Equal(t, change.KindBytes, kinds["bin4"])

	row := func(id int64) map[string]any {
		for k, r := range c.state {
			if k.key == fmt.Sprint(id)+"|" {
				return r
			}
		}
		t.Fatalf("row %d missing", id)
		return nil
	}
	for i, fr := range fidelityRows {
		snap, bin := row(int64(i+1)), row(int64(i+11))
		for _, col := range schema.Columns[3:] {
			want, ok := fr.want[col.Name]
			if !ok {
				want = nil
			}
			require.Equal(t, want, snap[col.Name], "snapshot row %d column %s (%s)", i+1, col.Name, col.Type.SQL)
			require.Equal(t, want, bin[col.Name], "binlog row %d column %s (%s)", i+11, col.Name, col.Type.SQL)
		}
	}
}
