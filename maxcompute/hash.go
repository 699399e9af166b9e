package maxcompute

import (
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"

	"github.com/aliyun/aliyun-odps-go-sdk/odps/data"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/datatype"
)

// Bucket routing for upsert sessions: a port of the Java SDK's default
// hasher (com.aliyun.odps.tunnel.hasher.DefaultHashFactory and
// TypeHasher.CombineHashVal), checked against its TypeHasherTest vectors.
// The server expects every record of a PUT to belong to the bucket named in
// the request; the same key always lands in the same bucket.

// longHash is DefaultHashFactory.basicLongHasher.
func longHash(v int64) int32 {
	v = (^v) + (v << 18)
	v ^= v >> 31
	v *= 21
	v ^= v >> 11
	v += v << 6
	v ^= v >> 22
	return int32(v)
}

// stringHash is the StringHasher over UTF-8 bytes taken as signed Java
// bytes.
func stringHash(s string) int32 {
	var h int32
	for i := 0; i < len(s); i++ {
		h += int32(int8(s[i]))
		h += h << 10
		h ^= h >> 6
	}
	h += h << 3
	h ^= h >> 11
	h += h << 15
	return h
}

func boolHash(b bool) int32 {
	if b {
		return 0x172ba9c7
	}
	return -0x3a59cb12
}

func timestampHash(t time.Time) int32 {
	return longHash(t.Unix()<<30 | int64(t.Nanosecond()))
}

// decimalHash hashes the unscaled value at the column's scale; for
// precision above 18 the low and high 64-bit halves are hashed and added.
func decimalHash(s string, precision, scale int) (int32, error) {
	u, err := unscaledDecimal(s, scale)
	if err != nil {
		return 0, err
	}
	mask := new(big.Int).SetUint64(math.MaxUint64)
	lo := int64(new(big.Int).And(u, mask).Uint64())
	if precision > 18 {
		hi := new(big.Int).Rsh(u, 64)
		return longHash(lo) + longHash(int64(hi.And(hi, mask).Uint64())), nil
	}
	return longHash(lo), nil
}

// unscaledDecimal converts decimal text to an integer at scale, rounding
// half up on the magnitude like the server's decimal cast.
func unscaledDecimal(s string, scale int) (*big.Int, error) {
	s = strings.TrimSpace(s)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimLeft(s, "+-")
	exp := 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		if _, err := fmt.Sscan(s[i+1:], &exp); err != nil {
			return nil, fmt.Errorf("invalid decimal exponent in %q", s)
		}
		s = s[:i]
	}
	ip, fp, _ := strings.Cut(s, ".")
	digits := strings.TrimLeft(ip+fp, "0")
	valueScale := len(fp) - exp
	if digits == "" {
		return new(big.Int), nil
	}
	n, ok := new(big.Int).SetString(digits, 10)
	if !ok {
		return nil, fmt.Errorf("invalid decimal %q", s)
	}
	ten := big.NewInt(10)
	if d := valueScale - scale; d > 0 {
		n.Quo(n, new(big.Int).Exp(ten, big.NewInt(int64(d)), nil))
		if d <= len(digits) && digits[len(digits)-d] >= '5' {
			n.Add(n, big.NewInt(1))
		}
	} else if d < 0 {
		n.Mul(n, new(big.Int).Exp(ten, big.NewInt(int64(-d)), nil))
	}
	if neg {
		n.Neg(n)
	}
	return n, nil
}

// hashValue hashes one key value of type t. NULL hashes to 0, but keys are
// never NULL.
func hashValue(d data.Data, t datatype.DataType) (int32, error) {
	if d == nil {
		return 0, nil
	}
	switch v := d.(type) {
	case data.TinyInt:
		return longHash(int64(v)), nil
	case data.SmallInt:
		return longHash(int64(v)), nil
	case data.Int:
		return longHash(int64(v)), nil
	case data.BigInt:
		return longHash(int64(v)), nil
	case data.Bool:
		return boolHash(bool(v)), nil
	case data.Float:
		return longHash(int64(int32(math.Float32bits(float32(v))))), nil
	case data.Double:
		return longHash(int64(math.Float64bits(float64(v)))), nil
	case data.String:
		return stringHash(string(v)), nil
	case *data.VarChar:
		return stringHash(v.Data()), nil
	case *data.Char:
		return stringHash(v.Data()), nil
	case data.Date:
		return longHash(time.Time(v).Unix()), nil
	case data.DateTime:
		return longHash(time.Time(v).UnixMilli()), nil
	case data.Timestamp:
		return timestampHash(time.Time(v)), nil
	case data.TimestampNtz:
		return timestampHash(time.Time(v)), nil
	case *data.Decimal:
		dt, ok := t.(datatype.DecimalType)
		if !ok {
			return 0, fmt.Errorf("decimal value for column type %s", t.Name())
		}
		return decimalHash(v.Value(), int(dt.Precision), int(dt.Scale))
	}
	return 0, fmt.Errorf("type %s cannot be part of a Delta table key here", t.Name())
}

// bucketOf is TypeHasher.CombineHashVal modulo the bucket count. The
// combined value is never negative.
func bucketOf(hashes []int32, buckets int) int {
	var s int32
	for _, h := range hashes {
		s += h
	}
	return int((s ^ (s >> 8)) % int32(buckets))
}
