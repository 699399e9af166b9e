package merge

// MySQL-flavour unit tests. No MySQL server runs on the test machine (only
// MariaDB), so the MySQL code paths of the binlog reader are driven with
// hand-built go-mysql events shaped like what MySQL 8 sends with
// binlog_format=ROW, binlog_row_image=FULL and binlog_row_metadata=FULL,
// and the MySQL statements and replication commands are answered by a
// go-mysql fake server on loopback.

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/go-mysql-org/go-mysql/server"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
)

const (
	mysqlUUID  = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
	mysqlUUID2 = "8ab0a2f4-3b1c-11ef-a2b1-0242ac120002"
)

var mysqlShardID = change.TableID{Database: "shop_1", Table: "orders_1"}

// mysqlShardCols are the columns of shop_1.orders_1 as discovery reads
// them from information_schema: id BIGINT PRIMARY KEY, qty INT UNSIGNED,
// note VARCHAR(32) utf8mb4 NULL.
func mysqlShardCols() []shardCol {
	return []shardCol{
		{name: "id", typ: colType{base: "bigint"}},
		{name: "qty", typ: colType{base: "int", unsigned: true}},
		{name: "note", typ: colType{base: "varchar", length: 32, charset: "utf8mb4"}, nullable: true},
	}
}

// mysqlTableMap is the table map MySQL 8 writes for shop_1.orders_1 with
// binlog_row_metadata=FULL: signedness, default collation
// (utf8mb4_0900_ai_ci), column names, primary key and visibility.
func mysqlTableMap(tableID uint64) *replication.TableMapEvent {
	return &replication.TableMapEvent{
		TableID: tableID, Flags: 1, Schema: []byte(mysqlShardID.Database), Table: []byte(mysqlShardID.Table),
		ColumnCount:      3,
		ColumnType:       []byte{mysql.MYSQL_TYPE_LONGLONG, mysql.MYSQL_TYPE_LONG, mysql.MYSQL_TYPE_VARCHAR},
		ColumnMeta:       []uint16{0, 0, 128},
		NullBitmap:       []byte{0b100},
		SignednessBitmap: []byte{0b0100_0000}, // numeric columns in order: id signed, qty unsigned
		DefaultCharset:   []uint64{255},
		ColumnName:       [][]byte{[]byte("id"), []byte("qty"), []byte("note")},
		PrimaryKey:       []uint64{0},
		PrimaryKeyPrefix: []uint64{0},
		VisibilityBitmap: []byte{0b1110_0000},
	}
}

// mysqlTestSource is a Source for flavor "mysql" resuming from pos after
// its snapshot, with shop_1.orders_1 discovered, and a binlog reader on it
// set up the way runBinlog and connect set it up.
func mysqlTestSource(t *testing.T, pos binPos, batchRows int) (*Source, *binlogReader) {
	t.Helper()
	route, err := NewRoute(`shop_[0-9]+`, `orders_[0-9]+`, change.TableID{Database: "dw", Table: "orders"})
	require.NoError(t, err)
	cfg := Config{Addr: "127.0.0.1:1", User: "repl", ServerID: 5401, Routes: []Route{route}, Flavor: mysql.MySQLFlavor, BatchRows: batchRows}
	cfg.setDefaults()
	require.NoError(t, cfg.Validate())
	s := &Source{
		sh:     shared{cfg: cfg, log: discardLogger()},
		flavor: mysql.MySQLFlavor,
		cs: &charsets{
			byCollation: map[uint64]string{255: "utf8mb4", 45: "utf8mb4", 33: "utf8mb3", 8: "latin1", 63: "binary"},
			maxLen:      map[string]int{"utf8mb4": 4, "utf8mb3": 3, "latin1": 1, "binary": 1},
		},
		targets:  map[change.TableID]*target{},
		shards:   map[change.TableID]*shard{},
		progress: map[change.TableID]*TableProgress{},
		filter:   map[change.TableID]*tableSnap{},
		state: &tokenState{Version: 1, Routes: routesFingerprint(cfg.Routes, cfg.DatabaseColumn, cfg.TableColumn),
			Flavor: mysql.MySQLFlavor, Pos: pos, SnapshotDone: true},
		events: make(chan change.Event, 1024),
	}
	s.enc.dirty = true
	_, _, err = s.registerTable(mysqlShardID, 0, mysqlShardCols(), []string{"id"}, "")
	require.NoError(t, err)
	r := &binlogReader{s: s, tmCache: map[uint64]tmEntry{}, lastProgress: time.Now()}
	require.NoError(t, r.initGTID())
	r.file = pos.File // as connect does
	return s, r
}

// binlogWriter builds events with consistent headers: each event ends
// where the next begins, as in a binlog file.
type binlogWriter struct {
	pos uint32
	ts  uint32
}

func (w *binlogWriter) event(typ replication.EventType, size uint32, e replication.Event) *replication.BinlogEvent {
	w.pos += size
	return &replication.BinlogEvent{
		Header: &replication.EventHeader{Timestamp: w.ts, EventType: typ, ServerID: 1, EventSize: size, LogPos: w.pos},
		Event:  e,
	}
}

// gtid is MySQL's GTID_LOG_EVENT; sid "" makes the ANONYMOUS_GTID_LOG_EVENT
// MySQL writes with gtid_mode=OFF (all-zero SID).
func (w *binlogWriter) gtid(sid string, gno int64) *replication.BinlogEvent {
	e := &replication.GTIDEvent{CommitFlag: 1, SID: make([]byte, 16), GNO: gno, LastCommitted: gno - 1, SequenceNumber: gno}
	typ := replication.ANONYMOUS_GTID_EVENT
	if sid != "" {
		u := uuid.MustParse(sid)
		e.SID = u[:]
		typ = replication.GTID_EVENT
	}
	return w.event(typ, 79, e)
}

func (w *binlogWriter) query(schema, q string) *replication.BinlogEvent {
	return w.event(replication.QUERY_EVENT, uint32(60+len(q)), &replication.QueryEvent{Schema: []byte(schema), Query: []byte(q)})
}

func (w *binlogWriter) tableMap(tm *replication.TableMapEvent) *replication.BinlogEvent {
	return w.event(replication.TABLE_MAP_EVENT, 75, tm)
}

func (w *binlogWriter) rows(typ replication.EventType, tm *replication.TableMapEvent, rows ...[]any) *replication.BinlogEvent {
	return w.event(typ, uint32(40+30*len(rows)), &replication.RowsEvent{Version: 2, Table: tm, TableID: tm.TableID, ColumnCount: tm.ColumnCount, Rows: rows})
}

func (w *binlogWriter) xid(x uint64) *replication.BinlogEvent {
	return w.event(replication.XID_EVENT, 31, &replication.XIDEvent{XID: x})
}

// rotate is the ROTATE_EVENT at the end of a binlog file; the next file's
// events start after its 4-byte magic.
func (w *binlogWriter) rotate(next string) *replication.BinlogEvent {
	ev := w.event(replication.ROTATE_EVENT, uint32(27+len(next)), &replication.RotateEvent{Position: 4, NextLogName: []byte(next)})
	w.pos = 4
	return ev
}

// fakeRotate is the artificial ROTATE_EVENT a MySQL server sends first on
// a dump connection (log position 0).
func fakeRotate(file string, pos uint64) *replication.BinlogEvent {
	return &replication.BinlogEvent{
		Header: &replication.EventHeader{EventType: replication.ROTATE_EVENT, ServerID: 1, EventSize: uint32(27 + len(file)), Flags: 0x20},
		Event:  &replication.RotateEvent{Position: pos, NextLogName: []byte(file)},
	}
}

// feed hands events to the reader and returns what it emitted meanwhile.
func feed(t *testing.T, s *Source, r *binlogReader, evs ...*replication.BinlogEvent) []change.Event {
	t.Helper()
	for _, ev := range evs {
		require.NoError(t, r.handle(t.Context(), ev), "handling %s at %d", ev.Header.EventType, ev.Header.LogPos)
	}
	var out []change.Event
	for {
		select {
		case ev := <-s.events:
			out = append(out, ev)
		default:
			return out
		}
	}
}

func tokenOf(t *testing.T, ev change.Event) *tokenState {
	t.Helper()
	st, err := parseToken(ev.Token)
	require.NoError(t, err)
	require.Equal(t, mysql.MySQLFlavor, st.Flavor)
	require.True(t, st.SnapshotDone)
	return st
}

// requireGTIDSet checks a token's GTID set for equality as a set.
func requireGTIDSet(t *testing.T, want, got string) {
	t.Helper()
	w, err := mysql.ParseMysqlGTIDSet(want)
	require.NoError(t, err)
	g, err := mysql.ParseMysqlGTIDSet(got)
	require.NoError(t, err, "the token's GTID set %q does not parse", got)
	require.True(t, w.Equal(g), "GTID set: want %s, got %s", want, got)
}

func TestMySQLGTIDTransactionsEmitTokensAtXID(t *testing.T) {
	start := binPos{File: "binlog.000007", Pos: 157, GTID: mysqlUUID + ":1-41," + mysqlUUID2 + ":1-3"}
	s, r := mysqlTestSource(t, start, 2)
	require.NotNil(t, r.mysqlGTID, "a MySQL token with a GTID set must be followed by GTID")
	require.Nil(t, r.mariaGTID)
	w := &binlogWriter{pos: 157, ts: 1_700_000_000}
	tm := mysqlTableMap(91)

	// The server first names the file it streams from.
	require.Empty(t, feed(t, s, r, fakeRotate("binlog.000007", 4)))
	require.Equal(t, "binlog.000007", r.file)

	// Transaction 42: three inserts. BatchRows is 2, so a batch of rows
	// leaves before the commit, but no token does.
	txnStart := w.pos
	got := feed(t, s, r,
		w.gtid(mysqlUUID, 42),
		w.query("shop_1", "BEGIN"),
		w.tableMap(tm),
		w.rows(replication.WRITE_ROWS_EVENTv2, tm,
			[]any{int64(1), uint32(3), "first"},
			[]any{int64(2), uint32(4_000_000_000), nil},
			[]any{int64(3), uint32(0), "third"}),
	)
	require.Len(t, got, 1)
	require.Equal(t, change.EventRows, got[0].Kind)
	require.Len(t, got[0].Rows, 2)
	firstBatch := got[0].Rows
	require.True(t, r.inTxn)
	require.Equal(t, binPos{File: "binlog.000007", Pos: txnStart}, r.txnStart)
	require.Equal(t, mysqlUUID+":42", r.txnGTID)
	require.Equal(t, start, s.state.Pos, "the position moved inside a transaction")

	xid := w.xid(1001)
	got = feed(t, s, r, xid)
	require.Len(t, got, 2)
	require.Equal(t, change.EventRows, got[0].Kind)
	require.Len(t, got[0].Rows, 1)
	require.Equal(t, change.EventCommit, got[1].Kind)
	require.Equal(t, time.Unix(1_700_000_000, 0).UTC(), got[1].Time)
	st := tokenOf(t, got[1])
	require.Equal(t, "binlog.000007", st.Pos.File)
	require.Equal(t, xid.Header.LogPos, st.Pos.Pos)
	requireGTIDSet(t, mysqlUUID+":1-42,"+mysqlUUID2+":1-3", st.Pos.GTID)
	require.False(t, r.inTxn)

	// The rows are the merged target's rows (metadata columns first) with
	// MySQL's unsigned INT kept unsigned.
	schema := s.targets[change.TableID{Database: "dw", Table: "orders"}].schema(&s.sh.cfg)
	require.Equal(t, []string{"database_name", "table_name", "id", "qty", "note"}, colNames(schema))
	require.Equal(t, change.Row{Op: change.Insert, Target: change.TableID{Database: "dw", Table: "orders"}, Source: mysqlShardID,
		After: []change.Value{"shop_1", "orders_1", int64(2), uint64(4_000_000_000), nil}}, firstBatch[1])

	// Transaction 4 of another server (a multi-source or failed-over
	// history): an update and a delete, then the XID.
	w.ts++
	got = feed(t, s, r,
		w.gtid(mysqlUUID2, 4),
		w.query("shop_1", "BEGIN"),
		w.tableMap(tm),
		w.rows(replication.UPDATE_ROWS_EVENTv2, tm, []any{int64(1), uint32(3), "first"}, []any{int64(1), uint32(5), "first"}),
		w.rows(replication.DELETE_ROWS_EVENTv2, tm, []any{int64(3), uint32(0), "third"}),
	)
	require.Len(t, got, 1, "a full batch leaves, never a token")
	require.Equal(t, change.EventRows, got[0].Kind)
	require.Equal(t, []change.Op{change.Update, change.Delete}, []change.Op{got[0].Rows[0].Op, got[0].Rows[1].Op})
	xid = w.xid(1002)
	got = feed(t, s, r, xid)
	require.Len(t, got, 1)
	require.Equal(t, change.EventCommit, got[0].Kind)
	st = tokenOf(t, got[0])
	require.Equal(t, binPos{File: "binlog.000007", Pos: xid.Header.LogPos, GTID: st.Pos.GTID}, st.Pos)
	requireGTIDSet(t, mysqlUUID+":1-42,"+mysqlUUID2+":1-4", st.Pos.GTID)

	// The binlog rotates; the next transaction's token names the new file.
	require.Empty(t, feed(t, s, r, w.rotate("binlog.000008"), fakeRotate("binlog.000008", 4)))
	require.Equal(t, "binlog.000008", r.file)
	require.Equal(t, "binlog.000007", s.state.Pos.File, "a rotate is not a transaction boundary of its own")
	w.pos = 157 // format description and previous GTIDs of the new file
	txnStart = w.pos
	tx := []*replication.BinlogEvent{
		w.gtid(mysqlUUID, 43), w.query("shop_1", "BEGIN"), w.tableMap(tm),
		w.rows(replication.WRITE_ROWS_EVENTv2, tm, []any{int64(9), uint32(1), "after rotate"}),
	}
	require.Empty(t, feed(t, s, r, tx...), "a one-row transaction emits nothing before its XID")
	require.Equal(t, binPos{File: "binlog.000008", Pos: txnStart}, r.txnStart)
	xid = w.xid(1003)
	got = feed(t, s, r, xid)
	require.Len(t, got, 2)
	require.Equal(t, []change.EventKind{change.EventRows, change.EventCommit}, []change.EventKind{got[0].Kind, got[1].Kind})
	st = tokenOf(t, got[1])
	require.Equal(t, "binlog.000008", st.Pos.File)
	require.Equal(t, xid.Header.LogPos, st.Pos.Pos)
	requireGTIDSet(t, mysqlUUID+":1-43,"+mysqlUUID2+":1-4", st.Pos.GTID)
	require.Empty(t, schemaEvents(got), "the FULL-metadata table map matches the discovered schema")
}

func TestMySQLGTIDDDLAndSkippedTransactionsAdvanceTheSet(t *testing.T) {
	start := binPos{File: "binlog.000002", Pos: 4000, GTID: mysqlUUID + ":1-10"}
	s, r := mysqlTestSource(t, start, 100)
	w := &binlogWriter{pos: 4000, ts: 1_700_000_100}
	other := &replication.TableMapEvent{TableID: 12, Schema: []byte("app"), Table: []byte("sessions"), ColumnCount: 1,
		ColumnType: []byte{mysql.MYSQL_TYPE_LONG}, ColumnMeta: []uint16{0}, NullBitmap: []byte{0},
		ColumnName: [][]byte{[]byte("id")}, DefaultCharset: []uint64{255}}

	// MySQL writes DDL as its own GTID transaction without BEGIN; a table
	// no route takes needs no schema read. Then a transaction on an
	// unrouted table. Neither has rows for us: no commit token, and within
	// the progress interval no progress token either.
	ddl := w.query("shop_1", "CREATE TABLE app.audit (id INT PRIMARY KEY)")
	got := feed(t, s, r, w.gtid(mysqlUUID, 11), ddl)
	require.Empty(t, got)
	require.False(t, r.inTxn)
	require.Equal(t, ddl.Header.LogPos, s.state.Pos.Pos)
	requireGTIDSet(t, mysqlUUID+":1-11", s.state.Pos.GTID)
	skippedXID := w.xid(77)
	got = feed(t, s, r, w.gtid(mysqlUUID, 12), w.query("app", "BEGIN"), w.tableMap(other),
		w.rows(replication.WRITE_ROWS_EVENTv2, other, []any{int32(1)}), skippedXID)
	require.Empty(t, got)
	require.Equal(t, skippedXID.Header.LogPos, s.state.Pos.Pos)
	requireGTIDSet(t, mysqlUUID+":1-12", s.state.Pos.GTID)

	// A heartbeat outside a transaction reports the boundary.
	got = feed(t, s, r, &replication.BinlogEvent{Header: &replication.EventHeader{EventType: replication.HEARTBEAT_EVENT, LogPos: w.pos},
		Event: &replication.HeartbeatEvent{}})
	require.Len(t, got, 1)
	require.Equal(t, change.EventProgress, got[0].Kind)
	st := tokenOf(t, got[0])
	require.Equal(t, skippedXID.Header.LogPos, st.Pos.Pos)
	requireGTIDSet(t, mysqlUUID+":1-12", st.Pos.GTID)

	// After the progress interval a skipped transaction reports itself.
	r.lastProgress = time.Now().Add(-2 * time.Second)
	skippedXID = w.xid(78)
	got = feed(t, s, r, w.gtid(mysqlUUID, 13), w.query("app", "BEGIN"), w.tableMap(other),
		w.rows(replication.DELETE_ROWS_EVENTv2, other, []any{int32(1)}), skippedXID)
	require.Len(t, got, 1)
	require.Equal(t, change.EventProgress, got[0].Kind)
	st = tokenOf(t, got[0])
	require.Equal(t, skippedXID.Header.LogPos, st.Pos.Pos)
	requireGTIDSet(t, mysqlUUID+":1-13", st.Pos.GTID)

	// A non-transactional (MyISAM) shard change ends with a COMMIT query,
	// not an XID.
	tm := mysqlTableMap(91)
	got = feed(t, s, r, w.gtid(mysqlUUID, 14), w.query("shop_1", "BEGIN"), w.tableMap(tm),
		w.rows(replication.WRITE_ROWS_EVENTv2, tm, []any{int64(5), uint32(1), "myisam"}))
	require.Empty(t, got)
	commit := w.query("shop_1", "COMMIT")
	got = feed(t, s, r, commit)
	require.Len(t, got, 2)
	require.Equal(t, change.EventCommit, got[1].Kind)
	st = tokenOf(t, got[1])
	require.Equal(t, commit.Header.LogPos, st.Pos.Pos)
	requireGTIDSet(t, mysqlUUID+":1-14", st.Pos.GTID)
}

func TestMySQLFilePositionMode(t *testing.T) {
	// gtid_mode=OFF: the token has no GTID set and MySQL writes anonymous
	// GTID events.
	start := binPos{File: "mysql-bin.000003", Pos: 1200}
	s, r := mysqlTestSource(t, start, 1024)
	require.Nil(t, r.mysqlGTID)
	require.Nil(t, r.mariaGTID)
	w := &binlogWriter{pos: 1200, ts: 1_700_000_200}
	tm := mysqlTableMap(100)

	require.Empty(t, feed(t, s, r, fakeRotate("mysql-bin.000003", 1200)))
	got := feed(t, s, r, w.gtid("", 0), w.query("shop_1", "BEGIN"), w.tableMap(tm),
		w.rows(replication.WRITE_ROWS_EVENTv2, tm, []any{int64(7), uint32(70), "file mode"}))
	require.Empty(t, got, "nothing before the XID")
	require.Empty(t, r.txnGTID, "an anonymous GTID event carries no GTID")
	xid := w.xid(5)
	got = feed(t, s, r, xid)
	require.Len(t, got, 2)
	require.Equal(t, change.EventCommit, got[1].Kind)
	st := tokenOf(t, got[1])
	require.Equal(t, binPos{File: "mysql-bin.000003", Pos: xid.Header.LogPos}, st.Pos, "file/offset token: the XID event's end")

	// Rotate, then a transaction in the next file.
	require.Empty(t, feed(t, s, r, w.rotate("mysql-bin.000004"), fakeRotate("mysql-bin.000004", 4)))
	require.Equal(t, "mysql-bin.000004", r.file)
	w.pos = 126
	got = feed(t, s, r, w.gtid("", 0), w.query("shop_1", "BEGIN"), w.tableMap(tm),
		w.rows(replication.DELETE_ROWS_EVENTv2, tm, []any{int64(7), uint32(70), "file mode"}))
	require.Empty(t, got)
	xid = w.xid(6)
	got = feed(t, s, r, xid)
	require.Len(t, got, 2)
	st = tokenOf(t, got[1])
	require.Equal(t, binPos{File: "mysql-bin.000004", Pos: xid.Header.LogPos}, st.Pos)

	// A server with GTIDs read by file/offset (a token without a GTID
	// set) stays in file/offset mode: real GTIDs are not collected into
	// a partial set.
	got = feed(t, s, r, w.gtid(mysqlUUID, 500), w.query("shop_1", "BEGIN"), w.tableMap(tm),
		w.rows(replication.WRITE_ROWS_EVENTv2, tm, []any{int64(8), uint32(1), nil}))
	require.Empty(t, got)
	xid = w.xid(7)
	got = feed(t, s, r, xid)
	require.Len(t, got, 2)
	st = tokenOf(t, got[1])
	require.Equal(t, binPos{File: "mysql-bin.000004", Pos: xid.Header.LogPos}, st.Pos)
}

func TestMySQLResumeFromToken(t *testing.T) {
	// A token from the GTID stream resumes with the set it carries.
	s, r := mysqlTestSource(t, binPos{File: "binlog.000007", Pos: 157, GTID: mysqlUUID + ":1-41"}, 1024)
	w := &binlogWriter{pos: 157}
	tm := mysqlTableMap(91)
	got := feed(t, s, r, w.gtid(mysqlUUID, 42), w.query("shop_1", "BEGIN"), w.tableMap(tm),
		w.rows(replication.WRITE_ROWS_EVENTv2, tm, []any{int64(1), uint32(1), "x"}), w.xid(1))
	require.Len(t, got, 2)
	tok := got[1].Token

	_, r2 := mysqlTestSource(t, tokenOf(t, got[1]).Pos, 1024)
	requireGTIDSet(t, mysqlUUID+":1-42", r2.mysqlGTID.String())
	require.Equal(t, mysqlUUID+":1-42", r2.gtidString())

	// connect sends that set in COM_BINLOG_DUMP_GTID.
	fake := startFakeMySQL(t)
	_, r3 := mysqlTestSource(t, tokenOf(t, got[1]).Pos, 1024)
	r3.s.sh.cfg.Addr = fake.addr
	require.NoError(t, r3.connect(t.Context()))
	dump := fake.waitDump(t)
	r3.close()
	require.NotNil(t, dump.gtid, "a GTID token must resume with COM_BINLOG_DUMP_GTID, got a file dump of %v", dump.pos)
	requireGTIDSet(t, mysqlUUID+":1-42", dump.gtid.String())
	st, err := parseToken(tok)
	require.NoError(t, err)
	require.Equal(t, mysql.MySQLFlavor, st.Flavor)

	// A file/offset token resumes with COM_BINLOG_DUMP at its position.
	_, r4 := mysqlTestSource(t, binPos{File: "mysql-bin.000004", Pos: 913}, 1024)
	r4.s.sh.cfg.Addr = fake.addr
	require.NoError(t, r4.connect(t.Context()))
	dump = fake.waitDump(t)
	r4.close()
	require.Nil(t, dump.gtid)
	require.Equal(t, mysql.Position{Name: "mysql-bin.000004", Pos: 913}, dump.pos)

	// A bad GTID set in a token is refused before any connection.
	s5 := &Source{flavor: mysql.MySQLFlavor, state: &tokenState{Pos: binPos{File: "b.1", Pos: 4, GTID: "not-a-uuid:1-2"}}}
	err = (&binlogReader{s: s5}).initGTID()
	require.ErrorIs(t, err, ErrBadToken)
}

func TestMySQLMasterPos(t *testing.T) {
	fake := startFakeMySQL(t)
	dial := func() *client.Conn {
		c, err := client.Connect(fake.addr, "repl", "", "")
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	cols := []string{"File", "Position", "Binlog_Do_DB", "Binlog_Ignore_DB", "Executed_Gtid_Set"}

	// MySQL 8.4 has no SHOW MASTER STATUS; the multi-UUID
	// Executed_Gtid_Set comes with newlines after the commas.
	fake.set(map[string]fakeAnswer{
		"SHOW MASTER STATUS": {err: mysql.NewError(mysql.ER_PARSE_ERROR, "You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version for the right syntax to use near 'MASTER STATUS' at line 1")},
		"SHOW BINARY LOG STATUS": {cols: cols, rows: [][]any{{"binlog.000012", uint64(2391), "", "",
			mysqlUUID + ":1-57,\n" + mysqlUUID2 + ":1-9"}}},
	})
	p, err := masterPos(dial(), mysql.MySQLFlavor)
	require.NoError(t, err)
	require.Equal(t, binPos{File: "binlog.000012", Pos: 2391, GTID: mysqlUUID + ":1-57," + mysqlUUID2 + ":1-9"}, p)
	requireGTIDSet(t, mysqlUUID+":1-57,"+mysqlUUID2+":1-9", p.GTID)

	// MySQL 8.0 with gtid_mode=OFF: the old statement answers, the GTID
	// set is empty, the stream runs by file/offset.
	fake.set(map[string]fakeAnswer{
		"SHOW MASTER STATUS": {cols: cols, rows: [][]any{{"mysql-bin.000003", uint64(157), "", "", ""}}},
	})
	p, err = masterPos(dial(), mysql.MySQLFlavor)
	require.NoError(t, err)
	require.Equal(t, binPos{File: "mysql-bin.000003", Pos: 157}, p)

	// Binary logging off: an empty result.
	fake.set(map[string]fakeAnswer{"SHOW BINARY LOG STATUS": {cols: cols}})
	_, err = masterPos(dial(), mysql.MySQLFlavor)
	require.ErrorIs(t, err, ErrPrerequisite)
	require.ErrorContains(t, err, "--log-bin")

	// Neither statement works: the first error is reported.
	fake.set(map[string]fakeAnswer{})
	_, err = masterPos(dial(), mysql.MySQLFlavor)
	require.ErrorContains(t, err, "SHOW MASTER STATUS")
}

func colNames(s change.Schema) []string {
	out := make([]string, len(s.Columns))
	for i, c := range s.Columns {
		out[i] = c.Name
	}
	return out
}

func schemaEvents(evs []change.Event) []change.Event {
	var out []change.Event
	for _, ev := range evs {
		if ev.Kind == change.EventSchema {
			out = append(out, ev)
		}
	}
	return out
}

// fakeMySQL is a go-mysql fake server on loopback that answers the
// statements a test sets and records binlog dump requests.
type fakeMySQL struct {
	addr  string
	mu    sync.Mutex
	ans   map[string]fakeAnswer
	dumps chan fakeDump
}

type fakeAnswer struct {
	cols []string
	rows [][]any
	err  error
}

type fakeDump struct {
	gtid *mysql.MysqlGTIDSet
	pos  mysql.Position
}

func startFakeMySQL(t *testing.T) *fakeMySQL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f := &fakeMySQL{addr: ln.Addr().String(), ans: map[string]fakeAnswer{}, dumps: make(chan fakeDump, 4)}
	srv := server.NewServer("8.4.3", mysql.DEFAULT_COLLATION_ID, mysql.AUTH_NATIVE_PASSWORD, nil, nil)
	var wg sync.WaitGroup
	conns := map[net.Conn]bool{}
	var connsMu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			connsMu.Lock()
			conns[nc] = true
			connsMu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				c, err := srv.NewConn(nc, "repl", "", &fakeHandler{f: f})
				if err != nil {
					return
				}
				for c.HandleCommand() == nil {
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		connsMu.Lock()
		for nc := range conns {
			_ = nc.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	return f
}

func (f *fakeMySQL) set(a map[string]fakeAnswer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ans = a
}

func (f *fakeMySQL) waitDump(t *testing.T) fakeDump {
	t.Helper()
	select {
	case d := <-f.dumps:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no binlog dump request reached the fake server")
		return fakeDump{}
	}
}

type fakeHandler struct {
	server.EmptyReplicationHandler
	f *fakeMySQL
}

var errFakeNoDump = errors.New("the fake server streams no binlog")

func (h *fakeHandler) UseDB(string) error { return nil }

func (h *fakeHandler) HandleQuery(q string) (*mysql.Result, error) {
	h.f.mu.Lock()
	a, ok := h.f.ans[strings.TrimSpace(q)]
	h.f.mu.Unlock()
	switch {
	case ok && a.err != nil:
		return nil, a.err
	case ok:
		rs, err := mysql.BuildSimpleTextResultset(a.cols, a.rows)
		if err != nil {
			return nil, err
		}
		return mysql.NewResult(rs), nil
	case hasPrefixFold(q, "SET "):
		return nil, nil // session variables of a replica connection
	case hasPrefixFold(q, "SHOW GLOBAL VARIABLES LIKE 'BINLOG_CHECKSUM'"):
		rs, err := mysql.BuildSimpleTextResultset([]string{"Variable_name", "Value"}, [][]any{{"binlog_checksum", "NONE"}})
		if err != nil {
			return nil, err
		}
		return mysql.NewResult(rs), nil
	}
	return nil, mysql.NewError(mysql.ER_PARSE_ERROR, "the fake server does not answer "+q)
}

func (h *fakeHandler) HandleRegisterSlave([]byte) error { return nil }

func (h *fakeHandler) HandleBinlogDump(pos mysql.Position) (*replication.BinlogStreamer, error) {
	h.f.dumps <- fakeDump{pos: pos}
	return nil, errFakeNoDump
}

func (h *fakeHandler) HandleBinlogDumpGTID(gs *mysql.MysqlGTIDSet) (*replication.BinlogStreamer, error) {
	h.f.dumps <- fakeDump{gtid: gs}
	return nil, errFakeNoDump
}

// MySQL 8.3+ writes a tagged GTID (uuid:tag:gno) as its own event type; its
// transaction must enter the token's GTID set like any other, or a resume
// would receive it again.
func TestMySQLTaggedGTIDEntersTheToken(t *testing.T) {
	start := binPos{File: "binlog.000007", Pos: 157, GTID: mysqlUUID + ":1-41"}
	s, r := mysqlTestSource(t, start, 100)
	w := &binlogWriter{pos: 157, ts: 1_700_000_000}
	tm := mysqlTableMap(91)
	require.Empty(t, feed(t, s, r, fakeRotate("binlog.000007", 4)))
	g := w.gtid(mysqlUUID, 7)
	tagged := &replication.GtidTaggedLogEvent{GTIDEvent: *g.Event.(*replication.GTIDEvent)}
	tagged.Tag = mysql.NewTag("etl")
	g.Event, g.Header.EventType = tagged, replication.GTID_TAGGED_LOG_EVENT
	got := feed(t, s, r, g, w.query("shop_1", "BEGIN"), w.tableMap(tm),
		w.rows(replication.WRITE_ROWS_EVENTv2, tm, []any{int64(9), uint32(1), "tagged"}), w.xid(77))
	require.Len(t, got, 2)
	require.Equal(t, change.EventCommit, got[1].Kind)
	st := tokenOf(t, got[1])
	want, err := mysql.ParseMysqlGTIDSet(mysqlUUID + ":1-41," + mysqlUUID + ":etl:7")
	require.NoError(t, err)
	gotSet, err := mysql.ParseMysqlGTIDSet(st.Pos.GTID)
	require.NoError(t, err)
	require.True(t, want.Equal(gotSet), "token GTID set %s, want %s", st.Pos.GTID, want)
}
