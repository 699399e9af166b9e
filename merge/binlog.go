package merge

// Binlog following.
//
// One go-mysql BinlogSyncer reads the server's binlog from the token's
// position (GTID on MariaDB and on MySQL with GTIDs, file/offset
// otherwise) with DisableRetrySync: go-mysql's own reconnect resumes from the
// last *event*, possibly mid-transaction. Instead, on any connection error
// the reader reconnects itself from the last transaction boundary it
// passed, with exponential backoff, and skips the row images of the
// interrupted transaction that it had already emitted (a transaction is
// streamed in EventRows batches, not collected, so part of it may be out).
// Heartbeats (Config.Heartbeat) keep an idle connection observable:
// ReadTimeout without any event, heartbeat included, is a dead connection.
//
// Positions are taken only at boundaries: after XID, after a COMMIT query
// (non-transactional tables), after a DDL statement (its own transaction
// on MariaDB and MySQL, unless it is part of a transaction that also holds
// rows, such as CREATE TABLE … SELECT: then at the transaction's XID or
// COMMIT), and after an XA PREPARE, COMMIT or ROLLBACK (see xa.go).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/google/uuid"

	"github.com/shardsync/shardsync/change"
)

type binlogReader struct {
	s      *Source
	syncer *replication.BinlogSyncer
	st     *replication.BinlogStreamer
	file   string // file of the events being read

	// the current transaction
	inTxn     bool
	txnGTID   string // "domain-server-seq" or "uuid:gno"
	txnDomain uint32
	emitted   int64 // row images of this transaction already emitted
	skip      int64 // row images to skip after a reconnect mid-transaction
	skipGTID  string
	skipPos   binPos
	txnStart  binPos
	batch     []change.Row
	txnTime   time.Time
	// beforeBuf and afterBuf are scratch buffers for the shard values of
	// the row images being converted (see values).
	beforeBuf, afterBuf []change.Value
	standalone          bool
	// txnEnd is where the current transaction ends when its GTID event
	// says (MySQL ≥ 8.0.2 writes the transaction length); 0 otherwise.
	txnEnd uint32
	// xa collects the row images of the XA PREPARE group being read: they
	// are kept, not emitted, until the XA COMMIT (see xa.go).
	xa *xaPrepared
	// hold keeps the current transaction's rows until its commit instead
	// of streaming them in BatchRows batches: the operator applied a stop
	// on it (midTxnSchema), so that a shard schema first seen inside it
	// can be announced before its first row.
	hold bool

	mariaGTID map[uint32]string
	mysqlGTID mysql.GTIDSet

	// tmCache remembers the shard of the latest table map of each table
	// id. go-mysql makes a new TableMapEvent for every table map in the
	// binlog (one per table per transaction), so a cache keyed by the
	// event itself would grow with the binlog.
	tmCache map[uint64]tmEntry
	// pendingDeletes and pendingJoins are what the statement being
	// handled does to shards (lifecycle.go), carried out by commit.
	pendingDeletes []change.ShardDelete
	pendingJoins   []*shard
	lastProgress   time.Time
	unreported     bool // boundaries passed since the last token emitted
	meta           *client.Conn
}

func (s *Source) runBinlog(ctx context.Context) error {
	r := &binlogReader{s: s, tmCache: map[uint64]tmEntry{}, lastProgress: time.Now()}
	defer r.close()
	if err := r.initGTID(); err != nil {
		return err
	}
	attempt := 0
	backoff := s.sh.cfg.RetryBackoff
	for {
		err := r.connect(ctx)
		if err == nil {
			err = r.loop(ctx, &attempt)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if terr := classifyStreamError(err, r.s.state.Pos.String()); terr != nil {
			return terr
		}
		var fatal *fatalError
		if errors.As(err, &fatal) {
			return fatal.err
		}
		if attempt >= s.sh.cfg.ConnectRetries {
			return fmt.Errorf("%w: reading the binlog of %s from %s failed %d times: %w", ErrConnect, s.sh.cfg.Addr, r.s.state.Pos, attempt+1, err)
		}
		attempt++
		s.sh.log.Warn("binlog connection lost; reconnecting from the last transaction boundary", "pos", r.s.state.Pos.String(), "attempt", attempt, "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// fatalError ends the stream without a reconnect.
type fatalError struct{ err error }

func (f *fatalError) Error() string { return f.err.Error() }
func (f *fatalError) Unwrap() error { return f.err }

func fatal(err error) error { return &fatalError{err} }

func (r *binlogReader) close() {
	if r.syncer != nil {
		r.syncer.Close()
		r.syncer = nil
	}
	if r.meta != nil {
		_ = r.meta.Close()
		r.meta = nil
	}
}

func (r *binlogReader) initGTID() error {
	pos := r.s.state.Pos
	if pos.GTID == "" {
		return nil
	}
	if r.s.flavor == mysql.MariaDBFlavor {
		r.mariaGTID = map[uint32]string{}
		for g := range strings.SplitSeq(pos.GTID, ",") {
			g = strings.TrimSpace(g)
			if g == "" {
				continue
			}
			d, _, _ := strings.Cut(g, "-")
			n, err := strconv.ParseUint(d, 10, 32)
			if err != nil {
				return fmt.Errorf("%w: GTID position %q: %w", ErrBadToken, pos.GTID, err)
			}
			r.mariaGTID[uint32(n)] = g
		}
		return nil
	}
	gs, err := mysql.ParseMysqlGTIDSet(pos.GTID)
	if err != nil {
		return fmt.Errorf("%w: GTID set %q: %w", ErrBadToken, pos.GTID, err)
	}
	r.mysqlGTID = gs
	return nil
}

func (r *binlogReader) gtidString() string {
	if r.mariaGTID != nil {
		doms := make([]uint32, 0, len(r.mariaGTID))
		for d := range r.mariaGTID {
			doms = append(doms, d)
		}
		slices.Sort(doms)
		parts := make([]string, len(doms))
		for i, d := range doms {
			parts[i] = r.mariaGTID[d]
		}
		return strings.Join(parts, ",")
	}
	if r.mysqlGTID != nil {
		return r.mysqlGTID.String()
	}
	return ""
}

func (r *binlogReader) connect(ctx context.Context) error {
	if r.syncer != nil {
		r.syncer.Close()
	}
	// A reconnect mid-transaction: the transaction comes again from its
	// start; skip what was already emitted.
	if r.inTxn && r.emitted > 0 {
		r.skip, r.skipGTID, r.skipPos = r.emitted, r.txnGTID, r.txnStart
	}
	r.inTxn, r.emitted, r.batch, r.xa = false, 0, nil, nil
	clear(r.tmCache)

	cfg := r.s.sh.cfg
	host, port, err := splitAddr(cfg.Addr)
	if err != nil {
		return fatal(err)
	}
	r.syncer = replication.NewBinlogSyncer(replication.BinlogSyncerConfig{
		ServerID:                cfg.ServerID,
		Flavor:                  r.s.flavor,
		Host:                    host,
		Port:                    port,
		User:                    cfg.User,
		Password:                cfg.Password,
		UseDecimal:              true,
		TimestampStringLocation: time.UTC,
		HeartbeatPeriod:         cfg.Heartbeat,
		ReadTimeout:             cfg.ReadTimeout,
		DisableRetrySync:        true,
		Logger:                  r.s.sh.log.With("component", "go-mysql"),
		EventCacheCount:         256,
	})
	pos := r.s.state.Pos
	r.file = pos.File
	switch {
	case pos.GTID != "" && r.s.flavor == mysql.MariaDBFlavor:
		gs, err := mysql.ParseMariadbGTIDSet(pos.GTID)
		if err != nil {
			return fatal(fmt.Errorf("%w: GTID position %q: %w", ErrBadToken, pos.GTID, err))
		}
		r.st, err = r.syncer.StartSyncGTID(gs)
		if err != nil {
			return fmt.Errorf("starting the binlog stream at GTID %s: %w", pos.GTID, err)
		}
	case pos.GTID != "":
		r.st, err = r.syncer.StartSyncGTID(r.mysqlGTID.Clone())
		if err != nil {
			return fmt.Errorf("starting the binlog stream at GTID set %s: %w", pos.GTID, err)
		}
	default:
		r.st, err = r.syncer.StartSync(mysql.Position{Name: pos.File, Pos: pos.Pos})
		if err != nil {
			return fmt.Errorf("starting the binlog stream at %s:%d: %w", pos.File, pos.Pos, err)
		}
	}
	return nil
}

func (r *binlogReader) loop(ctx context.Context, attempt *int) error {
	timeout := r.s.sh.cfg.ReadTimeout
	for {
		// A watchdog of our own: go-mysql's ReadTimeout does not cover
		// every way a dump stream can go silent (seen when a replica with
		// the same server id had just been closed). The server sends a
		// heartbeat every Heartbeat when idle, so silence is death.
		wctx, cancel := context.WithTimeout(ctx, timeout)
		ev, err := r.st.GetEvent(wctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("no binlog event or heartbeat for %s: the connection is dead", timeout)
			}
			return err
		}
		*attempt = 0
		if err := r.handle(ctx, ev); err != nil {
			return err
		}
	}
}

func (r *binlogReader) handle(ctx context.Context, ev *replication.BinlogEvent) error {
	h := ev.Header
	switch e := ev.Event.(type) {
	case *replication.RotateEvent:
		r.file = string(e.NextLogName)
	case *replication.MariadbGTIDEvent:
		r.begin(fmt.Sprintf("%d-%d-%d", e.GTID.DomainID, e.GTID.ServerID, e.GTID.SequenceNumber), e.GTID.DomainID, e.IsStandalone(), h)
		if e.Flags&mariaFlPreparedXA != 0 {
			r.xa = &xaPrepared{}
		}
	case *replication.GTIDEvent:
		r.begin(mysqlGTID(e), 0, false, h)
		r.setTxnLength(e.TransactionLength)
	case *replication.GtidTaggedLogEvent: // MySQL 8.3+ tagged GTID (uuid:tag:gno)
		r.begin(mysqlGTID(&e.GTIDEvent), 0, false, h)
		r.setTxnLength(e.TransactionLength)
	case *replication.GenericEvent:
		if h.EventType == replication.XA_PREPARE_LOG_EVENT {
			xid, onePhase, err := parseXAPrepare(e.Data)
			if err != nil {
				return fatal(fmt.Errorf("binlog %s:%d: %w", r.file, h.LogPos, err))
			}
			return r.xaPrepare(ctx, h, xid, onePhase)
		}
	case *replication.QueryEvent:
		q := strings.TrimSpace(string(e.Query))
		if verb, xid, onePhase, err := xaStatement(q); err != nil {
			return fatal(fmt.Errorf("binlog %s:%d: %w", r.file, h.LogPos, err))
		} else if verb != "" {
			return r.xaQuery(ctx, h, verb, xid, onePhase)
		}
		switch {
		case strings.EqualFold(q, "BEGIN"):
			if !r.inTxn {
				r.begin("", 0, false, h)
			}
		case strings.EqualFold(q, "COMMIT"), strings.EqualFold(q, "ROLLBACK"):
			return r.commit(ctx, h)
		case hasPrefixFold(q, "SAVEPOINT"), hasPrefixFold(q, "ROLLBACK TO"), hasPrefixFold(q, "RELEASE SAVEPOINT"):
		default:
			if err := r.ddl(ctx, string(e.Schema), q, h); err != nil {
				return err
			}
			if r.ddlEndsTxn(h) {
				return r.commit(ctx, h)
			}
		}
	case *replication.TableMapEvent:
		// decoded lazily with the rows that use it
	case *replication.RowsEvent:
		return r.rows(ctx, h, e)
	case *replication.XIDEvent:
		return r.commit(ctx, h)
	case *replication.HeartbeatEvent:
		if !r.inTxn {
			return r.progress(ctx, true)
		}
		r.s.sh.log.Debug("heartbeat inside a transaction", "gtid", r.txnGTID, "start", r.txnStart.String())
	}
	return nil
}

// mysqlGTID renders a MySQL GTID event as uuid:gno, or uuid:tag:gno for a
// tagged GTID; "" for an anonymous one (gtid_mode=OFF).
func mysqlGTID(e *replication.GTIDEvent) string {
	u, err := uuid.FromBytes(e.SID)
	if err != nil || u == uuid.Nil {
		return ""
	}
	if tag := e.Tag.String(); tag != "" {
		return fmt.Sprintf("%s:%s:%d", u, tag, e.GNO)
	}
	return fmt.Sprintf("%s:%d", u, e.GNO)
}

// ddlEndsTxn tells whether a DDL statement at h ends its transaction. DDL
// is its own transaction: MariaDB marks it standalone, and a MariaDB
// transaction that is not (CREATE TABLE … SELECT: the CREATE, the rows,
// then XID or COMMIT) ends at its XID or COMMIT. MySQL (≥ 8.0.21 writes
// CREATE TABLE … SELECT as one transaction: GTID, the CREATE, the rows,
// XID) has no such flag, but its GTID event carries the transaction's
// length: the DDL ends the transaction when it ends where the length says.
// Without a length (MySQL < 8.0.2, where CREATE TABLE … SELECT is written
// as the CREATE and a separate transaction of rows) the DDL is the end.
func (r *binlogReader) ddlEndsTxn(h *replication.EventHeader) bool {
	if !r.inTxn {
		return true
	}
	if r.s.flavor == mysql.MariaDBFlavor {
		return r.standalone
	}
	return r.txnEnd == 0 || h.LogPos == 0 || h.LogPos >= r.txnEnd
}

// setTxnLength records where a MySQL transaction ends from its GTID
// event's transaction length (0: not written).
func (r *binlogReader) setTxnLength(n uint64) {
	if n > 0 && uint64(r.txnStart.Pos)+n <= math.MaxUint32 {
		r.txnEnd = r.txnStart.Pos + uint32(n)
	}
}

func hasPrefixFold(s, p string) bool { return len(s) >= len(p) && strings.EqualFold(s[:len(p)], p) }

func (r *binlogReader) begin(gtid string, domain uint32, standalone bool, h *replication.EventHeader) {
	r.inTxn, r.txnGTID, r.txnDomain, r.standalone = true, gtid, domain, standalone
	r.emitted, r.batch, r.txnEnd, r.xa = 0, nil, 0, nil
	r.txnStart = binPos{File: r.file, Pos: h.LogPos - h.EventSize}
	r.txnTime = time.Unix(int64(h.Timestamp), 0).UTC()
	r.hold = r.decisionAt(gtid, r.txnStart) == DecisionApply
	if r.skip > 0 && !(gtid == r.skipGTID && (gtid != "" || r.txnStart == r.skipPos)) {
		r.skip = 0 // not the interrupted transaction (it must have been rolled back)
	}
}

func (r *binlogReader) flush(ctx context.Context) error {
	if len(r.batch) == 0 {
		return nil
	}
	rows := r.batch
	r.batch = nil
	r.emitted += int64(len(rows))
	return r.s.emit(ctx, change.Event{Kind: change.EventRows, Rows: rows, Time: r.txnTime})
}

func (r *binlogReader) commit(ctx context.Context, h *replication.EventHeader) error {
	if err := r.flush(ctx); err != nil {
		return err
	}
	if r.txnGTID != "" {
		if r.mariaGTID != nil || (r.s.flavor == mysql.MariaDBFlavor && r.mysqlGTID == nil) {
			if r.mariaGTID == nil {
				r.mariaGTID = map[uint32]string{}
			}
			r.mariaGTID[r.txnDomain] = r.txnGTID
		} else if r.mysqlGTID != nil {
			if err := r.mysqlGTID.Update(r.txnGTID); err != nil {
				return fatal(fmt.Errorf("tracking GTID %s: %w", r.txnGTID, err))
			}
		}
	}
	hadRows := r.emitted > 0
	r.inTxn, r.emitted, r.skip, r.txnGTID, r.txnEnd, r.xa, r.hold = false, 0, 0, "", 0, nil, false
	st := r.s.state
	st.Pos = binPos{File: r.file, Pos: h.LogPos, GTID: r.gtidString()}
	// Tables whose every chunk watermark is behind us are pure binlog now.
	if len(st.Tables) > 0 {
		kept := st.Tables[:0]
		for _, t := range st.Tables {
			if compareFilePos(st.Pos.File, st.Pos.Pos, t.maxHW.File, t.maxHW.Pos) < 0 {
				kept = append(kept, t)
			} else {
				delete(r.s.filter, t.id())
				r.s.enc.dirty = true
			}
		}
		clear(st.Tables[len(kept):])
		st.Tables = kept
	}
	if len(r.pendingDeletes)+len(r.pendingJoins) > 0 {
		if err := r.finishLifecycle(ctx); err != nil {
			return err
		}
		if !hadRows {
			return nil
		}
	}
	if hadRows {
		r.unreported = false
		r.lastProgress = time.Now()
		return r.s.emit(ctx, change.Event{Kind: change.EventCommit, Token: r.s.enc.encode(st), Time: r.txnTime})
	}
	r.unreported = true
	return r.progress(ctx, false)
}

// progress emits the current boundary token when transactions were skipped
// (at most once a second) or on a heartbeat.
func (r *binlogReader) progress(ctx context.Context, heartbeat bool) error {
	if !heartbeat && time.Since(r.lastProgress) < time.Second {
		return nil
	}
	r.unreported = false
	r.lastProgress = time.Now()
	return r.s.emit(ctx, change.Event{Kind: change.EventProgress, Token: r.s.enc.encode(r.s.state)})
}

func rowOp(t replication.EventType) change.Op {
	switch t {
	case replication.WRITE_ROWS_EVENTv0, replication.WRITE_ROWS_EVENTv1, replication.WRITE_ROWS_EVENTv2, replication.MARIADB_WRITE_ROWS_COMPRESSED_EVENT_V1:
		return change.Insert
	case replication.UPDATE_ROWS_EVENTv0, replication.UPDATE_ROWS_EVENTv1, replication.UPDATE_ROWS_EVENTv2, replication.MARIADB_UPDATE_ROWS_COMPRESSED_EVENT_V1, replication.PARTIAL_UPDATE_ROWS_EVENT:
		return change.Update
	case replication.DELETE_ROWS_EVENTv0, replication.DELETE_ROWS_EVENTv1, replication.DELETE_ROWS_EVENTv2, replication.MARIADB_DELETE_ROWS_COMPRESSED_EVENT_V1:
		return change.Delete
	}
	return 0
}

// shardFor returns the shard of a table map, checking (once per table map)
// that the shard's known schema matches it and applying a schema change
// when it does not.
func (r *binlogReader) shardFor(ctx context.Context, tm *replication.TableMapEvent) (*shard, error) {
	prev, cached := r.tmCache[tm.TableID]
	if cached && prev.tm == tm && prev.gen == r.s.schemaGen {
		return prev.sh, nil
	}
	id := change.TableID{Database: string(tm.Schema), Table: string(tm.Table)}
	sh := r.s.shards[id]
	ri := -1
	if sh == nil {
		if ri = routeOf(r.s.sh.cfg.Routes, id); ri < 0 {
			r.cacheTableMap(tm, nil, nil, nil)
			return nil, nil
		}
	}
	// Every transaction repeats the table map; decode its columns only
	// when it differs from the one seen last for this table id.
	var cols []shardCol
	var key []string
	if cached && prev.cols != nil && sameTableMap(prev.tm, tm) {
		cols, key = prev.cols, prev.key
	} else {
		var err error
		if cols, key, err = colsFromTableMap(tm, r.s.cs); err != nil {
			return nil, fatal(err)
		}
	}
	if sh == nil {
		// A matching table we did not see created (e.g. created by a
		// statement we do not parse): register it from its table map.
		cause := "(first binlog rows of " + id.String() + ")"
		if err := r.midTxnSchema(r.s.targets[r.s.sh.cfg.Routes[ri].Target], id, cols, key, nil, cause); err != nil {
			return nil, err
		}
		added, err := r.s.addShard(ctx, id, ri, cols, key, cause)
		if err != nil {
			return nil, fatal(err)
		}
		r.padBatch(added.target)
		sh = added
	} else if !sameCols(sh.cols, cols) && slices.Equal(sh.key, key) && isPast(cols, sh.cols) {
		// Written before a change the shard's schema already has.
		view := pastView(sh, cols, &r.s.sh.cfg)
		r.cacheTableMap(tm, view, cols, key)
		return view, nil
	} else if !sameCols(sh.cols, cols) {
		if err := r.midTxnSchema(sh.target, id, cols, key, sh.cols, sh.lastDDL); err != nil {
			return nil, err
		}
		if err := r.s.changeShard(ctx, sh, cols, key, sh.lastDDL); err != nil {
			return nil, fatal(err)
		}
		r.padBatch(sh.target)
	}
	r.cacheTableMap(tm, sh, cols, key)
	return sh, nil
}

// tmEntry is a table map already checked, the shard it maps to (nil: a
// table no route takes) and the columns and key decoded from it.
type tmEntry struct {
	gen  uint64 // Source.schemaGen when checked
	tm   *replication.TableMapEvent
	sh   *shard
	cols []shardCol
	key  []string
}

// sameTableMap reports whether two table maps carry the same table
// definition: every field go-mysql decodes from the event is equal.
func sameTableMap(a, b *replication.TableMapEvent) bool {
	u64 := slices.Equal[[]uint64]
	bss := func(x, y [][]byte) bool { return slices.EqualFunc(x, y, bytes.Equal) }
	bsss := func(x, y [][][]byte) bool { return slices.EqualFunc(x, y, bss) }
	return a.TableID == b.TableID && a.Flags == b.Flags && a.ColumnCount == b.ColumnCount &&
		bytes.Equal(a.Schema, b.Schema) && bytes.Equal(a.Table, b.Table) &&
		bytes.Equal(a.ColumnType, b.ColumnType) && slices.Equal(a.ColumnMeta, b.ColumnMeta) &&
		bytes.Equal(a.NullBitmap, b.NullBitmap) && bytes.Equal(a.SignednessBitmap, b.SignednessBitmap) &&
		u64(a.DefaultCharset, b.DefaultCharset) && u64(a.ColumnCharset, b.ColumnCharset) &&
		bsss(a.SetStrValue, b.SetStrValue) && bsss(a.EnumStrValue, b.EnumStrValue) &&
		bss(a.ColumnName, b.ColumnName) && u64(a.GeometryType, b.GeometryType) &&
		u64(a.PrimaryKey, b.PrimaryKey) && u64(a.PrimaryKeyPrefix, b.PrimaryKeyPrefix) &&
		u64(a.EnumSetDefaultCharset, b.EnumSetDefaultCharset) && u64(a.EnumSetColumnCharset, b.EnumSetColumnCharset) &&
		bytes.Equal(a.VisibilityBitmap, b.VisibilityBitmap)
}

// maxTableMaps bounds tmCache: table ids change as the server reopens
// tables, so the ids seen over months are not bounded by the table count.
const maxTableMaps = 4096

func (r *binlogReader) cacheTableMap(tm *replication.TableMapEvent, sh *shard, cols []shardCol, key []string) {
	if len(r.tmCache) >= maxTableMaps {
		clear(r.tmCache)
	}
	r.tmCache[tm.TableID] = tmEntry{gen: r.s.schemaGen, tm: tm, sh: sh, cols: cols, key: key}
}

func sameCols(a, b []shardCol) bool {
	return slices.EqualFunc(a, b, func(x, y shardCol) bool { return x.name == y.name && x.typ.equal(y.typ) })
}

func (r *binlogReader) rows(ctx context.Context, h *replication.EventHeader, e *replication.RowsEvent) error {
	sh, err := r.shardFor(ctx, e.Table)
	if err != nil || sh == nil {
		return err
	}
	op := rowOp(h.EventType)
	if op == 0 {
		return fatal(fmt.Errorf("binlog event %s for %s is not supported", h.EventType, sh.id))
	}
	step := 1
	if op == change.Update {
		step = 2
	}
	for i := 0; i+step <= len(e.Rows); i += step {
		var before, after []change.Value
		switch op {
		case change.Insert:
			if after, err = r.values(sh, e.Rows[i], r.afterBuf); err != nil {
				return err
			}
			r.afterBuf = after
		case change.Delete:
			if before, err = r.values(sh, e.Rows[i], r.beforeBuf); err != nil {
				return err
			}
			r.beforeBuf = before
		case change.Update:
			if before, err = r.values(sh, e.Rows[i], r.beforeBuf); err != nil {
				return err
			}
			r.beforeBuf = before
			if after, err = r.values(sh, e.Rows[i+1], r.afterBuf); err != nil {
				return err
			}
			r.afterBuf = after
		}
		if r.xa != nil {
			if err := r.keepXA(sh, op, before, after); err != nil {
				return err
			}
			continue
		}
		if err := r.add(ctx, sh, op, before, after, h.LogPos); err != nil {
			return err
		}
	}
	return nil
}

// add passes one row image of sh, read at binlog position r.file:pos, through the
// snapshot filter and into the current transaction's batch.
func (r *binlogReader) add(ctx context.Context, sh *shard, op change.Op, before, after []change.Value, pos uint32) error {
	rowOp := op
	if filter := r.s.filter[sh.id]; filter != nil {
		var keepB, keepA bool
		if before != nil {
			keepB = filter.emitAt(filterKey(sh, before, filter.KeyKinds), r.file, pos)
		}
		if after != nil {
			keepA = filter.emitAt(filterKey(sh, after, filter.KeyKinds), r.file, pos)
		}
		switch {
		case op == change.Update && keepB && !keepA:
			rowOp, after = change.Delete, nil
		case op == change.Update && !keepB && keepA:
			rowOp, before = change.Insert, nil
		case !keepB && !keepA:
			return nil
		}
	}
	if r.skip > 0 {
		r.skip--
		return nil
	}
	row := change.Row{Op: rowOp, Target: sh.target.id, Source: sh.id}
	if before != nil {
		row.Before = r.s.targetRow(sh, before)
	}
	if after != nil {
		row.After = r.s.targetRow(sh, after)
	}
	r.batch = append(r.batch, row)
	if len(r.batch) >= r.s.sh.cfg.BatchRows && !r.hold {
		return r.flush(ctx)
	}
	return nil
}

// values converts a binlog row image of sh into the shard's values,
// appended to dst[:0] (a scratch buffer: the caller copies the values out
// with targetRow before converting the next image into it).
func (r *binlogReader) values(sh *shard, raw []any, dst []change.Value) ([]change.Value, error) {
	return imageValues(sh, raw, dst)
}

// imageValues converts a binlog row image of sh into the shard's values,
// appended to dst[:0].
func imageValues(sh *shard, raw []any, dst []change.Value) ([]change.Value, error) {
	if len(raw) != len(sh.cols) {
		return nil, fatal(fmt.Errorf("binlog row of %s has %d columns, the shard has %d: binlog_row_image must be FULL", sh.id, len(raw), len(sh.cols)))
	}
	out := dst[:0]
	for i, v := range raw {
		if labels := sh.labels[i]; labels != nil {
			if x, ok := v.(int64); ok && x >= 0 && x < int64(len(labels)) {
				out = append(out, labels[x])
				continue
			}
		}
		cv, err := binlogValue(v, sh.cols[i].typ, sh.kinds[i])
		if err != nil {
			return nil, fatal(fmt.Errorf("binlog row of %s column %s: %w", sh.id, sh.cols[i].name, err))
		}
		out = append(out, cv)
	}
	return out, nil
}

// filterKey extracts a row's key in the kinds the snapshot recorded.
func filterKey(sh *shard, vals []change.Value, kinds []change.Kind) []change.Value {
	if len(sh.key) == 0 || len(kinds) != len(sh.key) {
		return nil
	}
	key := make([]change.Value, len(sh.key))
	for i, k := range sh.key {
		for j, c := range sh.cols {
			if c.name == k {
				v := vals[j]
				switch x := v.(type) {
				case uint64:
					if kinds[i] == change.KindInt {
						v = int64(x)
					}
				case int64:
					if kinds[i] == change.KindUint {
						v = uint64(x)
					}
				}
				key[i] = v
			}
		}
		if key[i] == nil {
			return nil
		}
	}
	return key
}

// ddl applies a DDL statement to the routed shards it names.
func (r *binlogReader) ddl(ctx context.Context, schema, q string, h *replication.EventHeader) error {
	st := parseDDL(schema, q)
	switch st.kind {
	case ddlOther:
		return nil
	case ddlDropDatabase, ddlDrop, ddlTruncate, ddlRename:
		return r.lifecycle(ctx, st, q, h)
	}
	for _, id := range st.tables {
		sh := r.s.shards[id]
		ri := routeOf(r.s.sh.cfg.Routes, id)
		switch st.kind {
		case ddlCreate:
			if sh != nil {
				delete(r.s.unseen, id) // created here: the binlog has its rows
				continue
			}
			if ri < 0 {
				continue
			}
			cols, key, err := r.loadSchema(ctx, id)
			if err != nil {
				return err
			}
			if _, err := r.s.addShard(ctx, id, ri, cols, key, q); err != nil {
				return fatal(err)
			}
		case ddlAlter:
			if sh == nil {
				continue
			}
			cols, key, err := r.loadSchema(ctx, id)
			if err != nil {
				return err
			}
			if done, err := r.alterBehavior(sh, cols, key, q, h); done || err != nil {
				return err
			}
			if err := r.s.changeShard(ctx, sh, cols, key, q); err != nil {
				return fatal(err)
			}
		}
	}
	return nil
}

func (r *binlogReader) loadSchema(ctx context.Context, id change.TableID) ([]shardCol, []string, error) {
	if r.meta == nil {
		c, err := r.s.sh.dial(ctx, "")
		if err != nil {
			return nil, nil, err
		}
		r.meta = c
	}
	cols, key, err := loadSchema(r.meta, id)
	if err != nil {
		_ = r.meta.Close()
		r.meta = nil
		return nil, nil, fmt.Errorf("reading the schema of %s after DDL: %w", id, err)
	}
	return cols, key, nil
}

// sortedIDs is used for stable messages.
func sortedIDs(m map[change.TableID]*shard) []change.TableID {
	ids := make([]change.TableID, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].String() < ids[j].String() })
	return ids
}

// midTxnSchema checks that a shard schema first seen inside the current
// transaction (the rows of a table not seen created, or of a shard whose
// DDL was not seen) can be announced before the transaction's rows:
// schema events lie between transactions. It can when the announcement
// changes nothing of the target (a new shard shaped like the others),
// or when no row of the transaction has been emitted yet: the schema
// event then goes out before the batch, whose rows of the target padBatch
// widens to the new columns. A transaction already streamed in part
// (more than Config.BatchRows rows before the table's first row) stops
// with an EventStopError on the transaction; applying it reads the
// transaction again and holds it in memory until its commit.
// tg is nil for a target not known yet; old is nil for a new shard.
func (r *binlogReader) midTxnSchema(tg *target, id change.TableID, cols []shardCol, key []string, old []shardCol, cause string) error {
	if r.emitted == 0 {
		return nil
	}
	if tg != nil {
		r.s.mu.Lock()
		_, changes, err := tg.merge(id, cols, key, cause, &r.s.sh.cfg, old)
		r.s.mu.Unlock()
		if err != nil {
			return fatal(err) // incompatible: registering it fails the same way
		}
		if len(changes) == 0 {
			return nil
		}
	}
	what := "rows of the new shard " + id.String()
	if old != nil {
		what = "the changed columns of shard " + id.String() + " (last DDL: " + cause + ")"
	}
	return fatal(&EventStopError{GTID: r.txnGTID, File: r.txnStart.File, Pos: r.txnStart.Pos, Statement: "(the transaction's row events)",
		Reason: fmt.Sprintf("%s first appeared in a transaction of which %d rows were already streamed, so the target schema cannot be announced before the transaction", what, r.emitted),
		Apply:  "the transaction is read again and held in memory until its commit, so the target schema is announced before its first row"})
}

// padBatch widens the batched rows of tg to its current columns after a
// schema announcement that added columns: each gets the fill value (the
// added column's default, or NULL) as rows of shards without the column
// do.
func (r *binlogReader) padBatch(tg *target) {
	n := len(tg.cols) + 2
	pad := func(vals []change.Value) []change.Value {
		if vals == nil || len(vals) >= n {
			return vals
		}
		out := make([]change.Value, n)
		if len(tg.fillRow) == n {
			copy(out, tg.fillRow)
		}
		copy(out, vals)
		return out
	}
	for i := range r.batch {
		if row := &r.batch[i]; row.Target == tg.id {
			row.Before, row.After = pad(row.Before), pad(row.After)
		}
	}
}
