package kafka

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// The canal-json decoder. Both producers write the same flat message
// (../../docs/kafka.md and the spec canal-json.md in the project's design
// notes): Alibaba Canal with canal.mq.flatMessage=true, one message per
// binlog rows event (1..N rows in data), and TiCDC's canal-json protocol,
// one row per message, with the _tidb extension (commitTs, WATERMARK
// messages) when enable-tidb-extension=true.

// msgKind classifies a message.
type msgKind uint8

const (
	kindDML msgKind = iota + 1
	kindDDL
	kindWatermark
)

// message is one decoded canal-json message.
type message struct {
	kind     msgKind
	database string
	table    string
	typ      string // INSERT, UPDATE, DELETE; the DDL type; TIDB_WATERMARK
	sql      string
	es       int64 // event time, ms
	// cols are mysqlType's columns in message order: the table's columns
	// in definition order (both producers write them that way).
	cols    []colText
	pkNames []string
	data    []map[string]*string
	old     []map[string]*string
	// commitTs is _tidb.commitTs (0: no TiDB extension); watermarkTs is
	// _tidb.watermarkTs of a WATERMARK.
	commitTs    uint64
	watermarkTs uint64
	// rejected: set aside as a bad record while its schema was prepared.
	rejected bool
}

type colText struct{ name, mysqlType string }

// rawMessage mirrors the JSON; mysqlType is decoded separately to keep its
// key order.
type rawMessage struct {
	ID        *int64               `json:"id"`
	Database  *string              `json:"database"`
	Table     *string              `json:"table"`
	PKNames   []string             `json:"pkNames"`
	IsDDL     *bool                `json:"isDdl"`
	Type      *string              `json:"type"`
	ES        int64                `json:"es"`
	TS        int64                `json:"ts"`
	SQL       string               `json:"sql"`
	MySQLType json.RawMessage      `json:"mysqlType"`
	Data      []map[string]*string `json:"data"`
	Old       []map[string]*string `json:"old"`
	TiDB      *struct {
		CommitTs           uint64 `json:"commitTs"`
		WatermarkTs        uint64 `json:"watermarkTs"`
		OnlyHandleKey      bool   `json:"onlyHandleKey"`
		ClaimCheckLocation string `json:"claimCheckLocation"`
	} `json:"_tidb"`
}

// errBadRecord marks a record that is not usable canal-json.
var errBadRecord = errors.New("bad canal-json record")

func badf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRecord, fmt.Sprintf(format, args...))
}

// decode parses one Kafka record value.
func decode(value []byte) (*message, error) {
	if len(bytes.TrimSpace(value)) == 0 {
		return nil, badf("empty value (canal-json needs a JSON object)")
	}
	var raw rawMessage
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, badf("not valid canal-json: %v", err)
	}
	if raw.Type == nil || raw.IsDDL == nil {
		return nil, badf(`not canal-json: the "type" and "isDdl" fields are missing`)
	}
	m := &message{typ: *raw.Type, sql: raw.SQL, es: raw.ES, pkNames: raw.PKNames, data: raw.Data, old: raw.Old}
	if raw.Database != nil {
		m.database = *raw.Database
	}
	if raw.Table != nil {
		m.table = *raw.Table
	}
	if raw.TiDB != nil {
		if raw.TiDB.OnlyHandleKey || raw.TiDB.ClaimCheckLocation != "" {
			return nil, badf("TiCDC large-message handling (onlyHandleKey/claim-check) is not supported: the message carries only the key columns; raise max-message-bytes or set large-message-handle-option=none")
		}
		m.commitTs, m.watermarkTs = raw.TiDB.CommitTs, raw.TiDB.WatermarkTs
	}
	switch {
	case *raw.IsDDL:
		m.kind = kindDDL
		switch m.typ {
		case "CREATE", "ALTER", "ERASE", "TRUNCATE", "RENAME", "CINDEX", "DINDEX", "QUERY":
		default:
			return nil, badf("unknown DDL type %q", m.typ)
		}
		return m, nil
	case m.typ == "TIDB_WATERMARK":
		m.kind = kindWatermark
		if raw.TiDB == nil || m.watermarkTs == 0 {
			return nil, badf("TIDB_WATERMARK without _tidb.watermarkTs")
		}
		return m, nil
	}
	m.kind = kindDML
	switch m.typ {
	case "INSERT", "UPDATE", "DELETE":
	case "GTID", "XACOMMIT", "XAROLLBACK", "MHEARTBEAT":
		// Canal's own non-row entries carry no change.
		m.kind = 0
		return m, nil
	default:
		return nil, badf("unknown type %q (expected INSERT, UPDATE, DELETE, a DDL or TIDB_WATERMARK)", m.typ)
	}
	if m.database == "" || m.table == "" {
		return nil, badf("%s without database or table", m.typ)
	}
	cols, err := orderedTypes(raw.MySQLType)
	if err != nil {
		return nil, badf("mysqlType: %v", err)
	}
	if len(cols) == 0 {
		return nil, badf("%s on %s.%s without mysqlType", m.typ, m.database, m.table)
	}
	m.cols = cols
	if len(m.data) == 0 {
		return nil, badf("%s on %s.%s without rows in data", m.typ, m.database, m.table)
	}
	if m.pkNames == nil {
		return nil, badf("%s on %s.%s without pkNames (the key)", m.typ, m.database, m.table)
	}
	for _, k := range m.pkNames {
		if !hasCol(cols, k) {
			return nil, badf("key column %s of %s.%s is not in mysqlType", k, m.database, m.table)
		}
	}
	for i, row := range m.data {
		for name := range row {
			if !hasCol(cols, name) {
				return nil, badf("data[%d] has column %s, which mysqlType does not declare", i, name)
			}
		}
		for _, k := range m.pkNames {
			if v, ok := row[k]; !ok || v == nil {
				return nil, badf("data[%d] lacks the value of key column %s", i, k)
			}
		}
	}
	if m.typ == "UPDATE" && len(m.old) != 0 && len(m.old) != len(m.data) {
		return nil, badf("UPDATE has %d rows in data but %d in old", len(m.data), len(m.old))
	}
	return m, nil
}

func hasCol(cols []colText, name string) bool {
	for _, c := range cols {
		if c.name == name {
			return true
		}
	}
	return false
}

// orderedTypes reads a JSON object of column → type text in key order.
func orderedTypes(raw json.RawMessage) ([]colText, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not an object")
	}
	var out []colText
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, err
		}
		v, err := dec.Token()
		if err != nil {
			return nil, err
		}
		ks, _ := k.(string)
		vs, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("type of column %s is not a string", ks)
		}
		if hasCol(out, ks) {
			return nil, fmt.Errorf("column %s appears twice", ks)
		}
		out = append(out, colText{name: ks, mysqlType: vs})
	}
	return out, nil
}

// images returns row i's before and after images as column → value text
// (nil value: NULL; a column absent from a map: not sent). UPDATE's
// before-image is data with old's columns laid over it (old holds all or
// only the changed columns, depending on the producer's settings).
func (m *message) images(i int) (before, after map[string]*string) {
	switch m.typ {
	case "INSERT":
		return nil, m.data[i]
	case "DELETE":
		return m.data[i], nil
	}
	after = m.data[i]
	before = make(map[string]*string, len(after))
	for k, v := range after {
		before[k] = v
	}
	if i < len(m.old) {
		for k, v := range m.old[i] {
			before[k] = v
		}
	}
	return before, after
}
