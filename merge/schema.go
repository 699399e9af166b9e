package merge

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/shardsync/shardsync/change"
)

// Schema tracking.
//
// A shard's schema is known from two places that must agree: the server's
// information_schema (at start, for the snapshot, and after a DDL statement)
// and the binlog's table-map events, which with binlog_row_metadata=FULL
// carry column names, types, signedness, charsets, ENUM/SET labels and the
// primary key of the table *as it was when the row was written*. Rows are
// always decoded with the table map of their own event, so replaying old
// binlog after later DDL never mis-maps columns (the failure mode of
// go-mysql canal, which re-reads the current schema).
//
// Both sources are normalised into colType, so that equal columns compare
// equal whichever way they were learnt. A target's schema is the metadata
// columns followed by the union of its shards' columns, in first-seen order;
// a column present in only some shards is nullable; differing types merge to
// the narrowest type holding both (widen), or the shards are incompatible.

// colType is a normalised MySQL column type.
type colType struct {
	base     string // tinyint … bigint, float, double, decimal, char, varchar, *text, binary, varbinary, *blob, date, datetime, timestamp, time, year, enum, set, json, bit
	unsigned bool
	length   int // characters (char, varchar), bytes (binary, varbinary), bits (bit)
	prec     int // decimal precision; fractional digits of datetime, timestamp, time
	scale    int // decimal scale
	elems    []string
	charset  string // character set of string columns ("binary" for binary ones)
}

type shardCol struct {
	name     string
	typ      colType
	nullable bool
	// def is the column's default as literal text (nil: none or NULL);
	// defExpr marks a default that is an expression (CURRENT_TIMESTAMP,
	// a function), whose value for existing rows cannot be known. Read
	// from information_schema; the binlog's table maps do not carry it.
	def     *string
	defExpr bool
	// fill (target columns only) is the value the target's rows that have
	// no value of their own hold in this column: the default the column
	// was added with by an ALTER on a shard (the sink's ADD COLUMN …
	// DEFAULT filled the existing rows with it), so rows of shards that
	// lack the column carry it too. nil: NULL.
	fill *string
}

// addedFill is the value rows existing when c is added by ALTER TABLE
// hold in the source: its literal default, or for a NOT NULL column
// without one the implicit default. ok is false when that value cannot be
// known (an expression default such as CURRENT_TIMESTAMP, or an implicit
// default of a temporal or JSON column).
func addedFill(c shardCol) (fill *string, ok bool) {
	if c.defExpr {
		return nil, false
	}
	if c.def != nil {
		if _, err := fillValue(*c.def, c.typ); err != nil {
			return nil, false
		}
		return c.def, true
	}
	if c.nullable {
		return nil, true
	}
	var v string
	switch c.typ.kind() {
	case change.KindInt, change.KindUint, change.KindFloat, change.KindDouble, change.KindDecimal, change.KindBit:
		v = "0"
	case change.KindString, change.KindSet, change.KindBytes:
		v = ""
	case change.KindEnum:
		if len(c.typ.elems) == 0 {
			return nil, false
		}
		v = c.typ.elems[0]
	default:
		return nil, false
	}
	return &v, true
}

// fillValue converts a fill's literal text to the value of a column of
// type t.
func fillValue(text string, t colType) (change.Value, error) {
	switch t.kind() {
	case change.KindInt, change.KindYear:
		return strconv.ParseInt(text, 10, 64)
	case change.KindUint, change.KindBit:
		return strconv.ParseUint(text, 10, 64)
	case change.KindFloat:
		f, err := strconv.ParseFloat(text, 32)
		return float32(f), err
	case change.KindDouble:
		return strconv.ParseFloat(text, 64)
	case change.KindDecimal:
		if _, err := strconv.ParseFloat(text, 64); err != nil {
			return nil, err
		}
		return change.Decimal(text), nil
	case change.KindString, change.KindEnum, change.KindSet:
		return text, nil
	case change.KindBytes:
		return padBinary([]byte(text), t), nil
	case change.KindDate:
		if _, err := time.Parse("2006-01-02", text); err != nil {
			return nil, err
		}
		return change.Date(text), nil
	case change.KindDateTime:
		if _, err := time.Parse("2006-01-02 15:04:05", text[:min(len(text), 19)]); err != nil {
			return nil, err
		}
		return change.DateTime(normFrac(text, t.prec)), nil
	}
	return nil, fmt.Errorf("a default of a %s column is not filled in by shardsync", t.kind())
}

func sameFill(a, b *string) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func fillText(f *string) string {
	if f == nil {
		return "NULL"
	}
	return strconv.Quote(*f)
}

var intRank = map[string]int{"tinyint": 1, "smallint": 2, "mediumint": 3, "int": 4, "bigint": 5}
var intByRank = []string{"", "tinyint", "smallint", "mediumint", "int", "bigint"}

// textCap is the byte capacity of the TEXT/BLOB families.
var textCap = map[string]int64{"tinytext": 255, "text": 65535, "mediumtext": 1<<24 - 1, "longtext": 1<<32 - 1,
	"tinyblob": 255, "blob": 65535, "mediumblob": 1<<24 - 1, "longblob": 1<<32 - 1}

func (t colType) kind() change.Kind {
	switch t.base {
	case "tinyint", "smallint", "mediumint", "int", "bigint":
		if t.unsigned {
			return change.KindUint
		}
		return change.KindInt
	case "float":
		return change.KindFloat
	case "double":
		return change.KindDouble
	case "decimal":
		return change.KindDecimal
	case "char", "varchar", "tinytext", "text", "mediumtext", "longtext":
		return change.KindString
	case "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob":
		return change.KindBytes
	case "date":
		return change.KindDate
	case "datetime":
		return change.KindDateTime
	case "timestamp":
		return change.KindTimestamp
	case "time":
		return change.KindTime
	case "year":
		return change.KindYear
	case "enum":
		return change.KindEnum
	case "set":
		return change.KindSet
	case "json":
		return change.KindJSON
	case "bit":
		return change.KindBit
	}
	return change.KindInvalid
}

// sql renders the type as MySQL prints it.
func (t colType) sql() string {
	var s string
	switch t.base {
	case "decimal":
		s = fmt.Sprintf("decimal(%d,%d)", t.prec, t.scale)
	case "char", "varchar", "binary", "varbinary", "bit":
		s = fmt.Sprintf("%s(%d)", t.base, t.length)
	case "datetime", "timestamp", "time":
		s = t.base
		if t.prec > 0 {
			s = fmt.Sprintf("%s(%d)", t.base, t.prec)
		}
	case "enum", "set":
		q := make([]string, len(t.elems))
		for i, e := range t.elems {
			q[i] = "'" + strings.ReplaceAll(e, "'", "''") + "'"
		}
		s = t.base + "(" + strings.Join(q, ",") + ")"
	default:
		s = t.base
	}
	if t.unsigned {
		s += " unsigned"
	}
	return s
}

func (t colType) changeType() change.Type {
	ct := change.Type{Kind: t.kind(), SQL: t.sql(), Elems: slices.Clone(t.elems)}
	switch t.base {
	case "decimal":
		ct.Precision, ct.Scale = t.prec, t.scale
	case "datetime", "timestamp", "time":
		ct.Precision = t.prec
	case "char", "varchar", "binary", "varbinary", "bit":
		ct.Length = t.length
	default:
		if c, ok := textCap[t.base]; ok && c < 1<<31 {
			ct.Length = int(c)
		}
	}
	return ct
}

func (t colType) equal(o colType) bool {
	return t.base == o.base && t.unsigned == o.unsigned && t.length == o.length && t.prec == o.prec &&
		t.scale == o.scale && slices.Equal(t.elems, o.elems)
}

// widen returns the narrowest type holding every value of a and b, or
// false when no such type exists among the compatible changes shardsync
// applies (wider integers, decimals, strings, binaries, fractions, ENUM/SET
// labels appended at the end).
func widen(a, b colType) (colType, bool) {
	if a.equal(b) {
		return a, true
	}
	ra, aInt := intRank[a.base]
	rb, bInt := intRank[b.base]
	switch {
	case aInt && bInt:
		if a.unsigned == b.unsigned {
			return colType{base: intByRank[max(ra, rb)], unsigned: a.unsigned}, true
		}
		s, u := ra, rb
		if a.unsigned {
			s, u = rb, ra
		}
		r := max(s, u+1)
		if r > 5 {
			return colType{}, false
		}
		return colType{base: intByRank[r]}, true
	case a.base == "float" && b.base == "double", a.base == "double" && b.base == "float":
		return colType{base: "double"}, true
	case a.base == "decimal" && b.base == "decimal":
		scale := max(a.scale, b.scale)
		digits := max(a.prec-a.scale, b.prec-b.scale)
		if digits+scale > 65 {
			return colType{}, false
		}
		return colType{base: "decimal", prec: digits + scale, scale: scale}, true
	case a.kind() == change.KindString && b.kind() == change.KindString,
		a.kind() == change.KindBytes && b.kind() == change.KindBytes:
		return widenString(a, b), true
	case a.base == b.base && (a.base == "datetime" || a.base == "timestamp" || a.base == "time"):
		return colType{base: a.base, prec: max(a.prec, b.prec)}, true
	case a.base == b.base && a.base == "bit":
		return colType{base: "bit", length: max(a.length, b.length)}, true
	case a.base == b.base && (a.base == "enum" || a.base == "set"):
		short, long := a, b
		if len(a.elems) > len(b.elems) {
			short, long = b, a
		}
		if slices.Equal(short.elems, long.elems[:len(short.elems)]) && (a.base == "enum" || len(long.elems) <= 64) {
			return long, true
		}
	}
	return colType{}, false
}

func widenString(a, b colType) colType {
	bin := a.kind() == change.KindBytes
	capOf := func(t colType) int64 {
		if c, ok := textCap[t.base]; ok {
			return c
		}
		if bin {
			return int64(t.length)
		}
		return int64(t.length) * 4
	}
	_, aText := textCap[a.base]
	_, bText := textCap[b.base]
	charset := a.charset
	if charset != b.charset {
		charset = "utf8mb4"
	}
	if !aText && !bText {
		base := "varchar"
		if bin {
			base = "varbinary"
		}
		if a.base == b.base && (a.base == "char" || a.base == "binary") {
			base = a.base
		}
		return colType{base: base, length: max(a.length, b.length), charset: charset}
	}
	need := max(capOf(a), capOf(b))
	names := []string{"tinytext", "text", "mediumtext", "longtext"}
	if bin {
		names = []string{"tinyblob", "blob", "mediumblob", "longblob"}
	}
	for _, n := range names {
		if textCap[n] >= need {
			return colType{base: n, charset: charset}
		}
	}
	return colType{base: names[3], charset: charset}
}

// isRow: information_schema row for one column.
type infoColumn struct {
	name, dataType, columnType, nullable, charset string
	charLen, numPrec, numScale, dtPrec            int64
}

func colTypeFromInfo(c infoColumn) (colType, error) {
	dt := strings.ToLower(c.dataType)
	ct := strings.ToLower(c.columnType)
	t := colType{base: dt, unsigned: strings.Contains(ct, "unsigned"), charset: strings.ToLower(c.charset)}
	switch dt {
	case "tinyint", "smallint", "mediumint", "int", "bigint":
	case "integer":
		t.base = "int"
	case "float":
		t.unsigned = false
	case "double", "real", "double precision":
		t.base, t.unsigned = "double", false
	case "decimal", "numeric", "fixed":
		t.base, t.unsigned, t.prec, t.scale = "decimal", false, int(c.numPrec), int(c.numScale)
	case "char", "varchar", "binary", "varbinary":
		t.length = int(c.charLen)
	case "tinytext", "text", "mediumtext", "longtext", "tinyblob", "blob", "mediumblob", "longblob", "date", "year", "json":
	case "datetime", "timestamp", "time":
		t.prec = int(c.dtPrec)
	case "bit":
		t.length = int(c.numPrec)
	case "enum", "set":
		elems, err := parseElems(c.columnType)
		if err != nil {
			return colType{}, fmt.Errorf("column %s: %w", c.name, err)
		}
		t.elems = elems
	default:
		return colType{}, fmt.Errorf("column %s has type %s, which shardsync does not capture", c.name, c.columnType)
	}
	if t.kind() == change.KindBytes {
		t.charset = "binary"
	}
	if k := t.kind(); k != change.KindString && k != change.KindEnum && k != change.KindSet && k != change.KindBytes {
		t.charset = ""
	}
	return t, nil
}

// parseElems reads the labels of "enum('a','b”c')".
func parseElems(columnType string) ([]string, error) {
	open := strings.IndexByte(columnType, '(')
	closeAt := strings.LastIndexByte(columnType, ')')
	if open < 0 || closeAt < open {
		return nil, fmt.Errorf("cannot read labels of %q", columnType)
	}
	s := columnType[open+1 : closeAt]
	var out []string
	for i := 0; i < len(s); {
		if s[i] != '\'' {
			return nil, fmt.Errorf("cannot read labels of %q", columnType)
		}
		var b strings.Builder
		i++
		for ; i < len(s); i++ {
			if s[i] == '\'' {
				if i+1 < len(s) && s[i+1] == '\'' {
					b.WriteByte('\'')
					i++
					continue
				}
				break
			}
			if s[i] == '\\' && i+1 < len(s) {
				i++
			}
			b.WriteByte(s[i])
		}
		out = append(out, b.String())
		i++ // closing quote
		if i < len(s) && s[i] == ',' {
			i++
		}
	}
	return out, nil
}

// charsets maps collation ids to character sets and charset names to their
// maximum bytes per character, as the server reports them.
type charsets struct {
	byCollation map[uint64]string
	maxLen      map[string]int
}

func (cs *charsets) charset(coll uint64) string {
	if coll == 63 {
		return "binary"
	}
	if n, ok := cs.byCollation[coll]; ok {
		return n
	}
	return "utf8mb4"
}

func (cs *charsets) bytesPerChar(charset string) int {
	if n, ok := cs.maxLen[charset]; ok && n > 0 {
		return n
	}
	return 4
}

// colsFromTableMap derives a shard's columns and key from a table-map
// event (binlog_row_metadata=FULL).
func colsFromTableMap(tm *replication.TableMapEvent, cs *charsets) ([]shardCol, []string, error) {
	names := tm.ColumnNameString()
	if len(names) != int(tm.ColumnCount) {
		return nil, nil, fmt.Errorf("the binlog table map of %s.%s carries no column names: set binlog_row_metadata=FULL on the server", tm.Schema, tm.Table)
	}
	unsigned := tm.UnsignedMap()
	colls := tm.CollationMap()
	enums := tm.EnumStrValueMap()
	sets := tm.SetStrValueMap()
	esColls := tm.EnumSetCollationMap()
	cols := make([]shardCol, tm.ColumnCount)
	for i := range cols {
		t, err := colTypeFromMap(tm, i, unsigned[i], colls, enums[i], sets[i], esColls, cs)
		if err != nil {
			return nil, nil, fmt.Errorf("%s.%s column %s: %w", tm.Schema, tm.Table, names[i], err)
		}
		_, nullable := tm.Nullable(i)
		cols[i] = shardCol{name: names[i], typ: t, nullable: nullable}
	}
	var key []string
	for _, k := range tm.PrimaryKey {
		if int(k) < len(names) {
			key = append(key, names[k])
		}
	}
	return cols, key, nil
}

func colTypeFromMap(tm *replication.TableMapEvent, i int, unsigned bool, colls map[int]uint64, enums, sets []string, esColls map[int]uint64, cs *charsets) (colType, error) {
	meta := tm.ColumnMeta[i]
	tp := tm.ColumnType[i]
	strCharset := func() string {
		if c, ok := colls[i]; ok {
			return cs.charset(c)
		}
		return "utf8mb4"
	}
	switch tp {
	case mysql.MYSQL_TYPE_TINY:
		return colType{base: "tinyint", unsigned: unsigned}, nil
	case mysql.MYSQL_TYPE_SHORT:
		return colType{base: "smallint", unsigned: unsigned}, nil
	case mysql.MYSQL_TYPE_INT24:
		return colType{base: "mediumint", unsigned: unsigned}, nil
	case mysql.MYSQL_TYPE_LONG:
		return colType{base: "int", unsigned: unsigned}, nil
	case mysql.MYSQL_TYPE_LONGLONG:
		return colType{base: "bigint", unsigned: unsigned}, nil
	case mysql.MYSQL_TYPE_FLOAT:
		return colType{base: "float"}, nil
	case mysql.MYSQL_TYPE_DOUBLE:
		return colType{base: "double"}, nil
	case mysql.MYSQL_TYPE_NEWDECIMAL:
		return colType{base: "decimal", prec: int(meta >> 8), scale: int(meta & 0xff)}, nil
	case mysql.MYSQL_TYPE_DATE, mysql.MYSQL_TYPE_NEWDATE:
		return colType{base: "date"}, nil
	case mysql.MYSQL_TYPE_DATETIME:
		return colType{base: "datetime"}, nil
	case mysql.MYSQL_TYPE_DATETIME2:
		return colType{base: "datetime", prec: int(meta)}, nil
	case mysql.MYSQL_TYPE_TIMESTAMP:
		return colType{base: "timestamp"}, nil
	case mysql.MYSQL_TYPE_TIMESTAMP2:
		return colType{base: "timestamp", prec: int(meta)}, nil
	case mysql.MYSQL_TYPE_TIME:
		return colType{base: "time"}, nil
	case mysql.MYSQL_TYPE_TIME2:
		return colType{base: "time", prec: int(meta)}, nil
	case mysql.MYSQL_TYPE_YEAR:
		return colType{base: "year"}, nil
	case mysql.MYSQL_TYPE_BIT:
		return colType{base: "bit", length: int(meta>>8)*8 + int(meta&0xff)}, nil
	case mysql.MYSQL_TYPE_JSON:
		return colType{base: "json"}, nil
	case mysql.MYSQL_TYPE_VARCHAR, mysql.MYSQL_TYPE_VAR_STRING:
		c := strCharset()
		if c == "binary" {
			return colType{base: "varbinary", length: int(meta), charset: c}, nil
		}
		return colType{base: "varchar", length: int(meta) / cs.bytesPerChar(c), charset: c}, nil
	case mysql.MYSQL_TYPE_BLOB:
		c := strCharset()
		names := []string{"tinytext", "text", "mediumtext", "longtext"}
		if c == "binary" {
			names = []string{"tinyblob", "blob", "mediumblob", "longblob"}
		}
		if meta < 1 || meta > 4 {
			return colType{}, fmt.Errorf("blob length bytes %d unknown", meta)
		}
		return colType{base: names[meta-1], charset: c}, nil
	case mysql.MYSQL_TYPE_STRING:
		rt := byte(meta >> 8)
		switch rt {
		case mysql.MYSQL_TYPE_ENUM:
			c := "utf8mb4"
			if coll, ok := esColls[i]; ok {
				c = cs.charset(coll)
			}
			return colType{base: "enum", elems: enums, charset: c}, nil
		case mysql.MYSQL_TYPE_SET:
			c := "utf8mb4"
			if coll, ok := esColls[i]; ok {
				c = cs.charset(coll)
			}
			return colType{base: "set", elems: sets, charset: c}, nil
		}
		length := int(meta & 0xff)
		if meta >= 256 {
			b0, b1 := uint8(meta>>8), uint8(meta&0xff)
			if b0&0x30 != 0x30 {
				length = int(uint16(b1) | uint16((b0&0x30)^0x30)<<4)
			}
		}
		c := strCharset()
		if c == "binary" {
			return colType{base: "binary", length: length, charset: c}, nil
		}
		return colType{base: "char", length: length / cs.bytesPerChar(c), charset: c}, nil
	}
	return colType{}, fmt.Errorf("binlog column type %d is not captured by shardsync", tp)
}

// target is one merged table and the shards routed to it.
type target struct {
	id     change.TableID
	route  int
	cols   []shardCol // union of shard columns (without the metadata columns)
	key    []string   // source key columns (same in every shard)
	keyOf  change.TableID
	shards map[change.TableID]*shard
	// fillRow is a target row holding every column's fill value (nil when
	// no column has one); rows start from a copy of it.
	fillRow []change.Value
}

// setFillRow recomputes fillRow from the columns' fills.
func (t *target) setFillRow() {
	t.fillRow = nil
	for j, c := range t.cols {
		if c.fill == nil {
			continue
		}
		v, err := fillValue(*c.fill, c.typ)
		if err != nil {
			continue // addedFill admitted only convertible fills
		}
		if t.fillRow == nil {
			t.fillRow = make([]change.Value, len(t.cols)+2)
		}
		t.fillRow[j+2] = v
	}
}

// shard is one physical table routed to a target.
type shard struct {
	id     change.TableID
	target *target
	cols   []shardCol
	key    []string
	// toTarget maps shard column i to its index in the target row
	// (metadata columns included).
	toTarget []int
	// kinds are the change.Kind of each shard column and targetKinds that
	// of the target column it maps to (remap computes both).
	kinds, targetKinds []change.Kind
	// labels[i] are the values of ENUM column i by index (0: ""), boxed
	// once; nil for other columns.
	labels [][]change.Value
	// meta holds the metadata column values (database, table), boxed once.
	meta [2]change.Value
	// lastDDL is the last statement that changed the shard, for messages.
	lastDDL string
}

// schema returns the target's change.Schema: the metadata columns, then the
// union; the key is the metadata columns then the source key.
func (t *target) schema(cfg *Config) change.Schema {
	meta := func(n string) change.Column {
		return change.Column{Name: n, Type: change.Type{Kind: change.KindString, SQL: "varchar(64)", Length: 64}}
	}
	cols := []change.Column{meta(cfg.DatabaseColumn), meta(cfg.TableColumn)}
	for _, c := range t.cols {
		cols = append(cols, change.Column{Name: c.name, Type: c.typ.changeType(), Nullable: c.nullable, Default: c.fill})
	}
	var key []string
	if len(t.key) > 0 {
		key = append([]string{cfg.DatabaseColumn, cfg.TableColumn}, t.key...)
	}
	return change.Schema{Columns: cols, Key: key}
}

// merge computes the union of the target with a shard's columns without
// changing the target. It returns the new columns and the changes, or an
// error naming the shard, the column and cause. prev is the shard's
// columns before an ALTER TABLE (nil for a shard being added): a column the
// ALTER adds filled the shard's existing rows with its default, which the
// target must hold for them too (see shardCol.fill).
func (t *target) merge(sh change.TableID, cols []shardCol, key []string, cause string, cfg *Config, prev []shardCol) ([]shardCol, []change.SchemaChange, error) {
	if len(t.shards) > 0 && !slices.Equal(t.key, key) {
		return nil, nil, fmt.Errorf("%w: shard %s has primary key (%s) but shard %s of target %s has (%s)%s", ErrIncompatibleSchema,
			sh, strings.Join(key, ", "), t.keyOf, t.id, strings.Join(t.key, ", "), causeSuffix(cause))
	}
	out := slices.Clone(t.cols)
	var changes []change.SchemaChange
	for _, c := range cols {
		if c.name == cfg.DatabaseColumn || c.name == cfg.TableColumn {
			return nil, nil, fmt.Errorf("%w: shard %s has a column %s, which is also the name of a metadata column: configure other metadata column names%s", ErrIncompatibleSchema, sh, c.name, causeSuffix(cause))
		}
		j := slices.IndexFunc(out, func(o shardCol) bool { return o.name == c.name })
		added := prev != nil && !slices.ContainsFunc(prev, func(p shardCol) bool { return p.name == c.name })
		var fill *string
		if added {
			var ok bool
			if fill, ok = addedFill(c); !ok {
				return nil, nil, fmt.Errorf("%w: shard %s added column %s with a default whose value for existing rows cannot be known (%s); add the column without a default or with a literal one, or re-snapshot the target after the change%s",
					ErrIncompatibleSchema, sh, c.name, defaultText(c), causeSuffix(cause))
			}
		}
		if j < 0 {
			nc := c
			nc.fill = fill
			if len(t.shards) > 0 {
				nc.nullable = true // the other shards lack it
			}
			out = append(out, nc)
			if len(t.shards) > 0 {
				changes = append(changes, change.SchemaChange{Kind: change.AddColumn, Column: change.Column{Name: nc.name, Type: nc.typ.changeType(), Nullable: nc.nullable, Default: nc.fill}})
			}
			continue
		}
		if added && !sameFill(out[j].fill, fill) {
			return nil, nil, fmt.Errorf("%w: shard %s added column %s, which filled its existing rows with %s, but target %s already has the column and holds %s for rows without a value of their own: add the column to every shard with the same default, or re-snapshot the target%s",
				ErrIncompatibleSchema, sh, c.name, fillText(fill), t.id, fillText(out[j].fill), causeSuffix(cause))
		}
		w, ok := widen(out[j].typ, c.typ)
		if !ok {
			return nil, nil, fmt.Errorf("%w: column %s is %s in shard %s but %s in target %s (shards merged so far, e.g. %s)%s", ErrIncompatibleSchema,
				c.name, c.typ.sql(), sh, out[j].typ.sql(), t.id, t.keyOf, causeSuffix(cause))
		}
		nullable := out[j].nullable || c.nullable
		if !w.equal(out[j].typ) || nullable != out[j].nullable {
			out[j].typ, out[j].nullable = w, nullable
			if len(t.shards) > 0 {
				changes = append(changes, change.SchemaChange{Kind: change.WidenColumn, Column: change.Column{Name: c.name, Type: w.changeType(), Nullable: nullable}})
			}
		}
	}
	// Columns this shard lacks become nullable.
	for j := range out {
		if !out[j].nullable && !slices.ContainsFunc(cols, func(c shardCol) bool { return c.name == out[j].name }) {
			out[j].nullable = true
			if len(t.shards) > 0 {
				changes = append(changes, change.SchemaChange{Kind: change.WidenColumn, Column: change.Column{Name: out[j].name, Type: out[j].typ.changeType(), Nullable: true}})
			}
		}
	}
	return out, changes, nil
}

func defaultText(c shardCol) string {
	switch {
	case c.def != nil:
		return "DEFAULT " + *c.def
	case c.nullable:
		return "no default"
	}
	return "NOT NULL without a default"
}

func causeSuffix(cause string) string {
	if cause == "" {
		return ""
	}
	return "; statement: " + cause
}

// checkEvolution tells whether a shard's schema may change from old to new
// by a compatible DDL: columns only added at the end, types only widened.
func checkEvolution(sh change.TableID, old, new []shardCol, oldKey, newKey []string, stmt string) error {
	if len(new) < len(old) {
		for _, o := range old {
			if !slices.ContainsFunc(new, func(n shardCol) bool { return n.name == o.name }) {
				return fmt.Errorf("%w: shard %s lost column %s, which cannot be applied to the merged target; statement: %s", ErrIncompatibleSchema, sh, o.name, stmt)
			}
		}
	}
	if len(new) == len(old) {
		for i, o := range old {
			n := new[i]
			if n.name != o.name && !slices.ContainsFunc(new, func(c shardCol) bool { return c.name == o.name }) &&
				!slices.ContainsFunc(old, func(c shardCol) bool { return c.name == n.name }) {
				return fmt.Errorf("%w: shard %s renamed column %s to %s; shardsync does not rename a merged target's column (the other shards, and this shard's rows already loaded, still have %s): rename the column in every shard and the target while the job is stopped and re-snapshot, or add the new column instead of renaming; statement: %s",
					ErrIncompatibleSchema, sh, o.name, n.name, o.name, stmt)
			}
		}
	}
	for i, o := range old {
		if i >= len(new) || new[i].name != o.name {
			got := "(none)"
			if i < len(new) {
				got = new[i].name
			}
			return fmt.Errorf("%w: shard %s column %d changed from %s to %s (only columns added at the end are supported); statement: %s", ErrIncompatibleSchema, sh, i+1, o.name, got, stmt)
		}
		if w, ok := widen(o.typ, new[i].typ); !ok || !w.equal(new[i].typ) {
			return fmt.Errorf("%w: shard %s column %s changed type from %s to %s, which is not a widening; statement: %s", ErrIncompatibleSchema, sh, o.name, o.typ.sql(), new[i].typ.sql(), stmt)
		}
	}
	if !slices.Equal(oldKey, newKey) {
		return fmt.Errorf("%w: shard %s changed its primary key from (%s) to (%s); statement: %s", ErrIncompatibleSchema, sh, strings.Join(oldKey, ", "), strings.Join(newKey, ", "), stmt)
	}
	return nil
}

func (s *shard) remap(cfg *Config) {
	s.toTarget = make([]int, len(s.cols))
	s.kinds = make([]change.Kind, len(s.cols))
	s.targetKinds = make([]change.Kind, len(s.cols))
	s.meta = [2]change.Value{s.id.Database, s.id.Table}
	s.labels = make([][]change.Value, len(s.cols))
	for i, c := range s.cols {
		s.toTarget[i] = -1
		s.kinds[i] = c.typ.kind()
		if s.kinds[i] == change.KindEnum {
			s.labels[i] = make([]change.Value, len(c.typ.elems)+1)
			s.labels[i][0] = ""
			for j, e := range c.typ.elems {
				s.labels[i][j+1] = e
			}
		}
		s.targetKinds[i] = s.kinds[i]
		for j, tc := range s.target.cols {
			if tc.name == c.name {
				s.toTarget[i] = j + 2
				s.targetKinds[i] = tc.typ.kind()
			}
		}
	}
}

// newTargetRow returns a target row holding only the metadata columns
// (and the fills of columns added with a default).
func (s *shard) newTargetRow() []change.Value {
	out := make([]change.Value, len(s.target.cols)+2)
	if f := s.target.fillRow; len(f) == len(out) {
		copy(out, f)
	}
	out[0], out[1] = s.meta[0], s.meta[1]
	return out
}

// isPast tells whether a table map's columns old are an earlier version
// of the shard's columns cur: every column of old is in cur (by name) with
// a type cur's holds, and old differs from cur. Rows written before a
// compatible ALTER (replayed after a restart, or in a snapshot chunk's
// binlog slice once the chunk saw the new shape) are read with their own
// table map through a view (pastView); columns they lack take the target's
// fill.
func isPast(old, cur []shardCol) bool {
	for _, o := range old {
		j := slices.IndexFunc(cur, func(c shardCol) bool { return c.name == o.name })
		if j < 0 {
			return false
		}
		if w, ok := widen(o.typ, cur[j].typ); !ok || !w.equal(cur[j].typ) {
			return false
		}
	}
	return !sameCols(old, cur)
}

// pastView is sh as it was when its columns were cols (see isPast): it
// maps to sh's target and is not registered.
func pastView(sh *shard, cols []shardCol, cfg *Config) *shard {
	v := &shard{id: sh.id, target: sh.target, cols: cols, key: sh.key, lastDDL: sh.lastDDL}
	v.remap(cfg)
	return v
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
