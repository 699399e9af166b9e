package dorisemu

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// JournalFile is the name of the state journal inside Options.Dir.
const JournalFile = "doris-emulator.journal"

// journal is an append-only JSON-lines log of durable changes. Each record
// is written with one write(2), so it survives a kill -9 of the process.
type journal struct {
	f    *os.File
	path string
}

// jrec is one journal record. K says which fields matter:
// ddl(DB=session db, SQL), begin, precommit, commit, visible, abort, purge.
type jrec struct {
	K         string        `json:"k"`
	DB        string        `json:"db,omitempty"`
	SQL       string        `json:"sql,omitempty"`
	ID        int64         `json:"id,omitempty"`
	Label     string        `json:"label,omitempty"`
	Table     string        `json:"table,omitempty"`
	TwoPC     bool          `json:"2pc,omitempty"`
	T         time.Time     `json:"t,omitzero"`
	PublishAt time.Time     `json:"publish_at,omitzero"`
	Timeout   time.Duration `json:"timeout,omitempty"`
	Reason    string        `json:"reason,omitempty"`
	Cols      []string      `json:"cols,omitempty"`
	Ops       []jop         `json:"ops,omitempty"`
	Stats     *loadStats    `json:"stats,omitempty"`
}

type jop struct {
	D bool  `json:"d,omitempty"`
	V []any `json:"v"`
}

func encodeOps(ops []rowOp) []jop {
	if len(ops) == 0 {
		return nil
	}
	out := make([]jop, len(ops))
	for i, op := range ops {
		out[i] = jop{D: op.Del, V: op.Vals}
	}
	return out
}

func openJournal(dir string) (*journal, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating emulator state dir %s: %w", dir, err)
	}
	p := filepath.Join(dir, JournalFile)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening emulator journal %s: %w", p, err)
	}
	return &journal{f: f, path: p}, nil
}

func (j *journal) close() error {
	if err := j.f.Close(); err != nil {
		return fmt.Errorf("closing emulator journal %s: %w", j.path, err)
	}
	return nil
}

// appendJournal writes rec if persistence is on. e.mu must be held.
func (e *Emulator) appendJournal(rec jrec) {
	if e.journal == nil || e.replaying {
		return
	}
	b, err := json.Marshal(rec)
	if err != nil {
		e.log.Error("encoding journal record", "kind", rec.K, "err", err)
		return
	}
	if _, err := e.journal.f.Write(append(b, '\n')); err != nil {
		e.log.Error("writing journal record: state after a restart will miss this change", "kind", rec.K, "err", err)
	}
}

// replay rebuilds state from the journal. A torn last line (crash mid-write)
// is ignored; PREPARE txns are dropped, as a restarted FE forgets them.
func (e *Emulator) replay() error {
	if _, err := e.journal.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("reading emulator journal %s: %w", e.journal.path, err)
	}
	e.replaying = true
	defer func() { e.replaying = false }()
	r := bufio.NewReaderSize(e.journal.f, 1<<20)
	lineNo := 0
	for {
		line, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			if len(bytes.TrimSpace(line)) > 0 {
				e.log.Warn("ignoring torn last journal record", "path", e.journal.path, "line", lineNo+1)
			}
			break
		}
		if err != nil {
			return fmt.Errorf("reading emulator journal %s: %w", e.journal.path, err)
		}
		lineNo++
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.UseNumber()
		var rec jrec
		if err := dec.Decode(&rec); err != nil {
			return fmt.Errorf("decoding emulator journal %s line %d (delete the file to start empty): %w", e.journal.path, lineNo, err)
		}
		if err := e.replayRecord(rec); err != nil {
			return fmt.Errorf("replaying emulator journal %s line %d: %w", e.journal.path, lineNo, err)
		}
	}
	// A restarted FE has no PREPARE txns ("if prepare txn lost, the
	// following commit will just be failed").
	for id, t := range e.txns {
		if t.State == StatePrepare {
			t.db.running--
			e.dropTxn(t)
			delete(e.txns, id)
		}
	}
	// Keep appending after the last complete record.
	if _, err := e.journal.f.Seek(0, io.SeekEnd); err != nil {
		return fmt.Errorf("seeking emulator journal %s: %w", e.journal.path, err)
	}
	return nil
}

func (e *Emulator) replayRecord(rec jrec) error {
	if rec.K == "ddl" {
		s := &session{db: rec.DB}
		if _, err := e.execLocked(s, rec.SQL); err != nil {
			return fmt.Errorf("re-running %q: %w", rec.SQL, err)
		}
		return nil
	}
	if rec.K == "begin" {
		db := e.dbs[rec.DB]
		if db == nil {
			return fmt.Errorf("txn %d names unknown database %s", rec.ID, rec.DB)
		}
		tbl := db.tables[rec.Table]
		var tid int64
		if tbl != nil {
			tid = tbl.ID
		}
		t := &txn{ID: rec.ID, Label: rec.Label, db: db, Table: rec.Table, TableID: tid, State: StatePrepare,
			TwoPhase: rec.TwoPC, Timeout: rec.Timeout, Prepared: rec.T}
		e.addTxn(t)
		e.nextTxnID = max(e.nextTxnID, rec.ID)
		return nil
	}
	t := e.txns[rec.ID]
	if t == nil {
		return fmt.Errorf("%s record for unknown txn %d", rec.K, rec.ID)
	}
	switch rec.K {
	case "precommit":
		t.cols, t.ops, t.stats = rec.Cols, e.decodeOps(t, rec.Cols, rec.Ops), derefStats(rec.Stats)
		t.Precommit = rec.T
		e.setState(t, StatePrecommitted)
	case "commit":
		if rec.Cols != nil || rec.Stats != nil {
			t.cols, t.ops, t.stats = rec.Cols, e.decodeOps(t, rec.Cols, rec.Ops), derefStats(rec.Stats)
		}
		t.Committed, t.PublishAt = rec.T, rec.PublishAt
		e.commitSeq++
		t.commitSeq = e.commitSeq
		e.setState(t, StateCommitted)
		e.publishQ = append(e.publishQ, t)
		e.committed = append(e.committed, t)
	case "visible":
		if len(e.publishQ) > 0 && e.publishQ[0] == t {
			e.publishQ = e.publishQ[1:]
		}
		if tbl := t.db.tableByID(t.TableID); tbl != nil {
			e.applyOps(tbl, t)
		}
		e.setState(t, StateVisible)
		t.Finished = rec.T
	case "abort":
		t.Reason = rec.Reason
		t.ops = nil
		e.setState(t, StateAborted)
		t.Finished = rec.T
	case "purge":
		e.dropTxn(t)
		if i := indexOf(t.db.final, t); i >= 0 {
			t.db.final = append(t.db.final[:i], t.db.final[i+1:]...)
		}
	default:
		return fmt.Errorf("unknown record kind %q", rec.K)
	}
	return nil
}

func derefStats(s *loadStats) loadStats {
	if s == nil {
		return loadStats{}
	}
	return *s
}

func indexOf(ts []*txn, t *txn) int {
	for i, x := range ts {
		if x == t {
			return i
		}
	}
	return -1
}

// decodeOps turns journal ops back into stored values using the column
// types of the txn's table.
func (e *Emulator) decodeOps(t *txn, cols []string, ops []jop) []rowOp {
	if len(ops) == 0 {
		return nil
	}
	types := make([]colType, len(cols))
	if tbl := t.db.tableByID(t.TableID); tbl != nil {
		for i, c := range cols {
			if j := tbl.colIndex(c); j >= 0 {
				types[i] = tbl.Columns[j].Type
			} else if strings.EqualFold(c, DeleteSignColumn) {
				types[i] = colType{Kind: "TINYINT"}
			}
		}
	}
	out := make([]rowOp, len(ops))
	for i, op := range ops {
		vals := make([]any, len(op.V))
		for j, v := range op.V {
			if j < len(types) {
				vals[j] = normalizeStored(types[j], v)
			}
		}
		out[i] = rowOp{Del: op.D, Vals: vals}
	}
	return out
}
