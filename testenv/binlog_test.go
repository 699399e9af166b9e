package testenv

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/stretchr/testify/require"
)

// binlogRow is one row change decoded from the binlog.
type binlogRow struct {
	op            string
	shard         ShardID
	before, after map[string]string
	gtid          uint64 // sequence number of the transaction's GTID
	eventRows     int    // row changes in the rows event this came from
}

func (b binlogRow) String() string {
	return fmt.Sprintf("%s %s gtid %d before=%v after=%v", b.op, b.shard, b.gtid, b.before, b.after)
}

// masterStatus is SHOW MASTER STATUS: the binlog file and the position
// after its last event.
func masterStatus(t *testing.T, m *MariaDB) mysql.Position {
	t.Helper()
	rows, err := m.Query("SHOW MASTER STATUS")
	require.NoError(t, err)
	require.Len(t, rows, 1)
	pos, err := strconv.ParseUint(rows[0][1], 10, 32)
	require.NoError(t, err)
	return mysql.Position{Name: rows[0][0], Pos: uint32(pos)}
}

// readBinlog decodes every row change from GTID position start up to file
// position end with go-mysql's BinlogSyncer, as shardsync will.
func readBinlog(t *testing.T, m *MariaDB, start string, end mysql.Position) (rows []binlogRow, gtids []uint64) {
	t.Helper()
	syncer := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{
		ServerID: 101, Flavor: mysql.MariaDBFlavor, Host: m.Host(), Port: uint16(m.Port()),
		User: m.User(), Password: m.Password(), UseDecimal: true, TimestampStringLocation: time.UTC,
		DisableRetrySync: true, Logger: slog.New(slog.DiscardHandler),
	})
	defer syncer.Close()
	gset, err := mysql.ParseMariadbGTIDSet(start)
	require.NoError(t, err)
	streamer, err := syncer.StartSyncGTID(gset)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	file := ""
	var gtid uint64
	for {
		ev, err := streamer.GetEvent(ctx)
		require.NoError(t, err, "reading the binlog up to %s", end)
		switch e := ev.Event.(type) {
		case *replication.RotateEvent:
			file = string(e.NextLogName)
		case *replication.MariadbGTIDEvent:
			gtid = e.GTID.SequenceNumber
			gtids = append(gtids, gtid)
		case *replication.XIDEvent:
			gtid = 0
		case *replication.RowsEvent:
			require.NotZero(t, gtid, "row event outside a transaction")
			rows = append(rows, decodeRows(t, ev.Header.EventType, e, gtid)...)
		case *replication.QueryEvent:
			q := strings.ToUpper(strings.TrimSpace(string(e.Query)))
			require.True(t, q == "BEGIN" || q == "COMMIT", "unexpected statement in the workload's binlog: %s", e.Query)
		}
		if file == end.Name && ev.Header.LogPos >= end.Pos {
			return rows, gtids
		}
	}
}

func decodeRows(t *testing.T, typ replication.EventType, e *replication.RowsEvent, gtid uint64) []binlogRow {
	t.Helper()
	names := e.Table.ColumnNameString()
	require.Len(t, names, len(Columns), "binlog_row_metadata=FULL gives column names")
	enums := e.Table.EnumStrValueMap()
	render := func(vals []any) map[string]string {
		row := make(map[string]string, len(vals))
		for i, v := range vals {
			switch v := v.(type) {
			case string:
				row[names[i]] = v
			case []byte:
				row[names[i]] = string(v)
			case int8, int16, int32, int64:
				if labels, ok := enums[i]; ok {
					n := fmt.Sprint(v)
					idx, _ := strconv.Atoi(n)
					require.True(t, idx >= 1 && idx <= len(labels), "enum index %d of %v", idx, labels)
					row[names[i]] = labels[idx-1]
					continue
				}
				row[names[i]] = fmt.Sprint(v)
			default:
				t.Fatalf("column %s: unexpected binlog value %T %v", names[i], v, v)
			}
		}
		return row
	}
	sh := ShardID{DB: string(e.Table.Schema), Table: string(e.Table.Table)}
	var out []binlogRow
	switch typ {
	case replication.WRITE_ROWS_EVENTv1, replication.WRITE_ROWS_EVENTv2, replication.MARIADB_WRITE_ROWS_COMPRESSED_EVENT_V1:
		for _, r := range e.Rows {
			out = append(out, binlogRow{op: OpInsert, shard: sh, after: render(r), gtid: gtid})
		}
	case replication.UPDATE_ROWS_EVENTv1, replication.UPDATE_ROWS_EVENTv2, replication.MARIADB_UPDATE_ROWS_COMPRESSED_EVENT_V1:
		require.Zero(t, len(e.Rows)%2, "update rows come in before/after pairs")
		for i := 0; i < len(e.Rows); i += 2 {
			out = append(out, binlogRow{op: OpUpdate, shard: sh, before: render(e.Rows[i]), after: render(e.Rows[i+1]), gtid: gtid})
		}
	case replication.DELETE_ROWS_EVENTv1, replication.DELETE_ROWS_EVENTv2, replication.MARIADB_DELETE_ROWS_COMPRESSED_EVENT_V1:
		for _, r := range e.Rows {
			out = append(out, binlogRow{op: OpDelete, shard: sh, before: render(r), gtid: gtid})
		}
	default:
		t.Fatalf("unexpected rows event %s", typ)
	}
	for i := range out {
		out[i].eventRows = len(out)
	}
	return out
}

func deleteIdentity(sh ShardID, key int64, before map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s#%d", sh, key)
	for _, k := range slices.Sorted(maps.Keys(before)) {
		fmt.Fprintf(&b, "|%s=%s", k, before[k])
	}
	return b.String()
}

// TestBinlogHoldsEveryWorkloadChange reads the binlog of a small workload
// with go-mysql and finds every change the workload says it committed
// exactly once, grouped in the same transactions, and nothing else. It
// proves the test environment, not yet shardsync.
func TestBinlogHoldsEveryWorkloadChange(t *testing.T) {
	t.Parallel()
	m := StartMariaDB(t, MariaDBOptions{ServerID: 7})
	ctx := t.Context()
	spec := ShardSpec{Databases: 2, Tables: 2, Rows: 50, Seed: 2024}
	require.NoError(t, spec.Create(ctx, m))

	startGTID, err := m.Variable("gtid_binlog_pos")
	require.NoError(t, err)
	startPos := masterStatus(t, m)
	w := Workload{Seed: 77, Transactions: 200, Conns: 2, MaxRowsPerTxn: 8,
		MultiShardFraction: 0.25, KeyUpdateFraction: 0.1}
	r, err := w.Run(ctx, m, spec)
	require.NoError(t, err)
	checkResult(t, r)
	require.Equal(t, 200, r.Txns+r.RolledBack)
	require.Equal(t, 6, r.RolledBack, "3%% of 200 roll back by default")
	endGTID, err := m.Variable("gtid_binlog_pos")
	require.NoError(t, err)
	endPos := masterStatus(t, m)
	t.Logf("workload: %d txns, %d changes, %d rolled back; binlog %s (%s) .. %s (%s)",
		r.Txns, len(r.Changes), r.RolledBack, startPos, startGTID, endPos, endGTID)

	rows, gtids := readBinlog(t, m, startGTID, endPos)

	// One GTID per committed transaction, ending at the server's position.
	require.Len(t, gtids, r.Txns)
	require.Equal(t, fmt.Sprintf("0-7-%d", gtids[len(gtids)-1]), endGTID)

	inserts := map[uint64]Change{}
	deletes := map[string]Change{}
	for _, c := range r.Changes {
		if c.Op == OpDelete {
			id := deleteIdentity(c.Shard, c.Key, c.Before)
			require.NotContains(t, deletes, id, "delete identity is unique")
			deletes[id] = c
		} else {
			inserts[c.ID] = c
		}
	}
	found := map[uint64]int{}
	gtidOf := map[uint64]uint64{}
	var order []uint64 // change ids in binlog order
	var unexpected []string
	for _, b := range rows {
		var c Change
		var ok bool
		switch b.op {
		case OpInsert, OpUpdate:
			id, isToken := TokenID(b.after["last_name"])
			c, ok = inserts[id]
			ok = ok && isToken && c.Op == b.op && c.Shard == b.shard && maps.Equal(c.After, b.after) &&
				(b.op == OpInsert || maps.Equal(c.Before, b.before))
		case OpDelete:
			key, err := strconv.ParseInt(b.before["emp_no"], 10, 64)
			require.NoError(t, err)
			c, ok = deletes[deleteIdentity(b.shard, key, b.before)]
		}
		if !ok {
			unexpected = append(unexpected, b.String())
			continue
		}
		found[c.ID]++
		gtidOf[c.ID] = b.gtid
		order = append(order, c.ID)
	}
	require.Empty(t, unexpected, "binlog rows the workload did not report")
	for _, c := range r.Changes {
		require.Equal(t, 1, found[c.ID], "change %d (%s %s key %d) found %d times", c.ID, c.Op, c.Shard, c.Key, found[c.ID])
	}
	require.Len(t, order, len(r.Changes))

	// Rolled-back changes left nothing behind.
	require.NotEmpty(t, r.RolledBackChanges)
	for _, c := range r.RolledBackChanges {
		require.Zero(t, found[c.ID], "rolled-back change %d is in the binlog", c.ID)
	}

	// Each workload transaction is exactly one binlog transaction, with its
	// changes in the recorded order; each connection's changes are in
	// commit (GTID) order.
	pos := map[uint64]int{}
	for i, id := range order {
		pos[id] = i
	}
	txnOfGTID := map[uint64]uint64{}
	for txn, cs := range r.TxnChanges() {
		g := gtidOf[cs[0].ID]
		require.NotContains(t, txnOfGTID, g, "two workload transactions share GTID %d", g)
		txnOfGTID[g] = txn
		for i, c := range cs {
			require.Equal(t, g, gtidOf[c.ID], "txn %d is split over GTIDs", txn)
			if i > 0 {
				require.Equal(t, pos[cs[i-1].ID]+1, pos[c.ID], "txn %d changes out of order", txn)
			}
		}
	}
	lastGTID := map[int]uint64{}
	for _, c := range r.Changes {
		require.GreaterOrEqual(t, gtidOf[c.ID], lastGTID[c.Conn], "connection %d's changes out of commit order", c.Conn)
		lastGTID[c.Conn] = gtidOf[c.ID]
	}

	// The workload covered what the product must handle.
	multiRowEvents, keyChanges := 0, 0
	for _, c := range r.Changes {
		if c.KeyChanged {
			keyChanges++
		}
	}
	for _, b := range rows {
		if b.eventRows > 1 {
			multiRowEvents++
		}
	}
	require.Positive(t, keyChanges, "primary-key updates")
	require.Positive(t, multiRowEvents, "multi-row statements")
	require.Positive(t, r.MultiShardTxns)
}
