package maxcompute

import (
	"fmt"
	"hash/fnv"
	"regexp"
	"strconv"
	"strings"

	"github.com/aliyun/aliyun-odps-go-sdk/odps/datatype"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/tableschema"

	"github.com/shardsync/shardsync/change"
)

// Partitioned targets.
//
// The sink option `partition` names the partition every target is written
// to, level by level in the order of the table's partition columns: "k=v"
// is a static level (every row goes there), "k" a dynamic level whose value
// is the row's column k. Static levels come first, as in MaxCompute's own
// INSERT … PARTITION. A dynamic column is a partition column of the target,
// not a data column (Flink CDC's partition-keys do the same). Each epoch
// opens one session per partition it writes; on a Delta table a row whose
// partition column changes is deleted by key from its old partition and
// upserted into its new one.

// partLevel is one level of the partition option.
type partLevel struct {
	name   string
	value  string // static value; "" for a dynamic level
	static bool
}

var partNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

// parsePartitionOption reads the partition option.
func parsePartitionOption(s string) ([]partLevel, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []partLevel
	seen := map[string]bool{}
	dynamic := false
	for _, item := range strings.Split(s, ",") {
		k, v, isStatic := strings.Cut(strings.TrimSpace(item), "=")
		k, v = strings.TrimSpace(k), strings.Trim(strings.TrimSpace(v), `'"`)
		if !partNameRE.MatchString(k) {
			return nil, fmt.Errorf("partition %q: %q is not a column name (write k=v for a fixed value or k for the value of column k)", s, k)
		}
		if seen[strings.ToLower(k)] {
			return nil, fmt.Errorf("partition %q names %s twice", s, k)
		}
		seen[strings.ToLower(k)] = true
		if isStatic {
			if dynamic {
				return nil, fmt.Errorf("partition %q: fixed level %s=%s follows a level taken from a column; fixed levels come first", s, k, v)
			}
			if err := checkPartValue(k, v); err != nil {
				return nil, fmt.Errorf("partition %q: %w", s, err)
			}
		} else {
			dynamic = true
		}
		out = append(out, partLevel{name: k, value: v, static: isStatic})
	}
	return out, nil
}

// checkPartValue applies MaxCompute's rules for partition values: 1..255
// bytes, and none of / = , quotes, backslash or control characters (they
// would break the partition spec).
func checkPartValue(col, v string) error {
	if v == "" || len(v) > 255 {
		return fmt.Errorf("partition value %q of %s must be 1..255 bytes", v, col)
	}
	for _, r := range v {
		if r < 0x20 || strings.ContainsRune(`/=,'"\`, r) {
			return fmt.Errorf("partition value %q of %s holds %q, which a partition value cannot", v, col, r)
		}
	}
	return nil
}

// level is a partition level resolved against a target.
type level struct {
	name   string
	static string // the fixed value, or "" when taken from a column
	src    int    // source column index of a dynamic level, -1 otherwise
	typ    datatype.DataType
}

// resolveLevels checks the partition option against the source schema and
// returns the target's levels. A dynamic level must name a source column of
// an integer or string kind that is not part of the key.
func resolveLevels(opt []partLevel, sc change.Schema) ([]level, error) {
	var out []level
	for _, l := range opt {
		if l.static {
			for _, c := range sc.Columns {
				if strings.EqualFold(c.Name, l.name) {
					return nil, fmt.Errorf("partition %s=%s: the source has a column %s; a fixed partition level needs a name no column uses (or write just %s to take the column's value)", l.name, l.value, c.Name, l.name)
				}
			}
			out = append(out, level{name: l.name, static: l.value, src: -1, typ: datatype.StringType})
			continue
		}
		idx := -1
		for i, c := range sc.Columns {
			if strings.EqualFold(c.Name, l.name) {
				idx = i
			}
		}
		if idx < 0 {
			return nil, fmt.Errorf("partition level %s: the source has no such column (columns: %s)", l.name, columnNames(sc))
		}
		c := sc.Columns[idx]
		for _, k := range sc.Key {
			if strings.EqualFold(k, c.Name) {
				return nil, fmt.Errorf("partition level %s is a key column; MaxCompute keys are data columns and a partition column is not one: partition by a non-key column", c.Name)
			}
		}
		var typ datatype.DataType
		switch c.Type.Kind {
		case change.KindInt, change.KindYear:
			typ = datatype.BigIntType
		case change.KindString, change.KindEnum:
			typ = datatype.StringType
		default:
			return nil, fmt.Errorf("partition level %s: column %s is %s; a partition column must be an integer or a string", l.name, c.Name, c.Type.Kind)
		}
		out = append(out, level{name: c.Name, src: idx, typ: typ})
	}
	return out, nil
}

func columnNames(sc change.Schema) string {
	names := make([]string, len(sc.Columns))
	for i, c := range sc.Columns {
		names[i] = c.Name
	}
	return strings.Join(names, ", ")
}

// partitionColumns are the table's partition columns for levels.
func partitionColumns(levels []level) []tableschema.Column {
	out := make([]tableschema.Column, len(levels))
	for i, l := range levels {
		out[i] = tableschema.Column{Name: l.name, Type: l.typ}
	}
	return out
}

// partitionOf returns the tunnel partition spec ("k1=v1,k2=v2") of a row
// image, "" for an unpartitioned target.
func (tg *target) partitionOf(img []change.Value) (string, error) {
	if len(tg.levels) == 0 {
		return "", nil
	}
	var b strings.Builder
	for i, l := range tg.levels {
		v := l.static
		if l.src >= 0 {
			var err error
			if v, err = partValue(img[l.src]); err != nil {
				return "", fmt.Errorf("maxcompute: table %s: partition column %s: %w", tg.table, l.name, err)
			}
			if err := checkPartValue(l.name, v); err != nil {
				return "", fmt.Errorf("maxcompute: table %s: %w; a row cannot be placed in a partition with this value (change the source row or partition by another column)", tg.table, err)
			}
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l.name + "=" + v)
	}
	return b.String(), nil
}

func partValue(v change.Value) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", fmt.Errorf("the value is NULL, and a partition value cannot be; make the column NOT NULL in the source or partition by another column")
	case int64:
		return strconv.FormatInt(x, 10), nil
	case string:
		return x, nil
	}
	return "", fmt.Errorf("value %v of type %T cannot name a partition", v, v)
}

// partitionSQL renders a tunnel spec as a SQL partition clause body:
// `k1`='v1',`k2`='v2'.
func partitionSQL(spec string) string {
	var parts []string
	for _, kv := range strings.Split(spec, ",") {
		k, v, _ := strings.Cut(kv, "=")
		parts = append(parts, "`"+k+"`='"+v+"'")
	}
	return strings.Join(parts, ",")
}

// partitionTag shortens a partition spec for labels.
func partitionTag(spec string) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(spec))
	return fmt.Sprintf("p%016x", h.Sum64())
}
