package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/merge"
)

// relation is the stream's view of one relation id.
type relation struct {
	id     change.TableID
	cols   []colInfo
	routed bool
}

// pendingRow is a decoded change held until its transaction commits, in
// shard column order (converted to the target's shape when emitted, so a
// schema change inside the transaction re-aligns it).
type pendingRow struct {
	op            change.Op
	id            change.TableID
	before, after []change.Value
}

// streamer is the state of one replication connection.
type streamer struct {
	s    *Source
	conn *pgconn.PgConn
	rels map[uint32]*relation

	inTxn       bool
	xid         uint32
	commitTime  time.Time
	buf         []pendingRow
	streamedOn  bool // rows of the current transaction were emitted before its commit
	emittedRows bool // rows of the current transaction were emitted
	pending     map[change.TableID]bool

	received     uint64 // highest WAL position seen
	lastEmit     time.Time
	lastLSN      uint64 // token LSN of the last event emitted
	nextStatus   time.Time
	nextDiscover time.Time
}

// stream follows the slot from the token's LSN.
func (s *Source) stream(ctx context.Context) error {
	conn, err := s.cfg.replConn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	err = pglogrepl.StartReplication(ctx, conn, s.cfg.Slot, pglogrepl.LSN(s.st.LSN), pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", "publication_names '" + strings.ReplaceAll(s.cfg.Publication, "'", "''") + "'"},
	})
	if err != nil {
		return s.slotError("starting replication from slot "+s.cfg.Slot, err)
	}
	s.log.Info("streaming", "slot", s.cfg.Slot, "from", pglogrepl.LSN(s.st.LSN).String())
	now := time.Now()
	r := &streamer{s: s, conn: conn, rels: map[uint32]*relation{}, pending: map[change.TableID]bool{},
		received: s.st.LSN, lastEmit: now, lastLSN: s.st.LSN, nextStatus: now, nextDiscover: now.Add(s.cfg.DiscoverInterval)}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		now := time.Now()
		if !now.Before(r.nextStatus) {
			if err := r.sendStatus(ctx, false); err != nil {
				return err
			}
		}
		if !r.inTxn {
			if !now.Before(r.nextDiscover) || len(r.pending) > 0 {
				if err := r.discover(ctx); err != nil {
					return err
				}
				r.nextDiscover = time.Now().Add(s.cfg.DiscoverInterval)
			}
			if s.st.LSN != r.lastLSN && now.Sub(r.lastEmit) >= s.cfg.IdleProgress {
				if err := r.emitToken(ctx, change.EventProgress); err != nil {
					return err
				}
			}
		}
		rctx, cancel := context.WithDeadline(ctx, statusDeadline(now, r.nextStatus))
		msg, err := conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if pgconn.Timeout(err) && ctx.Err() == nil {
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("reading the replication stream of slot %s: %w", s.cfg.Slot, err)
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			return s.slotError("replication stream", pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyData:
			if err := r.copyData(ctx, m.Data); err != nil {
				return err
			}
		}
	}
}

func (r *streamer) sendStatus(ctx context.Context, reply bool) error {
	flush := pglogrepl.LSN(r.s.committed.Load())
	write := max(pglogrepl.LSN(r.received), flush)
	if err := pglogrepl.SendStandbyStatusUpdate(ctx, r.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: write, WALFlushPosition: flush, WALApplyPosition: flush, ReplyRequested: reply,
	}); err != nil {
		return fmt.Errorf("sending the replication status: %w", err)
	}
	r.nextStatus = time.Now().Add(r.s.cfg.StatusInterval)
	return nil
}

func (r *streamer) copyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		k, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("parsing a keepalive: %w", err)
		}
		r.received = max(r.received, uint64(k.ServerWALEnd))
		if !r.inTxn && uint64(k.ServerWALEnd) > r.s.st.LSN {
			// Nothing in flight: every transaction committed before the
			// sender's position was sent, so resuming there loses nothing.
			r.s.st.LSN = uint64(k.ServerWALEnd)
		}
		if k.ReplyRequested {
			return r.sendStatus(ctx, false)
		}
	case pglogrepl.XLogDataByteID:
		x, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("parsing WAL data: %w", err)
		}
		r.received = max(r.received, uint64(x.WALStart))
		msg, err := pglogrepl.Parse(x.WALData)
		if err != nil {
			return fmt.Errorf("parsing a pgoutput message: %w", err)
		}
		return r.message(ctx, msg)
	}
	return nil
}

func (r *streamer) message(ctx context.Context, msg pglogrepl.Message) error {
	s := r.s
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		r.inTxn, r.xid, r.commitTime, r.buf, r.streamedOn = true, m.Xid, m.CommitTime, r.buf[:0], false
	case *pglogrepl.RelationMessage:
		return r.relation(ctx, m)
	case *pglogrepl.InsertMessage:
		return r.change(ctx, change.Insert, m.RelationID, 0, nil, m.Tuple)
	case *pglogrepl.UpdateMessage:
		return r.change(ctx, change.Update, m.RelationID, m.OldTupleType, m.OldTuple, m.NewTuple)
	case *pglogrepl.DeleteMessage:
		return r.change(ctx, change.Delete, m.RelationID, m.OldTupleType, m.OldTuple, nil)
	case *pglogrepl.CommitMessage:
		if err := r.flush(ctx); err != nil {
			return err
		}
		emitted := r.streamedOn || r.emittedRows
		r.emittedRows = false
		r.inTxn = false
		s.st.LSN = uint64(m.TransactionEndLSN)
		if s.horizon > 0 && uint64(m.CommitLSN) >= s.horizon {
			// No later transaction can be visible in any chunk snapshot.
			for _, t := range s.st.Tables {
				t.Chunks = nil
			}
			s.horizon = 0
			s.snaps = map[string]pgSnapshot{}
		}
		if emitted {
			return r.emitToken(ctx, change.EventCommit)
		}
	case *pglogrepl.TruncateMessage:
		// Not published (the publication is created with publish =
		// 'insert, update, delete'); a publication made by hand may.
		return fmt.Errorf("TRUNCATE of a published table arrived: shardsync does not apply TRUNCATE to merged targets; create the publication with publish = 'insert, update, delete' (as shardsync does)")
	}
	return nil
}

func (r *streamer) emitToken(ctx context.Context, kind change.EventKind) error {
	tok := r.s.st.encode()
	if err := r.s.emit(ctx, change.Event{Kind: kind, Token: tok, Time: r.commitTime}); err != nil {
		return err
	}
	r.lastEmit, r.lastLSN = time.Now(), r.s.st.LSN
	return nil
}

// relation updates the relation cache; a routed table whose columns
// changed evolves its target (announced before the transaction's rows).
func (r *streamer) relation(ctx context.Context, m *pglogrepl.RelationMessage) error {
	s := r.s
	rel := &relation{id: change.TableID{Database: m.Namespace, Table: m.RelationName}}
	rel.routed = s.m.RouteOf(rel.id) >= 0
	r.rels[m.RelationID] = rel
	if !rel.routed {
		return nil
	}
	t := s.tables[rel.id]
	for _, c := range m.Columns {
		ci := colInfo{Name: c.Name, Type: pgType{OID: c.DataType, Mod: c.TypeModifier}, Nullable: true}
		if t != nil {
			if j := slices.IndexFunc(t.Cols, func(o colInfo) bool {
				return o.Name == c.Name && o.Type.OID == c.DataType && o.Type.Mod == c.TypeModifier
			}); j >= 0 {
				ci = t.Cols[j] // known: keep its catalog details
				rel.cols = append(rel.cols, ci)
				continue
			}
		}
		pt, err := typeInfo(ctx, s.sql, c.DataType, c.TypeModifier)
		if err != nil {
			return fmt.Errorf("relation %s column %s: %w", rel.id, c.Name, err)
		}
		if t != nil {
			if j := slices.IndexFunc(t.Cols, func(o colInfo) bool { return o.Name == c.Name && o.Type.OID == pt.OID && o.Type.Mod == pt.Mod }); j >= 0 {
				rel.cols = append(rel.cols, t.Cols[j]) // a domain, known by its base type
				continue
			}
		}
		ci.Type = pt
		rel.cols = append(rel.cols, ci)
	}
	if t == nil || !t.Done {
		// Not snapshotted yet: its rows are dropped until the snapshot,
		// taken after this transaction commits, which therefore has them.
		r.pending[rel.id] = true
		return nil
	}
	full := t.Full && m.ReplicaIdentity == 'f' // FULL dropped: the other columns become nullable
	if full == t.Full && slices.EqualFunc(rel.cols, t.Cols, func(a, b colInfo) bool { return a.Name == b.Name && a.Type == b.Type }) {
		return nil
	}
	if r.streamedOn {
		return fmt.Errorf("%w: the columns of %s changed inside a transaction of more than %d rows that was already streamed on; cut the change into its own transaction or raise the max transaction rows",
			merge.ErrIncompatibleSchema, rel.id, s.cfg.MaxTxnRows)
	}
	cause := "columns of " + rel.id.String() + " changed to (" + colList(rel.cols) + ")"
	shardCols := (&tableState{Cols: rel.cols, Key: t.Key, Full: full}).shardColumns()
	changes, err := s.m.ChangeShard(rel.id, shardCols, t.Key, cause)
	if err != nil {
		return err
	}
	t.Cols, t.Full = rel.cols, full
	s.log.Info("shard schema changed", "table", rel.id.String(), "columns", colList(rel.cols))
	if len(changes) > 0 {
		tg, _ := s.m.TargetOf(rel.id)
		sc, _ := s.m.Schema(tg)
		// Between source transactions from the coordinator's view: none of
		// this transaction's rows were emitted yet.
		return s.emit(ctx, change.Event{Kind: change.EventSchema, Schema: &change.TableSchema{Target: tg, Schema: sc, Changes: changes, Cause: cause}})
	}
	return nil
}

func colList(cols []colInfo) string {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.Name
	}
	return strings.Join(names, ", ")
}

// toastMarker stands for an unchanged TOAST value ('u') while decoding.
type toastMarker struct{}

func (r *streamer) decode(t *tableState, rel *relation, td *pglogrepl.TupleData) ([]change.Value, error) {
	if td == nil {
		return nil, nil
	}
	if len(td.Columns) != len(t.Cols) {
		return nil, fmt.Errorf("a tuple of %s has %d columns, the relation %d", rel.id, len(td.Columns), len(t.Cols))
	}
	cts := t.shardColumns()
	out := make([]change.Value, len(td.Columns))
	for i, c := range td.Columns {
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
		case pglogrepl.TupleDataTypeToast:
			out[i] = toastMarker{}
		case pglogrepl.TupleDataTypeText:
			v, err := parseValue(c.Data, cts[i].Type)
			if err != nil {
				return nil, fmt.Errorf("%s column %s: %w", rel.id, t.Cols[i].Name, err)
			}
			out[i] = v
		default:
			return nil, fmt.Errorf("%s column %s arrived in binary format, which shardsync does not request", rel.id, t.Cols[i].Name)
		}
	}
	return out, nil
}

func (r *streamer) keyOf(t *tableState, vals []change.Value) *int64 {
	if !t.Chunked || vals == nil {
		return nil
	}
	for i, c := range t.Cols {
		if c.Name == t.Key[0] {
			if k, ok := vals[i].(int64); ok {
				return &k
			}
		}
	}
	return nil
}

// inSnapshot reports whether the current transaction's change to the row
// with key k is already in the chunk snapshot holding k.
func (r *streamer) inSnapshot(t *tableState, k *int64) (bool, error) {
	c := t.chunkOf(k)
	if c == nil {
		return false, nil
	}
	sn, ok := r.s.snaps[c.Snap]
	if !ok {
		var err error
		if sn, err = parseSnapshot(c.Snap); err != nil {
			return false, err
		}
		r.s.snaps[c.Snap] = sn
	}
	return sn.visible(r.xid), nil
}

func (r *streamer) change(ctx context.Context, op change.Op, relID uint32, oldType uint8, oldTD, newTD *pglogrepl.TupleData) error {
	s := r.s
	rel := r.rels[relID]
	if rel == nil {
		return fmt.Errorf("pgoutput sent a change for relation %d before its Relation message", relID)
	}
	if !rel.routed || r.pending[rel.id] {
		return nil
	}
	t := s.tables[rel.id]
	if t == nil || !t.Done {
		r.pending[rel.id] = true
		return nil
	}
	after, err := r.decode(t, rel, newTD)
	if err != nil {
		return err
	}
	old, err := r.decode(t, rel, oldTD)
	if err != nil {
		return err
	}
	keyIdx := make([]int, 0, len(t.Key))
	for _, k := range t.Key {
		keyIdx = append(keyIdx, slices.IndexFunc(t.Cols, func(c colInfo) bool { return c.Name == k }))
	}
	var before []change.Value
	switch {
	case old != nil && oldType == pglogrepl.UpdateMessageTupleTypeOld:
		before = old // REPLICA IDENTITY FULL: the whole old row
	case old != nil: // 'K': the key columns, the rest NULL
		before = make([]change.Value, len(t.Cols))
		for _, i := range keyIdx {
			before[i] = old[i]
		}
	case op == change.Update: // key unchanged: it is the new row's
		before = make([]change.Value, len(t.Cols))
		for _, i := range keyIdx {
			before[i] = after[i]
		}
	case op == change.Delete:
		return fmt.Errorf("%w: a DELETE on %s arrived without its old key (REPLICA IDENTITY NOTHING?): run ALTER TABLE %s REPLICA IDENTITY DEFAULT (with a primary key) or FULL",
			merge.ErrPrerequisite, rel.id, quoteTable(rel.id))
	}
	for i, v := range after {
		if _, ok := v.(toastMarker); !ok {
			continue
		}
		if oldType == pglogrepl.UpdateMessageTupleTypeOld && old != nil {
			if _, still := old[i].(toastMarker); !still {
				after[i] = old[i]
				continue
			}
		}
		return fmt.Errorf("%w: an UPDATE of %s (transaction %d) left the large (TOASTed) value of column %s unchanged, and PostgreSQL did not send it; writing the row would overwrite the stored value. Run ALTER TABLE %s REPLICA IDENTITY FULL so that updates carry the whole old row; then, because this update was written to the WAL without it, re-create the job from a fresh snapshot (shardsync postgres drop-slot, new ledger)",
			ErrToast, rel.id, r.xid, t.Cols[i].Name, quoteTable(rel.id))
	}
	for i, v := range before {
		if _, ok := v.(toastMarker); ok {
			before[i] = nil
		}
	}
	// Drop what the chunk snapshots already hold.
	keepB, keepA := before != nil, after != nil
	if keepB {
		in, err := r.inSnapshot(t, r.keyOf(t, before))
		if err != nil {
			return err
		}
		keepB = !in
	}
	if keepA {
		in, err := r.inSnapshot(t, r.keyOf(t, after))
		if err != nil {
			return err
		}
		keepA = !in
	}
	switch {
	case op == change.Update && keepB && !keepA:
		op, after = change.Delete, nil
	case op == change.Update && !keepB && keepA:
		op, before = change.Insert, nil
	case !keepB && !keepA:
		return nil
	}
	r.buf = append(r.buf, pendingRow{op: op, id: rel.id, before: before, after: after})
	if len(r.buf) >= s.cfg.MaxTxnRows {
		r.streamedOn = true
		return r.flush(ctx)
	}
	return nil
}

// flush converts the held rows to target rows and emits them.
func (r *streamer) flush(ctx context.Context) error {
	s := r.s
	if len(r.buf) == 0 {
		return nil
	}
	batch := make([]change.Row, 0, min(len(r.buf), s.cfg.BatchRows))
	conv := func(id change.TableID, vals []change.Value) ([]change.Value, error) {
		if vals == nil {
			return nil, nil
		}
		if n := len(s.tables[id].Cols); len(vals) < n { // columns added later in the transaction
			vals = append(vals, make([]change.Value, n-len(vals))...)
		}
		return s.m.TargetRow(id, vals)
	}
	for _, p := range r.buf {
		tg, _ := s.m.TargetOf(p.id)
		row := change.Row{Op: p.op, Target: tg, Source: p.id}
		var err error
		if row.Before, err = conv(p.id, p.before); err != nil {
			return err
		}
		if row.After, err = conv(p.id, p.after); err != nil {
			return err
		}
		batch = append(batch, row)
		if len(batch) >= s.cfg.BatchRows {
			if err := s.emit(ctx, change.Event{Kind: change.EventRows, Rows: batch, Time: r.commitTime}); err != nil {
				return err
			}
			batch = make([]change.Row, 0, s.cfg.BatchRows)
		}
	}
	if len(batch) > 0 {
		if err := s.emit(ctx, change.Event{Kind: change.EventRows, Rows: batch, Time: r.commitTime}); err != nil {
			return err
		}
	}
	r.buf = r.buf[:0]
	r.emittedRows = true
	return nil
}

// discover finds routed tables not yet merged (created while running, or
// seen in the stream first), publishes and snapshots them. It runs between
// transactions.
func (r *streamer) discover(ctx context.Context) error {
	s := r.s
	found, err := listTables(ctx, s.sql, s.m, s.cfg.Publication)
	if err != nil {
		return err
	}
	var fresh []foundTable
	for _, f := range found {
		if t := s.tables[f.id]; t == nil {
			fresh = append(fresh, f)
		}
	}
	for id := range r.pending {
		if t := s.tables[id]; t != nil && !t.Done {
			if err := s.snapshotTable(ctx, t); err != nil {
				return err
			}
		}
	}
	clear(r.pending)
	if len(fresh) == 0 {
		return nil
	}
	return s.addNewTables(ctx, fresh)
}

// addNewTables publishes tables found after the start, announces their
// targets' schemas and snapshots them, between transactions: every change
// not in their snapshot is published after it.
func (s *Source) addNewTables(ctx context.Context, fresh []foundTable) error {
	var missing []change.TableID
	for _, f := range fresh {
		if !f.inPub {
			missing = append(missing, f.id)
		}
	}
	if err := ensurePublication(ctx, s.sql, &s.cfg, missing); err != nil {
		return err
	}
	var ann []*change.TableSchema
	for _, f := range fresh {
		if err := s.addTable(ctx, s.sql, f, &ann); err != nil {
			return err
		}
		s.log.Info("new shard", "table", f.id.String())
	}
	for _, ts := range ann {
		// The schema as it is now (later tables of this batch included).
		ts.Schema, _ = s.m.Schema(ts.Target)
		if err := s.emit(ctx, change.Event{Kind: change.EventSchema, Schema: ts}); err != nil {
			return err
		}
	}
	for _, f := range fresh {
		if err := s.snapshotTable(ctx, s.tables[f.id]); err != nil {
			return err
		}
	}
	return nil
}
