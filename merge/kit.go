package merge

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/shardsync/shardsync/change"
)

// The exported kit below is what every source kind shares with the MySQL
// source: route matching, the merged targets with their metadata columns
// and key, schema union and evolution, and MySQL column types with their
// value conversions. Sources that learn a shard's schema from their own
// stream (canal-json from Kafka) use it instead of information_schema.

// ColumnType is a MySQL column type as a source names it, normalised the
// same way as the types the MySQL source reads from information_schema.
type ColumnType struct {
	t colType
	// bare is set when the text had no parameters where MySQL prints
	// them (TiCDC's canal-json without content-compatible sends "decimal",
	// "varchar", "datetime"): the widest parameters are assumed.
	bare bool
}

// ParseColumnType parses a MySQL type as SHOW CREATE TABLE or canal-json's
// mysqlType prints it: "int(11) unsigned", "decimal(10,4)", "varchar(16)",
// "enum('a','b')", "datetime(3)", or bare names ("decimal", "int unsigned").
// Bare types are widened: DECIMAL to (65,30) with the text of each value
// kept, CHAR/VARCHAR/BINARY/VARBINARY to unbounded length, DATETIME/
// TIMESTAMP/TIME to 6 fraction digits, BIT to 64 bits. ENUM and SET need
// their labels; without them ParseColumnType fails.
func ParseColumnType(text string) (ColumnType, error) {
	s := strings.ToLower(strings.TrimSpace(text))
	if s == "" {
		return ColumnType{}, errors.New("empty column type")
	}
	base, params := s, ""
	if i := strings.IndexByte(s, '('); i >= 0 {
		j := strings.LastIndexByte(s, ')')
		if j < i {
			return ColumnType{}, fmt.Errorf("column type %q has unbalanced parentheses", text)
		}
		base, params = strings.TrimSpace(s[:i]), s[i+1:j]
		s = base + " " + s[j+1:]
	}
	words := strings.Fields(s)
	base = words[0]
	unsigned := slices.Contains(words[1:], "unsigned")
	hasParams := strings.Contains(text, "(")
	nums := func() []int {
		var out []int
		for _, p := range strings.Split(params, ",") {
			if n, err := strconv.Atoi(strings.TrimSpace(p)); err == nil {
				out = append(out, n)
			}
		}
		return out
	}
	ct := ColumnType{}
	t := colType{base: base, unsigned: unsigned}
	switch base {
	case "tinyint", "smallint", "mediumint", "int", "bigint":
	case "integer":
		t.base = "int"
	case "bool", "boolean":
		t.base = "tinyint"
	case "float":
		t.unsigned = false
		if n := nums(); len(n) == 1 && n[0] > 24 {
			t.base = "double"
		}
	case "double", "real":
		t.base, t.unsigned = "double", false
	case "decimal", "numeric", "dec", "fixed":
		t.base, t.unsigned = "decimal", false
		switch n := nums(); {
		case len(n) == 2:
			t.prec, t.scale = n[0], n[1]
		case len(n) == 1:
			t.prec = n[0]
		default:
			t.prec, t.scale, ct.bare = 65, 30, true
		}
	case "char", "varchar", "binary", "varbinary":
		if n := nums(); len(n) == 1 {
			t.length = n[0]
		} else {
			ct.bare = true
		}
		t.charset = "utf8mb4"
		if base == "binary" || base == "varbinary" {
			t.charset = "binary"
		}
	case "tinytext", "text", "mediumtext", "longtext":
		t.charset = "utf8mb4"
	case "tinyblob", "blob", "mediumblob", "longblob":
		t.charset = "binary"
	case "date", "json", "year":
	case "datetime", "timestamp", "time":
		if n := nums(); len(n) == 1 {
			t.prec = n[0]
		} else if !hasParams {
			t.prec, ct.bare = 6, true
		}
	case "bit":
		if n := nums(); len(n) == 1 {
			t.length = n[0]
		} else {
			t.length, ct.bare = 64, true
		}
	case "enum", "set":
		if params == "" {
			return ColumnType{}, fmt.Errorf("column type %q has no labels: %s values arrive as numbers and need the label list (TiCDC: set content-compatible=true in the sink URI so mysqlType carries full types)", text, strings.ToUpper(base))
		}
		elems, err := parseElems(strings.TrimSpace(text))
		if err != nil {
			return ColumnType{}, err
		}
		t.elems, t.charset = elems, "utf8mb4"
	default:
		return ColumnType{}, fmt.Errorf("column type %q is not one shardsync captures", text)
	}
	ct.t = t
	return ct, nil
}

// Kind is the change.Kind of the type's values.
func (c ColumnType) Kind() change.Kind { return c.t.kind() }

// SQL renders the type as MySQL prints it.
func (c ColumnType) SQL() string { return c.t.sql() }

// Equal reports whether two types are the same.
func (c ColumnType) Equal(o ColumnType) bool { return c.t.equal(o.t) }

// ValueFromText converts a value given as text (canal-json carries every
// non-NULL value as a JSON string) to the Go type of its Kind, with the same
// result as the MySQL source for the same stored value. loc is the zone the
// producer rendered TIMESTAMP values in (nil: UTC). Binary values arrive as
// ISO-8859-1 text (one rune per byte); ENUM as the 1-based label index;
// SET as the bit mask; BIT as an unsigned integer.
func (c ColumnType) ValueFromText(s string, loc *time.Location) (change.Value, error) {
	t := c.t
	switch t.kind() {
	case change.KindInt:
		return strconv.ParseInt(s, 10, 64)
	case change.KindUint:
		return strconv.ParseUint(s, 10, 64)
	case change.KindYear:
		if s == "" {
			return int64(0), nil
		}
		return strconv.ParseInt(s, 10, 64)
	case change.KindFloat:
		f, err := strconv.ParseFloat(s, 32)
		return float32(f), err
	case change.KindDouble:
		return strconv.ParseFloat(s, 64)
	case change.KindDecimal:
		d, err := decimal.NewFromString(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a decimal number", s)
		}
		if c.bare {
			return change.Decimal(s), nil
		}
		return change.Decimal(d.StringFixed(int32(t.scale))), nil
	case change.KindString:
		if t.base == "char" {
			s = strings.TrimRight(s, " ")
		}
		return s, nil
	case change.KindBytes:
		b := make([]byte, 0, len(s))
		for _, r := range s {
			if r > 0xff {
				return nil, fmt.Errorf("binary value has character %U, which is not ISO-8859-1 (one character per byte)", r)
			}
			b = append(b, byte(r))
		}
		return padBinary(b, t), nil
	case change.KindDate:
		return change.Date(s), nil
	case change.KindDateTime:
		return change.DateTime(normFrac(s, t.prec)), nil
	case change.KindTimestamp:
		return timestampFromText(s, t.prec, loc)
	case change.KindTime:
		return change.Time(normTime(s, t.prec)), nil
	case change.KindEnum:
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("ENUM value %q is not a label index", s)
		}
		if n == 0 || n > uint64(len(t.elems)) {
			return "", nil
		}
		return t.elems[n-1], nil
	case change.KindSet:
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("SET value %q is not a bit mask", s)
		}
		return labelsOfSet(n, t.elems), nil
	case change.KindBit:
		return strconv.ParseUint(s, 10, 64)
	case change.KindJSON:
		return change.JSON(s), nil
	}
	return nil, fmt.Errorf("column type %s cannot be converted", t.sql())
}

// timestampFromText renders a TIMESTAMP text in loc as UTC.
func timestampFromText(s string, prec int, loc *time.Location) (change.Value, error) {
	if loc == nil || loc == time.UTC || strings.HasPrefix(s, "0000-00-00") {
		return change.Timestamp(normFrac(s, prec)), nil
	}
	base, frac, _ := strings.Cut(s, ".")
	tm, err := time.ParseInLocation("2006-01-02 15:04:05", base, loc)
	if err != nil {
		return nil, fmt.Errorf("TIMESTAMP value %q is not YYYY-MM-DD hh:mm:ss", s)
	}
	out := tm.UTC().Format("2006-01-02 15:04:05")
	if frac != "" {
		out += "." + frac
	}
	return change.Timestamp(normFrac(out, prec)), nil
}

// Column is one column of a shard as a source learnt it.
type Column struct {
	Name     string
	Type     ColumnType
	Nullable bool
}

// Merger holds a job's routes and the targets its shards merge into: the
// part of a source that is the same whatever the source kind. It is not
// safe for concurrent use.
type Merger struct {
	cfg     Config
	targets map[change.TableID]*target
	order   []change.TableID
	shards  map[change.TableID]*Shard
}

// Shard is one source table routed to a target.
type Shard struct{ sh *shard }

// NewMerger checks cfg's routes and metadata column names (the connection
// fields are not used) and returns an empty Merger.
func NewMerger(cfg Config) (*Merger, error) {
	cfg.setDefaults()
	var errs []error
	if len(cfg.Routes) == 0 {
		errs = append(errs, errors.New("no routes: a job needs at least one database/table regex pair and a target"))
	}
	for i, r := range cfg.Routes {
		if r.Databases == nil || r.Tables == nil || r.Target.Database == "" || r.Target.Table == "" {
			errs = append(errs, fmt.Errorf("route %d needs database and table expressions and a target db.table", i+1))
		}
	}
	if cfg.DatabaseColumn == cfg.TableColumn {
		errs = append(errs, fmt.Errorf("database and table metadata columns are both %q: give them different names", cfg.DatabaseColumn))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Merger{cfg: cfg, targets: map[change.TableID]*target{}, shards: map[change.TableID]*Shard{}}, nil
}

// Route returns the index of the first route matching the table, or -1.
func (m *Merger) Route(id change.TableID) int { return routeOf(m.cfg.Routes, id) }

// Shard returns the registered shard, or nil.
func (m *Merger) Shard(id change.TableID) *Shard { return m.shards[id] }

// RoutesFingerprint identifies the routes and metadata column names, for
// tokens: a token made under other routes must not be resumed.
func (m *Merger) RoutesFingerprint() string {
	return routesFingerprint(m.cfg.Routes, m.cfg.DatabaseColumn, m.cfg.TableColumn)
}

func toShardCols(cols []Column) []shardCol {
	out := make([]shardCol, len(cols))
	for i, c := range cols {
		out[i] = shardCol{name: c.Name, typ: c.Type.t, nullable: c.Nullable}
	}
	return out
}

// AddShard registers a table that matches route ri (see Route) with its
// columns and key, merging them into the target. It returns the shard and
// the target's schema announcement: the first one for a new target, or the
// changes it caused, or nil when the target is unchanged. On error (the
// shard cannot be merged: ErrIncompatibleSchema) nothing changed.
func (m *Merger) AddShard(id change.TableID, ri int, cols []Column, key []string, cause string) (*Shard, *change.TableSchema, error) {
	r := m.cfg.Routes[ri]
	tg := m.targets[r.Target]
	fresh := tg == nil
	if fresh {
		tg = &target{id: r.Target, route: ri, shards: map[change.TableID]*shard{}}
	}
	sc := toShardCols(cols)
	newCols, changes, err := tg.merge(id, sc, key, cause, &m.cfg, nil)
	if err != nil {
		return nil, nil, err
	}
	if fresh {
		m.targets[r.Target] = tg
		m.order = append(m.order, r.Target)
	}
	if len(tg.shards) == 0 {
		tg.key, tg.keyOf = key, id
	}
	tg.cols = newCols
	sh := &shard{id: id, target: tg, cols: sc, key: key, lastDDL: cause}
	tg.shards[id] = sh
	m.shards[id] = &Shard{sh}
	for _, o := range tg.shards {
		o.remap(&m.cfg)
	}
	if !fresh && len(changes) == 0 {
		return m.shards[id], nil, nil
	}
	return m.shards[id], &change.TableSchema{Target: tg.id, Schema: tg.schema(&m.cfg), Changes: changes, Cause: cause}, nil
}

// ChangeShard applies a shard's new columns after a compatible schema
// change (columns added at the end, types widened; the key unchanged). It
// returns the target's announcement, or nil when the target is unchanged.
// An incompatible change fails with ErrIncompatibleSchema naming the shard,
// the column and the statement, and changes nothing.
func (m *Merger) ChangeShard(s *Shard, cols []Column, key []string, cause string) (*change.TableSchema, error) {
	sh := s.sh
	sc := toShardCols(cols)
	if err := checkEvolution(sh.id, sh.cols, sc, sh.key, key, cause); err != nil {
		return nil, err
	}
	tg := sh.target
	newCols, changes, err := tg.merge(sh.id, sc, key, cause, &m.cfg, sh.cols)
	if err != nil {
		return nil, err
	}
	tg.cols = newCols
	sh.cols, sh.key, sh.lastDDL = sc, key, cause
	for _, o := range tg.shards {
		o.remap(&m.cfg)
	}
	if len(changes) == 0 {
		return nil, nil
	}
	return &change.TableSchema{Target: tg.id, Schema: tg.schema(&m.cfg), Changes: changes, Cause: cause}, nil
}

// Targets lists the targets in first-registered order with their shards.
func (m *Merger) Targets() []TargetInfo {
	out := make([]TargetInfo, 0, len(m.order))
	for _, id := range m.order {
		t := m.targets[id]
		out = append(out, TargetInfo{Target: id, Shards: sortedIDs(t.shards), Schema: t.schema(&m.cfg)})
	}
	return out
}

// ID is the shard's table.
func (s *Shard) ID() change.TableID { return s.sh.id }

// Target is the table the shard merges into.
func (s *Shard) Target() change.TableID { return s.sh.target.id }

// Key is the shard's key columns.
func (s *Shard) Key() []string { return s.sh.key }

// Columns returns the shard's columns in order.
func (s *Shard) Columns() []Column {
	out := make([]Column, len(s.sh.cols))
	for i, c := range s.sh.cols {
		out[i] = Column{Name: c.name, Type: ColumnType{t: c.typ}, Nullable: c.nullable}
	}
	return out
}

// TargetRow maps shard values (in Columns order) to a new target row:
// metadata columns filled, values coerced to widened target types, columns
// the shard lacks nil.
func (s *Shard) TargetRow(vals []change.Value) []change.Value {
	sh := s.sh
	out := sh.newTargetRow()
	for i, v := range vals {
		if j := sh.toTarget[i]; j >= 0 {
			out[j] = coerce(v, sh.kinds[i], sh.targetKinds[i])
		}
	}
	return out
}
