package doris

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/shardsync/shardsync/change"
)

// DeleteSign is Doris's hidden delete marker column of Unique Key tables.
const DeleteSign = "__DORIS_DELETE_SIGN__"

// Value encoding (one JSON object per line, keys are column names):
//
//	NULL                     null
//	KindInt/Year/Bit/Uint    JSON number (exact; uint64 above 2^63-1 too)
//	KindFloat/Double         shortest decimal that round-trips (float32/64)
//	KindDecimal              JSON string of the exact decimal text
//	KindString/Enum/Set      JSON string; must be valid UTF-8 (4-byte too)
//	KindBytes                JSON string of HEX(value), upper case
//	KindDate/DateTime/
//	KindTimestamp            JSON string, fraction kept, in UTC or in
//	                         Config.TimeZone (Flink's local-time-zone); MySQL zero dates
//	                         ("0000-00-00", month or day 00) become null
//	KindTime                 JSON string "[-]HH:MM:SS[.ffffff]"
//	KindJSON                 JSON string holding the JSON text
//
// An empty string stays "" and NULL stays null, so Doris keeps them apart.

// encoder turns rows of one target into NDJSON lines.
type encoder struct {
	cols  []change.Column // the target schema
	idx   []int           // positions of the columns that are loaded
	keys  [][]byte        // `"name":` for each loaded column, escaped once
	sign  bool            // add __DORIS_DELETE_SIGN__ (Unique Key target)
	keyIx []int           // target key columns, for Update key changes
	// seqKey is `,"name":` of the sequence column shardsync fills, nil
	// when it fills none.
	seqKey []byte
	// loc is the zone TIMESTAMP values are written in (Config.TimeZone);
	// nil: UTC, as the source gives them.
	loc *time.Location
}

// newEncoder encodes rows of schema s; keep (nil: all) selects the columns
// the target table has.
func newEncoder(s change.Schema, keep func(string) bool, keyCols []string, sign bool) (*encoder, error) {
	e := &encoder{cols: s.Columns, sign: sign}
	for i, c := range s.Columns {
		if keep != nil && !keep(c.Name) {
			continue
		}
		b, err := appendString(nil, c.Name)
		if err != nil {
			return nil, fmt.Errorf("column name %q: %w", c.Name, err)
		}
		e.idx = append(e.idx, i)
		e.keys = append(e.keys, append(b, ':'))
	}
	if len(e.idx) == 0 {
		return nil, fmt.Errorf("no column of the source exists in the target")
	}
	for _, k := range keyCols {
		i := s.Index(k)
		if i < 0 {
			return nil, fmt.Errorf("key column %q is not in the schema", k)
		}
		e.keyIx = append(e.keyIx, i)
	}
	return e, nil
}

// appendRow appends the line(s) for r. Into a Unique Key target: an upsert
// of After, a delete of Before, or for an Update whose key changed a delete
// of Before followed by an upsert of After. Into any other target (a
// Duplicate Key table: an append log, as the MaxCompute append table): an
// Insert or Update appends After, a Delete appends nothing.
// seq is the change's sequence value, written to the sequence column when
// the encoder has one.
func (e *encoder) appendRow(dst []byte, r change.Row, seq int64) ([]byte, error) {
	var err error
	switch r.Op {
	case change.Insert:
		return e.appendImage(dst, r.After, false, seq)
	case change.Update:
		if e.sign && len(e.keyIx) > 0 && e.keyChanged(r.Before, r.After) {
			if dst, err = e.appendImage(dst, r.Before, true, seq); err != nil {
				return dst, err
			}
		}
		return e.appendImage(dst, r.After, false, seq)
	case change.Delete:
		if !e.sign {
			return dst, nil // an append log keeps deleted rows
		}
		return e.appendImage(dst, r.Before, true, seq)
	}
	return dst, fmt.Errorf("unknown row operation %v", r.Op)
}

func (e *encoder) keyChanged(before, after []change.Value) bool {
	if len(before) != len(e.cols) {
		return false // no before image: nothing to delete
	}
	for _, i := range e.keyIx {
		if !sameValue(before[i], after[i]) {
			return true
		}
	}
	return false
}

func sameValue(a, b change.Value) bool {
	if ab, ok := a.([]byte); ok {
		bb, ok := b.([]byte)
		return ok && bytes.Equal(ab, bb)
	}
	if _, ok := b.([]byte); ok {
		return false
	}
	return a == b
}

func (e *encoder) appendImage(dst []byte, img []change.Value, del bool, seq int64) ([]byte, error) {
	if len(img) != len(e.cols) {
		return dst, fmt.Errorf("row image has %d values, the target schema %d columns", len(img), len(e.cols))
	}
	start := len(dst)
	dst = append(dst, '{')
	for j, i := range e.idx {
		if j > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, e.keys[j]...)
		var err error
		v := img[i]
		if ts, ok := v.(change.Timestamp); ok && e.loc != nil {
			v = inZone(ts, e.loc)
		}
		if dst, err = appendValue(dst, e.cols[i].Type.Kind, v); err != nil {
			return dst[:start], fmt.Errorf("column %q: %w", e.cols[i].Name, err)
		}
	}
	if e.seqKey != nil {
		dst = append(dst, e.seqKey...)
		dst = strconv.AppendInt(dst, seq, 10)
	}
	if e.sign {
		if del {
			dst = append(dst, `,"`+DeleteSign+`":1`...)
		} else {
			dst = append(dst, `,"`+DeleteSign+`":0`...)
		}
	}
	return append(dst, '}', '\n'), nil
}

// inZone renders a TIMESTAMP (a UTC instant "YYYY-MM-DD hh:mm:ss[.f]") as
// the wall clock of loc, fraction kept. Zero dates and text that is not a
// timestamp are left as they are.
func inZone(ts change.Timestamp, loc *time.Location) change.Timestamp {
	s := string(ts)
	if isZeroDate(s) || len(s) < len(time.DateTime) {
		return ts
	}
	t, err := time.ParseInLocation(time.DateTime, s[:len(time.DateTime)], time.UTC)
	if err != nil {
		return ts
	}
	return change.Timestamp(t.In(loc).Format(time.DateTime) + s[len(time.DateTime):])
}

// appendValue appends the JSON form of v, a value of kind k.
func appendValue(dst []byte, k change.Kind, v change.Value) ([]byte, error) {
	if v == nil {
		return append(dst, "null"...), nil
	}
	switch x := v.(type) {
	case int64:
		return strconv.AppendInt(dst, x, 10), nil
	case uint64:
		return strconv.AppendUint(dst, x, 10), nil
	case float32:
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return dst, fmt.Errorf("float %v cannot be stored", x)
		}
		return strconv.AppendFloat(dst, float64(x), 'g', -1, 32), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return dst, fmt.Errorf("double %v cannot be stored", x)
		}
		return strconv.AppendFloat(dst, x, 'g', -1, 64), nil
	case change.Decimal:
		return appendString(dst, string(x))
	case string:
		return appendString(dst, x)
	case []byte:
		if k == change.KindString || k == change.KindEnum || k == change.KindSet || k == change.KindJSON {
			return appendString(dst, string(x))
		}
		dst = append(dst, '"')
		n := len(dst)
		dst = append(dst, make([]byte, hex.EncodedLen(len(x)))...)
		hex.Encode(dst[n:], x)
		upper(dst[n:])
		return append(dst, '"'), nil
	case change.Date:
		if isZeroDate(string(x)) {
			return append(dst, "null"...), nil
		}
		return appendString(dst, string(x))
	case change.DateTime:
		if isZeroDate(string(x)) {
			return append(dst, "null"...), nil
		}
		return appendString(dst, string(x))
	case change.Timestamp:
		if isZeroDate(string(x)) {
			return append(dst, "null"...), nil
		}
		return appendString(dst, string(x))
	case change.Time:
		return appendString(dst, string(x))
	case change.JSON:
		return appendString(dst, string(x))
	case bool:
		if x {
			return append(dst, '1'), nil
		}
		return append(dst, '0'), nil
	}
	return dst, fmt.Errorf("value of Go type %T does not fit column kind %s", v, k)
}

func upper(b []byte) {
	for i, c := range b {
		if c >= 'a' && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
}

// isZeroDate reports MySQL zero or partly zero dates (year, month or day
// 0), which Doris cannot store.
func isZeroDate(s string) bool {
	if len(s) < 10 {
		return false
	}
	return s[:4] == "0000" || s[5:7] == "00" || s[8:10] == "00"
}

// appendString appends s as a JSON string. Unlike encoding/json it fails on
// invalid UTF-8 instead of silently replacing it, and it does not escape
// HTML characters.
func appendString(dst []byte, s string) ([]byte, error) {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != 0x7f {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"':
				dst = append(dst, '\\', '"')
			case '\\':
				dst = append(dst, '\\', '\\')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigit[c>>4], hexDigit[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return dst, fmt.Errorf("string is not valid UTF-8 at byte %d", i)
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\u202`...)
			dst = append(dst, hexDigit[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"'), nil
}

const hexDigit = "0123456789abcdef"
