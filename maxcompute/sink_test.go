package maxcompute

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/testenv/mcemu"
	"github.com/shardsync/shardsync/twopc"
	"github.com/shardsync/shardsync/twopc/twopctest"
)

type recorder struct {
	mu      sync.Mutex
	intents []twopc.Prepared
}

func (r *recorder) Intend(_ context.Context, p twopc.Prepared) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.intents = append(r.intents, p)
	return nil
}

func testConfig(e *mcemu.Emulator) Config {
	c := DefaultConfig()
	c.AccessID, c.AccessKey = e.AccessID(), e.AccessKey()
	c.Endpoint, c.Project = e.Endpoint(), e.Project()
	c.BucketsNum = 4
	c.BucketBufferSize = 2048
	c.TotalBufferSize = 16 << 10
	c.RetryBaseDelay = 5 * time.Millisecond
	c.RetryMaxDelay = 50 * time.Millisecond
	c.RequestTimeout = 10 * time.Second
	c.CommitTimeout = 20 * time.Second
	return c
}

func newSink(t *testing.T, e *mcemu.Emulator, mod ...func(*Config)) *Sink {
	t.Helper()
	c := testConfig(e)
	for _, m := range mod {
		m(&c)
	}
	s, err := New(c, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

var empTarget = change.TableID{Database: "demo", Table: "all_employees"}

func col(name string, kind change.Kind, sql string, nullable bool) change.Column {
	return change.Column{Name: name, Type: change.Type{Kind: kind, SQL: sql}, Nullable: nullable}
}

func empSchema(keyed bool) change.TableSchema {
	sc := change.Schema{Columns: []change.Column{
		col("database_name", change.KindString, "varchar(64)", false),
		col("table_name", change.KindString, "varchar(64)", false),
		col("id", change.KindInt, "int", false),
		col("name", change.KindString, "varchar(100)", true),
		{Name: "salary", Type: change.Type{Kind: change.KindDecimal, SQL: "decimal(10,2)", Precision: 10, Scale: 2}, Nullable: true},
	}}
	if keyed {
		sc.Key = []string{"database_name", "table_name", "id"}
	}
	return change.TableSchema{Target: empTarget, Schema: sc}
}

func shard(i int) change.TableID {
	return change.TableID{Database: fmt.Sprintf("emp_%d", i), Table: fmt.Sprintf("employees_%d", i)}
}

func img(src change.TableID, id int64, name string, salary string) []change.Value {
	return []change.Value{src.Database, src.Table, id, name, change.Decimal(salary)}
}

func ins(src change.TableID, id int64, name, salary string) change.Row {
	return change.Row{Op: change.Insert, Target: empTarget, Source: src, After: img(src, id, name, salary)}
}

func upd(src change.TableID, id, newID int64, name, salary string) change.Row {
	return change.Row{Op: change.Update, Target: empTarget, Source: src,
		Before: img(src, id, "?", "0.00"), After: img(src, newID, name, salary)}
}

func del(src change.TableID, id int64) change.Row {
	return change.Row{Op: change.Delete, Target: empTarget, Source: src, Before: img(src, id, "?", "0.00")}
}

// runEpoch writes rows in one epoch, pre-commits and commits everything.
func runEpoch(t *testing.T, s *Sink, epoch uint64, rows []change.Row) []twopc.Prepared {
	t.Helper()
	tx, err := s.Begin(t.Context(), epoch, &recorder{})
	require.NoError(t, err)
	require.NoError(t, tx.Write(t.Context(), rows))
	ps, err := tx.PreCommit(t.Context())
	require.NoError(t, err)
	for _, p := range ps {
		out, err := s.Commit(t.Context(), p)
		require.NoError(t, err)
		require.Equal(t, twopc.Committed, out, "commit %s", p)
	}
	return ps
}

// model applies rows to a map keyed like the target, the expected state.
type model map[string][]any

func key(v []change.Value) string { return fmt.Sprintf("%v|%v|%v", v[0], v[1], v[2]) }

func (m model) apply(rows []change.Row) {
	for _, r := range rows {
		switch r.Op {
		case change.Insert:
			m[key(r.After)] = r.After
		case change.Update:
			delete(m, key(r.Before))
			m[key(r.After)] = r.After
		case change.Delete:
			delete(m, key(r.Before))
		}
	}
}

func (m model) rows() []string {
	var out []string
	for _, v := range m {
		out = append(out, fmt.Sprintf("%v|%v|%v|%v|%v", v[0], v[1], v[2], v[3], v[4]))
	}
	sort.Strings(out)
	return out
}

func emuRows(e *mcemu.Emulator, table string) []string {
	var out []string
	for _, r := range e.Rows(table) {
		out = append(out, fmt.Sprintf("%v|%v|%v|%v|%v", r[0], r[1], r[2], r[3], r[4]))
	}
	sort.Strings(out)
	return out
}

func TestDeltaMergesShardsWithOverlappingKeys(t *testing.T) {
	e := mcemu.New(mcemu.Options{})
	t.Cleanup(e.Close)
	s := newSink(t, e)
	require.NoError(t, s.ApplySchema(t.Context(), empSchema(true)))
	info, ok := e.Table("all_employees")
	require.True(t, ok)
	require.True(t, info.Transactional)
	require.Equal(t, []string{"database_name", "table_name", "id"}, info.PrimaryKey)
	require.Equal(t, 4, info.Buckets)

	m := model{}
	var epoch1 []change.Row
	for i := int64(1); i <= 150; i++ { // same ids in both shards
		epoch1 = append(epoch1, ins(shard(1), i, fmt.Sprintf("a%d", i), "10.50"), ins(shard(2), i, fmt.Sprintf("b%d", i), "20.25"))
	}
	runEpoch(t, s, 1, epoch1)
	m.apply(epoch1)
	require.Equal(t, m.rows(), emuRows(e, "all_employees"))
	require.Len(t, e.Rows("all_employees"), 300)

	epoch2 := []change.Row{
		upd(shard(1), 1, 1, "a1-renamed", "11.00"),
		del(shard(2), 2),
		upd(shard(1), 3, 3000, "a3-moved", "12.00"), // key change: delete old, upsert new
		ins(shard(2), 2, "b2-again", "1.00"),        // re-insert after delete in the same epoch
		del(shard(2), 2),
		upd(shard(2), 5, 5, "b5-v1", "5.00"),
		upd(shard(2), 5, 5, "b5-v2", "5.50"), // last write of a key in the epoch wins
		del(shard(1), 150),
	}
	runEpoch(t, s, 2, epoch2)
	m.apply(epoch2)
	require.Equal(t, m.rows(), emuRows(e, "all_employees"))
	require.Greater(t, e.Requests("PUT upserts"), 4, "small bucket buffers force several PUTs per bucket")
}

func TestPlainTableAppendsUpdatesAndIgnoresDeletes(t *testing.T) {
	e := mcemu.New(mcemu.Options{})
	t.Cleanup(e.Close)
	s := newSink(t, e)
	require.NoError(t, s.ApplySchema(t.Context(), empSchema(false)))
	info, _ := e.Table("all_employees")
	require.False(t, info.Transactional)
	require.Empty(t, info.PrimaryKey)

	runEpoch(t, s, 1, []change.Row{ins(shard(1), 1, "a", "1.00"), ins(shard(2), 1, "b", "2.00")})
	runEpoch(t, s, 2, []change.Row{upd(shard(1), 1, 1, "a2", "3.00"), del(shard(2), 1)})
	require.Equal(t, []string{
		"emp_1|employees_1|1|a2|3.00",
		"emp_1|employees_1|1|a|1.00",
		"emp_2|employees_2|1|b|2.00",
	}, emuRows(e, "all_employees"))
}

func TestRecoveryFromANewProcess(t *testing.T) {
	for _, keyed := range []bool{true, false} {
		t.Run(fmt.Sprintf("keyed=%v", keyed), func(t *testing.T) {
			e := mcemu.New(mcemu.Options{})
			t.Cleanup(e.Close)
			a := newSink(t, e)
			require.NoError(t, a.ApplySchema(t.Context(), empSchema(keyed)))

			prepare := func(epoch uint64, id int64) twopc.Prepared {
				rec := &recorder{}
				tx, err := a.Begin(t.Context(), epoch, rec)
				require.NoError(t, err)
				require.NoError(t, tx.Write(t.Context(), []change.Row{ins(shard(1), id, "x", "1.00")}))
				ps, err := tx.PreCommit(t.Context())
				require.NoError(t, err)
				require.Len(t, ps, 1)
				require.Len(t, rec.intents, 2, "the label first, then the session the service created for it")
				require.Equal(t, rec.intents[0].Label, ps[0].Label)
				require.Empty(t, rec.intents[0].TxnID)
				require.Equal(t, ps[0].Label, rec.intents[1].Label)
				require.NotEmpty(t, ps[0].TxnID)
				require.Equal(t, ps[0].TxnID, rec.intents[1].TxnID, "the session id is recorded before any record is sent")
				return ps[0]
			}
			p1 := prepare(1, 1)
			p2 := prepare(2, 2)
			require.Empty(t, e.Rows("all_employees"), "nothing visible before commit")

			// a later process: a new Sink value, without ApplySchema
			b := newSink(t, e)
			out, err := b.Commit(t.Context(), p1)
			require.NoError(t, err)
			require.Equal(t, twopc.Committed, out)
			out, err = b.Commit(t.Context(), p1)
			require.NoError(t, err)
			require.Equal(t, twopc.Committed, out, "commit is idempotent")
			out, err = b.Abort(t.Context(), p1)
			require.NoError(t, err)
			require.Equal(t, twopc.Committed, out, "abort reports a committed txn")

			out, err = b.Abort(t.Context(), p2)
			require.NoError(t, err)
			require.Equal(t, twopc.Aborted, out)
			out, err = b.Abort(t.Context(), twopc.Prepared{Sink: SinkName, Target: empTarget, Label: p2.Label})
			require.NoError(t, err)
			require.Equal(t, twopc.Aborted, out, "abort by label alone")
			require.Len(t, e.Rows("all_employees"), 1)
			if keyed {
				out, err = b.Commit(t.Context(), p2)
				require.NoError(t, err)
				require.Equal(t, twopc.Aborted, out, "an aborted upsert session cannot be committed")
			}
			require.Len(t, e.Rows("all_employees"), 1)
		})
	}
}

func TestRetriesOnInjectedPutFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
	}{
		{"500", http.StatusInternalServerError},
		{"429", http.StatusTooManyRequests},
		{"308", http.StatusPermanentRedirect},
		{"502 reloads", http.StatusBadGateway},
		{"504 reloads", http.StatusGatewayTimeout},
	} {
		for _, keyed := range []bool{true, false} {
			if !keyed && tc.status == http.StatusPermanentRedirect {
				continue // slot reassignment is an upsert-only reply
			}
			t.Run(fmt.Sprintf("%s/keyed=%v", tc.name, keyed), func(t *testing.T) {
				e := mcemu.New(mcemu.Options{})
				t.Cleanup(e.Close)
				s := newSink(t, e)
				require.NoError(t, s.ApplySchema(t.Context(), empSchema(keyed)))
				e.FailPuts(tc.status, 1, 2)
				rows := []change.Row{ins(shard(1), 1, "a", "1.00"), ins(shard(2), 1, "b", "2.00"), ins(shard(2), 7, "c", "3.00")}
				runEpoch(t, s, 1, rows)
				m := model{}
				m.apply(rows)
				require.Equal(t, m.rows(), emuRows(e, "all_employees"))
				if keyed && (tc.status == http.StatusBadGateway || tc.status == http.StatusGatewayTimeout) {
					require.GreaterOrEqual(t, e.Requests("GET upserts"), 2, "the session is reloaded before retrying")
				}
			})
		}
	}
}

func TestTerminal4xxStopsWithServerMessage(t *testing.T) {
	e := mcemu.New(mcemu.Options{})
	t.Cleanup(e.Close)
	s := newSink(t, e)
	require.NoError(t, s.ApplySchema(t.Context(), empSchema(true)))
	e.FailPuts(http.StatusForbidden, 1)
	tx, err := s.Begin(t.Context(), 1, &recorder{})
	require.NoError(t, err)
	require.NoError(t, tx.Write(t.Context(), []change.Row{ins(shard(1), 1, "a", "1.00")}))
	_, err = tx.PreCommit(t.Context())
	require.ErrorContains(t, err, "403 Forbidden InternalServerError: injected")
	require.Equal(t, 1, e.Requests("PUT upserts"), "4xx is not retried")
	require.NoError(t, tx.Abort(t.Context()))
	sess := e.UpsertSessions()
	require.Len(t, sess, 1)
	require.Equal(t, "aborted", sess[0].Status)
}

func TestAmbiguousCommitIsSettledByStatus(t *testing.T) {
	for _, keyed := range []bool{true, false} {
		t.Run(fmt.Sprintf("keyed=%v", keyed), func(t *testing.T) {
			e := mcemu.New(mcemu.Options{})
			t.Cleanup(e.Close)
			s := newSink(t, e)
			require.NoError(t, s.ApplySchema(t.Context(), empSchema(keyed)))
			tx, err := s.Begin(t.Context(), 1, &recorder{})
			require.NoError(t, err)
			require.NoError(t, tx.Write(t.Context(), []change.Row{ins(shard(1), 1, "a", "1.00"), ins(shard(1), 2, "b", "2.00")}))
			ps, err := tx.PreCommit(t.Context())
			require.NoError(t, err)
			e.DropNextCommitReply()
			out, err := s.Commit(t.Context(), ps[0])
			require.NoError(t, err)
			require.Equal(t, twopc.Committed, out)
			require.Len(t, e.Rows("all_employees"), 2, "applied exactly once")
			out, err = newSink(t, e).Commit(t.Context(), ps[0])
			require.NoError(t, err)
			require.Equal(t, twopc.Committed, out)
			require.Len(t, e.Rows("all_employees"), 2)
		})
	}
}

func TestExpiredAndForgottenSessions(t *testing.T) {
	for _, keyed := range []bool{true, false} {
		t.Run(fmt.Sprintf("keyed=%v", keyed), func(t *testing.T) {
			e := mcemu.New(mcemu.Options{})
			t.Cleanup(e.Close)
			s := newSink(t, e)
			require.NoError(t, s.ApplySchema(t.Context(), empSchema(keyed)))
			prep := func(epoch uint64) twopc.Prepared {
				tx, err := s.Begin(t.Context(), epoch, &recorder{})
				require.NoError(t, err)
				require.NoError(t, tx.Write(t.Context(), []change.Row{ins(shard(1), int64(epoch), "a", "1.00")}))
				ps, err := tx.PreCommit(t.Context())
				require.NoError(t, err)
				return ps[0]
			}
			p1 := prep(1)
			require.True(t, e.ExpireSession(p1.TxnID))
			out, err := s.Commit(t.Context(), p1)
			require.NoError(t, err)
			require.Equal(t, twopc.Aborted, out, "an expired session's rows are not there")
			require.Empty(t, e.Rows("all_employees"))

			p2 := prep(2)
			e.ForgetSession(p2.TxnID)
			out, err = s.Commit(t.Context(), p2)
			require.NoError(t, err)
			require.Equal(t, twopc.Unknown, out, "no trace: an operator decides")
			require.Empty(t, e.Rows("all_employees"))
		})
	}
}

func TestCommittedSessionForgottenLaterIsUnknown(t *testing.T) {
	e := mcemu.New(mcemu.Options{CommittedTTL: time.Millisecond})
	t.Cleanup(e.Close)
	s := newSink(t, e)
	require.NoError(t, s.ApplySchema(t.Context(), empSchema(true)))
	ps := runEpoch(t, s, 1, []change.Row{ins(shard(1), 1, "a", "1.00")})
	time.Sleep(5 * time.Millisecond)
	out, err := s.Commit(t.Context(), ps[0])
	require.NoError(t, err)
	require.Equal(t, twopc.Unknown, out)
	require.Len(t, e.Rows("all_employees"), 1)
}

func TestFailedTaskStopsApplySchema(t *testing.T) {
	e := mcemu.New(mcemu.Options{})
	t.Cleanup(e.Close)
	s := newSink(t, e)
	e.FailNextTask("ODPS-0130071:[1,1] Semantic analysis exception - injected")
	err := s.ApplySchema(t.Context(), empSchema(true))
	require.ErrorContains(t, err, "injected")
	require.ErrorContains(t, err, "create table if not exists")
	_, ok := e.Table("all_employees")
	require.False(t, ok)
}

// TestConformance runs the shared twopc conformance suite.
func TestConformance(t *testing.T) {
	e := mcemu.New(mcemu.Options{})
	t.Cleanup(e.Close)
	n := 0
	tables := [2]change.TableSchema{empSchema(true), empSchema(false)}
	tables[1].Target = change.TableID{Database: "demo", Table: "plain_employees"}
	twopctest.RunConformance(t, twopctest.Harness{
		New: func(t *testing.T) twopc.Sink {
			n++
			return newSink(t, e)
		},
		Reopen: func(t *testing.T, _ twopc.Sink) twopc.Sink { return newSink(t, e) },
		Tables: tables,
		Rows: func(target change.TableID, k int) []change.Row {
			out := make([]change.Row, k)
			for i := range out {
				n++
				src := shard(1)
				out[i] = change.Row{Op: change.Insert, Target: target, Source: src, After: img(src, int64(n*1000+i), "r", "1.00")}
			}
			return out
		},
	})
}

// An epoch that never reached its commit point is aborted by recovery from
// what was intended: the re-intended session id lets it abort the upsert
// session at once instead of leaving it open until it expires.
func TestOpenEpochSessionAbortedFromItsIntent(t *testing.T) {
	e := mcemu.New(mcemu.Options{})
	t.Cleanup(e.Close)
	a := newSink(t, e)
	require.NoError(t, a.ApplySchema(t.Context(), empSchema(true)))
	rec := &recorder{}
	tx, err := a.Begin(t.Context(), 7, rec)
	require.NoError(t, err)
	require.NoError(t, tx.Write(t.Context(), []change.Row{ins(shard(1), 1, "x", "1.00")}))
	// the process dies here: no PreCommit, no Txn.Abort
	require.Len(t, rec.intents, 2)
	intent := rec.intents[1]
	st, ok := e.UpsertSession(intent.TxnID)
	require.True(t, ok)
	require.Equal(t, "normal", strings.ToLower(st.Status))

	b := newSink(t, e)
	out, err := b.Abort(t.Context(), intent)
	require.NoError(t, err)
	require.Equal(t, twopc.Aborted, out)
	st, ok = e.UpsertSession(intent.TxnID)
	require.True(t, !ok || strings.ToLower(st.Status) != "normal", "the session is no longer open: %+v", st)
	out, err = b.Commit(t.Context(), twopc.Prepared{Sink: SinkName, Target: intent.Target, Label: intent.Label, TxnID: intent.TxnID, Extra: intent.Extra})
	require.NoError(t, err)
	require.Equal(t, twopc.Aborted, out, "an aborted session can never be committed")
	require.Empty(t, e.Rows("all_employees"))
}
