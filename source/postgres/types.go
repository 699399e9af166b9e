package postgres

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/merge"
)

// PostgreSQL type OIDs shardsync maps (pg_type.dat).
const (
	oidBool        = 16
	oidBytea       = 17
	oidChar        = 18
	oidName        = 19
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidOID         = 26
	oidJSON        = 114
	oidFloat4      = 700
	oidFloat8      = 701
	oidMoney       = 790
	oidBpchar      = 1042
	oidVarchar     = 1043
	oidDate        = 1082
	oidTime        = 1083
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidInterval    = 1186
	oidTimetz      = 1266
	oidNumeric     = 1700
	oidUUID        = 2950
	oidJSONB       = 3802
)

// pgType is what the catalog says about a column's type.
type pgType struct {
	OID      uint32 `json:"oid"`
	Mod      int32  `json:"mod"`            // atttypmod, -1 when none
	Category string `json:"cat,omitempty"`  // pg_type.typcategory (A: array, E: enum …) of user/array types
	Name     string `json:"name,omitempty"` // format_type, for messages
}

// mapType maps a PostgreSQL type onto the merged-schema vocabulary.
// docs/type-mappings.md lists the same table.
func mapType(t pgType) merge.ColType {
	frac := func() int {
		if t.Mod < 0 {
			return 6
		}
		return int(min(t.Mod, 6))
	}
	switch t.OID {
	case oidBool:
		return merge.ColType{Base: "bit", Length: 1}
	case oidInt2:
		return merge.ColType{Base: "smallint"}
	case oidInt4:
		return merge.ColType{Base: "int"}
	case oidInt8, oidOID:
		return merge.ColType{Base: "bigint"}
	case oidFloat4:
		return merge.ColType{Base: "float"}
	case oidFloat8:
		return merge.ColType{Base: "double"}
	case oidNumeric:
		if t.Mod >= 4 {
			p, s := int((t.Mod-4)>>16)&0xffff, int(t.Mod-4)&0xffff
			if p <= 65 && s <= 30 && s <= p {
				return merge.ColType{Base: "decimal", Precision: p, Scale: s}
			}
		}
		// Unconstrained numeric: exact text in a decimal wider than any
		// sink's DECIMAL, which the sinks store as text.
		return merge.ColType{Base: "decimal", Precision: 65, Scale: 30}
	case oidVarchar:
		if t.Mod >= 4 {
			return merge.ColType{Base: "varchar", Length: int(t.Mod - 4)}
		}
		return merge.ColType{Base: "longtext"}
	case oidBpchar:
		n := 1
		if t.Mod >= 4 {
			n = int(t.Mod - 4)
		}
		return merge.ColType{Base: "char", Length: n}
	case oidBytea:
		return merge.ColType{Base: "longblob"}
	case oidDate:
		return merge.ColType{Base: "date"}
	case oidTimestamp:
		return merge.ColType{Base: "datetime", Precision: frac()}
	case oidTimestamptz:
		return merge.ColType{Base: "timestamp", Precision: frac()}
	case oidTime:
		return merge.ColType{Base: "time", Precision: frac()}
	case oidTimetz:
		return merge.ColType{Base: "varchar", Length: 32}
	case oidInterval:
		return merge.ColType{Base: "varchar", Length: 80}
	case oidUUID:
		return merge.ColType{Base: "char", Length: 36}
	case oidJSON, oidJSONB:
		return merge.ColType{Base: "json"}
	case oidMoney:
		return merge.ColType{Base: "varchar", Length: 32}
	case oidName:
		return merge.ColType{Base: "varchar", Length: 63}
	}
	if t.Category == "E" { // enum: the label (at most 63 bytes)
		return merge.ColType{Base: "varchar", Length: 63}
	}
	// Arrays ({1,2,NULL}), char, xml, inet, ranges, geometry, …: the
	// server's text form.
	return merge.ColType{Base: "longtext"}
}

// parseValue converts a column value in PostgreSQL's text output format
// (under the session settings the source pins: DateStyle=ISO,
// IntervalStyle=postgres, TimeZone=UTC, bytea_output=hex,
// extra_float_digits=3) into the change.Value of ct's kind.
func parseValue(b []byte, ct merge.ColType) (change.Value, error) {
	s := string(b)
	switch ct.Kind() {
	case change.KindInt:
		return strconv.ParseInt(s, 10, 64)
	case change.KindBit:
		switch s {
		case "t":
			return uint64(1), nil
		case "f":
			return uint64(0), nil
		}
		return nil, fmt.Errorf("boolean %q is neither t nor f", s)
	case change.KindFloat:
		f, err := strconv.ParseFloat(s, 32)
		return float32(f), err
	case change.KindDouble:
		return strconv.ParseFloat(s, 64)
	case change.KindDecimal:
		if s == "NaN" || strings.HasSuffix(s, "Infinity") {
			return nil, fmt.Errorf("numeric %s has no DECIMAL equivalent in the sinks: store it as NULL or a sentinel at the source, or change the column to double precision", s)
		}
		return change.Decimal(s), nil
	case change.KindBytes:
		if !strings.HasPrefix(s, `\x`) {
			return nil, fmt.Errorf("bytea value is not in hex format (bytea_output=hex is pinned): %.20q", s)
		}
		return hex.DecodeString(s[2:])
	case change.KindDate:
		if err := finiteAD(s); err != nil {
			return nil, err
		}
		return change.Date(s), nil
	case change.KindDateTime:
		if err := finiteAD(s); err != nil {
			return nil, err
		}
		return change.DateTime(padFrac(s, ct.Precision)), nil
	case change.KindTimestamp:
		if err := finiteAD(s); err != nil {
			return nil, err
		}
		t, err := parseTimestamptz(s)
		if err != nil {
			return nil, err
		}
		return change.Timestamp(padFrac(t.UTC().Format("2006-01-02 15:04:05.999999"), ct.Precision)), nil
	case change.KindTime:
		return change.Time(padFrac(s, ct.Precision)), nil
	case change.KindJSON:
		return change.JSON(s), nil
	}
	return s, nil
}

// finiteAD refuses the values PostgreSQL dates and timestamps have that
// Doris and MaxCompute dates cannot hold.
func finiteAD(s string) error {
	if strings.Contains(s, "infinity") || strings.HasSuffix(s, " BC") {
		return fmt.Errorf("date/time %q is outside the range the sinks can store (years 1-9999, finite)", s)
	}
	return nil
}

// parseTimestamptz parses "2024-03-10 12:34:56.789012+00" (any offset
// form PostgreSQL prints: +hh, +hh:mm, +hh:mm:ss).
func parseTimestamptz(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02 15:04:05.999999999-07", "2006-01-02 15:04:05.999999999-07:00", "2006-01-02 15:04:05.999999999-07:00:00"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("timestamptz %q is not in ISO format", s)
}

// padFrac makes the fraction of "…HH:MM:SS[.f…]" exactly p digits (none for
// p = 0): PostgreSQL drops trailing zeros, the sinks compare text.
func padFrac(s string, p int) string {
	dot := strings.LastIndexByte(s, '.')
	colon := strings.LastIndexByte(s, ':')
	frac := ""
	if dot > colon {
		s, frac = s[:dot], s[dot+1:]
	}
	if p <= 0 {
		return s
	}
	if len(frac) > p {
		frac = frac[:p]
	}
	return s + "." + frac + strings.Repeat("0", p-len(frac))
}
