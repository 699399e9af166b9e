package dorisemu

import (
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"
)

// DeleteSignColumn is the hidden column of Unique Key tables that marks a row
// as deleted (spec §1.5).
const DeleteSignColumn = "__DORIS_DELETE_SIGN__"

// Keys types as the FE names them (`OlapTable.getKeysType().name()`).
const (
	KeysUnique    = "UNIQUE_KEYS"
	KeysDuplicate = "DUPLICATE_KEYS"
)

// colType is a Doris column type. Kind is the canonical upper-case name
// (INT, VARCHAR, DECIMAL, DATETIME, ...).
type colType struct {
	Kind      string
	Len       int // CHAR/VARCHAR length in bytes
	Precision int // DECIMAL
	Scale     int // DECIMAL scale, DATETIME fractional digits
}

var typeAliases = map[string]string{
	"INTEGER": "INT", "TEXT": "STRING", "DECIMALV3": "DECIMAL", "DECIMALV2": "DECIMAL",
	"DATEV2": "DATE", "DATETIMEV2": "DATETIME", "BOOL": "BOOLEAN", "JSONB": "JSON",
}

var knownKinds = []string{
	"BOOLEAN", "TINYINT", "SMALLINT", "INT", "BIGINT", "LARGEINT", "FLOAT", "DOUBLE",
	"DECIMAL", "CHAR", "VARCHAR", "STRING", "DATE", "DATETIME", "JSON",
}

func newColType(name string, args []int) (colType, error) {
	k := strings.ToUpper(name)
	if a, ok := typeAliases[k]; ok {
		k = a
	}
	if !slices.Contains(knownKinds, k) {
		return colType{}, fmt.Errorf("unsupported column type %s (the emulator supports %s)", name, strings.Join(knownKinds, ", "))
	}
	t := colType{Kind: k}
	switch k {
	case "CHAR":
		t.Len = 1
		if len(args) > 0 {
			t.Len = args[0]
		}
		if t.Len < 1 || t.Len > 255 {
			return t, fmt.Errorf("char size must be between 1 and 255, got %d", t.Len)
		}
	case "VARCHAR":
		t.Len = 65533
		if len(args) > 0 {
			t.Len = args[0]
		}
		if t.Len < 1 || t.Len > 65533 {
			return t, fmt.Errorf("varchar size must be between 1 and 65533, got %d", t.Len)
		}
	case "DECIMAL":
		t.Precision, t.Scale = 9, 0
		if len(args) > 0 {
			t.Precision = args[0]
		}
		if len(args) > 1 {
			t.Scale = args[1]
		}
		if t.Precision < 1 || t.Precision > 38 || t.Scale < 0 || t.Scale > t.Precision {
			return t, fmt.Errorf("invalid decimal(%d,%d): precision must be 1..38 and scale 0..precision", t.Precision, t.Scale)
		}
	case "DATETIME":
		if len(args) > 0 {
			t.Scale = args[0]
		}
		if t.Scale < 0 || t.Scale > 6 {
			return t, fmt.Errorf("datetime scale must be 0..6, got %d", t.Scale)
		}
	}
	return t, nil
}

// SQL renders the type the way SHOW CREATE TABLE prints it.
func (t colType) SQL() string {
	switch t.Kind {
	case "CHAR", "VARCHAR":
		return fmt.Sprintf("%s(%d)", t.Kind, t.Len)
	case "DECIMAL":
		return fmt.Sprintf("DECIMAL(%d, %d)", t.Precision, t.Scale)
	case "DATETIME":
		if t.Scale > 0 {
			return fmt.Sprintf("DATETIME(%d)", t.Scale)
		}
	case "JSON":
		return "JSON"
	}
	return t.Kind
}

// primitiveName is what the FE `_schema` action reports as "type"
// (`PrimitiveType.toString()` of a 2.x FE: DECIMALV3 and DATEV2 types).
func (t colType) primitiveName() string {
	switch t.Kind {
	case "DECIMAL":
		switch {
		case t.Precision <= 9:
			return "DECIMAL32"
		case t.Precision <= 18:
			return "DECIMAL64"
		default:
			return "DECIMAL128I"
		}
	case "DATE":
		return "DATEV2"
	case "DATETIME":
		return "DATETIMEV2"
	case "JSON":
		return "JSONB"
	}
	return t.Kind
}

func (t colType) isInt() bool {
	switch t.Kind {
	case "TINYINT", "SMALLINT", "INT", "BIGINT":
		return true
	}
	return false
}

// column is one column of a table.
type column struct {
	Name     string
	Type     colType
	Nullable bool
	Default  *string // literal default (nil = none); "CURRENT_TIMESTAMP" is special
	Comment  string
	IsKey    bool
}

// table is a Doris OLAP table with its visible rows.
type table struct {
	ID         int64
	DB         string
	Name       string
	Columns    []column // visible columns; key columns first
	KeysType   string
	KeyCols    []string
	DistCols   []string // empty = RANDOM
	Buckets    int      // 0 = AUTO
	Partition  string   // raw PARTITION BY clause, echoed by SHOW CREATE TABLE
	Comment    string
	Properties [][2]string

	uniq map[string][]any // UNIQUE_KEYS: encoded key -> row
	dup  [][]any          // DUPLICATE_KEYS: rows in load order

	// SeqCol is the column mapped to the sequence column
	// (function_column.sequence_col); SeqType the type of a hidden
	// sequence column (function_column.sequence_type), nil when none.
	SeqCol  string
	SeqType *colType
	// seqs holds the sequence value of each key's newest version, deleted
	// keys included: like Doris before compaction removes the deleted row,
	// a load with a lower sequence value neither replaces nor revives it.
	seqs map[string]any
}

// hasSequence reports whether the table has a sequence column.
func (t *table) hasSequence() bool { return t.SeqCol != "" || t.SeqType != nil }

// SequenceColumnHidden is the hidden column holding each row's sequence value.
const SequenceColumnHidden = "__DORIS_SEQUENCE_COL__"

// seqKinds are the types a sequence column may have (integers and time).
var seqKinds = []string{"TINYINT", "SMALLINT", "INT", "BIGINT", "LARGEINT", "DATE", "DATETIME"}

// truncate removes every row.
func (t *table) truncate() {
	t.uniq = map[string][]any{}
	t.dup = nil
	t.seqs = nil
}

func (t *table) colIndex(name string) int {
	for i, c := range t.Columns {
		if strings.EqualFold(c.Name, name) {
			return i
		}
	}
	return -1
}

func (t *table) keyIdx() []int {
	idx := make([]int, 0, len(t.KeyCols))
	for _, k := range t.KeyCols {
		idx = append(idx, t.colIndex(k))
	}
	return idx
}

// sortedRows returns the visible rows ordered by the key columns (stable, so
// duplicate-key rows with equal keys keep their load order).
func (t *table) sortedRows() [][]any {
	var rows [][]any
	if t.KeysType == KeysUnique {
		rows = make([][]any, 0, len(t.uniq))
		for _, r := range t.uniq {
			rows = append(rows, r)
		}
	} else {
		rows = slices.Clone(t.dup)
	}
	ki := t.keyIdx()
	slices.SortStableFunc(rows, func(a, b []any) int {
		for _, i := range ki {
			if c := compareValues(t.Columns[i].Type, a[i], b[i]); c != 0 {
				return c
			}
		}
		return 0
	})
	return rows
}

func encodeKey(vals []any, idx []int) string {
	var sb strings.Builder
	for _, i := range idx {
		fmt.Fprintf(&sb, "%T:%v\x1f", vals[i], vals[i])
	}
	return sb.String()
}

// defaultValue returns the stored value a column takes when a load or ALTER
// does not supply one.
func (c column) defaultValue(now time.Time) (any, bool) {
	if c.Default == nil {
		if c.Nullable {
			return nil, true
		}
		return nil, false
	}
	d := *c.Default
	if strings.EqualFold(d, "CURRENT_TIMESTAMP") {
		d = now.Format("2006-01-02 15:04:05")
	}
	v, err := convertValue(c.Type, d)
	if err != nil {
		return nil, false
	}
	return v, true
}

// convError is a value that does not fit its column. alwaysFilter marks
// errors that filter the row even without strict mode (too long strings).
type convError struct {
	msg          string
	alwaysFilter bool
}

func (e *convError) Error() string { return e.msg }

var (
	minLargeInt = new(big.Int).Neg(new(big.Int).Lsh(big.NewInt(1), 127))
	maxLargeInt = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 127), big.NewInt(1))
)

var intRanges = map[string][2]int64{
	"TINYINT":  {-128, 127},
	"SMALLINT": {-32768, 32767},
	"INT":      {-2147483648, 2147483647},
	"BIGINT":   {-9223372036854775808, 9223372036854775807},
}

// convertValue turns a raw load value (string from CSV/JSON, json.Number,
// bool, nested JSON) into the stored representation of t:
// int64 for integer kinds, bool, float64, string for everything else
// (LARGEINT and DECIMAL in canonical text, DATE as 2006-01-02, DATETIME
// as 2006-01-02 15:04:05[.f]). raw must not be nil.
func convertValue(t colType, raw any) (any, error) {
	var s string
	switch v := raw.(type) {
	case string:
		s = v
	case json.Number:
		s = v.String()
	case bool:
		if t.Kind == "BOOLEAN" {
			return v, nil
		}
		if v {
			s = "1"
		} else {
			s = "0"
		}
		if t.Kind == "CHAR" || t.Kind == "VARCHAR" || t.Kind == "STRING" || t.Kind == "JSON" {
			s = strconv.FormatBool(v)
		}
	case int64:
		s = strconv.FormatInt(v, 10)
	case float64:
		s = strconv.FormatFloat(v, 'g', -1, 64)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, &convError{msg: fmt.Sprintf("cannot convert %T", raw)}
		}
		s = string(b)
	}
	bad := func() error {
		return &convError{msg: fmt.Sprintf("the value %q cannot be converted to %s", truncate(s, 64), t.SQL())}
	}
	switch t.Kind {
	case "TINYINT", "SMALLINT", "INT", "BIGINT":
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return nil, bad()
		}
		r := intRanges[t.Kind]
		if n < r[0] || n > r[1] {
			return nil, &convError{msg: fmt.Sprintf("the value %s is out of range for %s", s, t.Kind)}
		}
		return n, nil
	case "LARGEINT":
		n, ok := new(big.Int).SetString(strings.TrimSpace(s), 10)
		if !ok {
			return nil, bad()
		}
		if n.Cmp(minLargeInt) < 0 || n.Cmp(maxLargeInt) > 0 {
			return nil, &convError{msg: fmt.Sprintf("the value %s is out of range for LARGEINT", s)}
		}
		return n.String(), nil
	case "BOOLEAN":
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "1", "true":
			return true, nil
		case "0", "false":
			return false, nil
		}
		return nil, bad()
	case "FLOAT", "DOUBLE":
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return nil, bad()
		}
		return f, nil
	case "DECIMAL":
		d, err := decimal.NewFromString(strings.TrimSpace(s))
		if err != nil {
			return nil, bad()
		}
		d = d.Round(int32(t.Scale))
		intDigits := len(d.Abs().Truncate(0).String())
		if d.Abs().LessThan(decimal.NewFromInt(1)) {
			intDigits = 0
		}
		if intDigits > t.Precision-t.Scale {
			return nil, &convError{msg: fmt.Sprintf("the value %s exceeds the precision of %s", s, t.SQL())}
		}
		return d.StringFixed(int32(t.Scale)), nil
	case "CHAR", "VARCHAR":
		if len(s) > t.Len {
			return nil, &convError{
				msg:          fmt.Sprintf("the length of input is too long than schema. first 32 bytes of input str: [%s] schema length: %d; actual length: %d", truncate(s, 32), t.Len, len(s)),
				alwaysFilter: true,
			}
		}
		return s, nil
	case "STRING":
		return s, nil
	case "JSON":
		if !json.Valid([]byte(s)) {
			return nil, bad()
		}
		return s, nil
	case "DATE":
		tm, ok := parseDateTime(s)
		if !ok {
			return nil, bad()
		}
		return tm.Format("2006-01-02"), nil
	case "DATETIME":
		tm, ok := parseDateTime(s)
		if !ok {
			return nil, bad()
		}
		layout := "2006-01-02 15:04:05"
		if t.Scale > 0 {
			layout += "." + strings.Repeat("0", t.Scale)
		}
		return tm.Format(layout), nil
	}
	return nil, fmt.Errorf("unsupported type %s", t.Kind)
}

func parseDateTime(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	// A plain date is the common case; only "2006-01-02" below can match
	// 10 characters, so trying it first changes no result and saves the
	// failed attempts (each allocates an error).
	if len(s) == 10 {
		if tm, err := time.Parse(time.DateOnly, s); err == nil {
			return tm, true
		}
	}
	for _, layout := range []string{
		"2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05",
		"2006-01-02T15:04:05", "2006-01-02T15:04:05Z07:00", "2006-01-02", "20060102", "20060102150405",
	} {
		if tm, err := time.Parse(layout, s); err == nil {
			return tm, true
		}
	}
	return time.Time{}, false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// compareValues orders two stored values of type t; NULL sorts first.
func compareValues(t colType, a, b any) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	switch av := a.(type) {
	case int64:
		if bv, ok := b.(int64); ok {
			return cmpOrdered(av, bv)
		}
	case float64:
		if bv, ok := b.(float64); ok {
			return cmpOrdered(av, bv)
		}
	case bool:
		if bv, ok := b.(bool); ok {
			return cmpOrdered(boolInt(av), boolInt(bv))
		}
	case string:
		bv, ok := b.(string)
		if !ok {
			break
		}
		switch t.Kind {
		case "LARGEINT":
			x, _ := new(big.Int).SetString(av, 10)
			y, _ := new(big.Int).SetString(bv, 10)
			if x != nil && y != nil {
				return x.Cmp(y)
			}
		case "DECIMAL":
			x, err1 := decimal.NewFromString(av)
			y, err2 := decimal.NewFromString(bv)
			if err1 == nil && err2 == nil {
				return x.Cmp(y)
			}
		}
		return strings.Compare(av, bv)
	}
	return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
}

func cmpOrdered[T int64 | float64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// normalizeStored converts a value decoded from the journal (json.Number for
// numbers) back to the stored representation of t.
func normalizeStored(t colType, v any) any {
	n, ok := v.(json.Number)
	if !ok {
		return v
	}
	switch {
	case t.isInt():
		if i, err := n.Int64(); err == nil {
			return i
		}
	case t.Kind == "FLOAT" || t.Kind == "DOUBLE":
		if f, err := n.Float64(); err == nil {
			return f
		}
	}
	return n.String()
}
