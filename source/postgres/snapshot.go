package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/shardsync/shardsync/change"
)

// snapshotTable reads the rest of t's snapshot: chunk after chunk, each in
// its own REPEATABLE READ transaction whose snapshot is recorded with the
// chunk (see the package comment). Each chunk's rows end with an
// EventCommit whose token includes the chunk, so a crash re-reads at most
// the chunks not yet committed.
//
// Failure: an error ends the stream; rows of an unfinished chunk were
// emitted without their EventCommit and are aborted with their epoch.
func (s *Source) snapshotTable(ctx context.Context, t *tableState) error {
	keyIdx := -1
	if t.Chunked {
		for i, c := range t.Cols {
			if c.Name == t.Key[0] {
				keyIdx = i
			}
		}
	}
	for !t.Done {
		var lo *int64
		if n := len(t.Chunks); n > 0 {
			lo = t.Chunks[n-1].Hi
		}
		if err := s.readChunk(ctx, t, keyIdx, lo); err != nil {
			return fmt.Errorf("snapshotting %s: %w", t.id(), err)
		}
	}
	s.log.Info("table snapshotted", "table", t.id().String(), "rows", t.Rows, "chunks", t.NChunks)
	return nil
}

func (s *Source) readChunk(ctx context.Context, t *tableState, keyIdx int, lo *int64) error {
	tx, err := s.sql.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var snap string
	// The first statement fixes the transaction's snapshot.
	if err := tx.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&snap); err != nil {
		return fmt.Errorf("taking the chunk snapshot: %w", err)
	}
	names := make([]string, len(t.Cols))
	for i, c := range t.Cols {
		names[i] = quoteIdent(c.Name)
	}
	q := "SELECT " + strings.Join(names, ", ") + " FROM " + quoteTable(t.id())
	var args []any
	if t.Chunked {
		k := quoteIdent(t.Key[0])
		if lo != nil {
			q += " WHERE " + k + " > $1"
			args = append(args, *lo)
		}
		q += " ORDER BY " + k + " LIMIT " + strconv.Itoa(s.cfg.ChunkSize)
	}
	rows, err := tx.Query(ctx, q, append([]any{pgx.QueryResultFormats{pgx.TextFormatCode}}, args...)...)
	if err != nil {
		return fmt.Errorf("reading rows: %w", err)
	}
	cts := t.shardColumns()
	var batch []change.Row
	var n int
	var last *int64
	tg, _ := s.m.TargetOf(t.id())
	for rows.Next() {
		raw := rows.RawValues()
		vals := make([]change.Value, len(raw))
		for i, b := range raw {
			if b == nil {
				continue
			}
			v, err := parseValue(b, cts[i].Type)
			if err != nil {
				rows.Close()
				return fmt.Errorf("column %s: %w", t.Cols[i].Name, err)
			}
			vals[i] = v
		}
		if keyIdx >= 0 {
			k := vals[keyIdx].(int64)
			last = &k
		}
		after, err := s.m.TargetRow(t.id(), vals)
		if err != nil {
			rows.Close()
			return err
		}
		batch = append(batch, change.Row{Op: change.Insert, Target: tg, Source: t.id(), After: after})
		n++
		if len(batch) >= s.cfg.BatchRows {
			if err := s.emit(ctx, change.Event{Kind: change.EventRows, Rows: batch}); err != nil {
				rows.Close()
				return err
			}
			batch = nil
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading rows: %w", err)
	}
	var after string
	if err := tx.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&after); err != nil {
		return fmt.Errorf("reading the WAL position after the chunk snapshot: %w", err)
	}
	afterLSN, err := parseLSN(after)
	if err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	if _, err := parseSnapshot(snap); err != nil {
		return err
	}
	c := chunk{Snap: snap, After: afterLSN}
	if t.Chunked && n == s.cfg.ChunkSize {
		c.Hi = last
	} else {
		t.Done = true
	}
	t.Chunks = append(t.Chunks, c)
	t.NChunks++
	t.Rows += int64(n)
	s.horizon = max(s.horizon, afterLSN)
	if len(batch) > 0 {
		if err := s.emit(ctx, change.Event{Kind: change.EventRows, Rows: batch}); err != nil {
			return err
		}
	}
	s.setProgress(t)
	return s.emit(ctx, change.Event{Kind: change.EventCommit, Token: s.st.encode()})
}
