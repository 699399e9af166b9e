package mcemu

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"strings"
	"time"

	"github.com/aliyun/aliyun-odps-go-sdk/odps/tunnel"
	"google.golang.org/protobuf/encoding/protowire"
)

// Values the emulator stores, by column type:
//
//	TINYINT, SMALLINT, INT, BIGINT  int64
//	BOOLEAN                         bool
//	FLOAT / DOUBLE                  float32 / float64
//	STRING, CHAR, VARCHAR           string
//	BINARY                          []byte
//	DECIMAL                         string (as sent)
//	DATE                            time.Time, 00:00 UTC
//	DATETIME                        time.Time UTC, millisecond precision
//	TIMESTAMP, TIMESTAMP_NTZ        time.Time UTC, nanosecond precision
//	ARRAY<BIGINT> (meta columns)    []any of int64 or nil
//
// NULL is nil.

// upsertMetaColumns are appended to a Delta table's columns in upsert
// record streams (specs §2.10).
var upsertMetaColumns = []columnDef{
	{Name: "__version", Type: "BIGINT"},
	{Name: "__app_version", Type: "BIGINT"},
	{Name: "__operation", Type: "TINYINT"},
	{Name: "__key_cols", Type: "ARRAY<BIGINT>"},
	{Name: "__value_cols", Type: "ARRAY<BIGINT>"},
}

// decodeRecords reads one complete record stream (§2.9) for columns,
// checking every record CRC, the record count and the checksum of CRCs.
func decodeRecords(r io.Reader, cols []columnDef, wantCount int64) ([][]any, error) {
	pr := tunnel.NewProtocStreamReader(r)
	recCrc := tunnel.NewCrc32CheckSum()
	crcOfCrc := tunnel.NewCrc32CheckSum()
	var rows [][]any
	cur := make([]any, len(cols))
	for {
		num, typ, err := pr.ReadTag()
		if err != nil {
			return nil, fmt.Errorf("reading tag after %d records: %w", len(rows), err)
		}
		switch num {
		case tunnel.EndRecord:
			got, err := pr.ReadUInt32()
			if err != nil {
				return nil, fmt.Errorf("reading record crc: %w", err)
			}
			if got != recCrc.Value() {
				return nil, fmt.Errorf("record %d: crc mismatch, sent %d, computed %d", len(rows), got, recCrc.Value())
			}
			crcOfCrc.Update(got)
			recCrc.Reset()
			rows = append(rows, cur)
			cur = make([]any, len(cols))
			continue
		case tunnel.MetaCount:
			n, err := pr.ReadSInt64()
			if err != nil {
				return nil, fmt.Errorf("reading meta count: %w", err)
			}
			if n != int64(len(rows)) {
				return nil, fmt.Errorf("meta count %d but %d records in stream", n, len(rows))
			}
			if wantCount >= 0 && n != wantCount {
				return nil, fmt.Errorf("record_count=%d but stream has %d records", wantCount, n)
			}
			num2, _, err := pr.ReadTag()
			if err != nil || num2 != tunnel.MetaChecksum {
				return nil, fmt.Errorf("expected meta checksum after meta count")
			}
			sum, err := pr.ReadUInt32()
			if err != nil {
				return nil, fmt.Errorf("reading meta checksum: %w", err)
			}
			if sum != crcOfCrc.Value() {
				return nil, fmt.Errorf("meta checksum mismatch: sent %d, computed %d", sum, crcOfCrc.Value())
			}
			if _, _, err := pr.ReadTag(); err == nil {
				return nil, errors.New("data after meta checksum")
			}
			return rows, nil
		}
		idx := int(num) - 1
		if idx < 0 || idx >= len(cols) {
			return nil, fmt.Errorf("record %d: column index %d out of range (%d columns)", len(rows), num, len(cols))
		}
		recCrc.Update(int32(num))
		v, err := readValue(pr, &recCrc, cols[idx].Type, typ)
		if err != nil {
			return nil, fmt.Errorf("record %d column %s: %w", len(rows), cols[idx].Name, err)
		}
		cur[idx] = v
	}
}

func wantWire(typ string) protowire.Type {
	switch baseType(typ) {
	case "DOUBLE":
		return protowire.Fixed64Type
	case "FLOAT":
		return protowire.Fixed32Type
	case "BIGINT", "INT", "SMALLINT", "TINYINT", "BOOLEAN", "DATE", "DATETIME":
		return protowire.VarintType
	}
	return protowire.BytesType
}

func readValue(pr *tunnel.ProtocStreamReader, crc *tunnel.Crc32CheckSum, typ string, wire protowire.Type) (any, error) {
	if w := wantWire(typ); w != wire {
		return nil, fmt.Errorf("wire type %d for %s, want %d", wire, typ, w)
	}
	switch baseType(typ) {
	case "BIGINT", "INT", "SMALLINT", "TINYINT":
		v, err := pr.ReadSInt64()
		crc.Update(v)
		return v, err
	case "BOOLEAN":
		v, err := pr.ReadBool()
		crc.Update(v)
		return v, err
	case "DOUBLE":
		v, err := pr.ReadFloat64()
		crc.Update(v)
		return v, err
	case "FLOAT":
		v, err := pr.ReadFloat32()
		crc.Update(v)
		return v, err
	case "STRING", "CHAR", "VARCHAR", "DECIMAL":
		b, err := pr.ReadBytes()
		crc.Update(b)
		return string(b), err
	case "BINARY":
		b, err := pr.ReadBytes()
		crc.Update(b)
		return append([]byte(nil), b...), err
	case "DATE":
		v, err := pr.ReadSInt64()
		crc.Update(v)
		return time.Unix(v*86400, 0).UTC(), err
	case "DATETIME":
		v, err := pr.ReadSInt64()
		crc.Update(v)
		return time.UnixMilli(v).UTC(), err
	case "TIMESTAMP", "TIMESTAMP_NTZ":
		sec, err := pr.ReadSInt64()
		if err != nil {
			return nil, err
		}
		nanos, err := pr.ReadSInt32()
		crc.Update(sec)
		crc.Update(nanos)
		return time.Unix(sec, int64(nanos)).UTC(), err
	case "ARRAY<BIGINT>":
		n, err := pr.ReadInt32()
		if err != nil {
			return nil, err
		}
		out := make([]any, 0, n)
		for range n {
			isNull, err := pr.ReadBool()
			if err != nil {
				return nil, err
			}
			if isNull {
				out = append(out, nil)
				continue
			}
			v, err := pr.ReadSInt64()
			if err != nil {
				return nil, err
			}
			crc.Update(v)
			out = append(out, v)
		}
		return out, nil
	}
	return nil, fmt.Errorf("type %s cannot be decoded by the emulator", typ)
}

// Bucket hashing: the Java SDK's default hasher (tunnel/hasher), written
// independently of the sink's port so that a bug in one is caught by the
// other and by the Java vectors.

func mix64(l int64) int32 {
	l = (^l) + (l << 18)
	l ^= l >> 31
	l *= 21
	l ^= l >> 11
	l += l << 6
	l ^= l >> 22
	return int32(l)
}

func hashValue(typ string, v any) (int32, error) {
	if v == nil {
		return 0, nil
	}
	switch baseType(typ) {
	case "BIGINT", "INT", "SMALLINT", "TINYINT":
		return mix64(v.(int64)), nil
	case "BOOLEAN":
		if v.(bool) {
			return 0x172ba9c7, nil
		}
		return -0x3a59cb12, nil
	case "DOUBLE":
		return mix64(int64(math.Float64bits(v.(float64)))), nil
	case "FLOAT":
		return mix64(int64(int32(math.Float32bits(v.(float32))))), nil
	case "STRING", "CHAR", "VARCHAR":
		var h int32
		for _, b := range []byte(v.(string)) {
			h += int32(int8(b))
			h += h << 10
			h ^= h >> 6
		}
		h += h << 3
		h ^= h >> 11
		h += h << 15
		return h, nil
	case "DATE":
		return mix64(v.(time.Time).Unix()), nil
	case "DATETIME":
		return mix64(v.(time.Time).UnixMilli()), nil
	case "TIMESTAMP", "TIMESTAMP_NTZ":
		t := v.(time.Time)
		return mix64(t.Unix()<<30 | int64(t.Nanosecond())), nil
	case "DECIMAL":
		var prec, scale int
		if _, err := fmt.Sscanf(typ, "DECIMAL(%d,%d)", &prec, &scale); err != nil {
			return 0, fmt.Errorf("decimal type %s: %w", typ, err)
		}
		u, err := unscaled(v.(string), scale)
		if err != nil {
			return 0, err
		}
		lo := new(big.Int).And(u, new(big.Int).SetUint64(math.MaxUint64)).Uint64()
		if prec > 18 {
			hi := new(big.Int).Rsh(u, 64)
			hi.And(hi, new(big.Int).SetUint64(math.MaxUint64))
			return mix64(int64(lo)) + mix64(int64(hi.Uint64())), nil
		}
		return mix64(int64(lo)), nil
	}
	return 0, fmt.Errorf("the emulator cannot hash key type %s", typ)
}

// unscaled returns s as an integer scaled by 10^scale, rounding half up
// on the magnitude like the server's decimal cast.
func unscaled(s string, scale int) (*big.Int, error) {
	s = strings.TrimSpace(s)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimLeft(s, "+-")
	intPart, frac, _ := strings.Cut(s, ".")
	digits := intPart + frac
	if digits == "" {
		return new(big.Int), nil
	}
	n, ok := new(big.Int).SetString(digits, 10)
	if !ok {
		return nil, fmt.Errorf("invalid decimal %q", s)
	}
	switch d := len(frac) - scale; {
	case d > 0:
		n.Quo(n, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(d)), nil))
		if digits[len(digits)-d] >= '5' {
			n.Add(n, big.NewInt(1))
		}
	case d < 0:
		n.Mul(n, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(-d)), nil))
	}
	if neg {
		n.Neg(n)
	}
	return n, nil
}

func bucketOf(hashes []int32, buckets int) int {
	var s int32
	for _, h := range hashes {
		s += h
	}
	return int((s ^ (s >> 8)) % int32(buckets))
}
