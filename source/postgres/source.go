package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/merge"
	"github.com/shardsync/shardsync/twopc"
)

// Source is an open change stream over the matched tables of one
// PostgreSQL database. Next is called from one goroutine; Committed,
// Targets, Progress and SlotStats from any.
type Source struct {
	cfg Config
	log *slog.Logger
	m   *merge.TableMerger

	// committed is the LSN of the newest token the ledger committed: the
	// only position acknowledged to the server as flushed.
	committed atomic.Uint64

	mu       sync.Mutex // guards progress
	progress map[change.TableID]*merge.TableProgress

	// owned by the producer goroutine
	st      *tokenState
	tables  map[change.TableID]*tableState
	fresh   []foundTable // tables to snapshot before streaming (new at start)
	sql     *pgx.Conn    // catalog and snapshot queries
	snaps   map[string]pgSnapshot
	horizon uint64 // max chunk.After over the token's chunks

	events chan change.Event
	err    error
	cancel context.CancelFunc
	done   chan struct{}
}

var (
	_ twopc.Source         = (*Source)(nil)
	_ twopc.CommitListener = (*Source)(nil)
)

// Open checks the server (wal_level, REPLICATION, identities), finds the
// matched tables and starts the stream. A nil token starts fresh: the
// publication is created or extended, the slot (re)created, every table
// snapshotted, then the slot followed. A token continues right after the
// transaction or chunk it was emitted with; Open then fails (ErrSlot) when
// the slot or publication is gone, lost its WAL, is in use by another
// process, or was moved past the token — it never re-snapshots on its own.
// Open fails with merge.ErrNoShards when a route matches no table unless
// AllowEmptyRoutes is set. On error nothing was emitted and no slot is
// left in use.
func Open(ctx context.Context, cfg Config, from change.Token, log *slog.Logger) (*Source, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid postgres source configuration: %w", err)
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Source{cfg: cfg, log: log, m: merge.NewTableMerger(cfg.Routes, cfg.DatabaseColumn, cfg.TableColumn),
		progress: map[change.TableID]*merge.TableProgress{}, tables: map[change.TableID]*tableState{}, snaps: map[string]pgSnapshot{}}
	cctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	conn, err := cfg.connect(cctx)
	cancel()
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = conn.Close(context.Background())
		}
	}()
	if err := checkServer(ctx, conn, &cfg); err != nil {
		return nil, err
	}
	found, err := listTables(ctx, conn, s.m, cfg.Publication)
	if err != nil {
		return nil, err
	}
	used := make([]bool, len(cfg.Routes))
	for _, f := range found {
		used[f.route] = true
	}
	for i, u := range used {
		if !u {
			if !cfg.AllowEmptyRoutes {
				return nil, noMatchError(ctx, conn, &cfg, i)
			}
			log.Warn("route matches no table yet; waiting for tables to be created", "route", cfg.Routes[i].String())
		}
	}
	if from == nil {
		err = s.openFresh(ctx, conn, found)
	} else {
		err = s.openResume(ctx, conn, from, found)
	}
	if err != nil {
		return nil, err
	}
	s.committed.Store(s.st.LSN)
	s.sql = conn
	ok = true
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = stop
	s.events = make(chan change.Event, 8)
	s.done = make(chan struct{})
	go s.produce(runCtx)
	return s, nil
}

// openFresh publishes the tables, (re)creates the slot and plans the
// snapshot.
func (s *Source) openFresh(ctx context.Context, conn *pgx.Conn, found []foundTable) error {
	s.st = &tokenState{Kind: "postgres", V: 1, Routes: s.m.RoutesFingerprint(), Slot: s.cfg.Slot}
	var missing []change.TableID
	for _, f := range found {
		if !f.inPub {
			missing = append(missing, f.id)
		}
	}
	for _, f := range found {
		if err := s.addTable(ctx, conn, f, nil); err != nil {
			return err
		}
	}
	// The publication must hold every table before the slot exists, so
	// that every transaction after the slot's start is published.
	if err := ensurePublication(ctx, conn, &s.cfg, missing); err != nil {
		return err
	}
	slot, err := waitSlotIdle(ctx, conn, s.cfg.Slot, s.cfg.ConnectTimeout)
	if err != nil {
		return err
	}
	rc, err := s.cfg.replConn(ctx)
	if err != nil {
		return err
	}
	defer rc.Close(context.Background())
	if slot.exists {
		if slot.active {
			return fmt.Errorf("%w: replication slot %s is in use by server process %d (another shardsync job, or a subscriber?): stop it or give this job another --slot", ErrSlot, s.cfg.Slot, slot.pid)
		}
		// The ledger has no position, so nothing read from this slot was
		// ever committed: starting it again loses nothing.
		s.log.Warn("the ledger has no position but the replication slot exists (left by an earlier start that committed nothing): dropping and re-creating it", "slot", s.cfg.Slot)
		if err := pglogrepl.DropReplicationSlot(ctx, rc, s.cfg.Slot, pglogrepl.DropReplicationSlotOptions{}); err != nil {
			return fmt.Errorf("dropping the unused replication slot %s: %w", s.cfg.Slot, err)
		}
	}
	res, err := pglogrepl.CreateReplicationSlot(ctx, rc, s.cfg.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
	if err != nil {
		return s.slotError("creating replication slot "+s.cfg.Slot, err)
	}
	start, err := parseLSN(res.ConsistentPoint)
	if err != nil {
		return err
	}
	s.st.LSN = start
	s.log.Info("replication slot created", "slot", s.cfg.Slot, "consistent_point", res.ConsistentPoint, "publication", s.cfg.Publication)
	return nil
}

// openResume checks the slot and publication against the token and
// restores the shards it tracks.
func (s *Source) openResume(ctx context.Context, conn *pgx.Conn, from change.Token, found []foundTable) error {
	st, err := parseToken(from)
	if err != nil {
		return err
	}
	if st.Routes != s.m.RoutesFingerprint() {
		return fmt.Errorf("%w: the token was made with other routes or metadata column names; changing routes needs a fresh snapshot (a new ledger)", merge.ErrBadToken)
	}
	if st.Slot != s.cfg.Slot {
		return fmt.Errorf("%w: the ledger's position belongs to replication slot %s, not %s: keep --slot %s", merge.ErrBadToken, st.Slot, s.cfg.Slot, st.Slot)
	}
	slot, err := waitSlotIdle(ctx, conn, s.cfg.Slot, s.cfg.ConnectTimeout)
	if err != nil {
		return err
	}
	pos := pglogrepl.LSN(st.LSN)
	switch {
	case !slot.exists:
		return fmt.Errorf("%w: replication slot %s no longer exists (dropped while the job was stopped?); the changes after LSN %s are gone with it. shardsync does not re-snapshot on its own: to start over, empty the targets, move the job's ledger away and start again (a fresh snapshot)",
			ErrSlot, s.cfg.Slot, pos)
	case slot.plugin != "pgoutput" || slot.db != s.cfg.Database:
		return fmt.Errorf("%w: replication slot %s uses plugin %s in database %s, not pgoutput in %s: give this job its own --slot", ErrSlot, s.cfg.Slot, slot.plugin, slot.db, s.cfg.Database)
	case slot.walStatus == "lost":
		return fmt.Errorf("%w: replication slot %s lost the WAL it needs (wal_status=lost, max_slot_wal_keep_size exceeded while the job was behind or stopped): the changes after LSN %s cannot be read; drop the slot (shardsync postgres drop-slot) and start over with a new ledger (a fresh snapshot)", ErrSlot, s.cfg.Slot, pos)
	case slot.active:
		return fmt.Errorf("%w: replication slot %s is in use by server process %d (another shardsync job with the same slot?): stop it, or wait for wal_sender_timeout if it was this job before a crash", ErrSlot, s.cfg.Slot, slot.pid)
	case slot.confirmedFlush > st.LSN:
		return fmt.Errorf("%w: replication slot %s was advanced to %s by someone else, beyond this job's committed position %s: the changes in between were consumed elsewhere; start over with a new ledger and slot", ErrSlot, s.cfg.Slot, pglogrepl.LSN(slot.confirmedFlush), pos)
	}
	if ok, err := publicationExists(ctx, conn, s.cfg.Publication); err != nil {
		return fmt.Errorf("reading publication %s: %w", s.cfg.Publication, err)
	} else if !ok {
		return fmt.Errorf("%w: publication %s no longer exists (dropped while the job was stopped?): changes since were not published and are lost to the slot. Start over with a new ledger (a fresh snapshot) after dropping the slot (shardsync postgres drop-slot)", ErrSlot, s.cfg.Publication)
	}
	s.st = st
	byID := map[change.TableID]foundTable{}
	for _, f := range found {
		byID[f.id] = f
	}
	var missing []change.TableID
	for _, t := range st.Tables {
		f, exists := byID[t.id()]
		ri := s.m.RouteOf(t.id())
		if ri < 0 {
			return fmt.Errorf("%w: table %s in the token matches no route", merge.ErrBadToken, t.id())
		}
		if _, _, err := s.m.AddShard(t.id(), ri, t.shardColumns(), t.Key, ""); err != nil {
			return err
		}
		s.tables[t.id()] = t
		s.setProgress(t)
		if exists && !f.inPub {
			missing = append(missing, t.id())
		}
		if !exists && !t.Done {
			return fmt.Errorf("%w: table %s, whose snapshot is not finished, no longer exists: start over with a new ledger", merge.ErrBadToken, t.id())
		}
	}
	if len(missing) > 0 {
		s.log.Warn("tables of the job were removed from the publication; adding them back (their changes in between are lost)", "tables", fmt.Sprint(missing))
		if err := ensurePublication(ctx, conn, &s.cfg, missing); err != nil {
			return err
		}
	}
	for _, f := range found {
		if s.tables[f.id] == nil {
			s.fresh = append(s.fresh, f) // new since the token: snapshot before streaming
		}
	}
	s.horizon = 0
	for _, t := range st.Tables {
		for _, c := range t.Chunks {
			s.horizon = max(s.horizon, c.After)
		}
	}
	return nil
}

// addTable merges a found table into its target and records it in the
// token as not yet snapshotted. It returns the schema change to announce
// via ann (nil: do not announce; Open announces every target at start).
func (s *Source) addTable(ctx context.Context, conn *pgx.Conn, f foundTable, ann *[]*change.TableSchema) error {
	cols, key, err := loadColumns(ctx, conn, f.oid)
	if err != nil {
		return fmt.Errorf("table %s: %w", f.id, err)
	}
	if err := checkIdentity(f, key); err != nil {
		return err
	}
	t := &tableState{Schema: f.id.Database, Table: f.id.Table, Cols: cols, Key: key, Est: f.est, Full: f.replid == "f"}
	if len(key) == 1 {
		for _, c := range cols {
			if c.Name == key[0] && (c.Type.OID == oidInt2 || c.Type.OID == oidInt4 || c.Type.OID == oidInt8) {
				t.Chunked = true
			}
		}
	}
	changes, newTarget, err := s.m.AddShard(f.id, f.route, t.shardColumns(), key, "new table "+f.id.String())
	if err != nil {
		return err
	}
	s.st.Tables = append(s.st.Tables, t)
	s.tables[f.id] = t
	s.setProgress(t)
	if ann != nil && (newTarget || len(changes) > 0) {
		tg, _ := s.m.TargetOf(f.id)
		sc, _ := s.m.Schema(tg)
		*ann = append(*ann, &change.TableSchema{Target: tg, Schema: sc, Changes: changes, Cause: "new table " + f.id.String()})
	}
	if f.replid != "f" && hasToastable(cols) {
		s.log.Warn("table has columns PostgreSQL may store out of line (TOAST) and REPLICA IDENTITY "+map[string]string{"d": "DEFAULT", "i": "INDEX", "n": "NOTHING"}[f.replid]+
			": an UPDATE that leaves such a large value unchanged does not carry it, and shardsync then stops rather than overwrite the stored value; run ALTER TABLE "+quoteTable(f.id)+" REPLICA IDENTITY FULL to avoid that",
			"table", f.id.String())
	}
	return nil
}

// hasToastable reports variable-length columns that can be stored out of
// line (text, bytea, json, arrays, numeric, …).
func hasToastable(cols []colInfo) bool {
	for _, c := range cols {
		switch c.Type.OID {
		case oidBool, oidInt2, oidInt4, oidInt8, oidOID, oidFloat4, oidFloat8, oidMoney, oidDate, oidTime, oidTimestamp,
			oidTimestamptz, oidInterval, oidTimetz, oidUUID, oidChar, oidName:
			continue
		}
		if c.Type.Category == "E" {
			continue
		}
		return true
	}
	return false
}

func (s *Source) setProgress(t *tableState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tg, _ := s.m.TargetOf(t.id())
	s.progress[t.id()] = &merge.TableProgress{Table: t.id(), Target: tg, Rows: t.Rows, Chunks: t.NChunks,
		EstimatedRows: t.Est, Whole: !t.Chunked, Done: t.Done}
}

func (s *Source) produce(ctx context.Context) {
	err := s.run(ctx)
	if err == nil {
		err = errors.New("postgres source stream ended")
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("source closed: %w", context.Canceled)
	}
	_ = s.sql.Close(context.Background())
	s.err = err
	close(s.events)
	close(s.done)
}

func (s *Source) run(ctx context.Context) error {
	for _, ti := range s.m.Targets() {
		sc := ti.Schema
		if err := s.emit(ctx, change.Event{Kind: change.EventSchema, Schema: &change.TableSchema{Target: ti.Target, Schema: sc}}); err != nil {
			return err
		}
	}
	for _, t := range s.st.Tables {
		if !t.Done {
			if err := s.snapshotTable(ctx, t); err != nil {
				return err
			}
		}
	}
	if len(s.fresh) > 0 {
		fresh := s.fresh
		s.fresh = nil
		if err := s.addNewTables(ctx, fresh); err != nil {
			return err
		}
	}
	return s.stream(ctx)
}

func (s *Source) emit(ctx context.Context, ev change.Event) error {
	select {
	case s.events <- ev:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Next returns the next event. After an error the stream is over: Close
// it and Open again from the last committed token.
func (s *Source) Next(ctx context.Context) (change.Event, error) {
	select {
	case ev, ok := <-s.events:
		if !ok {
			return change.Event{}, s.err
		}
		return ev, nil
	case <-ctx.Done():
		return change.Event{}, ctx.Err()
	}
}

// Committed records that the ledger made tok the resume position; the
// replication connection acknowledges its LSN as flushed at its next
// status update, which lets the server release older WAL. It never blocks.
func (s *Source) Committed(tok change.Token) {
	st, err := parseToken(tok)
	if err != nil {
		return
	}
	for {
		cur := s.committed.Load()
		if st.LSN <= cur || s.committed.CompareAndSwap(cur, st.LSN) {
			return
		}
	}
}

// Close stops the stream and releases its connections (the slot becomes
// inactive; its position stays where the ledger's commits moved it).
func (s *Source) Close() error {
	s.cancel()
	go func() {
		for range s.events {
		}
	}()
	<-s.done
	return nil
}

// Flavor names the source kind for status displays.
func (s *Source) Flavor() string { return "postgres" }

// Targets lists the targets and their shards.
func (s *Source) Targets() []merge.TargetInfo { return s.m.Targets() }

// Progress reports the snapshot progress of every table.
func (s *Source) Progress() merge.SnapshotProgress {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := merge.SnapshotProgress{Done: true}
	for _, tp := range s.progress {
		p.Tables = append(p.Tables, *tp)
		if !tp.Done {
			p.Done = false
		}
	}
	slices.SortFunc(p.Tables, func(a, b merge.TableProgress) int { return strings.Compare(a.Table.String(), b.Table.String()) })
	return p
}

// SlotStats is what the server says about the job's replication slot.
type SlotStats struct {
	Slot string
	// RetainedWALBytes is WAL the server keeps for the slot
	// (pg_current_wal_lsn() - restart_lsn): it grows while the job is
	// stopped or behind, until the disk fills or max_slot_wal_keep_size
	// invalidates the slot.
	RetainedWALBytes int64
	// LagBytes is WAL written since the job's last committed position
	// (pg_current_wal_lsn() - confirmed_flush_lsn).
	LagBytes  int64
	Active    bool
	WALStatus string // reserved, extended, unreserved, lost
}

// SlotStats queries the slot on a short-lived connection.
func (s *Source) SlotStats(ctx context.Context) (SlotStats, error) {
	return QuerySlot(ctx, s.cfg)
}

// QuerySlot reads the slot of cfg (a running job's or a stopped one's).
func QuerySlot(ctx context.Context, cfg Config) (SlotStats, error) {
	cfg.setDefaults()
	conn, err := cfg.connect(ctx)
	if err != nil {
		return SlotStats{}, err
	}
	defer conn.Close(context.Background())
	si, err := readSlot(ctx, conn, cfg.Slot)
	if err != nil {
		return SlotStats{}, err
	}
	if !si.exists {
		return SlotStats{}, fmt.Errorf("%w: replication slot %s does not exist", ErrSlot, cfg.Slot)
	}
	return SlotStats{Slot: cfg.Slot, RetainedWALBytes: si.retained, LagBytes: si.lag, Active: si.active, WALStatus: si.walStatus}, nil
}

// DropSlot drops the job's replication slot and publication, for retiring
// a job: the server stops keeping WAL for it. It fails when the slot is in
// use (stop the job first). Missing ones are reported, not errors.
func DropSlot(ctx context.Context, cfg Config) ([]string, error) {
	cfg.setDefaults()
	conn, err := cfg.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	var done []string
	si, err := readSlot(ctx, conn, cfg.Slot)
	if err != nil {
		return nil, err
	}
	switch {
	case si.exists && si.active:
		return nil, fmt.Errorf("%w: replication slot %s is in use by server process %d: stop the job first", ErrSlot, cfg.Slot, si.pid)
	case si.exists:
		if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, cfg.Slot); err != nil {
			return nil, fmt.Errorf("dropping replication slot %s: %w", cfg.Slot, err)
		}
		done = append(done, "dropped replication slot "+cfg.Slot)
	default:
		done = append(done, "replication slot "+cfg.Slot+" did not exist")
	}
	if cfg.Publication != "" {
		if _, err := conn.Exec(ctx, `DROP PUBLICATION IF EXISTS `+quoteIdent(cfg.Publication)); err != nil {
			return done, fmt.Errorf("dropping publication %s: %w", cfg.Publication, err)
		}
		done = append(done, "dropped publication "+cfg.Publication+" (if it existed)")
	}
	return done, nil
}

// waitSlotIdle reads the slot, waiting up to wait for it to become
// inactive: the server process that served a crashed job ends when it
// notices its client is gone.
func waitSlotIdle(ctx context.Context, conn *pgx.Conn, slot string, wait time.Duration) (slotInfo, error) {
	deadline := time.Now().Add(wait)
	for {
		si, err := readSlot(ctx, conn, slot)
		if err != nil || !si.exists || !si.active || time.Now().After(deadline) {
			return si, err
		}
		select {
		case <-ctx.Done():
			return si, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// slotError names the fix for replication-protocol errors about the slot.
func (s *Source) slotError(what string, err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "55006":
			return fmt.Errorf("%w: %s: %s: another process uses the slot; stop it or give this job another --slot", ErrSlot, what, pe.Message)
		case pe.Code == "42704":
			return fmt.Errorf("%w: %s: %s (dropped while the job was stopped?): shardsync does not re-snapshot on its own; start over with a new ledger", ErrSlot, what, pe.Message)
		case pe.Code == "53400":
			return fmt.Errorf("%w: %s: %s: raise max_replication_slots (restart needed) or drop unused slots", merge.ErrPrerequisite, what, pe.Message)
		case strings.Contains(pe.Message, "cannot read from logical replication slot"), strings.Contains(pe.Message, "has been invalidated"):
			return fmt.Errorf("%w: %s: %s: the slot lost WAL it needed (max_slot_wal_keep_size); drop it and start over with a new ledger", ErrSlot, what, pe.Message)
		case pe.Code == "42501":
			return fmt.Errorf("%w: %s: %s: run ALTER ROLE %s WITH REPLICATION", merge.ErrPrerequisite, what, pe.Message, quoteIdent(s.cfg.User))
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

func parseLSN(s string) (uint64, error) {
	l, err := pglogrepl.ParseLSN(s)
	if err != nil {
		return 0, fmt.Errorf("parsing LSN %q: %w", s, err)
	}
	return uint64(l), nil
}

// statusDeadline keeps a replication read from blocking longer than the
// next status update or discovery.
func statusDeadline(now time.Time, ds ...time.Time) time.Time {
	d := now.Add(time.Second)
	for _, x := range ds {
		if x.Before(d) {
			d = x
		}
	}
	return d
}
