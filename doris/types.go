package doris

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/shardsync/shardsync/change"
)

// Type mapping, MySQL → Doris, used when shardsync creates a target or adds
// a column (Doris lengths count bytes, MySQL's characters; utf8mb4 needs up
// to 4 bytes per character):
//
//	MySQL                            Doris
//	TINYINT                          TINYINT
//	SMALLINT, TINYINT UNSIGNED       SMALLINT
//	MEDIUMINT(±), INT,
//	SMALLINT UNSIGNED                INT
//	BIGINT, INT UNSIGNED             BIGINT
//	BIGINT UNSIGNED                  LARGEINT
//	FLOAT / DOUBLE, REAL             FLOAT / DOUBLE (not allowed in a key)
//	DECIMAL(p,s), p ≤ 38             DECIMAL(p,s)
//	DECIMAL(p,s), p > 38             STRING (exact text); VARCHAR(p+2) in a key
//	CHAR(n), VARCHAR(n)              VARCHAR(4n), capped at 65533; STRING when 4n > 65533
//	TINY/MEDIUM/LONG TEXT, TEXT      STRING; VARCHAR(65533) in a key
//	BINARY, VARBINARY, BLOB family   STRING holding HEX(value) (UNHEX restores the bytes);
//	                                 VARCHAR(2n) when 2n ≤ 65533
//	DATE                             DATE (zero dates → NULL, so the column is nullable)
//	DATETIME(p), TIMESTAMP(p)        DATETIME(p) (TIMESTAMP as UTC; zero → NULL, nullable)
//	TIME(p)                          VARCHAR(16) "[-]HHH:MM:SS.ffffff"
//	YEAR                             SMALLINT
//	ENUM, SET                        VARCHAR(4 × longest possible value)
//	JSON                             STRING (the JSON text exactly as MySQL printed it)
//	BIT(n)                           BIGINT; LARGEINT for BIT(64)
//
// Key columns must come first in a Doris Unique Key table and may not be
// FLOAT, DOUBLE or STRING; the mapping uses VARCHAR for string-like keys.

const maxVarchar = 65533

// DorisType returns the Doris column type for c; key says whether c is part
// of the Unique Key.
func DorisType(c change.Column, key bool) (string, error) {
	t := c.Type
	sql := strings.ToLower(t.SQL)
	str := func(n int) string {
		if n <= 0 {
			n = 1
		}
		if n > maxVarchar {
			if key {
				return "VARCHAR(65533)"
			}
			return "STRING"
		}
		return "VARCHAR(" + strconv.Itoa(n) + ")"
	}
	switch t.Kind {
	case change.KindInt:
		switch {
		case strings.HasPrefix(sql, "tinyint"):
			return "TINYINT", nil
		case strings.HasPrefix(sql, "smallint"):
			return "SMALLINT", nil
		case strings.HasPrefix(sql, "bigint"):
			return "BIGINT", nil
		case strings.HasPrefix(sql, "int"), strings.HasPrefix(sql, "mediumint"), strings.HasPrefix(sql, "integer"):
			return "INT", nil
		}
		return "BIGINT", nil
	case change.KindUint:
		switch {
		case strings.HasPrefix(sql, "tinyint"):
			return "SMALLINT", nil
		case strings.HasPrefix(sql, "smallint"), strings.HasPrefix(sql, "mediumint"):
			return "INT", nil
		case strings.HasPrefix(sql, "int"):
			return "BIGINT", nil
		}
		return "LARGEINT", nil
	case change.KindYear:
		return "SMALLINT", nil
	case change.KindBit:
		if t.Length >= 64 || t.Length == 0 {
			return "LARGEINT", nil
		}
		return "BIGINT", nil
	case change.KindFloat, change.KindDouble:
		if key {
			return "", fmt.Errorf("column %q: Doris does not allow %s in a key", c.Name, t.Kind)
		}
		if t.Kind == change.KindFloat {
			return "FLOAT", nil
		}
		return "DOUBLE", nil
	case change.KindDecimal:
		p, s := t.Precision, t.Scale
		if p <= 0 {
			p, s = 10, 0
		}
		if p <= 38 {
			return fmt.Sprintf("DECIMAL(%d,%d)", p, s), nil
		}
		if key {
			return str(p + 2), nil
		}
		return "STRING", nil
	case change.KindString:
		if t.Length <= 0 || strings.Contains(sql, "text") {
			if key {
				return "VARCHAR(65533)", nil
			}
			return "STRING", nil
		}
		return str(4 * t.Length), nil
	case change.KindBytes:
		if t.Length <= 0 || strings.Contains(sql, "blob") {
			if key {
				return "VARCHAR(65533)", nil
			}
			return "STRING", nil
		}
		return str(2 * t.Length), nil
	case change.KindEnum, change.KindSet:
		n := 0
		for _, e := range t.Elems {
			if t.Kind == change.KindEnum {
				n = max(n, len(e))
			} else {
				n += len(e) + 1
			}
		}
		return str(4 * n), nil
	case change.KindDate:
		return "DATE", nil
	case change.KindDateTime, change.KindTimestamp:
		return fmt.Sprintf("DATETIME(%d)", min(max(t.Precision, 0), 6)), nil
	case change.KindTime:
		return "VARCHAR(16)", nil
	case change.KindJSON:
		if key {
			return "", fmt.Errorf("column %q: Doris does not allow JSON in a key", c.Name)
		}
		return "STRING", nil
	}
	return "", fmt.Errorf("column %q: no Doris type for MySQL type %q (kind %s)", c.Name, t.SQL, t.Kind)
}

// zeroable kinds carry MySQL zero dates, stored as NULL.
func zeroable(k change.Kind) bool {
	return k == change.KindDate || k == change.KindDateTime || k == change.KindTimestamp
}

// TableKey returns the key of a created target: the metadata columns, then
// the source key (without repeating a column).
func TableKey(s change.Schema, dbCol, tableCol string) []string {
	key := []string{}
	for _, k := range append([]string{dbCol, tableCol}, s.Key...) {
		if s.Index(k) >= 0 && !slices.Contains(key, k) {
			key = append(key, k)
		}
	}
	return key
}

// quoteIdent quotes a Doris identifier with backticks.
func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

func quoteString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// CreateTableSQL returns the CREATE TABLE statement of a Unique Key target
// for schema s with the given key (see TableKey): key columns first and NOT
// NULL, the other columns in schema order with their source nullability
// (date kinds always nullable: zero dates are NULL).
func CreateTableSQL(target change.TableID, s change.Schema, key []string, buckets, replication int, props map[string]string) (string, error) {
	if len(key) == 0 {
		return "", fmt.Errorf("creating %s: the table has no key; a Unique Key target needs one", target)
	}
	var cols []string
	for _, k := range key {
		i := s.Index(k)
		if i < 0 {
			return "", fmt.Errorf("creating %s: key column %q is not in the schema", target, k)
		}
		typ, err := DorisType(s.Columns[i], true)
		if err != nil {
			return "", fmt.Errorf("creating %s: %w", target, err)
		}
		cols = append(cols, "  "+quoteIdent(k)+" "+typ+" NOT NULL")
	}
	for _, c := range s.Columns {
		if slices.Contains(key, c.Name) {
			continue
		}
		def, err := columnDef(c)
		if err != nil {
			return "", fmt.Errorf("creating %s: %w", target, err)
		}
		cols = append(cols, "  "+def)
	}
	qk := make([]string, len(key))
	for i, k := range key {
		qk[i] = quoteIdent(k)
	}
	b := "AUTO"
	if buckets > 0 {
		b = strconv.Itoa(buckets)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "CREATE TABLE IF NOT EXISTS %s.%s (\n%s\n)\nUNIQUE KEY(%s)\nDISTRIBUTED BY HASH(%s) BUCKETS %s",
		quoteIdent(target.Database), quoteIdent(target.Table), strings.Join(cols, ",\n"),
		strings.Join(qk, ", "), strings.Join(qk, ", "), b)
	p := maps.Clone(props)
	if p == nil {
		p = map[string]string{}
	}
	if replication > 0 {
		if _, set := p["replication_num"]; !set {
			p["replication_num"] = strconv.Itoa(replication)
		}
	}
	if len(p) > 0 {
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(p)) {
			kv = append(kv, quoteString(k)+" = "+quoteString(p[k]))
		}
		sb.WriteString("\nPROPERTIES (" + strings.Join(kv, ", ") + ")")
	}
	return sb.String(), nil
}

// columnDef is "`name` TYPE NULL|NOT NULL" of a value (non-key) column.
func columnDef(c change.Column) (string, error) {
	typ, err := DorisType(c, false)
	if err != nil {
		return "", err
	}
	null := " NULL"
	if !c.Nullable && !zeroable(c.Type.Kind) {
		null = " NOT NULL"
	}
	return quoteIdent(c.Name) + " " + typ + null, nil
}

// AddColumnSQL returns the ALTER TABLE that adds c. Added columns are
// nullable; with c.Default set they get DEFAULT, which Doris also writes
// into every row loaded before (as the source's ALTER did to its rows).
func AddColumnSQL(target change.TableID, c change.Column) (string, error) {
	typ, err := DorisType(c, false)
	if err != nil {
		return "", fmt.Errorf("adding column to %s: %w", target, err)
	}
	def := ""
	if c.Default != nil {
		def = " DEFAULT " + quoteString(*c.Default)
	}
	return fmt.Sprintf("ALTER TABLE %s.%s ADD COLUMN %s %s NULL%s", quoteIdent(target.Database),
		quoteIdent(target.Table), quoteIdent(c.Name), typ, def), nil
}
