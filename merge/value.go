package merge

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/shopspring/decimal"
	"golang.org/x/text/encoding/charmap"

	"github.com/shardsync/shardsync/change"
)

// Value conversions. Every value reaches the stream in the one Go type its
// change.Kind names, whether it was read by the snapshot (text protocol,
// session time_zone '+00:00') or decoded from the binlog (UseDecimal,
// TimestampStringLocation=UTC), and both paths give identical values:
//
//   - DECIMAL: exact text with exactly `scale` fraction digits.
//   - DATE "YYYY-MM-DD"; DATETIME and TIMESTAMP "YYYY-MM-DD hh:mm:ss" plus
//     exactly fsp fraction digits; TIMESTAMP is in UTC whatever the server or
//     session zone; DATETIME is wall clock, kept verbatim.
//   - TIME "[-]hh:mm:ss" (hours up to 838) plus fsp fraction digits.
//   - Zero dates ("0000-00-00", "0000-00-00 00:00:00") and dates with zero
//     parts pass through as text; sinks decide how to store them.
//   - YEAR int64 (0 for the zero year); BIT uint64 right-aligned;
//     ENUM the label ("" for the invalid-value index 0); SET the labels
//     joined by commas in definition order.
//   - CHAR trailing spaces are removed (MariaDB never returns them);
//     BINARY(n) is zero-padded to n bytes (as stored).
//   - Strings are UTF-8: utf8mb4/utf8mb3/ascii pass through, latin1 is
//     decoded (MariaDB's latin1 is cp1252); JSON on MariaDB is LONGTEXT and
//     arrives as its text.

func supportedCharset(cs string) bool {
	switch cs {
	case "", "binary", "utf8mb4", "utf8mb3", "utf8", "ascii", "latin1":
		return true
	}
	return false
}

func decodeText(b []byte, charset string) (string, error) {
	if charset == "latin1" {
		out, err := charmap.Windows1252.NewDecoder().Bytes(b)
		if err != nil {
			return "", fmt.Errorf("decoding latin1 text: %w", err)
		}
		return string(out), nil
	}
	return string(b), nil
}

// normFrac renders the fraction of a temporal text with exactly fsp digits.
func normFrac(s string, fsp int) string {
	base, frac, _ := strings.Cut(s, ".")
	if fsp <= 0 {
		return base
	}
	if len(frac) > fsp {
		frac = frac[:fsp]
	}
	return base + "." + frac + strings.Repeat("0", fsp-len(frac))
}

// normTime renders a TIME as [-]hh:mm:ss[.f].
func normTime(s string, fsp int) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	hms, frac, _ := strings.Cut(s, ".")
	parts := strings.Split(hms, ":")
	if len(parts) == 3 {
		h, _ := strconv.Atoi(parts[0])
		hms = fmt.Sprintf("%02d:%s:%s", h, parts[1], parts[2])
	}
	out := hms
	if frac != "" {
		out += "." + frac
	}
	out = normFrac(out, fsp)
	if neg && strings.Trim(out, "0:.") != "" {
		out = "-" + out
	}
	return out
}

func labelsOfSet(bits uint64, elems []string) string {
	var b strings.Builder
	for i, e := range elems {
		if bits&(1<<uint(i)) != 0 {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(e)
		}
	}
	return b.String()
}

func padBinary(b []byte, t colType) []byte {
	if t.base == "binary" && len(b) < t.length {
		return append(b, make([]byte, t.length-len(b))...)
	}
	return b
}

func asBytes(v any) ([]byte, bool) {
	switch x := v.(type) {
	case []byte:
		return x, true
	case string:
		return []byte(x), true
	}
	return nil, false
}

// binlogValue converts a value decoded by go-mysql's RowsEvent.
// k is t.kind().
func binlogValue(v any, t colType, k change.Kind) (change.Value, error) {
	if v == nil {
		return nil, nil
	}
	switch k {
	case change.KindInt:
		switch x := v.(type) {
		case int8:
			return int64(x), nil
		case int16:
			return int64(x), nil
		case int32:
			return int64(x), nil
		case int64:
			return x, nil
		case int:
			return int64(x), nil
		}
	case change.KindUint:
		switch x := v.(type) {
		case uint8:
			return uint64(x), nil
		case uint16:
			return uint64(x), nil
		case uint32:
			return uint64(x), nil
		case uint64:
			return x, nil
		case int8: // no signedness metadata: reinterpret
			return uint64(uint8(x)), nil
		case int16:
			return uint64(uint16(x)), nil
		case int32:
			if t.base == "mediumint" {
				return uint64(uint32(x) & 0xffffff), nil
			}
			return uint64(uint32(x)), nil
		case int64:
			return uint64(x), nil
		}
	case change.KindFloat:
		if x, ok := v.(float32); ok {
			return x, nil
		}
	case change.KindDouble:
		if x, ok := v.(float64); ok {
			return x, nil
		}
	case change.KindDecimal:
		switch x := v.(type) {
		case decimal.Decimal:
			return change.Decimal(x.StringFixed(int32(t.scale))), nil
		case string:
			return change.Decimal(x), nil
		}
	case change.KindString:
		var s string
		switch x := v.(type) {
		case string:
			if t.charset != "latin1" {
				// go-mysql's strings point into the event's buffer: copy
				// (once) so that a row never pins a whole event.
				if t.base == "char" {
					x = strings.TrimRight(x, " ")
				}
				return strings.Clone(x), nil
			}
			s = x
		case []byte:
			s = string(x)
		default:
			return nil, fmt.Errorf("binlog value %v (%T) does not fit column type %s", v, v, t.sql())
		}
		if t.charset == "latin1" {
			var err error
			if s, err = decodeText([]byte(s), t.charset); err != nil {
				return nil, err
			}
		}
		if t.base == "char" {
			s = strings.TrimRight(s, " ")
		}
		return s, nil
	case change.KindBytes:
		switch x := v.(type) {
		case string:
			return padBinary([]byte(x), t), nil // []byte(x) copies
		case []byte:
			return padBinary(append([]byte{}, x...), t), nil
		}
	case change.KindDate:
		if s, ok := v.(string); ok {
			return change.Date(s), nil
		}
	case change.KindDateTime:
		if s, ok := v.(string); ok {
			return change.DateTime(normFrac(s, t.prec)), nil
		}
	case change.KindTimestamp:
		if s, ok := v.(string); ok {
			return change.Timestamp(normFrac(s, t.prec)), nil
		}
	case change.KindTime:
		if s, ok := v.(string); ok {
			return change.Time(normTime(s, t.prec)), nil
		}
	case change.KindYear:
		switch x := v.(type) {
		case int:
			return int64(x), nil
		case int64:
			return x, nil
		}
	case change.KindEnum:
		if x, ok := v.(int64); ok {
			if x <= 0 || int(x) > len(t.elems) {
				return "", nil
			}
			return t.elems[x-1], nil
		}
	case change.KindSet:
		if x, ok := v.(int64); ok {
			return labelsOfSet(uint64(x), t.elems), nil
		}
	case change.KindBit:
		if x, ok := v.(int64); ok {
			return uint64(x), nil
		}
	case change.KindJSON:
		if b, ok := asBytes(v); ok {
			return change.JSON(b), nil
		}
	}
	return nil, fmt.Errorf("binlog value %v (%T) does not fit column type %s", v, v, t.sql())
}

// snapshotValue converts a result value (text protocol: go-mysql has parsed
// integers and floating-point values, every other type is its text); k is
// t.kind(). The value never refers to fv's memory, which go-mysql reuses.
func snapshotValue(fv mysql.FieldValue, t colType, k change.Kind) (change.Value, error) {
	if fv.Type == mysql.FieldValueTypeNull {
		return nil, nil
	}
	switch k {
	case change.KindInt, change.KindYear:
		switch fv.Type {
		case mysql.FieldValueTypeSigned:
			return fv.AsInt64(), nil
		case mysql.FieldValueTypeUnsigned:
			return int64(fv.AsUint64()), nil
		}
	case change.KindUint:
		switch fv.Type {
		case mysql.FieldValueTypeUnsigned:
			return fv.AsUint64(), nil
		case mysql.FieldValueTypeSigned:
			return uint64(fv.AsInt64()), nil
		}
	case change.KindFloat:
		if fv.Type == mysql.FieldValueTypeFloat {
			return float32(fv.AsFloat64()), nil
		}
	case change.KindDouble:
		if fv.Type == mysql.FieldValueTypeFloat {
			return fv.AsFloat64(), nil
		}
	}
	if fv.Type != mysql.FieldValueTypeString {
		return nil, fmt.Errorf("snapshot value %v does not fit column type %s", fv.Value(), t.sql())
	}
	b := fv.AsString()
	switch k {
	case change.KindDecimal:
		return change.Decimal(string(b)), nil
	case change.KindString:
		s, err := decodeText(b, "utf8mb4") // the snapshot connection is utf8mb4
		if err != nil {
			return nil, err
		}
		if t.base == "char" {
			s = strings.TrimRight(s, " ")
		}
		return s, nil
	case change.KindBytes:
		return padBinary(append([]byte{}, b...), t), nil
	case change.KindDate:
		return change.Date(string(b)), nil
	case change.KindDateTime:
		return change.DateTime(normFrac(string(b), t.prec)), nil
	case change.KindTimestamp:
		return change.Timestamp(normFrac(string(b), t.prec)), nil
	case change.KindTime:
		return change.Time(normTime(string(b), t.prec)), nil
	case change.KindEnum, change.KindSet:
		return string(b), nil
	case change.KindBit:
		var u uint64
		for _, c := range b {
			u = u<<8 | uint64(c)
		}
		return u, nil
	case change.KindJSON:
		return change.JSON(b), nil
	case change.KindFloat:
		f, err := strconv.ParseFloat(string(b), 32)
		return float32(f), err
	case change.KindDouble:
		return strconv.ParseFloat(string(b), 64)
	}
	return nil, fmt.Errorf("snapshot value %q does not fit column type %s", b, t.sql())
}

// coerce converts a shard value to the target column's kind after a
// widening (unsigned into a wider signed integer, FLOAT into DOUBLE).
func coerce(v change.Value, from, to change.Kind) change.Value {
	if v == nil || from == to {
		return v
	}
	switch {
	case from == change.KindUint && to == change.KindInt:
		return int64(v.(uint64))
	case from == change.KindFloat && to == change.KindDouble:
		return float64(v.(float32))
	}
	return v
}

// Key values are encoded as text in tokens, and compared in Go only for
// kinds whose Go order is the server's index order.

func orderedKind(k change.Kind) bool {
	switch k {
	case change.KindInt, change.KindUint, change.KindDecimal, change.KindDate, change.KindDateTime,
		change.KindTimestamp, change.KindYear, change.KindBytes:
		return true
	}
	return false
}

func encodeKey(vals []change.Value) []string {
	out := make([]string, len(vals))
	for i, v := range vals {
		switch x := v.(type) {
		case int64:
			out[i] = strconv.FormatInt(x, 10)
		case uint64:
			out[i] = strconv.FormatUint(x, 10)
		case []byte:
			out[i] = base64.StdEncoding.EncodeToString(x)
		case change.Decimal:
			out[i] = string(x)
		case change.Date:
			out[i] = string(x)
		case change.DateTime:
			out[i] = string(x)
		case change.Timestamp:
			out[i] = string(x)
		case string:
			out[i] = x
		default:
			out[i] = fmt.Sprint(x)
		}
	}
	return out
}

func decodeKey(enc []string, kinds []change.Kind) ([]change.Value, error) {
	if len(enc) != len(kinds) {
		return nil, fmt.Errorf("key has %d values, table key has %d columns", len(enc), len(kinds))
	}
	out := make([]change.Value, len(enc))
	for i, s := range enc {
		var err error
		switch kinds[i] {
		case change.KindInt, change.KindYear:
			out[i], err = strconv.ParseInt(s, 10, 64)
		case change.KindUint:
			out[i], err = strconv.ParseUint(s, 10, 64)
		case change.KindBytes:
			out[i], err = base64.StdEncoding.DecodeString(s)
		case change.KindDecimal:
			out[i] = change.Decimal(s)
		case change.KindDate:
			out[i] = change.Date(s)
		case change.KindDateTime:
			out[i] = change.DateTime(s)
		case change.KindTimestamp:
			out[i] = change.Timestamp(s)
		default:
			err = fmt.Errorf("key kind %s cannot be resumed", kinds[i])
		}
		if err != nil {
			return nil, fmt.Errorf("decoding key value %q: %w", s, err)
		}
	}
	return out, nil
}

// compareKeys compares two keys of ordered kinds.
func compareKeys(a, b []change.Value) int {
	for i := range a {
		if c := compareValue(a[i], b[i]); c != 0 {
			return c
		}
	}
	return 0
}

func compareValue(a, b change.Value) int {
	switch x := a.(type) {
	case int64:
		y := b.(int64)
		return cmp3(x < y, x > y)
	case uint64:
		y := b.(uint64)
		return cmp3(x < y, x > y)
	case []byte:
		return bytes.Compare(x, b.([]byte))
	case change.Decimal:
		dx, err1 := decimal.NewFromString(string(x))
		dy, err2 := decimal.NewFromString(string(b.(change.Decimal)))
		if err1 != nil || err2 != nil {
			return strings.Compare(string(x), string(b.(change.Decimal)))
		}
		return dx.Cmp(dy)
	case change.Date:
		return strings.Compare(string(x), string(b.(change.Date)))
	case change.DateTime:
		return strings.Compare(string(x), string(b.(change.DateTime)))
	case change.Timestamp:
		return strings.Compare(string(x), string(b.(change.Timestamp)))
	}
	return 0
}

func cmp3(less, greater bool) int {
	if less {
		return -1
	}
	if greater {
		return 1
	}
	return 0
}

// keyLiteral renders a chunk-bound key value as a SQL literal of the text
// protocol. Only the ordered kinds can be chunk bounds; their text is
// checked to hold nothing but the characters of its form, so the literal
// cannot change the statement whatever a token holds.
func keyLiteral(v change.Value) (string, error) {
	temporal := func(s string) (string, error) {
		if s == "" || strings.Trim(s, "0123456789-:. ") != "" {
			return "", fmt.Errorf("temporal key value %q is not a date or time", s)
		}
		return "'" + s + "'", nil
	}
	switch x := v.(type) {
	case int64:
		return strconv.FormatInt(x, 10), nil
	case uint64:
		return strconv.FormatUint(x, 10), nil
	case []byte:
		return "X'" + hex.EncodeToString(x) + "'", nil
	case change.Decimal:
		if _, err := decimal.NewFromString(string(x)); err != nil || strings.Trim(string(x), "0123456789-.") != "" {
			return "", fmt.Errorf("decimal key value %q is not a decimal number", string(x))
		}
		return string(x), nil
	case change.Date:
		return temporal(string(x))
	case change.DateTime:
		return temporal(string(x))
	case change.Timestamp:
		return temporal(string(x))
	}
	return "", fmt.Errorf("key value %v (%T) cannot bound a chunk", v, v)
}
