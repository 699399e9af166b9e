package merge

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
)

func TestXAStatementXIDs(t *testing.T) {
	for _, tc := range []struct {
		q, verb, xid string
		onePhase     bool
	}{
		{"XA COMMIT X'7831',X'',1", "COMMIT", "X'7831',X'',1", false},
		{"XA ROLLBACK X'7832',X'6232',7", "ROLLBACK", "X'7832',X'6232',7", false},
		{"xa start 'x1'", "START", "X'7831',X'',1", false},
		{"XA END 'x2','b2',7", "END", "X'7832',X'6232',7", false},
		{"XA COMMIT 0x4142 ONE PHASE", "COMMIT", "X'4142',X'',1", true},
		{"XA PREPARE 'it''s'", "PREPARE", "X'69742773',X'',1", false},
		{"XA BEGIN X'00ff', X'', 0", "START", "X'00ff',X'',0", false},
		{"XA RECOVER", "RECOVER", "", false},
		{"XAX COMMIT 'a'", "", "", false},
		{"SELECT 1", "", "", false},
	} {
		verb, xid, onePhase, err := xaStatement(tc.q)
		require.NoError(t, err, tc.q)
		require.Equal(t, tc.verb, verb, tc.q)
		require.Equal(t, tc.xid, xid, tc.q)
		require.Equal(t, tc.onePhase, onePhase, tc.q)
	}
	_, _, _, err := xaStatement("XA COMMIT X'78")
	require.Error(t, err)

	// The XA_PREPARE_LOG_EVENT body MariaDB 10.11 wrote for XA PREPARE
	// 'x2','b2',7 (captured), and the same xid's query form agree.
	xid, onePhase, err := parseXAPrepare([]byte{0, 7, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 'x', '2', 'b', '2'})
	require.NoError(t, err)
	require.False(t, onePhase)
	require.Equal(t, "X'7832',X'6232',7", xid)
	_, _, err = parseXAPrepare([]byte{0, 1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 'x'})
	require.Error(t, err)
}

func TestXAValueCodecRoundTrip(t *testing.T) {
	vals := []change.Value{nil, int64(math.MinInt64), uint64(math.MaxUint64), float32(1.1), math.Pi, change.Decimal("-0.000001"),
		"héllo", string([]byte{0xff, 0xfe}), []byte{}, []byte{0, 1, 2}, change.Date("0000-00-00"), change.DateTime("2024-02-29 23:59:59.999999"),
		change.Timestamp("1970-01-01 00:00:01"), change.Time("-838:59:59"), change.JSON(`{"a": [1, "b"]}`), ""}
	enc, err := encodeVals(vals)
	require.NoError(t, err)
	got, err := decodeVals(enc)
	require.NoError(t, err)
	require.Equal(t, vals, got)
	_, err = encodeVals([]change.Value{struct{}{}})
	require.Error(t, err)
}

// xaPrepareEvent is the XA_PREPARE_LOG_EVENT of gtrid (bqual empty,
// format id 1).
func (w *binlogWriter) xaPrepare(gtrid string, onePhase bool) *replication.BinlogEvent {
	data := make([]byte, 13, 13+len(gtrid))
	if onePhase {
		data[0] = 1
	}
	binary.LittleEndian.PutUint32(data[1:], 1)
	binary.LittleEndian.PutUint32(data[5:], uint32(len(gtrid)))
	data = append(data, gtrid...)
	return w.event(replication.XA_PREPARE_LOG_EVENT, uint32(19+len(data)), &replication.GenericEvent{Data: data})
}

func xaHex(gtrid string) string { return "X'" + strings.ToLower(hexOf(gtrid)) + "',X'',1" }

func hexOf(s string) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(s))
	for i := 0; i < len(s); i++ {
		out = append(out, digits[s[i]>>4], digits[s[i]&15])
	}
	return string(out)
}

// resumeMySQL opens a MySQL-flavour test source from a token, as Open does.
func resumeMySQL(t *testing.T, tok change.Token) (*Source, *binlogReader) {
	t.Helper()
	st, err := parseToken(tok)
	require.NoError(t, err)
	s, r := mysqlTestSource(t, st.Pos, 100)
	s.state = st
	s.enc = tokenEncoder{dirty: true}
	require.NoError(t, r.initGTID())
	return s, r
}

func rowIDs(evs []change.Event) []int64 {
	var ids []int64
	for _, ev := range evs {
		for _, r := range ev.Rows {
			img := r.After
			if img == nil {
				img = r.Before
			}
			ids = append(ids, img[2].(int64))
		}
	}
	return ids
}

func kinds(evs []change.Event) []change.EventKind {
	out := make([]change.EventKind, len(evs))
	for i, ev := range evs {
		out[i] = ev.Kind
	}
	return out
}

// MySQL writes an XA transaction as its PREPARE group (GTID, XA START,
// rows, XA END, XA_PREPARE_LOG_EVENT) and, later, its decision (GTID,
// XA COMMIT or XA ROLLBACK query). The rows become one source transaction
// at XA COMMIT, across a rotate and a restart from a token taken while the
// transaction was prepared, and never for XA ROLLBACK.
func TestMySQLXATransactionsCommitAtXACommit(t *testing.T) {
	start := binPos{File: "binlog.000007", Pos: 157, GTID: mysqlUUID + ":1-20"}
	s, r := mysqlTestSource(t, start, 100)
	w := &binlogWriter{pos: 157, ts: 1_700_000_000}
	tm := mysqlTableMap(91)
	require.Empty(t, feed(t, s, r, fakeRotate("binlog.000007", 4)))

	// XA 'a' prepares two inserts; nothing is emitted, the position moves
	// past the prepare group and the rows are in the state.
	prep := w.xaPrepare("a", false)
	got := feed(t, s, r,
		w.gtid(mysqlUUID, 21), w.query("shop_1", "XA START X'61',X'',1"), w.tableMap(tm),
		w.rows(replication.WRITE_ROWS_EVENTv2, tm, []any{int64(1), uint32(1), "xa one"}, []any{int64(2), uint32(2), nil}),
		w.query("shop_1", "XA END X'61',X'',1"), prep)
	require.Empty(t, rowIDs(got), "rows of a prepared XA transaction were emitted before its XA COMMIT")
	require.Equal(t, prep.Header.LogPos, s.state.Pos.Pos)
	requireGTIDSet(t, mysqlUUID+":1-21", s.state.Pos.GTID)
	require.Len(t, s.state.XA, 1)
	require.Equal(t, xaHex("a"), s.state.XA[0].XID)

	// XA 'b' prepares a delete; an ordinary transaction commits meanwhile
	// and its token carries both prepared transactions.
	got = feed(t, s, r,
		w.gtid(mysqlUUID, 22), w.query("shop_1", "XA START X'62',X'',1"), w.tableMap(tm),
		w.rows(replication.DELETE_ROWS_EVENTv2, tm, []any{int64(7), uint32(7), "old"}),
		w.query("shop_1", "XA END X'62',X'',1"), w.xaPrepare("b", false),
		w.gtid(mysqlUUID, 23), w.query("shop_1", "BEGIN"), w.tableMap(tm),
		w.rows(replication.WRITE_ROWS_EVENTv2, tm, []any{int64(3), uint32(3), "plain"}), w.xid(500))
	require.Equal(t, []int64{3}, rowIDs(got))
	require.Equal(t, change.EventCommit, got[len(got)-1].Kind)
	pendingTok := got[len(got)-1].Token
	st := tokenOf(t, got[len(got)-1])
	require.Len(t, st.XA, 2, "the token lost a prepared XA transaction")
	requireGTIDSet(t, mysqlUUID+":1-23", st.Pos.GTID)

	// The binlog rotates; XA COMMIT 'a' in the next file emits its rows as
	// one transaction ending at the commit's position.
	require.Empty(t, feed(t, s, r, w.rotate("binlog.000008"), fakeRotate("binlog.000008", 4)))
	w.pos = 157
	w.ts++
	commitA := w.query("", "XA COMMIT X'61',X'',1")
	got = feed(t, s, r, w.gtid(mysqlUUID, 24), commitA)
	require.Equal(t, []change.EventKind{change.EventRows, change.EventCommit}, kinds(got))
	require.Equal(t, []int64{1, 2}, rowIDs(got))
	require.Equal(t, time.Unix(1_700_000_001, 0).UTC(), got[1].Time)
	st = tokenOf(t, got[1])
	require.Equal(t, binPos{File: "binlog.000008", Pos: commitA.Header.LogPos, GTID: st.Pos.GTID}, st.Pos)
	requireGTIDSet(t, mysqlUUID+":1-24", st.Pos.GTID)
	require.Len(t, st.XA, 1)
	require.Equal(t, xaHex("b"), st.XA[0].XID)

	// XA ROLLBACK 'b': no rows, the transaction is forgotten.
	rb := w.query("", "XA ROLLBACK X'62',X'',1")
	got = feed(t, s, r, w.gtid(mysqlUUID, 25), rb)
	require.Empty(t, rowIDs(got))
	require.Empty(t, s.state.XA)
	require.Equal(t, rb.Header.LogPos, s.state.Pos.Pos)

	// A restart from the token taken while both were prepared: the new
	// reader starts after the prepares and still has their rows.
	s2, r2 := resumeMySQL(t, pendingTok)
	require.Len(t, s2.state.XA, 2)
	w2 := &binlogWriter{pos: 157, ts: 1_700_000_001}
	require.Empty(t, feed(t, s2, r2, fakeRotate("binlog.000008", 4)))
	got = feed(t, s2, r2, w2.gtid(mysqlUUID, 24), w2.query("", "XA COMMIT X'61',X'',1"))
	require.Equal(t, []int64{1, 2}, rowIDs(got))
	got = feed(t, s2, r2, w2.gtid(mysqlUUID, 25), w2.query("", "XA ROLLBACK X'62',X'',1"))
	require.Empty(t, rowIDs(got))
	require.Empty(t, s2.state.XA)

	// The rows are the target's rows, as for any transaction.
	require.Equal(t, change.Row{Op: change.Insert, Target: change.TableID{Database: "dw", Table: "orders"}, Source: mysqlShardID,
		After: []change.Value{"shop_1", "orders_1", int64(2), uint64(2), nil}}, got0(t, s, r, w))
}

// got0 commits one more XA transaction with one row (id 2) in one go and
// returns that row.
func got0(t *testing.T, s *Source, r *binlogReader, w *binlogWriter) change.Row {
	t.Helper()
	tm := mysqlTableMap(92)
	got := feed(t, s, r, w.gtid(mysqlUUID, 26), w.query("shop_1", "XA START 'c'"), w.tableMap(tm),
		w.rows(replication.WRITE_ROWS_EVENTv2, tm, []any{int64(2), uint32(2), nil}), w.query("shop_1", "XA END 'c'"), w.xaPrepare("c", false),
		w.gtid(mysqlUUID, 27), w.query("", "XA COMMIT X'63',X'',1"))
	require.Len(t, got, 2)
	require.Len(t, got[0].Rows, 1)
	return got[0].Rows[0]
}

// XA COMMIT … ONE PHASE is a prepare group whose XA_PREPARE_LOG_EVENT has
// the one-phase flag: an ordinary transaction at that point. An XA COMMIT
// of an xid never prepared with routed rows only passes the boundary.
func TestMySQLXAOnePhaseAndUnknownXID(t *testing.T) {
	start := binPos{File: "binlog.000003", Pos: 4, GTID: mysqlUUID + ":1-5"}
	s, r := mysqlTestSource(t, start, 100)
	w := &binlogWriter{pos: 4, ts: 1_700_000_000}
	tm := mysqlTableMap(91)
	require.Empty(t, feed(t, s, r, fakeRotate("binlog.000003", 4)))
	one := w.xaPrepare("o", true)
	got := feed(t, s, r, w.gtid(mysqlUUID, 6), w.query("shop_1", "XA START X'6f',X'',1"), w.tableMap(tm),
		w.rows(replication.WRITE_ROWS_EVENTv2, tm, []any{int64(5), uint32(5), "one phase"}), w.query("shop_1", "XA END X'6f',X'',1"), one)
	require.Equal(t, []change.EventKind{change.EventRows, change.EventCommit}, kinds(got))
	require.Equal(t, []int64{5}, rowIDs(got))
	require.Equal(t, one.Header.LogPos, tokenOf(t, got[1]).Pos.Pos)
	require.Empty(t, s.state.XA)

	c := w.query("", "XA COMMIT X'7a7a',X'',1")
	got = feed(t, s, r, w.gtid(mysqlUUID, 7), c)
	require.Empty(t, rowIDs(got))
	require.Equal(t, c.Header.LogPos, s.state.Pos.Pos)
	requireGTIDSet(t, mysqlUUID+":1-7", s.state.Pos.GTID)
}

// The snapshot filter judges an XA transaction's rows at its XA COMMIT: a
// chunk read between the prepare and the commit did not see them (they
// were not committed), so they are emitted even though their row events
// lie before the chunk's high watermark; a chunk read after the commit saw
// them, so they are not emitted again.
func TestMySQLXARowsFilteredAtTheirCommit(t *testing.T) {
	start := binPos{File: "binlog.000004", Pos: 4, GTID: mysqlUUID + ":1-5"}
	s, r := mysqlTestSource(t, start, 100)
	w := &binlogWriter{pos: 4, ts: 1_700_000_000}
	tm := mysqlTableMap(91)
	require.Empty(t, feed(t, s, r, fakeRotate("binlog.000004", 4)))
	got := feed(t, s, r, w.gtid(mysqlUUID, 6), w.query("shop_1", "XA START 'f'"), w.tableMap(tm),
		w.rows(replication.WRITE_ROWS_EVENTv2, tm, []any{int64(10), uint32(1), "low"}, []any{int64(20), uint32(2), "high"}),
		w.query("shop_1", "XA END 'f'"), w.xaPrepare("f", false))
	require.Empty(t, rowIDs(got))
	// Chunk 1 (keys ≤ 15) was read after the prepare, before the commit;
	// chunk 2 (keys > 15) after the commit.
	hw1 := binPos{File: "binlog.000004", Pos: w.pos}
	g := w.gtid(mysqlUUID, 7)
	commit := w.query("", "XA COMMIT X'66',X'',1")
	hw2 := binPos{File: "binlog.000004", Pos: commit.Header.LogPos + 100}
	ts := &tableSnap{DB: mysqlShardID.Database, Table: mysqlShardID.Table, KeyKinds: []change.Kind{change.KindInt}}
	ts.addChunk([]change.Value{int64(15)}, hw1, 0)
	ts.addChunk(nil, hw2, 0)
	s.filter[mysqlShardID] = ts
	got = feed(t, s, r, g, commit)
	require.Equal(t, []int64{10}, rowIDs(got), "key 10: its chunk was read before the XA COMMIT; key 20: its chunk saw the committed row")
}

// MySQL ≥ 8.0.21 writes CREATE TABLE … SELECT as one transaction: GTID
// (with the transaction's length), the CREATE, the rows, XID. The token
// must not fall between the CREATE and the rows (a resume would skip the
// rows: the GTID would already be in the set), the new table joins the
// route it matches, and its rows belong to the same source transaction.
func TestMySQLCreateTableSelectIsOneTransaction(t *testing.T) {
	fake := startFakeMySQL(t)
	start := binPos{File: "binlog.000009", Pos: 4, GTID: mysqlUUID + ":1-30"}
	s, r := mysqlTestSource(t, start, 100)
	meta, err := client.Connect(fake.addr, "repl", "", "")
	require.NoError(t, err)
	r.meta = meta
	newShard := change.TableID{Database: "shop_2", Table: "orders_1"}
	colsQ := `SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, IFNULL(CHARACTER_SET_NAME,''),
		IFNULL(CHARACTER_MAXIMUM_LENGTH,0), IFNULL(NUMERIC_PRECISION,0), IFNULL(NUMERIC_SCALE,0), IFNULL(DATETIME_PRECISION,0),
		COLUMN_DEFAULT IS NULL, IFNULL(COLUMN_DEFAULT,''), EXTRA
		FROM information_schema.COLUMNS WHERE TABLE_SCHEMA=? AND TABLE_NAME=? ORDER BY ORDINAL_POSITION`
	keyQ := "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA=? AND TABLE_NAME=? AND INDEX_NAME='PRIMARY' ORDER BY SEQ_IN_INDEX"
	fake.set(map[string]fakeAnswer{
		colsQ: {cols: []string{"COLUMN_NAME", "DATA_TYPE", "COLUMN_TYPE", "IS_NULLABLE", "CHARACTER_SET_NAME", "CHARACTER_MAXIMUM_LENGTH", "NUMERIC_PRECISION", "NUMERIC_SCALE", "DATETIME_PRECISION", "COLUMN_DEFAULT IS NULL", "COLUMN_DEFAULT", "EXTRA"},
			rows: [][]any{
				{"id", "bigint", "bigint", "NO", "", "0", "19", "0", "0", "1", "", ""},
				{"qty", "int", "int unsigned", "NO", "", "0", "10", "0", "0", "1", "", ""},
				{"note", "varchar", "varchar(32)", "YES", "utf8mb4", "32", "0", "0", "0", "1", "", ""},
			}},
		keyQ: {cols: []string{"COLUMN_NAME"}, rows: [][]any{{"id"}}},
	})

	w := &binlogWriter{pos: 4, ts: 1_700_000_000}
	require.Empty(t, feed(t, s, r, fakeRotate("binlog.000009", 4)))
	tm := mysqlTableMap(95)
	tm.Schema = []byte(newShard.Database)
	txnStart := w.pos
	g := w.gtid(mysqlUUID, 31)
	create := w.query("shop_2", "CREATE TABLE `orders_1` (\n  `id` bigint NOT NULL,\n  `qty` int unsigned NOT NULL,\n  `note` varchar(32) DEFAULT NULL,\n  PRIMARY KEY (`id`)\n) START TRANSACTION")
	tmEv := w.tableMap(tm)
	rowsEv := w.rows(replication.WRITE_ROWS_EVENTv2, tm, []any{int64(1), uint32(10), "copied"}, []any{int64(2), uint32(20), nil})
	xid := w.xid(900)
	g.Event.(*replication.GTIDEvent).TransactionLength = uint64(xid.Header.LogPos - txnStart)

	got := feed(t, s, r, g, create)
	require.Empty(t, tokensOf(got), "a token was emitted between the CREATE and the rows of its transaction")
	require.Equal(t, start, s.state.Pos, "the position moved inside CREATE TABLE … SELECT")
	require.True(t, r.inTxn)
	require.NotNil(t, s.shards[newShard], "the created table matches the route and joins it")
	got = append(got, feed(t, s, r, tmEv, rowsEv, xid)...)
	require.Equal(t, []change.EventKind{change.EventRows, change.EventCommit}, kinds(got[len(got)-2:]))
	require.Equal(t, []int64{1, 2}, rowIDs(got))
	for _, row := range got[len(got)-2].Rows {
		require.Equal(t, newShard, row.Source)
	}
	st := tokenOf(t, got[len(got)-1])
	require.Equal(t, xid.Header.LogPos, st.Pos.Pos)
	requireGTIDSet(t, mysqlUUID+":1-31", st.Pos.GTID)

	// An ordinary DDL with its length is still a boundary at its end.
	g = w.gtid(mysqlUUID, 32)
	ddlStart := g.Header.LogPos - g.Header.EventSize
	alter := w.query("shop_9", "CREATE TABLE app.other (id INT PRIMARY KEY)")
	g.Event.(*replication.GTIDEvent).TransactionLength = uint64(alter.Header.LogPos - ddlStart)
	feed(t, s, r, g, alter)
	require.False(t, r.inTxn)
	require.Equal(t, alter.Header.LogPos, s.state.Pos.Pos)
	requireGTIDSet(t, mysqlUUID+":1-32", s.state.Pos.GTID)
}

// The fake server answers prepared statements (loadSchema's queries) from
// the same table of answers as plain queries.
func (h *fakeHandler) HandleStmtPrepare(q string) (int, int, any, error) {
	h.f.mu.Lock()
	a, ok := h.f.ans[strings.TrimSpace(q)]
	h.f.mu.Unlock()
	if !ok {
		return 0, 0, nil, mysql.NewError(mysql.ER_PARSE_ERROR, "the fake server does not prepare "+q)
	}
	return strings.Count(q, "?"), len(a.cols), nil, nil
}

func (h *fakeHandler) HandleStmtExecute(_ any, q string, _ []any) (*mysql.Result, error) {
	h.f.mu.Lock()
	a := h.f.ans[strings.TrimSpace(q)]
	h.f.mu.Unlock()
	rs, err := mysql.BuildSimpleBinaryResultset(a.cols, a.rows)
	if err != nil {
		return nil, err
	}
	return mysql.NewResult(rs), nil
}

func (h *fakeHandler) HandleStmtClose(any) error { return nil }

func tokensOf(evs []change.Event) []change.Token {
	var out []change.Token
	for _, ev := range evs {
		if ev.Token != nil {
			out = append(out, ev.Token)
		}
	}
	return out
}

// Rows of an XA transaction that no longer fit at its XA COMMIT (the shard
// left, or its columns changed between PREPARE and COMMIT) stop the job on
// the XA COMMIT with a way forward; skipping that event leaves out those
// rows and passes the commit, applying nothing else twice.
func TestMySQLXACommitStopHasAWayForward(t *testing.T) {
	start := binPos{File: "binlog.000009", Pos: 157, GTID: mysqlUUID + ":1-30"}
	s, r := mysqlTestSource(t, start, 100)
	w := &binlogWriter{pos: 157, ts: 1_700_000_000}
	tm := mysqlTableMap(91)
	require.Empty(t, feed(t, s, r, fakeRotate("binlog.000009", 4)))
	got := feed(t, s, r,
		w.gtid(mysqlUUID, 31), w.query("shop_1", "XA START X'61',X'',1"), w.tableMap(tm),
		w.rows(replication.WRITE_ROWS_EVENTv2, tm, []any{int64(1), uint32(1), "xa"}),
		w.query("shop_1", "XA END X'61',X'',1"), w.xaPrepare("a", false),
		w.gtid(mysqlUUID, 32), w.query("shop_1", "BEGIN"), w.tableMap(tm),
		w.rows(replication.WRITE_ROWS_EVENTv2, tm, []any{int64(3), uint32(3), "plain"}), w.xid(501))
	pending := got[len(got)-1].Token
	commit := w.query("", "XA COMMIT X'61',X'',1")
	commitGTID := w.gtid(mysqlUUID, 33)

	for _, tc := range []struct {
		name    string
		breakIt func(s *Source)
	}{
		{"shard gone", func(s *Source) { delete(s.shards, mysqlShardID) }},
		{"columns changed", func(s *Source) { sh := s.shards[mysqlShardID]; sh.cols = sh.cols[:len(sh.cols)-1] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, r := resumeMySQL(t, pending)
			require.Len(t, s.state.XA, 1)
			tc.breakIt(s)
			require.Empty(t, feed(t, s, r, fakeRotate("binlog.000009", uint64(commitGTID.Header.LogPos-commitGTID.Header.EventSize))))
			require.NoError(t, r.handle(t.Context(), commitGTID))
			err := r.handle(t.Context(), commit)
			var stop *EventStopError
			require.ErrorAs(t, err, &stop)
			require.Equal(t, mysqlUUID+":33", stop.Position())
			require.Contains(t, err.Error(), "skip-event --position "+mysqlUUID+":33")
			require.NotContains(t, err.Error(), "--apply")

			s, r = resumeMySQL(t, pending)
			tc.breakIt(s)
			s.sh.cfg.Decisions = map[string]string{stop.Position(): DecisionSkip}
			require.Empty(t, feed(t, s, r, fakeRotate("binlog.000009", uint64(commitGTID.Header.LogPos-commitGTID.Header.EventSize))))
			got := feed(t, s, r, commitGTID, commit)
			require.Empty(t, rowIDs(got))
			require.Empty(t, s.state.XA)
			require.Equal(t, commit.Header.LogPos, s.state.Pos.Pos)
		})
	}
}
