package doris_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/doris"
	"github.com/shardsync/shardsync/testenv/dorisemu"
	"github.com/shardsync/shardsync/twopc"
)

const emuPass = "emu-Pa55:word"

func startEmu(t *testing.T, opts dorisemu.Options) *dorisemu.Emulator {
	t.Helper()
	opts.FEHost, opts.BEHost = "127.0.0.1", "127.0.0.2"
	opts.User, opts.Password = "root", emuPass
	e, err := dorisemu.Start(opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, e.Close()) })
	return e
}

type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func emuSink(t *testing.T, e *dorisemu.Emulator, edit func(*doris.Config)) (*doris.Sink, *logBuf) {
	t.Helper()
	cfg := doris.DefaultConfig()
	cfg.FENodes = []string{e.FEHTTPAddr()}
	cfg.User, cfg.Password = "root", emuPass
	cfg.QueryAddr = e.QueryAddr()
	cfg.LabelPrefix = "ss"
	cfg.Buckets, cfg.Replication = 1, 1
	cfg.RetryWaitMin, cfg.RetryWaitMax = 5*time.Millisecond, 50*time.Millisecond
	cfg.Retries = 3
	cfg.RequestTimeout = 10 * time.Second
	if edit != nil {
		edit(&cfg)
	}
	logs := &logBuf{}
	s, err := doris.New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, s.Close())
		require.NotContains(t, logs.String(), emuPass, "the password leaked into the logs")
	})
	return s, logs
}

type recorder struct {
	mu     sync.Mutex
	labels []string
}

func (r *recorder) Intend(_ context.Context, p twopc.Prepared) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.labels = append(r.labels, p.Label)
	return nil
}

var target = change.TableID{Database: "demo", Table: "all_emp"}

func empSchema(id change.TableID) change.TableSchema {
	return change.TableSchema{Target: id, Schema: change.Schema{
		Columns: []change.Column{
			{Name: "database_name", Type: change.Type{Kind: change.KindString, SQL: "varchar(64)", Length: 64}},
			{Name: "table_name", Type: change.Type{Kind: change.KindString, SQL: "varchar(64)", Length: 64}},
			{Name: "id", Type: change.Type{Kind: change.KindInt, SQL: "int(11)"}},
			{Name: "name", Type: change.Type{Kind: change.KindString, SQL: "varchar(32)", Length: 32}, Nullable: true},
			{Name: "salary", Type: change.Type{Kind: change.KindDecimal, SQL: "decimal(12,2)", Precision: 12, Scale: 2}, Nullable: true},
			{Name: "hired", Type: change.Type{Kind: change.KindDateTime, SQL: "datetime(6)", Precision: 6}, Nullable: true},
		},
		Key: []string{"id"},
	}}
}

func ins(id change.TableID, shard string, key int64, name change.Value) change.Row {
	return change.Row{Op: change.Insert, Target: id, Source: change.TableID{Database: shard, Table: "employees_1"},
		After: []change.Value{shard, "employees_1", key, name, change.Decimal("1234567890.12"), change.DateTime("2024-01-02 03:04:05.123456")}}
}

// epoch runs one epoch to pre-commit.
func epoch(t *testing.T, s *doris.Sink, n uint64, rows ...change.Row) []twopc.Prepared {
	t.Helper()
	ctx := t.Context()
	tx, err := s.Begin(ctx, n, &recorder{})
	require.NoError(t, err)
	require.NoError(t, tx.Write(ctx, rows))
	prep, err := tx.PreCommit(ctx)
	require.NoError(t, err)
	return prep
}

func commit(t *testing.T, s *doris.Sink, p twopc.Prepared) twopc.Outcome {
	t.Helper()
	o, err := s.Commit(t.Context(), p)
	require.NoError(t, err)
	return o
}

func rowsByKey(t *testing.T, e *dorisemu.Emulator, id change.TableID) map[string]map[string]any {
	t.Helper()
	rows, err := e.Rows(id.Database, id.Table)
	require.NoError(t, err)
	out := map[string]map[string]any{}
	for _, r := range rows {
		out[fmt.Sprintf("%v/%v/%v", r["database_name"], r["table_name"], r["id"])] = r
	}
	return out
}

func TestEmuLoadCommitDeletes(t *testing.T) {
	e := startEmu(t, dorisemu.Options{})
	s, _ := emuSink(t, e, nil)
	ctx := t.Context()
	require.NoError(t, s.ApplySchema(ctx, empSchema(target)))

	// Shards reuse keys: the created key includes the metadata columns.
	prep := epoch(t, s, 1, ins(target, "emp_1", 1, "ann"), ins(target, "emp_2", 1, ""), ins(target, "emp_1", 2, nil),
		ins(target, "emp_1", 3, "😀 four-byte"))
	require.Len(t, prep, 1)
	require.Equal(t, "ss_demo:all_emp_1", prep[0].Label)
	info, ok := e.Txn(prep[0].Label)
	require.True(t, ok)
	require.Equal(t, dorisemu.TxnState("PRECOMMITTED"), info.State)
	require.Empty(t, rowsByKey(t, e, target), "pre-committed data is invisible")
	require.Equal(t, twopc.Committed, commit(t, s, prep[0]))

	got := rowsByKey(t, e, target)
	require.Len(t, got, 4)
	require.Equal(t, "ann", got["emp_1/employees_1/1"]["name"])
	require.Equal(t, "", got["emp_2/employees_1/1"]["name"], "empty string stays empty")
	require.Nil(t, got["emp_1/employees_1/2"]["name"], "NULL stays NULL")
	require.Equal(t, "😀 four-byte", got["emp_1/employees_1/3"]["name"])
	require.Equal(t, "1234567890.12", fmt.Sprint(got["emp_1/employees_1/1"]["salary"]))
	require.Contains(t, fmt.Sprint(got["emp_1/employees_1/1"]["hired"]), "03:04:05.123456")

	// Epoch 2: a delete, an update in place and an update that moves the key.
	upd := ins(target, "emp_1", 1, "ann2")
	upd.Op, upd.Before = change.Update, ins(target, "emp_1", 1, "ann").After
	move := ins(target, "emp_1", 30, nil)
	move.Op, move.Before = change.Update, ins(target, "emp_1", 3, "😀 four-byte").After
	del := change.Row{Op: change.Delete, Target: target, Before: ins(target, "emp_2", 1, "").After}
	prep = epoch(t, s, 2, upd, move, del)
	require.Equal(t, twopc.Committed, commit(t, s, prep[0]))
	got = rowsByKey(t, e, target)
	require.Len(t, got, 3)
	require.Equal(t, "ann2", got["emp_1/employees_1/1"]["name"])
	require.Contains(t, got, "emp_1/employees_1/30")
	require.NotContains(t, got, "emp_1/employees_1/3")
	require.NotContains(t, got, "emp_2/employees_1/1")

	// Commit is idempotent: a repeat finds it already committed/visible.
	require.Equal(t, twopc.Committed, commit(t, s, prep[0]))
}

func TestEmuCommitOutcomes(t *testing.T) {
	e := startEmu(t, dorisemu.Options{PublishDelay: time.Hour, PrecommitTimeout: time.Minute})
	s, _ := emuSink(t, e, nil)
	ctx := t.Context()
	require.NoError(t, s.ApplySchema(ctx, empSchema(target)))

	t.Run("success then already committed then already visible", func(t *testing.T) {
		p := epoch(t, s, 10, ins(target, "emp_1", 10, "x"))[0]
		require.Equal(t, twopc.Committed, commit(t, s, p))
		info, _ := e.Txn(p.Label)
		require.Equal(t, dorisemu.TxnState("COMMITTED"), info.State)
		require.Equal(t, twopc.Committed, commit(t, s, p)) // "is already committed, not pre-committed."
		e.Faults().SetPublishDelay(0)
		e.Advance(2 * time.Hour)
		info, _ = e.Txn(p.Label)
		require.Equal(t, dorisemu.TxnState("VISIBLE"), info.State)
		require.Equal(t, twopc.Committed, commit(t, s, p)) // "is already visible, not pre-committed."
	})
	t.Run("aborted by user before commit", func(t *testing.T) {
		p := epoch(t, s, 11, ins(target, "emp_1", 11, "x"))[0]
		o, err := s.Abort(ctx, p)
		require.NoError(t, err)
		require.Equal(t, twopc.Aborted, o)
		o, err = s.Abort(ctx, p) // already aborted
		require.NoError(t, err)
		require.Equal(t, twopc.Aborted, o)
		require.Equal(t, twopc.Aborted, commit(t, s, p))
	})
	t.Run("precommit timeout by txn manager", func(t *testing.T) {
		p := epoch(t, s, 12, ins(target, "emp_1", 12, "x"))[0]
		e.Advance(2 * time.Minute)
		info, _ := e.Txn(p.Label)
		require.Equal(t, dorisemu.TxnState("ABORTED"), info.State)
		require.Contains(t, info.AbortReason, "timeout by txn manager")
		require.Equal(t, twopc.Aborted, commit(t, s, p))
	})
	t.Run("abort of a committed txn", func(t *testing.T) {
		p := epoch(t, s, 13, ins(target, "emp_1", 13, "x"))[0]
		require.Equal(t, twopc.Committed, commit(t, s, p))
		o, err := s.Abort(ctx, p)
		require.NoError(t, err)
		require.Equal(t, twopc.Committed, o)
	})
	t.Run("not found resolved by label state", func(t *testing.T) {
		p := epoch(t, s, 14, ins(target, "emp_1", 14, "x"))[0]
		require.Equal(t, twopc.Committed, commit(t, s, p))
		ghost := p
		ghost.TxnID = "987654321" // Doris has no such txn; the label is committed
		require.Equal(t, twopc.Committed, commit(t, s, ghost))

		q := epoch(t, s, 15, ins(target, "emp_1", 15, "x"))[0]
		_, err := s.Abort(ctx, q)
		require.NoError(t, err)
		ghost = q
		ghost.TxnID = "987654322"
		require.Equal(t, twopc.Aborted, commit(t, s, ghost))

		ghost = twopc.Prepared{Sink: "doris", Target: target, Label: "ss_never_loaded_1", TxnID: "987654323"}
		require.Equal(t, twopc.Unknown, commit(t, s, ghost))
	})
}

func TestEmuCommitPurged(t *testing.T) {
	e := startEmu(t, dorisemu.Options{LabelKeepMax: time.Minute})
	s, _ := emuSink(t, e, nil)
	require.NoError(t, s.ApplySchema(t.Context(), empSchema(target)))
	p := epoch(t, s, 1, ins(target, "emp_1", 1, "x"))[0]
	require.Equal(t, twopc.Committed, commit(t, s, p))
	e.Advance(time.Hour)
	_, ok := e.TxnByID(mustID(t, p.TxnID))
	require.False(t, ok, "purged")
	// Doris forgot txn and label: nobody can tell; the operator decides.
	require.Equal(t, twopc.Unknown, commit(t, s, p))
}

func mustID(t *testing.T, s string) int64 {
	var id int64
	_, err := fmt.Sscan(s, &id)
	require.NoError(t, err)
	return id
}

func TestEmuAbortOpenEpoch(t *testing.T) {
	for _, version := range []string{"2.1", "2.0", "1.2"} {
		t.Run(version, func(t *testing.T) {
			e := startEmu(t, dorisemu.Options{Version: version})
			s, logs := emuSink(t, e, nil)
			ctx := t.Context()
			require.NoError(t, s.ApplySchema(ctx, empSchema(target)))

			// Pre-committed, but the ledger never recorded the txn id: abort by label.
			p := epoch(t, s, 1, ins(target, "emp_1", 1, "x"))[0]
			o, err := s.Abort(ctx, twopc.Prepared{Sink: "doris", Target: target, Label: p.Label})
			require.NoError(t, err)
			require.Equal(t, twopc.Aborted, o)
			info, _ := e.TxnByID(mustID(t, p.TxnID))
			require.Equal(t, dorisemu.TxnState("ABORTED"), info.State)

			// A label that never reached Doris.
			never := doris.Label("ss", target, 99)
			o, err = s.Abort(ctx, twopc.Prepared{Sink: "doris", Target: target, Label: never})
			require.NoError(t, err)
			require.Equal(t, twopc.Aborted, o)
			for _, ti := range e.LabelTxns(target.Database, never) {
				require.Equal(t, dorisemu.TxnState("ABORTED"), ti.State, "a probe's empty txn must be aborted")
			}

			// A committed label cannot be aborted.
			c := epoch(t, s, 2, ins(target, "emp_1", 2, "x"))[0]
			require.Equal(t, twopc.Committed, commit(t, s, c))
			o, err = s.Abort(ctx, twopc.Prepared{Sink: "doris", Target: target, Label: c.Label})
			require.NoError(t, err)
			require.Equal(t, twopc.Committed, o)

			// An epoch abandoned while its load is still streaming (PREPARE).
			tx, err := s.Begin(ctx, 3, &recorder{})
			require.NoError(t, err)
			require.NoError(t, tx.Write(ctx, []change.Row{ins(target, "emp_1", 3, "x")}))
			require.NoError(t, tx.Abort(ctx))
			for _, ti := range e.LabelTxns(target.Database, doris.Label("ss", target, 3)) {
				require.Equal(t, dorisemu.TxnState("ABORTED"), ti.State)
			}
			require.Len(t, rowsByKey(t, e, target), 1, "only the committed epoch is visible")
			if version != "2.1" {
				require.Contains(t, logs.String(), "probing labels instead")
			}
		})
	}
}

func TestEmuFilteredRows(t *testing.T) {
	e := startEmu(t, dorisemu.Options{})
	s, _ := emuSink(t, e, nil)
	ctx := t.Context()
	// A user-made table whose column is narrower than the source.
	require.NoError(t, e.Exec("CREATE DATABASE IF NOT EXISTS demo"))
	require.NoError(t, e.Exec("CREATE TABLE demo.narrow (database_name VARCHAR(64) NOT NULL, table_name VARCHAR(64) NOT NULL, "+
		"id INT NOT NULL, name VARCHAR(2) NOT NULL, salary DECIMAL(12,2), hired DATETIME(6)) UNIQUE KEY(database_name, table_name, id) "+
		"DISTRIBUTED BY HASH(id) BUCKETS 1 PROPERTIES (\"replication_num\" = \"1\")"))
	id := change.TableID{Database: "demo", Table: "narrow"}
	require.NoError(t, s.ApplySchema(ctx, empSchema(id)))
	tx, err := s.Begin(ctx, 1, &recorder{})
	require.NoError(t, err)
	require.NoError(t, tx.Write(ctx, []change.Row{ins(id, "emp_1", 1, "ok"), ins(id, "emp_1", 2, "far too long")}))
	_, err = tx.PreCommit(ctx)
	require.Error(t, err)
	require.Contains(t, err.Error(), "_load_error_log")
	require.NotContains(t, err.Error(), emuPass)
	require.NoError(t, tx.Abort(ctx))
	require.Empty(t, rowsByKey(t, e, id), "nothing of a failed epoch is visible")
}

func TestEmuLabelLimits(t *testing.T) {
	e := startEmu(t, dorisemu.Options{})
	s, _ := emuSink(t, e, nil)
	ctx := t.Context()
	id := change.TableID{Database: "demo", Table: "t_" + strings.Repeat("x", 120)}
	require.NoError(t, s.ApplySchema(ctx, empSchema(id)))
	p := epoch(t, s, 18446744073709551615, ins(id, "emp_1", 1, "x"))[0]
	require.LessOrEqual(t, len(p.Label), 128)
	require.Regexp(t, doris.LabelRE, p.Label)
	require.Equal(t, twopc.Committed, commit(t, s, p))
	require.Len(t, rowsByKey(t, e, id), 1)
}

// TestEmuRetriesNeverDuplicate: lost replies and 5xx are retried, and
// nothing is ever applied twice.
func TestEmuRetriesNeverDuplicate(t *testing.T) {
	e := startEmu(t, dorisemu.Options{})
	s, _ := emuSink(t, e, nil)
	ctx := t.Context()
	require.NoError(t, s.ApplySchema(ctx, empSchema(target)))

	// 5xx on the FE lookup and on the 2PC call: retried.
	e.Faults().FailNext(dorisemu.FEStreamLoad, 503)
	p := epoch(t, s, 1, ins(target, "emp_1", 1, "x"))[0]
	e.Faults().FailNext(dorisemu.FE2PC, 503)
	e.Faults().FailNext(dorisemu.BE2PC, 500)
	require.Equal(t, twopc.Committed, commit(t, s, p))

	// The commit applies but its reply is lost: the retry finds it done.
	p = epoch(t, s, 2, ins(target, "emp_1", 2, "x"))[0]
	e.Faults().DropCommitReply()
	require.Equal(t, twopc.Committed, commit(t, s, p))

	// The load's reply is lost: the epoch fails and is aborted; the rows
	// come again in a new epoch.
	e.Faults().DropLoadReply()
	tx, err := s.Begin(ctx, 3, &recorder{})
	require.NoError(t, err)
	require.NoError(t, tx.Write(ctx, []change.Row{ins(target, "emp_1", 3, "x")}))
	_, err = tx.PreCommit(ctx)
	require.Error(t, err)
	require.NoError(t, tx.Abort(ctx))
	p = epoch(t, s, 4, ins(target, "emp_1", 3, "x"))[0]
	require.Equal(t, twopc.Committed, commit(t, s, p))

	loads := 0
	for _, l := range e.Loads() {
		if l.DB == target.Database && l.Table == target.Table {
			loads++
		}
	}
	require.Equal(t, 3, loads, "exactly one committed load per successful epoch")
	require.Len(t, rowsByKey(t, e, target), 3)
	require.NotEmpty(t, e.Faults().Injected())
}

func TestEmuRunningTxnLimit(t *testing.T) {
	e := startEmu(t, dorisemu.Options{MaxRunningTxnPerDB: 1})
	s, _ := emuSink(t, e, nil)
	ctx := t.Context()
	require.NoError(t, s.ApplySchema(ctx, empSchema(target)))
	p := epoch(t, s, 1, ins(target, "emp_1", 1, "x"))[0] // holds the only slot while pre-committed
	tx, err := s.Begin(ctx, 2, &recorder{})
	require.NoError(t, err)
	err = tx.Write(ctx, []change.Row{ins(target, "emp_1", 2, "x")})
	if err == nil {
		_, err = tx.PreCommit(ctx)
	}
	require.ErrorContains(t, err, "larger than limit")
	require.NoError(t, tx.Abort(ctx))
	require.Equal(t, twopc.Committed, commit(t, s, p))
}

func TestEmuSchemaChangeAndUserTable(t *testing.T) {
	e := startEmu(t, dorisemu.Options{})
	s, logs := emuSink(t, e, nil)
	ctx := t.Context()
	ts := empSchema(target)
	require.NoError(t, s.ApplySchema(ctx, ts))
	added := change.Column{Name: "dept", Type: change.Type{Kind: change.KindString, SQL: "varchar(10)", Length: 10}, Nullable: true}
	ts.Schema.Columns = append(ts.Schema.Columns, added)
	ts.Changes = []change.SchemaChange{{Kind: change.AddColumn, Column: added}}
	require.NoError(t, s.ApplySchema(ctx, ts))
	r := ins(target, "emp_1", 1, "x")
	r.After = append(r.After, "sales")
	p := epoch(t, s, 1, r)[0]
	require.Equal(t, twopc.Committed, commit(t, s, p))
	require.Equal(t, "sales", rowsByKey(t, e, target)["emp_1/employees_1/1"]["dept"])

	// A user-made table keyed on id alone: used as is, with a warning.
	require.NoError(t, e.Exec("CREATE TABLE demo.mine (id INT NOT NULL, name VARCHAR(100)) UNIQUE KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1 PROPERTIES (\"replication_num\" = \"1\")"))
	mine := change.TableID{Database: "demo", Table: "mine"}
	require.NoError(t, s.ApplySchema(ctx, empSchema(mine)))
	require.Contains(t, logs.String(), "overwrite each other")
	p = epoch(t, s, 2, ins(mine, "emp_1", 7, "y"), ins(mine, "emp_2", 7, "z"))[0]
	require.Equal(t, twopc.Committed, commit(t, s, p))
	rows, err := e.Rows("demo", "mine")
	require.NoError(t, err)
	require.Len(t, rows, 1, "the user's key collapses the shards, as warned")
}

func TestEmuTransportFaults(t *testing.T) {
	e := startEmu(t, dorisemu.Options{})
	s, _ := emuSink(t, e, func(c *doris.Config) { c.ExpectContinueTimeout = 200 * time.Millisecond })
	ctx := t.Context()
	require.NoError(t, s.ApplySchema(ctx, empSchema(target)))

	// The BE never sends 100 Continue: the client sends the body anyway.
	e.Faults().OmitContinue(true)
	p := epoch(t, s, 1, ins(target, "emp_1", 1, "x"))[0]
	e.Faults().OmitContinue(false)

	// BE unreachable (FE still redirects to it): commit gives up with an
	// error and changes nothing; later it commits.
	require.NoError(t, e.Faults().BEDownSilently(true))
	o, err := s.Commit(ctx, p)
	require.Error(t, err)
	require.Equal(t, twopc.Unknown, o)
	require.NotContains(t, err.Error(), emuPass)
	require.NoError(t, e.Faults().BEDownSilently(false))
	require.Equal(t, twopc.Committed, commit(t, s, p))

	// A BE that dies mid-body leaves the txn PREPARE: Txn.Abort settles it.
	for _, keep := range []bool{false, true} {
		e.Faults().ResetMidBody(4096, keep)
		ep := uint64(10)
		if keep {
			ep = 11
		}
		tx, err := s.Begin(ctx, ep, &recorder{})
		require.NoError(t, err)
		rows := make([]change.Row, 200)
		for i := range rows {
			rows[i] = ins(target, "emp_9", int64(i), strings.Repeat("r", 50))
		}
		err = tx.Write(ctx, rows)
		if err == nil {
			_, err = tx.PreCommit(ctx)
		}
		require.Error(t, err)
		require.NoError(t, tx.Abort(ctx))
		txns := e.LabelTxns(target.Database, doris.Label("ss", target, ep))
		require.NotEmpty(t, txns)
		for _, ti := range txns {
			require.Equal(t, dorisemu.TxnState("ABORTED"), ti.State)
		}
	}
	require.Len(t, rowsByKey(t, e, target), 1)
}

// An added column with a default gives the rows loaded before it the
// default (ADD COLUMN … DEFAULT), and a widened column (MODIFY COLUMN)
// then holds values the old type could not.
func TestEmuAddColumnDefaultAndWiden(t *testing.T) {
	e := startEmu(t, dorisemu.Options{})
	s, _ := emuSink(t, e, nil)
	ctx := t.Context()
	ts := empSchema(target)
	require.NoError(t, s.ApplySchema(ctx, ts))
	require.Equal(t, twopc.Committed, commit(t, s, epoch(t, s, 1, ins(target, "emp_1", 1, "old"))[0]))

	seven := "7"
	bonus := change.Column{Name: "bonus", Type: change.Type{Kind: change.KindInt, SQL: "int(11)"}, Nullable: true, Default: &seven}
	ts.Schema.Columns = append(ts.Schema.Columns, bonus)
	ts.Changes = []change.SchemaChange{{Kind: change.AddColumn, Column: bonus}}
	require.NoError(t, s.ApplySchema(ctx, ts))
	require.EqualValues(t, 7, rowsByKey(t, e, target)["emp_1/employees_1/1"]["bonus"], "rows loaded before the ADD COLUMN carry its default")

	wide := ts.Schema.Columns[3]
	wide.Type = change.Type{Kind: change.KindString, SQL: "varchar(200)", Length: 200}
	ts.Schema.Columns[3] = wide
	ts.Changes = []change.SchemaChange{{Kind: change.WidenColumn, Column: wide}}
	require.NoError(t, s.ApplySchema(ctx, ts))
	long := strings.Repeat("w", 150)
	r := ins(target, "emp_1", 2, long)
	r.After = append(r.After, int64(9))
	require.Equal(t, twopc.Committed, commit(t, s, epoch(t, s, 2, r)[0]))
	got := rowsByKey(t, e, target)
	require.Equal(t, long, got["emp_1/employees_1/2"]["name"])
	require.EqualValues(t, 9, got["emp_1/employees_1/2"]["bonus"])
	require.Equal(t, "old", got["emp_1/employees_1/1"]["name"])
	// Doris (and the emulator) refuse a narrowing MODIFY.
	err := e.Exec(fmt.Sprintf("ALTER TABLE `%s`.`%s` MODIFY COLUMN `name` VARCHAR(5) NULL", target.Database, target.Table))
	require.ErrorContains(t, err, "Can not change")
}
