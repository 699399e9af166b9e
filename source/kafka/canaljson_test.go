package kafka

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/merge"
)

// Fixtures written to the documented message shapes (spec canal-json.md §1).
const (
	ticdcUpdate = `{"id":0,"database":"shop","table":"orders","pkNames":["id"],"isDdl":false,"type":"UPDATE","es":1724140800123,
 "ts":1724140801456,"sql":"","sqlType":{"id":-5,"status":12},"mysqlType":{"id":"bigint","status":"varchar"},
 "data":[{"id":"42","status":"paid"}],"old":[{"id":"42","status":"new"}],"_tidb":{"commitTs":451973165907443717}}`
	ticdcWatermark = `{"id":0,"database":"","table":"","pkNames":null,"isDdl":false,"type":"TIDB_WATERMARK","es":1724140801023,"ts":1724140801500,
 "sql":"","sqlType":null,"mysqlType":null,"data":null,"old":null,"_tidb":{"watermarkTs":451973166143373312}}`
	canalUpdate = `{"id":7,"database":"shop","table":"orders","pkNames":["id"],"isDdl":false,"type":"UPDATE","es":1724140800000,"ts":1724140800731,
 "sql":"","sqlType":{"id":-5,"status":12},"mysqlType":{"id":"bigint(20)","status":"varchar(16)"},
 "data":[{"id":"41","status":"paid"},{"id":"42","status":"paid"}],"old":[{"status":"new"},{"status":"new"}],"gtid":""}`
	ticdcAlter = `{"id":0,"database":"shop","table":"orders","pkNames":null,"isDdl":true,"type":"ALTER","es":1724140802000,"ts":1724140802100,
 "sql":"ALTER TABLE orders ADD COLUMN note varchar(8)","sqlType":null,"mysqlType":null,"data":null,"old":null,"_tidb":{"commitTs":451973166400000000}}`
	ticdcDelete = `{"id":0,"database":"shop","table":"orders","pkNames":["id"],"isDdl":false,"type":"DELETE","es":1724140800123,
 "ts":1724140801456,"sql":"","sqlType":{"id":-5,"status":12},"mysqlType":{"id":"bigint","status":"varchar"},
 "data":[{"id":"42","status":"paid"}],"old":null,"_tidb":{"commitTs":451973165907443718}}`
)

func TestDecodeFixtures(t *testing.T) {
	m, err := decode([]byte(ticdcUpdate))
	require.NoError(t, err)
	require.Equal(t, kindDML, m.kind)
	require.Equal(t, uint64(451973165907443717), m.commitTs)
	require.Equal(t, []colText{{"id", "bigint"}, {"status", "varchar"}}, m.cols)
	before, after := m.images(0)
	require.Equal(t, "new", *before["status"])
	require.Equal(t, "paid", *after["status"])

	m, err = decode([]byte(ticdcWatermark))
	require.NoError(t, err)
	require.Equal(t, kindWatermark, m.kind)
	require.Equal(t, uint64(451973166143373312), m.watermarkTs)

	m, err = decode([]byte(canalUpdate))
	require.NoError(t, err)
	require.Zero(t, m.commitTs)
	require.Len(t, m.data, 2)
	before, after = m.images(1)
	require.Equal(t, "42", *before["id"]) // old holds only changed columns: the rest comes from data
	require.Equal(t, "new", *before["status"])
	require.Equal(t, "paid", *after["status"])

	m, err = decode([]byte(ticdcAlter))
	require.NoError(t, err)
	require.Equal(t, kindDDL, m.kind)
	require.Equal(t, "ALTER", m.typ)
}

func TestDecodeBadRecords(t *testing.T) {
	for _, c := range []struct{ in, reason string }{
		{``, "empty value"},
		{`not json`, "not valid canal-json"},
		{`{"database":"a"}`, `"type" and "isDdl" fields are missing`},
		{`{"database":"a","table":"b","isDdl":false,"type":"UPSERT","pkNames":["id"],"mysqlType":{"id":"int"},"data":[{"id":"1"}]}`, `unknown type "UPSERT"`},
		{`{"database":"a","table":"b","isDdl":true,"type":"FROB","sql":"x"}`, `unknown DDL type "FROB"`},
		{`{"database":"a","table":"b","isDdl":false,"type":"INSERT","pkNames":["id"],"mysqlType":{"id":"int"},"data":[{"v":"1"}]}`, "data[0] has column v"},
		{`{"database":"a","table":"b","isDdl":false,"type":"INSERT","pkNames":["id"],"mysqlType":{"id":"int","v":"int"},"data":[{"v":"1"}]}`, "lacks the value of key column id"},
		{`{"database":"a","table":"b","isDdl":false,"type":"INSERT","pkNames":null,"mysqlType":{"id":"int"},"data":[{"id":"1"}]}`, "without pkNames"},
		{`{"database":"a","table":"b","isDdl":false,"type":"INSERT","pkNames":["id"],"mysqlType":{"id":"int"},"data":[{"id":"1"}],"_tidb":{"commitTs":5,"onlyHandleKey":true}}`, "large-message"},
	} {
		_, err := decode([]byte(c.in))
		require.ErrorIs(t, err, errBadRecord, c.in)
		require.ErrorContains(t, err, c.reason, c.in)
	}
}

// TestStateFixtures runs the fixtures through the state: the TiCDC
// transaction waits for the watermark, DDL changes the schema at the next
// DML, and the Canal rows event becomes two Update rows.
func TestStateFixtures(t *testing.T) {
	r, err := merge.NewRoute(`shop`, `orders`, change.TableID{Database: "dw", Table: "orders"})
	require.NoError(t, err)
	mk := func() (*state, *[]change.Event) {
		mg, err := merge.NewMerger(merge.Config{Routes: []merge.Route{r}})
		require.NoError(t, err)
		s := newState(mg, []tp{{"t", 0}, {"t", 1}}, nil, 100)
		var evs []change.Event
		s.emit = func(ev change.Event) error { evs = append(evs, ev); return nil }
		return s, &evs
	}
	s, evs := mk()
	require.NoError(t, s.handle(record{"t", 1, 0, []byte(ticdcUpdate)}))
	require.NoError(t, s.handle(record{"t", 0, 0, []byte(ticdcWatermark)}))
	require.Empty(t, *evs, "released before every partition had a watermark")
	require.NoError(t, s.handle(record{"t", 1, 1, []byte(ticdcWatermark)}))
	require.Len(t, *evs, 3) // schema, rows, commit
	require.Equal(t, change.EventSchema, (*evs)[0].Kind)
	rows := (*evs)[1].Rows
	require.Equal(t, []change.Row{{Op: change.Update, Target: change.TableID{Database: "dw", Table: "orders"}, Source: change.TableID{Database: "shop", Table: "orders"},
		Before: []change.Value{"shop", "orders", int64(42), "new"}, After: []change.Value{"shop", "orders", int64(42), "paid"}}}, rows)
	require.Equal(t, change.EventCommit, (*evs)[2].Kind)
	// A re-send of the applied change after the watermark is dropped.
	require.NoError(t, s.handle(record{"t", 1, 2, []byte(ticdcUpdate)}))
	require.Zero(t, s.buffered())

	s, evs = mk()
	require.NoError(t, s.handle(record{"t", 0, 0, []byte(canalUpdate)}))
	require.NoError(t, s.commit())
	require.Len(t, *evs, 3)
	require.Len(t, (*evs)[1].Rows, 2)
	require.Equal(t, []change.Value{"shop", "orders", int64(41), "new"}, (*evs)[1].Rows[0].Before)
	require.Equal(t, []change.Value{"shop", "orders", int64(41), "paid"}, (*evs)[1].Rows[0].After)
	// Mixing flavours in one stream is a bad record.
	err = s.handle(record{"t", 0, 1, []byte(ticdcDelete)})
	var bad *BadRecordError
	require.ErrorAs(t, err, &bad)
	require.Equal(t, int64(1), bad.Offset)
	require.ErrorContains(t, err, "topic t partition 0 offset 1")
}

// TestStateDDL: an ALTER on partition 0 is applied in commitTs order; the
// next DML shows the new column and the target schema evolves with the
// statement as its cause. Dropping a routed shard stops the stream.
func TestStateDDL(t *testing.T) {
	r, err := merge.NewRoute(`shop`, `orders`, change.TableID{Database: "dw", Table: "orders"})
	require.NoError(t, err)
	mg, err := merge.NewMerger(merge.Config{Routes: []merge.Route{r}})
	require.NoError(t, err)
	s := newState(mg, []tp{{"t", 0}}, nil, 100)
	var evs []change.Event
	s.emit = func(ev change.Event) error { evs = append(evs, ev); return nil }
	added := `{"id":0,"database":"shop","table":"orders","pkNames":["id"],"isDdl":false,"type":"INSERT","es":1,"ts":1,"sql":"",
 "mysqlType":{"id":"bigint","status":"varchar","note":"varchar(8)"},"data":[{"id":"43","status":"new","note":"hi"}],"old":null,"_tidb":{"commitTs":451973166500000000}}`
	wm := `{"isDdl":false,"type":"TIDB_WATERMARK","_tidb":{"watermarkTs":451973166600000000}}`
	for i, v := range []string{ticdcUpdate, ticdcAlter, added, wm} {
		require.NoError(t, s.handle(record{"t", 0, int64(i), []byte(v)}))
	}
	var schemas []*change.TableSchema
	for _, ev := range evs {
		if ev.Kind == change.EventSchema {
			schemas = append(schemas, ev.Schema)
		}
	}
	require.Len(t, schemas, 2)
	require.Equal(t, "ALTER TABLE orders ADD COLUMN note varchar(8)", schemas[1].Cause)
	require.Equal(t, change.AddColumn, schemas[1].Changes[0].Kind)
	require.Equal(t, "note", schemas[1].Changes[0].Column.Name)
	last := evs[len(evs)-2]
	require.Equal(t, []change.Value{"shop", "orders", int64(43), "new", "hi"}, last.Rows[0].After)

	erase := `{"database":"shop","table":"orders","isDdl":true,"type":"ERASE","sql":"DROP TABLE orders","_tidb":{"commitTs":451973166700000000}}`
	require.NoError(t, s.handle(record{"t", 0, 4, []byte(erase)}))
	err = s.handle(record{"t", 0, 5, []byte(`{"isDdl":false,"type":"TIDB_WATERMARK","_tidb":{"watermarkTs":451973166800000000}}`)})
	require.ErrorIs(t, err, merge.ErrIncompatibleSchema)
	require.ErrorContains(t, err, "DROP TABLE orders")
}
