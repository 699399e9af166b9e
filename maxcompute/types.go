package maxcompute

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/aliyun/aliyun-odps-go-sdk/odps/data"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/datatype"

	"github.com/shardsync/shardsync/change"
)

// Type mapping from the source (MySQL/MariaDB through package change) to
// MaxCompute, with the 2.0 type system (the sink always sends the hints
// odps.sql.type.system.odps2=true and odps.sql.decimal.odps2=true):
//
//	source                           MaxCompute
//	TINYINT / SMALLINT               TINYINT / SMALLINT
//	MEDIUMINT / INT                  INT
//	BIGINT                           BIGINT
//	TINYINT UNSIGNED                 SMALLINT
//	SMALLINT / MEDIUMINT UNSIGNED    INT
//	INT UNSIGNED                     BIGINT
//	BIGINT UNSIGNED                  DECIMAL(20,0)
//	YEAR                             INT
//	FLOAT / DOUBLE                   FLOAT / DOUBLE
//	DECIMAL(p,s), p ≤ 38             DECIMAL(p,s)
//	DECIMAL(p,s), p > 38             STRING (MaxCompute stops at 38 digits)
//	CHAR / VARCHAR / TEXT            STRING
//	ENUM / SET                       STRING (labels; SET comma-separated)
//	JSON                             STRING (JSON text)
//	BINARY / VARBINARY / BLOB        BINARY
//	BIT(1)                           BOOLEAN
//	BIT(2..63)                       BIGINT;  BIT(64) DECIMAL(20,0)
//	DATE                             DATE
//	DATETIME                         TIMESTAMP_NTZ (wall clock, no zone)
//	TIMESTAMP                        TIMESTAMP (the UTC instant)
//	TIME                             STRING ("[-]HH:MM:SS[.ffffff]")
//
// Zero dates ("0000-00-00", or any date MySQL accepts that is not a real
// calendar date) are written as NULL.

// mcType maps a source column to its MaxCompute type.
func mcType(c change.Column) (datatype.DataType, error) {
	t := c.Type
	sql := strings.ToLower(t.SQL)
	switch t.Kind {
	case change.KindInt:
		switch {
		case strings.HasPrefix(sql, "tinyint"):
			return datatype.TinyIntType, nil
		case strings.HasPrefix(sql, "smallint"):
			return datatype.SmallIntType, nil
		case strings.HasPrefix(sql, "mediumint"), strings.HasPrefix(sql, "int"):
			return datatype.IntType, nil
		}
		return datatype.BigIntType, nil
	case change.KindYear:
		return datatype.IntType, nil
	case change.KindUint:
		switch {
		case strings.HasPrefix(sql, "tinyint"):
			return datatype.SmallIntType, nil
		case strings.HasPrefix(sql, "smallint"), strings.HasPrefix(sql, "mediumint"):
			return datatype.IntType, nil
		case strings.HasPrefix(sql, "int"):
			return datatype.BigIntType, nil
		}
		return datatype.NewDecimalType(20, 0), nil
	case change.KindFloat:
		return datatype.FloatType, nil
	case change.KindDouble:
		return datatype.DoubleType, nil
	case change.KindDecimal:
		if t.Precision > 38 {
			return datatype.StringType, nil
		}
		p := max(t.Precision, 1)
		return datatype.NewDecimalType(int32(p), int32(min(t.Scale, p))), nil
	case change.KindString, change.KindEnum, change.KindSet, change.KindJSON, change.KindTime:
		return datatype.StringType, nil
	case change.KindBytes:
		return datatype.BinaryType, nil
	case change.KindBit:
		switch {
		case t.Length == 1:
			return datatype.BooleanType, nil
		case t.Length >= 64:
			return datatype.NewDecimalType(20, 0), nil
		}
		return datatype.BigIntType, nil
	case change.KindDate:
		return datatype.DateType, nil
	case change.KindDateTime:
		return datatype.TimestampNtzType, nil
	case change.KindTimestamp:
		return datatype.TimestampType, nil
	}
	return nil, fmt.Errorf("column %s: source type %q (%s) has no MaxCompute mapping", c.Name, t.SQL, t.Kind)
}

// intRank orders the integer types for widening.
var intRank = map[datatype.TypeID]int{datatype.TINYINT: 1, datatype.SMALLINT: 2, datatype.INT: 3, datatype.BIGINT: 4}

// canHold reports whether a table column of type have can store every value
// of type want without loss, so want can be written into it as is.
func canHold(have, want datatype.DataType) bool {
	if have.Name() == want.Name() {
		return true
	}
	hi, wi := have.ID(), want.ID()
	if intRank[hi] > 0 && intRank[wi] > 0 {
		return intRank[hi] >= intRank[wi]
	}
	if hi == datatype.DOUBLE && wi == datatype.FLOAT {
		return true
	}
	if hi == datatype.DECIMAL && wi == datatype.DECIMAL {
		h, w := have.(datatype.DecimalType), want.(datatype.DecimalType)
		return h.Scale >= w.Scale && h.Precision-h.Scale >= w.Precision-w.Scale
	}
	if hi == datatype.DECIMAL && intRank[wi] > 0 {
		h := have.(datatype.DecimalType)
		digits := map[datatype.TypeID]int32{datatype.TINYINT: 3, datatype.SMALLINT: 5, datatype.INT: 10, datatype.BIGINT: 19}
		return h.Precision-h.Scale >= digits[wi]
	}
	if hi == datatype.STRING && (wi == datatype.VARCHAR || wi == datatype.CHAR) {
		return true
	}
	return false
}

// widenable reports whether ALTER TABLE … CHANGE COLUMN may change a column
// from have to want: the same widenings MaxCompute allows.
func widenable(have, want datatype.DataType) bool {
	hi, wi := have.ID(), want.ID()
	if intRank[hi] > 0 && intRank[wi] > 0 {
		return intRank[wi] > intRank[hi]
	}
	if hi == datatype.FLOAT && wi == datatype.DOUBLE {
		return true
	}
	if hi == datatype.DECIMAL && wi == datatype.DECIMAL {
		return canHold(want, have)
	}
	return false
}

var (
	dateLayout     = "2006-01-02"
	datetimeLayout = "2006-01-02 15:04:05.999999999"
)

func parseDate(s string) (time.Time, bool) {
	t, err := time.ParseInLocation(dateLayout, s, time.UTC)
	return t, err == nil
}

func parseDateTime(s string) (time.Time, bool) {
	t, err := time.ParseInLocation(datetimeLayout, s, time.UTC)
	return t, err == nil
}

// toData converts a source value into a MaxCompute value for a column of
// type t. The column name is for messages only.
func toData(v change.Value, t datatype.DataType, col string) (data.Data, error) {
	if v == nil {
		return nil, nil
	}
	bad := func() (data.Data, error) {
		return nil, fmt.Errorf("column %s: cannot write %T value %v into MaxCompute %s", col, v, v, t.Name())
	}
	// integral source values
	var i64 int64
	var isInt, isUint bool
	var u64 uint64
	switch x := v.(type) {
	case int64:
		i64, isInt = x, true
	case uint64:
		u64, isUint = x, true
		if x <= math.MaxInt64 {
			i64, isInt = int64(x), true
		}
	}
	switch t.ID() {
	case datatype.TINYINT, datatype.SMALLINT, datatype.INT, datatype.BIGINT:
		if !isInt {
			return bad()
		}
		lim := map[datatype.TypeID]int64{datatype.TINYINT: math.MaxInt8, datatype.SMALLINT: math.MaxInt16, datatype.INT: math.MaxInt32, datatype.BIGINT: math.MaxInt64}[t.ID()]
		if i64 > lim || i64 < -lim-1 {
			return nil, fmt.Errorf("column %s: value %d does not fit MaxCompute %s", col, i64, t.Name())
		}
		switch t.ID() {
		case datatype.TINYINT:
			return data.TinyInt(i64), nil
		case datatype.SMALLINT:
			return data.SmallInt(i64), nil
		case datatype.INT:
			return data.Int(i64), nil
		}
		return data.BigInt(i64), nil
	case datatype.BOOLEAN:
		if isInt || isUint {
			return data.Bool(i64 != 0 || u64 != 0), nil
		}
		return bad()
	case datatype.FLOAT:
		if f, ok := v.(float32); ok {
			return data.Float(f), nil
		}
		return bad()
	case datatype.DOUBLE:
		switch f := v.(type) {
		case float64:
			return data.Double(f), nil
		case float32:
			return data.Double(f), nil
		}
		return bad()
	case datatype.DECIMAL:
		dt := t.(datatype.DecimalType)
		var s string
		switch x := v.(type) {
		case change.Decimal:
			s = string(x)
		case int64, uint64:
			s = fmt.Sprint(x)
		default:
			return bad()
		}
		return data.NewDecimal(int(dt.Precision), int(dt.Scale), s), nil
	case datatype.STRING, datatype.VARCHAR, datatype.CHAR:
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case change.Decimal:
			s = string(x)
		case change.Time:
			s = string(x)
		case change.JSON:
			s = string(x)
		case change.Date:
			s = string(x)
		case change.DateTime:
			s = string(x)
		case change.Timestamp:
			s = string(x)
		case []byte:
			s = string(x)
		case int64:
			s = strconv.FormatInt(x, 10)
		case uint64:
			s = strconv.FormatUint(x, 10)
		default:
			return bad()
		}
		switch t.ID() {
		case datatype.VARCHAR:
			return data.NewVarChar(t.(datatype.VarcharType).Length, s)
		case datatype.CHAR:
			return data.NewChar(t.(datatype.CharType).Length, s)
		}
		return data.String(s), nil
	case datatype.BINARY:
		switch x := v.(type) {
		case []byte:
			return data.Binary(x), nil
		case string:
			return data.Binary(x), nil
		}
		return bad()
	case datatype.DATE:
		s, ok := v.(change.Date)
		if !ok {
			return bad()
		}
		d, ok := parseDate(string(s))
		if !ok {
			return nil, nil // zero or invalid calendar date → NULL
		}
		return data.Date(d), nil
	case datatype.TIMESTAMP_NTZ, datatype.DATETIME, datatype.TIMESTAMP:
		var s string
		switch x := v.(type) {
		case change.DateTime:
			s = string(x)
		case change.Timestamp:
			s = string(x)
		case change.Date:
			s = string(x) + " 00:00:00"
		default:
			return bad()
		}
		ts, ok := parseDateTime(s)
		if !ok {
			return nil, nil // zero date-time → NULL
		}
		switch t.ID() {
		case datatype.TIMESTAMP_NTZ:
			return data.TimestampNtz(ts), nil
		case datatype.DATETIME:
			return data.DateTime(ts), nil
		}
		return data.Timestamp(ts), nil
	}
	return bad()
}
