package maxcompute

import (
	"bytes"
	"fmt"
	"io"
	"time"

	"github.com/aliyun/aliyun-odps-go-sdk/odps/data"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/datatype"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/tunnel"
	"google.golang.org/protobuf/encoding/protowire"
)

// The upsert protocol has no Go SDK writer, and the SDK's RecordProtocWriter
// cannot be constructed outside the SDK, so upsert bodies are encoded here
// with the SDK's exported stream writer and CRC helpers, following the
// SDK's RecordProtocWriter field by field (specs §2.9).

// upsert operation codes in the __operation meta column.
const (
	opUpsert = 'U'
	opDelete = 'D'
)

// recordStream accumulates one record stream: records, then MetaCount and
// MetaChecksum when finished.
type recordStream struct {
	buf      bytes.Buffer
	w        *tunnel.ProtocStreamWriter
	crc      tunnel.Crc32CheckSum
	crcOfCrc tunnel.Crc32CheckSum
	count    int64

	// set when the stream was finished and compressed for sending
	body []byte
	enc  string
	size int // buffered size before finishing
}

func newRecordStream() *recordStream {
	s := &recordStream{crc: tunnel.NewCrc32CheckSum(), crcOfCrc: tunnel.NewCrc32CheckSum()}
	s.w = tunnel.NewProtocStreamWriter(&s.buf)
	return s
}

func (s *recordStream) Len() int { return s.buf.Len() }

// writeUpsert appends one record: the table's columns, then the five meta
// columns __version, __app_version (null), __operation, __key_cols (null),
// __value_cols (empty: a full-row upsert).
func (s *recordStream) writeUpsert(values []data.Data, types []datatype.DataType, op byte) error {
	for i, v := range values {
		if v == nil {
			continue
		}
		if err := s.field(i+1, types[i], v); err != nil {
			return err
		}
	}
	n := len(values)
	if err := s.field(n+3, datatype.TinyIntType, data.TinyInt(op)); err != nil {
		return err
	}
	// __value_cols: an empty array: tag, then a zero count; nothing for the CRC
	// beyond the column index.
	s.crc.Update(int32(n + 5))
	if err := s.w.WriteTag(protowire.Number(n+5), protowire.BytesType); err != nil {
		return err
	}
	if err := s.w.WriteInt32(0); err != nil {
		return err
	}
	return s.endRecord()
}

func (s *recordStream) endRecord() error {
	if err := s.w.WriteTag(tunnel.EndRecord, protowire.VarintType); err != nil {
		return err
	}
	v := s.crc.Value()
	if err := s.w.WriteUInt32(v); err != nil {
		return err
	}
	s.crc.Reset()
	s.crcOfCrc.Update(v)
	s.count++
	return nil
}

// finish appends the stream trailer and returns the body.
func (s *recordStream) finish() ([]byte, error) {
	if err := s.w.WriteTag(tunnel.MetaCount, protowire.VarintType); err != nil {
		return nil, err
	}
	if err := s.w.WriteSInt64(s.count); err != nil {
		return nil, err
	}
	if err := s.w.WriteTag(tunnel.MetaChecksum, protowire.VarintType); err != nil {
		return nil, err
	}
	if err := s.w.WriteUInt32(s.crcOfCrc.Value()); err != nil {
		return nil, err
	}
	return s.buf.Bytes(), nil
}

func wireType(t datatype.DataType) (protowire.Type, error) {
	switch t.ID() {
	case datatype.BIGINT, datatype.INT, datatype.SMALLINT, datatype.TINYINT, datatype.BOOLEAN,
		datatype.DATE, datatype.DATETIME:
		return protowire.VarintType, nil
	case datatype.DOUBLE:
		return protowire.Fixed64Type, nil
	case datatype.FLOAT:
		return protowire.Fixed32Type, nil
	case datatype.STRING, datatype.VARCHAR, datatype.CHAR, datatype.BINARY, datatype.DECIMAL,
		datatype.TIMESTAMP, datatype.TIMESTAMP_NTZ, datatype.JSON:
		return protowire.BytesType, nil
	}
	return 0, fmt.Errorf("type %s is not supported in upsert records", t.Name())
}

func (s *recordStream) field(idx int, t datatype.DataType, v data.Data) error {
	wt, err := wireType(t)
	if err != nil {
		return err
	}
	s.crc.Update(int32(idx))
	if err := s.w.WriteTag(protowire.Number(idx), wt); err != nil {
		return err
	}
	bytesField := func(b []byte) error {
		s.crc.Update(b)
		return s.w.WriteBytes(b)
	}
	sint := func(n int64) error {
		s.crc.Update(n)
		return s.w.WriteSInt64(n)
	}
	seconds := func(t time.Time) error {
		sec, nanos := t.Unix(), int32(t.Nanosecond())
		s.crc.Update(sec)
		s.crc.Update(nanos)
		if err := s.w.WriteSInt64(sec); err != nil {
			return err
		}
		return s.w.WriteSInt32(nanos)
	}
	switch x := v.(type) {
	case data.BigInt:
		return sint(int64(x))
	case data.Int:
		return sint(int64(x))
	case data.SmallInt:
		return sint(int64(x))
	case data.TinyInt:
		return sint(int64(x))
	case data.Bool:
		s.crc.Update(x)
		return s.w.WriteBool(bool(x))
	case data.Double:
		s.crc.Update(x)
		return s.w.WriteFloat64(float64(x))
	case data.Float:
		s.crc.Update(x)
		return s.w.WriteFloat32(float32(x))
	case data.String:
		return bytesField([]byte(x))
	case *data.VarChar:
		return bytesField([]byte(x.Data()))
	case *data.Char:
		return bytesField([]byte(x.Data()))
	case data.Binary:
		return bytesField([]byte(x))
	case *data.Decimal:
		return bytesField([]byte(x.Value()))
	case data.Date:
		return sint(time.Time(x).Unix() / 86400)
	case data.DateTime:
		return sint(time.Time(x).UnixMilli())
	case data.Timestamp:
		return seconds(time.Time(x))
	case data.TimestampNtz:
		return seconds(time.Time(x))
	}
	return fmt.Errorf("value %T cannot be encoded for type %s", v, t.Name())
}

// compress wraps body with the configured algorithm and returns the bytes
// and the Content-Encoding ("" for raw).
func compress(algo string, body []byte) ([]byte, string, error) {
	var c tunnel.Compressor
	switch algo {
	case "zlib":
		c = tunnel.Deflate{}
	case "snappy":
		c = tunnel.SnappyFramed(0)
	default:
		return body, "", nil
	}
	var out bytes.Buffer
	w := c.NewWriter(nopWriteCloser{&out})
	if _, err := w.Write(body); err != nil {
		return nil, "", fmt.Errorf("compressing with %s: %w", algo, err)
	}
	if err := w.Close(); err != nil {
		return nil, "", fmt.Errorf("compressing with %s: %w", algo, err)
	}
	return out.Bytes(), c.Name(), nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// uploadOptions returns the SDK session options for the configured
// compression of upload sessions.
func uploadOptions(algo string) []tunnel.Option {
	switch algo {
	case "zlib":
		return []tunnel.Option{tunnel.SessionCfg.WithDefaultDeflateCompressor()}
	case "snappy":
		return []tunnel.Option{tunnel.SessionCfg.WithSnappyFramedCompressor()}
	}
	return nil
}
