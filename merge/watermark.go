package merge

// Watermark snapshot mode (Config.SnapshotMode "watermark"): Flink CDC's
// incremental snapshot, for servers without MariaDB's consistent-snapshot
// binlog position (MySQL), see the design comment in snapshot.go.
//
// Per chunk: LW = the binlog end (SHOW MASTER STATUS, or SHOW BINARY LOG
// STATUS on MySQL ≥ 8.4, with the GTID position), the chunk's SELECT
// (keyset pagination as in the consistent mode, an autocommit statement,
// held in memory in key order), HW = the binlog end again. When the binlog
// moved, a separate BinlogSyncer reads the slice up to HW and applies the
// row images of this table to the chunk by key: a before image whose key is
// in the chunk's range removes that key, an after image whose key is in the
// range is upserted (row images are FULL, so the last image of a key is
// its state at HW). The merged chunk is the table state at HW over the
// chunk's range; HW is the chunk's watermark for the binlog filter, exactly
// as in the consistent mode.
//
// The replayed slice starts at the LW of the previous chunk this reader
// read (for a reader's first chunk of a table: a position taken before it),
// not at the chunk's own LW. A server writes a transaction to the binlog
// before it commits it in InnoDB, so SHOW MASTER STATUS can include a
// transaction the SELECT that follows does not yet see; starting the replay
// one step earlier covers that window (replaying a change the SELECT
// already saw is harmless: the last image of a key wins). The race remains
// for the first chunk a reader reads of a table, within the microseconds
// between a binlog write and its commit — the same window Flink CDC has.
//
// Server ids: reader i (0-based) of the snapshot reads its slices as
// replica Config.ServerID+1+i (Config.backfillServerID), one connection per
// slice; the main binlog reader uses Config.ServerID and starts only after
// the snapshot.
//
// Tables read whole (no primary key, or a key whose order Go cannot
// reproduce) cannot be merged by key: their rows are held in memory and
// the read is retried until the slice of its window has no change of the
// table (up to wholeAttempts times).

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/shardsync/shardsync/change"
)

const wholeAttempts = 5

// chunkRow is one row of a chunk being merged.
type chunkRow struct {
	key   []change.Value // shard values of the key columns
	after []change.Value // target row
}

// chunkBuf is a chunk's rows in key order and its key range (lo, hi]
// (nil bounds are unbounded).
type chunkBuf struct {
	rows   []chunkRow
	lo, hi []change.Value
}

func (b *chunkBuf) inRange(key []change.Value) bool {
	if key == nil {
		return false
	}
	if b.lo != nil && compareKeys(key, b.lo) <= 0 {
		return false
	}
	return b.hi == nil || compareKeys(key, b.hi) <= 0
}

func (b *chunkBuf) find(key []change.Value) (int, bool) {
	i := sort.Search(len(b.rows), func(i int) bool { return compareKeys(b.rows[i].key, key) >= 0 })
	return i, i < len(b.rows) && compareKeys(b.rows[i].key, key) == 0
}

func (b *chunkBuf) upsert(key, after []change.Value) {
	if i, ok := b.find(key); ok {
		b.rows[i].after = after
	} else {
		b.rows = slices.Insert(b.rows, i, chunkRow{key: key, after: after})
	}
}

func (b *chunkBuf) remove(key []change.Value) bool {
	i, ok := b.find(key)
	if ok {
		b.rows = slices.Delete(b.rows, i, i+1)
	}
	return ok
}

// sendRows hands rows to a new chunk channel in BatchRows pieces, the
// last one final, and queues the channel for the emitter.
func (s *Source) sendRows(ctx context.Context, ready chan<- chan piece, rows []change.Row, last piece) error {
	br := s.sh.cfg.BatchRows
	ch := make(chan piece, 1+len(rows)/br)
	for len(rows) > br {
		ch <- piece{rows: rows[:br:br]}
		rows = rows[br:]
	}
	last.rows = rows
	last.final = true
	ch <- last
	close(ch)
	return send(ctx, ready, ch)
}

func (s *Source) snapshotTableWatermark(ctx context.Context, conn *client.Conn, t *tableSnap, sh *shard, ready chan<- chan piece, reader int) error {
	from, err := s.startPos(ctx, conn, xaStartWait)
	if err != nil {
		return fmt.Errorf("snapshot of %s: %w", sh.id, err)
	}
	if t.Whole {
		return s.snapshotWholeWatermark(ctx, conn, t, sh, ready, reader, from)
	}
	size := s.sh.cfg.ChunkSize
	q := s.buildQueries(sh, size)
	var lo []change.Value
	if n := len(t.hi); n > 0 {
		lo = t.hi[n-1]
	}
	for {
		query := q.first
		if lo != nil {
			if query, err = q.next(lo); err != nil {
				return fmt.Errorf("snapshot of %s: %w", sh.id, err)
			}
		}
		lw, err := s.startPos(ctx, conn, xaStartWait)
		if err != nil {
			return fmt.Errorf("low watermark of a chunk of %s: %w", sh.id, err)
		}
		buf := chunkBuf{lo: lo, rows: make([]chunkRow, 0, size)}
		var result mysql.Result
		err = conn.ExecuteSelectStreaming(query, &result, func(fv []mysql.FieldValue) error {
			key := make([]change.Value, len(q.keyIdx))
			after, err := s.snapshotRow(sh, fv, q.keyIdx, key)
			if err != nil {
				return err
			}
			buf.rows = append(buf.rows, chunkRow{key: key, after: after})
			return nil
		}, nil)
		// The SELECT ran outside a transaction: a DDL may have changed the
		// table under it (it is also seen in the binlog slice when rows
		// of the new shape follow it).
		if moved, serr := s.shapeMoved(conn, sh); serr != nil || moved {
			if moved {
				return errShapeChanged
			}
			return serr
		}
		if err != nil {
			return fmt.Errorf("reading a chunk of %s: %w", sh.id, err)
		}
		hw, err := masterPos(conn, s.flavor)
		if err != nil {
			return fmt.Errorf("high watermark of a chunk of %s: %w", sh.id, err)
		}
		if len(buf.rows) >= size {
			buf.hi = buf.rows[len(buf.rows)-1].key
		}
		if compareFilePos(from.File, from.Pos, hw.File, hw.Pos) < 0 {
			changed := false
			_, err := s.replaySlice(ctx, reader, sh, from, hw, func(img *shard, before, after []change.Value) {
				if before != nil {
					if k := filterKey(img, before, t.KeyKinds); buf.inRange(k) && buf.remove(k) {
						changed = true
					}
				}
				if after != nil {
					if k := filterKey(img, after, t.KeyKinds); buf.inRange(k) {
						buf.upsert(k, s.targetRow(img, after))
						changed = true
					}
				}
			})
			if err != nil {
				return err
			}
			if changed {
				s.merged.Add(1)
				s.sh.log.Debug("binlog slice merged into a snapshot chunk", "shard", sh.id.String(), "from", from.String(), "hw", hw.String())
			}
		}
		from = lw
		rows := make([]change.Row, len(buf.rows))
		for i, r := range buf.rows {
			rows[i] = change.Row{Op: change.Insert, Target: sh.target.id, Source: sh.id, After: r.after}
		}
		if err := s.sendRows(ctx, ready, rows, piece{hi: buf.hi, hw: hw, n: int64(len(rows)), table: t}); err != nil {
			return err
		}
		if buf.hi == nil {
			return nil
		}
		lo = buf.hi
	}
}

// snapshotWholeWatermark reads a table without a usable chunk key in the
// watermark mode: the read is kept only if no change of the table falls in
// its window.
func (s *Source) snapshotWholeWatermark(ctx context.Context, conn *client.Conn, t *tableSnap, sh *shard, ready chan<- chan piece, reader int, from binPos) error {
	q := s.buildQueries(sh, 0)
	for attempt := 1; ; attempt++ {
		lw, err := s.startPos(ctx, conn, xaStartWait)
		if err != nil {
			return fmt.Errorf("low watermark of %s: %w", sh.id, err)
		}
		var rows []change.Row
		var result mysql.Result
		err = conn.ExecuteSelectStreaming(q.base, &result, func(fv []mysql.FieldValue) error {
			after, err := s.snapshotRow(sh, fv, nil, nil)
			if err != nil {
				return err
			}
			rows = append(rows, change.Row{Op: change.Insert, Target: sh.target.id, Source: sh.id, After: after})
			return nil
		}, nil)
		if moved, serr := s.shapeMoved(conn, sh); serr != nil || moved {
			if moved {
				return errShapeChanged
			}
			return serr
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", sh.id, err)
		}
		hw, err := masterPos(conn, s.flavor)
		if err != nil {
			return fmt.Errorf("high watermark of %s: %w", sh.id, err)
		}
		touched := 0
		if compareFilePos(from.File, from.Pos, hw.File, hw.Pos) < 0 {
			if touched, err = s.replaySlice(ctx, reader, sh, from, hw, nil); err != nil {
				return err
			}
		}
		if touched == 0 {
			return s.sendRows(ctx, ready, rows, piece{hw: hw, n: int64(len(rows)), table: t})
		}
		if attempt == wholeAttempts {
			return fmt.Errorf("%w: %s has no primary key usable for chunks, so the watermark snapshot reads it whole and cannot merge changes into it, but it changed during each of %d reads: pause writes to it during its snapshot, or on MariaDB use snapshot mode consistent", ErrPrerequisite, sh.id, attempt)
		}
		s.sh.log.Info("table read whole changed during its read; reading it again", "shard", sh.id.String(), "attempt", attempt)
		from = lw
	}
}

// replaySlice reads the binlog from the transaction boundary from up to
// the boundary to with its own replica connection (server id
// Config.backfillServerID(reader)) and calls apply (if not nil) with the
// shard values of every row image of sh in it: before is nil for an
// insert, after nil for a delete, img the shard as of the image's table
// map (sh, or a view of it for rows written before a change sh already
// has). It returns the number of row images of sh. A DDL on sh's table in
// the slice, or rows of a shape sh does not have yet, end it with
// errShapeChanged.
func (s *Source) replaySlice(ctx context.Context, reader int, sh *shard, from, to binPos, apply func(img *shard, before, after []change.Value)) (int, error) {
	cfg := s.sh.cfg
	host, port, err := splitAddr(cfg.Addr)
	if err != nil {
		return 0, err
	}
	id := cfg.backfillServerID(reader)
	syncer := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{
		ServerID:                id,
		Flavor:                  s.flavor,
		Host:                    host,
		Port:                    port,
		User:                    cfg.User,
		Password:                cfg.Password,
		UseDecimal:              true,
		TimestampStringLocation: time.UTC,
		HeartbeatPeriod:         cfg.Heartbeat,
		ReadTimeout:             cfg.ReadTimeout,
		DisableRetrySync:        true,
		Logger:                  s.sh.log.With("component", "go-mysql", "replica", id),
		EventCacheCount:         256,
	})
	defer syncer.Close()
	what := fmt.Sprintf("reading the binlog slice %s … %s of %s for a snapshot chunk (replica server id %d)", from, to, sh.id, id)
	st, err := syncer.StartSync(mysql.Position{Name: from.File, Pos: from.Pos})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	file := from.File
	images := 0
	var checked *replication.TableMapEvent
	// XA transactions (see xa.go) change the table at their XA COMMIT:
	// the row images of a prepare group are held (cur while it is read,
	// then prepared by xid) and applied at an XA COMMIT inside the slice.
	// A transaction prepared in the slice and decided after it was not
	// committed when the chunk was read. One prepared before the slice and
	// committed in it had committed before the chunk's SELECT: the slice
	// starts at a low watermark read when no XA transaction was prepared
	// (startPos), so it was decided before that SELECT began.
	type image struct {
		sh            *shard
		before, after []change.Value
	}
	var cur []image
	inXA := false
	prepared := map[string][]image{}
	applyAll := func(imgs []image) {
		for _, im := range imgs {
			images++
			if apply != nil {
				apply(im.sh, im.before, im.after)
			}
		}
	}
	img := sh
	for {
		wctx, cancel := context.WithTimeout(ctx, cfg.ReadTimeout)
		ev, err := st.GetEvent(wctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("no binlog event or heartbeat for %s: the connection is dead", cfg.ReadTimeout)
			}
			if terr := classifyStreamError(err, from.String()); terr != nil {
				err = terr
			}
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		h := ev.Header
		switch e := ev.Event.(type) {
		case *replication.RotateEvent:
			file = string(e.NextLogName)
			continue
		case *replication.MariadbGTIDEvent:
			inXA, cur = e.Flags&mariaFlPreparedXA != 0, nil
		case *replication.GTIDEvent, *replication.GtidTaggedLogEvent:
			inXA, cur = false, nil
		case *replication.QueryEvent:
			if ddl := parseDDL(string(e.Schema), string(e.Query)); ddl.kind != ddlOther && slices.Contains(ddl.tables, sh.id) {
				return 0, errShapeChanged
			}
			verb, xid, onePhase, err := xaStatement(strings.TrimSpace(string(e.Query)))
			if err != nil {
				return 0, fmt.Errorf("%s: %w", what, err)
			}
			switch {
			case verb == "START":
				inXA, cur = true, nil
			case verb == "COMMIT" && inXA && onePhase:
				applyAll(cur)
				inXA, cur = false, nil
			case verb == "COMMIT":
				applyAll(prepared[xid])
				delete(prepared, xid)
			case verb == "ROLLBACK":
				delete(prepared, xid)
			}
		case *replication.GenericEvent:
			if h.EventType == replication.XA_PREPARE_LOG_EVENT {
				xid, onePhase, err := parseXAPrepare(e.Data)
				if err != nil {
					return 0, fmt.Errorf("%s: %w", what, err)
				}
				if onePhase {
					applyAll(cur)
				} else if len(cur) > 0 {
					prepared[xid] = cur
				}
				inXA, cur = false, nil
			}
		case *replication.RowsEvent:
			if string(e.Table.Schema) != sh.id.Database || string(e.Table.Table) != sh.id.Table {
				break
			}
			if e.Table != checked {
				cols, key, err := colsFromTableMap(e.Table, s.cs)
				if err != nil {
					return 0, fmt.Errorf("%s: %w", what, err)
				}
				switch {
				case sameCols(sh.cols, cols):
					img = sh
				case slices.Equal(sh.key, key) && isPast(cols, sh.cols):
					img = pastView(sh, cols, &s.sh.cfg)
				default:
					return 0, errShapeChanged
				}
				checked = e.Table
			}
			op := rowOp(h.EventType)
			if op == 0 {
				return 0, fmt.Errorf("%s: binlog event %s is not supported", what, h.EventType)
			}
			step := 1
			if op == change.Update {
				step = 2
			}
			for i := 0; i+step <= len(e.Rows); i += step {
				first, err := imageValues(img, e.Rows[i], nil)
				if err != nil {
					return 0, fmt.Errorf("%s: %w", what, err)
				}
				im := image{sh: img}
				switch op {
				case change.Insert:
					im.after = first
				case change.Delete:
					im.before = first
				default:
					second, err := imageValues(img, e.Rows[i+1], nil)
					if err != nil {
						return 0, fmt.Errorf("%s: %w", what, err)
					}
					im.before, im.after = first, second
				}
				if inXA {
					cur = append(cur, im)
				} else {
					applyAll([]image{im})
				}
			}
		}
		if h.LogPos > 0 && h.Flags&replication.LOG_EVENT_ARTIFICIAL_F == 0 && compareFilePos(file, h.LogPos, to.File, to.Pos) >= 0 {
			return images, nil
		}
	}
}
