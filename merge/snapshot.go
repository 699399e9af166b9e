package merge

// Snapshot design: lock-free, chunked, exact — and why it is Flink CDC's
// incremental snapshot with the watermark window closed to a point.
//
// Flink CDC reads a chunk between a low watermark LW (binlog position before
// the SELECT) and a high watermark HW (after it), replays the binlog slice
// (LW, HW] of the table into the chunk's rows keyed by primary key, and emits
// the result as the chunk's state at HW. The binlog phase then starts at the
// smallest HW and emits a change only when its position is past the HW of
// the chunk that holds its key.
//
// On MariaDB the window can be closed exactly. Each chunk is read inside its
// own `START TRANSACTION WITH CONSISTENT SNAPSHOT`; in that transaction
// `SHOW STATUS LIKE 'binlog_snapshot_%'` returns the binlog file/position of
// exactly the transactions the InnoDB read view contains (MariaDB keeps the
// binlog commit order and the read view consistent for this purpose; it is
// how mysqldump --single-transaction --master-data works without FLUSH TABLES
// WITH READ LOCK). So the chunk's SELECT *is* the table state at that
// position: LW = HW = binlog_snapshot position, the binlog slice (LW, HW] is
// empty, and the backfill merge has nothing to merge. Everything else is
// Flink's algorithm unchanged: per-chunk HW, binlog phase from a position no
// later than every HW, and the per-key filter "emit iff position > HW of the
// key's chunk" (binary search over the sorted chunk bounds, token.go).
// It is equivalent (the emitted chunk equals Flink's merged chunk: both are
// the state at HW) and better in three ways: no binlog re-read per chunk, no
// in-memory merge map (chunk rows stream out as read, so memory is bounded by
// the chunk size), and no dependence on SHOW MASTER STATUS racing the SELECT.
// No locks are taken: no FLUSH TABLES WITH READ LOCK, no LOCK TABLES.
//
// Chunks are cut by keyset pagination on the primary key: chunk i is
// `WHERE key > hi(i-1) ORDER BY key LIMIT ChunkSize` (composite keys use the
// expanded OR form), and covers the key range (hi(i-1), hi(i)] where hi(i) is
// the last key it read; a chunk that reads fewer than ChunkSize rows is the
// last one and covers (hi(i-1), +∞). A row inserted into a finished range
// later has a binlog position past that chunk's HW and is emitted by the
// binlog phase; a row that existed at HW is in the chunk. Every chunk is one
// transaction of the stream and ends with an EventCommit whose token records
// the finished chunks with their bounds and HWs, so a crash redoes only the
// chunks after the last committed one (of each table being read).
//
// The filter compares keys in Go, so per-chunk watermarks are used only when
// Go's order of the key equals the server's index order (integers,
// DECIMAL, temporal types, binary strings). Tables whose key is a
// collation-ordered string (or FLOAT/TIME/ENUM), and tables without a
// primary key, are read in one piece: one consistent-snapshot transaction
// streamed to the output, with one HW for the whole table. Trade-off: such a
// table is redone from its start after a crash in its snapshot, and holds one
// long read view (InnoDB undo history) while it is read. A table without a
// primary key also has no merge key: the target gets no key and updates or
// deletes of duplicate rows cannot be told apart (sinks should append).
//
// Parallelism: up to Readers tables are read at the same time, each on its
// own connection; the chunks of one table are read in key order. The
// emitter writes one chunk at a time, so the stream never interleaves the
// rows of two chunks.
//
// The binlog phase starts at the position taken before the tables were
// listed (≤ every HW), so a matching table created while the snapshot runs
// is captured from its CREATE TABLE in the binlog rather than snapshotted.
//
// Modes (Config.SnapshotMode). The above is the "consistent" mode, the
// default on MariaDB. MySQL has no binlog_snapshot_* status, so there the
// default is the "watermark" mode (watermark.go): Flink's algorithm as
// published — LW from SHOW MASTER STATUS, the chunk's SELECT held in
// memory, HW, and the binlog slice before HW replayed into the chunk by key
// with a separate replica connection. Chunk bounds, tokens, resumption and
// the binlog filter by each chunk's HW are the same in both modes; only how
// a chunk's rows are made equal to the table state at its HW differs.

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
	"golang.org/x/sync/errgroup"

	"github.com/shardsync/shardsync/change"
)

// piece is part of a chunk handed from a reader to the emitter.
type piece struct {
	rows  []change.Row
	final bool
	hi    []change.Value // on final: the chunk's upper bound, nil if unbounded
	hw    binPos
	n     int64
	table *tableSnap
	cut   bool // on final: the table vanished while it was read
}

func send[T any](ctx context.Context, ch chan<- T, v T) error {
	select {
	case ch <- v:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// errShapeChanged: a table's definition is no longer the shard schema the
// stream has announced (a DDL ran on it during its snapshot). The chunk
// that saw it emitted nothing; the table is read on after its schema was
// evolved (evolveMoved).
var errShapeChanged = errors.New("the table's definition changed during its snapshot")

// maxSnapshotPasses bounds the snapshot passes restarted by DDL.
const maxSnapshotPasses = 1000

// runSnapshot reads every unfinished table and emits its chunks.
//
// DDL during the snapshot: every chunk checks, before it emits a row, that
// it reads the table with the shard schema the stream announced (see
// checkShape); a chunk that would not stops its table's reading without
// emitting anything. When the pass is over (no chunk half emitted), the
// schema of each such table is evolved in stream order as a DDL in the
// binlog would be — a compatible change is announced to the target before
// any row of the new shape, an incompatible one stops the stream with
// ErrIncompatibleSchema — and the tables are read on from their last
// finished chunk. Binlog events of the table written before the DDL are
// then read with their own table maps (isPast).
func (s *Source) runSnapshot(ctx context.Context) error {
	for pass := 1; ; pass++ {
		moved, err := s.snapshotPass(ctx)
		if err != nil {
			return err
		}
		if len(moved) == 0 {
			break
		}
		if pass == maxSnapshotPasses {
			return fmt.Errorf("snapshot: the definition of %s kept changing during %d snapshot passes", moved[0].id(), pass)
		}
		if err := s.evolveMoved(ctx, moved); err != nil {
			return err
		}
	}
	s.state.SnapshotDone = true
	s.enc.dirty = true
	s.setProgressDone()
	return s.emit(ctx, change.Event{Kind: change.EventProgress, Token: s.enc.encode(s.state)})
}

// evolveMoved applies the current definition of tables whose snapshot saw
// it change.
func (s *Source) evolveMoved(ctx context.Context, moved []*tableSnap) error {
	conn, err := s.sh.dial(ctx, "")
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, t := range moved {
		sh := s.shards[t.id()]
		cols, key, err := loadSchema(conn, t.id())
		if err != nil {
			return fmt.Errorf("reading the schema of %s after it changed during its snapshot: %w", t.id(), err)
		}
		if sameCols(sh.cols, cols) && slices.Equal(sh.key, key) {
			continue // e.g. "table definition has changed": read again
		}
		if err := s.snapshotDDL(ctx, sh, cols, key); err != nil {
			return err
		}
	}
	return nil
}

// snapshotDDL applies a shard's schema change found during its snapshot
// as alterBehavior does a DDL read from the binlog: schema.change.behavior
// and operator decisions apply. The change has no binlog position here
// (the binlog reader meets the DDL later, when the shard's schema already
// matches it): a stop is keyed by the shard's new definition, as the
// binlog's stops on column changes are, and `shardsync skip-event` takes
// that key like any other position.
func (s *Source) snapshotDDL(ctx context.Context, sh *shard, cols []shardCol, key []string) error {
	cfg := &s.sh.cfg
	stmt := "(a DDL on " + sh.id.String() + " during its snapshot)"
	stop := &EventStopError{Key: schemaChangeKey(sh.id, cols, key), Statement: stmt}
	dec, beh := cfg.Decisions[stop.Key], cfg.behavior()
	keep := "the target keeps its columns: values of columns the shard gained are not loaded, columns it lost are loaded as NULL"
	switch {
	case dec == DecisionSkip || (beh == BehaviorIgnore && dec != DecisionApply):
		s.mu.Lock()
		sh.cols, sh.key, sh.lastDDL = cols, key, stmt
		sh.remap(cfg)
		s.schemaGen++
		s.mu.Unlock()
		s.sh.log.Warn("schema change not applied to the target (schema.change.behavior ignore, or skipped by the operator)", "shard", sh.id.String(), "target", sh.target.id.String(), "statement", stmt)
		return nil
	case beh == BehaviorException && dec != DecisionApply:
		stop.Reason = fmt.Sprintf("schema.change.behavior is exception and the columns of shard %s changed during its snapshot", sh.id)
		stop.Apply, stop.Skip = "the change is applied to the target as under evolve (compatible changes only)", keep
		return fatal(stop)
	}
	if err := checkEvolution(sh.id, sh.cols, cols, sh.key, key, stmt); err != nil {
		stop.Reason, stop.Skip = err.Error(), keep
		return fatal(stop)
	}
	s.sh.log.Info("shard schema changed during its snapshot; evolving the target before reading on", "shard", sh.id.String())
	return s.changeShard(ctx, sh, cols, key, stmt)
}

// schemaChangeKey names a shard's column change for operator decisions:
// the shard and a digest of its new definition, the same whether the
// binlog's DDL or a snapshot chunk met the change first, and never the
// key of a later, different change of the same shard.
func schemaChangeKey(id change.TableID, cols []shardCol, key []string) string {
	h := fnv.New32a()
	for _, c := range cols {
		fmt.Fprintf(h, "%s %s,", c.name, c.typ.sql())
	}
	fmt.Fprintf(h, "key(%s)", strings.Join(key, ","))
	return fmt.Sprintf("schema:%s@%08x", id, h.Sum32())
}

// checkShape verifies, on a snapshot connection, that sh's table has the
// shard's announced columns. Inside a transaction the first statement
// takes the table's metadata lock until COMMIT, so the definition checked
// is the one the chunk's SELECT then reads.
func (s *Source) checkShape(conn *client.Conn, sh *shard) error {
	if _, err := conn.Execute("SELECT " + s.buildQueries(sh, 0).cols + " FROM " + quoteTable(sh.id) + " LIMIT 0"); err != nil {
		var me *mysql.MyError
		if errors.As(err, &me) && (me.Code == mysql.ER_BAD_FIELD_ERROR || me.Code == mysql.ER_TABLE_DEF_CHANGED) {
			return errShapeChanged
		}
		return fmt.Errorf("snapshot of %s: %w", sh.id, err)
	}
	cols, key, err := loadSchema(conn, sh.id)
	if err != nil {
		return fmt.Errorf("snapshot of %s: %w", sh.id, err)
	}
	if !sameCols(sh.cols, cols) || !slices.Equal(sh.key, key) {
		return errShapeChanged
	}
	return nil
}

// shapeMoved tells whether sh's table no longer has the shard's columns.
func (s *Source) shapeMoved(conn *client.Conn, sh *shard) (bool, error) {
	cols, key, err := loadSchema(conn, sh.id)
	if err != nil {
		return false, fmt.Errorf("snapshot of %s: %w", sh.id, err)
	}
	return !sameCols(sh.cols, cols) || !slices.Equal(sh.key, key), nil
}

// snapshotPass reads every unfinished table once and emits its chunks; it
// returns the tables whose reading stopped at a changed definition.
func (s *Source) snapshotPass(ctx context.Context) ([]*tableSnap, error) {
	var pending, moved []*tableSnap
	var movedMu sync.Mutex
	for _, t := range s.state.Tables {
		if !t.Done {
			pending = append(pending, t)
		}
	}
	if len(pending) > 0 {
		if s.mode == SnapshotConsistent && s.flavor != mysql.MariaDBFlavor {
			return nil, fmt.Errorf("%w: snapshot mode consistent needs MariaDB's consistent-snapshot binlog position (binlog_snapshot_file/position), which %s does not have: use snapshot mode watermark or auto", ErrPrerequisite, s.flavor)
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		g, gctx := errgroup.WithContext(ctx)
		ready := make(chan chan piece, s.sh.cfg.Readers)
		work := make(chan *tableSnap)
		g.Go(func() error {
			defer close(work)
			for _, t := range pending {
				if err := send(gctx, work, t); err != nil {
					return err
				}
			}
			return nil
		})
		for reader := range min(s.sh.cfg.Readers, len(pending)) {
			g.Go(func() error {
				conn, err := s.snapshotConn(gctx)
				if err != nil {
					return err
				}
				defer conn.Close()
				for t := range work {
					err := s.snapshotTable(gctx, conn, t, ready, reader)
					if errors.Is(err, errShapeChanged) {
						movedMu.Lock()
						moved = append(moved, t)
						movedMu.Unlock()
						continue
					}
					if err != nil {
						return err
					}
				}
				return nil
			})
		}
		waited := make(chan error, 1)
		go func() { waited <- g.Wait(); close(ready) }()
		emitErr := s.emitChunks(ctx, ready)
		cancel()
		for range ready { // let readers blocked on handoff see the cancel
		}
		readErr := <-waited
		if emitErr != nil {
			return nil, emitErr
		}
		if readErr != nil {
			return nil, readErr
		}
	}
	slices.SortFunc(moved, func(a, b *tableSnap) int { return strings.Compare(a.id().String(), b.id().String()) })
	return moved, nil
}

func (s *Source) emitChunks(ctx context.Context, ready <-chan chan piece) error {
	for ch := range ready {
		final, got := false, false
		for p := range ch {
			got = true
			if len(p.rows) > 0 {
				if err := s.emit(ctx, change.Event{Kind: change.EventRows, Rows: p.rows}); err != nil {
					return err
				}
			}
			if p.final {
				final = true
				t := p.table
				t.addChunk(p.hi, p.hw, p.n)
				if p.cut {
					t.Cut, t.Done = true, true
				}
				s.enc.dirty = true
				s.noteChunk(t, p.n)
				if err := s.emit(ctx, change.Event{Kind: change.EventCommit, Token: s.enc.encode(s.state)}); err != nil {
					return err
				}
			}
		}
		if !got {
			continue // the chunk stopped before its first row (errShapeChanged)
		}
		if !final {
			return errors.New("snapshot reader stopped in the middle of a chunk") // the reader's error follows
		}
	}
	return nil
}

func (s *Source) snapshotConn(ctx context.Context) (*client.Conn, error) {
	conn, err := s.sh.dial(ctx, "")
	if err != nil {
		return nil, err
	}
	for _, q := range []string{"SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ", "SET time_zone = '+00:00'"} {
		if _, err := conn.Execute(q); err != nil {
			conn.Close()
			return nil, fmt.Errorf("preparing a snapshot connection (%s): %w", q, err)
		}
	}
	return conn, nil
}

// snapshotPos starts a consistent-snapshot transaction and returns the
// binlog position its read view corresponds to.
func snapshotPos(conn *client.Conn) (binPos, error) {
	if _, err := conn.Execute("START TRANSACTION WITH CONSISTENT SNAPSHOT"); err != nil {
		return binPos{}, fmt.Errorf("starting a consistent snapshot: %w", err)
	}
	rows, err := query(conn, "SHOW STATUS LIKE 'binlog_snapshot_%'")
	if err != nil {
		return binPos{}, err
	}
	var p binPos
	for _, r := range rows {
		switch strings.ToLower(r[0]) {
		case "binlog_snapshot_file":
			p.File = r[1]
		case "binlog_snapshot_position":
			var n uint64
			_, _ = fmt.Sscan(r[1], &n)
			p.Pos = uint32(n)
		}
	}
	if p.File == "" {
		return binPos{}, fmt.Errorf("%w: the server reports no binlog_snapshot_file: binary logging must be on", ErrPrerequisite)
	}
	return p, nil
}

// chunkQueries are the SELECTs of a table's chunks. They run on the text
// protocol: the binary (prepared-statement) protocol costs go-mysql far more
// per value (it formats every temporal value with fmt), and the text forms
// of all supported types convert to exactly the same values (value.go).
// The lower key bound of a chunk is therefore rendered into the statement
// as SQL literals (keyLiteral), never as text taken from the data.
type chunkQueries struct {
	cols   string
	base   string // SELECT … FROM …
	keys   []string
	order  string // ORDER BY … LIMIT …
	first  string
	keyIdx []int
}

func (s *Source) buildQueries(sh *shard, limit int) chunkQueries {
	names := make([]string, len(sh.cols))
	for i, c := range sh.cols {
		names[i] = quoteIdent(c.name)
		if sh.kinds[i] == change.KindFloat {
			// The text protocol prints FLOAT with 6 significant digits; as a
			// DOUBLE it prints the float's exact value (shortest round trip).
			names[i] = "CAST(" + names[i] + " AS DOUBLE)"
		}
	}
	q := chunkQueries{cols: strings.Join(names, ", ")}
	q.base = "SELECT " + q.cols + " FROM " + quoteTable(sh.id)
	if len(sh.key) == 0 {
		q.first = q.base
		return q
	}
	q.keys = make([]string, len(sh.key))
	for i, k := range sh.key {
		q.keys[i] = quoteIdent(k)
		for j, c := range sh.cols {
			if c.name == k {
				q.keyIdx = append(q.keyIdx, j)
			}
		}
	}
	q.order = " ORDER BY " + strings.Join(q.keys, ", ") + fmt.Sprintf(" LIMIT %d", limit)
	q.first = q.base + q.order
	return q
}

// next is the SELECT of the chunk after key lo: the rows whose key is
// greater than lo, in the expanded OR form for composite keys.
func (q *chunkQueries) next(lo []change.Value) (string, error) {
	if len(lo) != len(q.keys) {
		return "", fmt.Errorf("chunk bound has %d values, the key has %d columns", len(lo), len(q.keys))
	}
	lits := make([]string, len(lo))
	for i, v := range lo {
		l, err := keyLiteral(v)
		if err != nil {
			return "", fmt.Errorf("chunk bound of key column %s: %w", q.keys[i], err)
		}
		lits[i] = l
	}
	var b strings.Builder
	b.WriteString(q.base)
	b.WriteString(" WHERE ")
	for i := range q.keys {
		if i > 0 {
			b.WriteString(" OR ")
		}
		b.WriteByte('(')
		for j := range i {
			b.WriteString(q.keys[j] + " = " + lits[j] + " AND ")
		}
		b.WriteString(q.keys[i] + " > " + lits[i])
		b.WriteByte(')')
	}
	b.WriteString(q.order)
	return b.String(), nil
}

func (s *Source) snapshotTable(ctx context.Context, conn *client.Conn, t *tableSnap, ready chan<- chan piece, reader int) error {
	sh := s.shards[t.id()]
	if sh == nil {
		return fmt.Errorf("snapshot of %s: the table is no longer routed", t.id())
	}
	if s.mode == SnapshotWatermark {
		return s.snapshotTableWatermark(ctx, conn, t, sh, ready, reader)
	}
	if t.Whole {
		return s.snapshotWhole(ctx, conn, t, sh, ready)
	}
	q := s.buildQueries(sh, s.sh.cfg.ChunkSize)
	var lo []change.Value
	if n := len(t.hi); n > 0 {
		lo = t.hi[n-1]
	}
	batchRows := s.sh.cfg.BatchRows
	for {
		query := q.first
		if lo != nil {
			var err error
			if query, err = q.next(lo); err != nil {
				return fmt.Errorf("snapshot of %s: %w", sh.id, err)
			}
		}
		// The chunk's channel holds all of its pieces, so the reader never
		// waits for the emitter while the server is sending the chunk; the
		// emitter writes the pieces as they are read.
		ch := make(chan piece, 1+s.sh.cfg.ChunkSize/batchRows)
		if err := send(ctx, ready, ch); err != nil {
			return err
		}
		hi, err := func() ([]change.Value, error) {
			defer close(ch)
			hw, err := snapshotPos(conn)
			if err != nil {
				return nil, fmt.Errorf("snapshot of %s: %w", sh.id, err)
			}
			if err := s.checkShape(conn, sh); err != nil {
				_, _ = conn.Execute("ROLLBACK")
				return nil, err
			}
			batch := make([]change.Row, 0, min(batchRows, s.sh.cfg.ChunkSize))
			last := make([]change.Value, len(q.keyIdx))
			var n int64
			var result mysql.Result
			err = conn.ExecuteSelectStreaming(query, &result, func(fv []mysql.FieldValue) error {
				after, err := s.snapshotRow(sh, fv, q.keyIdx, last)
				if err != nil {
					return err
				}
				batch = append(batch, change.Row{Op: change.Insert, Target: sh.target.id, Source: sh.id, After: after})
				n++
				if len(batch) == batchRows {
					// never blocks: ch has room for every piece of the chunk
					if err := send(ctx, ch, piece{rows: batch}); err != nil {
						return err
					}
					batch = make([]change.Row, 0, batchRows)
				}
				return nil
			}, nil)
			for retry := 0; err != nil && n == 0 && isTableDefChanged(err) && retry < 20; retry++ {
				// TRUNCATE (or another DDL) after the read view: read the
				// chunk again in a new one (its state at the new position)
				_, _ = conn.Execute("ROLLBACK")
				if hw, err = snapshotPos(conn); err != nil {
					return nil, fmt.Errorf("snapshot of %s: %w", sh.id, err)
				}
				err = conn.ExecuteSelectStreaming(query, &result, func(fv []mysql.FieldValue) error {
					after, err := s.snapshotRow(sh, fv, q.keyIdx, last)
					if err != nil {
						return err
					}
					batch = append(batch, change.Row{Op: change.Insert, Target: sh.target.id, Source: sh.id, After: after})
					n++
					if len(batch) == batchRows {
						if err := send(ctx, ch, piece{rows: batch}); err != nil {
							return err
						}
						batch = make([]change.Row, 0, batchRows)
					}
					return nil
				}, nil)
			}
			if err != nil {
				_, _ = conn.Execute("ROLLBACK")
				if isNoSuchTable(err) {
					s.sh.log.Warn("a shard vanished while its snapshot was read: its snapshot ends here", "shard", sh.id.String())
					return nil, send(ctx, ch, piece{rows: batch, final: true, hw: hw, n: n, table: t, cut: true})
				}
				return nil, fmt.Errorf("reading a chunk of %s: %w", sh.id, err)
			}
			if _, err := conn.Execute("COMMIT"); err != nil {
				return nil, fmt.Errorf("ending the snapshot transaction of %s: %w", sh.id, err)
			}
			var hi []change.Value
			if n >= int64(s.sh.cfg.ChunkSize) {
				hi = last
			}
			return hi, send(ctx, ch, piece{rows: batch, final: true, hi: hi, hw: hw, n: n, table: t})
		}()
		if err != nil || hi == nil {
			return err
		}
		lo = hi
	}
}

func (s *Source) snapshotWhole(ctx context.Context, conn *client.Conn, t *tableSnap, sh *shard, ready chan<- chan piece) error {
	q := s.buildQueries(sh, 0)
	hw, err := snapshotPos(conn)
	if err != nil {
		return fmt.Errorf("snapshot of %s: %w", sh.id, err)
	}
	defer func() { _, _ = conn.Execute("ROLLBACK") }()
	if err := s.checkShape(conn, sh); err != nil {
		return err
	}
	ch := make(chan piece, 2)
	if err := send(ctx, ready, ch); err != nil {
		return err
	}
	defer close(ch)
	batch := make([]change.Row, 0, s.sh.cfg.BatchRows)
	var n int64
	var result mysql.Result
	err = conn.ExecuteSelectStreaming(q.base, &result, func(row []mysql.FieldValue) error {
		after, err := s.snapshotRow(sh, row, nil, nil)
		if err != nil {
			return err
		}
		batch = append(batch, change.Row{Op: change.Insert, Target: sh.target.id, Source: sh.id, After: after})
		n++
		if len(batch) == s.sh.cfg.BatchRows {
			if err := send(ctx, ch, piece{rows: batch}); err != nil {
				return err
			}
			batch = make([]change.Row, 0, s.sh.cfg.BatchRows)
		}
		return nil
	}, nil)
	if err != nil {
		if isNoSuchTable(err) {
			s.sh.log.Warn("a shard vanished while its snapshot was read: its snapshot ends here", "shard", sh.id.String())
			return send(ctx, ch, piece{rows: batch, final: true, hw: hw, n: n, table: t, cut: true})
		}
		return fmt.Errorf("reading %s: %w", sh.id, err)
	}
	return send(ctx, ch, piece{rows: batch, final: true, hw: hw, n: n, table: t})
}

// snapshotRow converts one text-protocol result row of sh into its target
// row, and stores the values of the key columns keyIdx in key.
func (s *Source) snapshotRow(sh *shard, fv []mysql.FieldValue, keyIdx []int, key []change.Value) ([]change.Value, error) {
	if len(fv) != len(sh.cols) {
		return nil, fmt.Errorf("snapshot of %s: the result has %d columns, the shard has %d", sh.id, len(fv), len(sh.cols))
	}
	out := sh.newTargetRow()
	for i, c := range sh.cols {
		k := sh.kinds[i]
		v, err := snapshotValue(fv[i], c.typ, k)
		if err != nil {
			return nil, fmt.Errorf("snapshot of %s column %s: %w", sh.id, c.name, err)
		}
		for p, ki := range keyIdx {
			if ki == i {
				key[p] = v
			}
		}
		if j := sh.toTarget[i]; j >= 0 {
			out[j] = coerce(v, k, sh.targetKinds[i])
		}
	}
	return out, nil
}

// targetRow aligns shard values with the target schema.
func (s *Source) targetRow(sh *shard, vals []change.Value) []change.Value {
	out := sh.newTargetRow()
	for i, v := range vals {
		if j := sh.toTarget[i]; j >= 0 {
			out[j] = coerce(v, sh.kinds[i], sh.targetKinds[i])
		}
	}
	return out
}
