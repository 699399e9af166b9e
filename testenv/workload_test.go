package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestTokens(t *testing.T) {
	t.Parallel()
	for _, id := range []uint64{1, 35, 36, 123456789, 1<<64 - 1} {
		tok := Token(id)
		require.LessOrEqual(t, len(tok), 16, "fits last_name VARCHAR(16)")
		got, ok := TokenID(tok)
		require.True(t, ok, tok)
		require.Equal(t, id, got)
	}
	for _, s := range []string{"", "w", "W1", "Warwick", "w-1", "wzzzzzzzzzzzzzzzz", "w01", "Facello"} {
		_, ok := TokenID(s)
		require.False(t, ok, "%q is not a token", s)
	}
}

func TestEvenlySpreadsExactCounts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		n    int64
		f    float64
		want int
	}{{200, 0.03, 6}, {100, 0.25, 25}, {10, 0, 0}, {10, -1, 0}, {10, 1, 10}} {
		got := 0
		for i := range tc.n {
			if evenly(i, tc.f, 0) {
				got++
			}
		}
		require.Equal(t, tc.want, got, "%d×%v", tc.n, tc.f)
	}
}

func TestApplyModel(t *testing.T) {
	t.Parallel()
	sh := ShardID{DB: "emp_1", Table: "employees_1"}
	k := func(key int64) MergedKey { return MergedKey{DB: sh.DB, Table: sh.Table, Key: key} }
	row := func(key, name string) map[string]string {
		return map[string]string{"emp_no": key, "birth_date": "1960-01-01", "first_name": "A", "last_name": name, "gender": "M", "hire_date": "1990-01-01"}
	}
	st := MergedState{k(1): row("1", "Facello"), k(2): row("2", "Simmel")}
	r := &WorkloadResult{Changes: []Change{
		{ID: 1, Op: OpInsert, Shard: sh, Key: 3, NewKey: 3, After: row("3", Token(1))},
		{ID: 2, Op: OpUpdate, Shard: sh, Key: 1, NewKey: 1, Before: row("1", "Facello"), After: row("1", Token(2))},
		{ID: 3, Op: OpUpdate, Shard: sh, Key: 2, NewKey: 7, KeyChanged: true, Before: row("2", "Simmel"), After: row("7", Token(3))},
		{ID: 4, Op: OpDelete, Shard: sh, Key: 3, Before: row("3", Token(1))},
	}}
	got := r.Expected(st)
	require.Equal(t, MergedState{k(1): row("1", Token(2)), k(7): row("7", Token(3))}, got)
	require.Equal(t, "Facello", st[k(1)]["last_name"], "Expected leaves its input alone")
	require.Equal(t, k(7), r.Changes[2].MergedKey())
	require.Equal(t, k(3), r.Changes[3].MergedKey())
}

func TestWorkloadRejectsUnboundedRuns(t *testing.T) {
	t.Parallel()
	_, err := Workload{}.Run(t.Context(), nil, ShardSpec{Databases: 1, Tables: 1})
	require.ErrorContains(t, err, "Duration or Transactions")
	_, err = Workload{Transactions: 1}.Run(t.Context(), nil, ShardSpec{})
	require.ErrorContains(t, err, "at least 1 database")
}

// checkResult asserts the invariants every WorkloadResult must hold.
func checkResult(t *testing.T, r *WorkloadResult) {
	t.Helper()
	ids := map[uint64]bool{}
	txns := map[uint64]bool{}
	for _, c := range append(append([]Change{}, r.Changes...), r.RolledBackChanges...) {
		require.False(t, ids[c.ID], "change id %d used twice", c.ID)
		ids[c.ID] = true
		require.True(t, c.ID >= r.FirstID && c.ID <= r.LastID, "id %d outside [%d,%d]", c.ID, r.FirstID, r.LastID)
		switch c.Op {
		case OpInsert:
			require.Nil(t, c.Before)
			require.Equal(t, Token(c.ID), c.After["last_name"])
			require.Equal(t, c.Key, c.NewKey)
		case OpUpdate:
			require.NotNil(t, c.Before)
			require.Equal(t, Token(c.ID), c.After["last_name"])
			require.Equal(t, c.KeyChanged, c.Key != c.NewKey)
		case OpDelete:
			require.NotNil(t, c.Before)
			require.Nil(t, c.After)
		default:
			t.Fatalf("change %d has op %q", c.ID, c.Op)
		}
	}
	for _, c := range r.Changes {
		require.NotZero(t, c.Txn)
		txns[c.Txn] = true
	}
	require.Len(t, txns, r.Txns, "every committed transaction changed rows")
}

func TestWorkloadModelMatchesSource(t *testing.T) {
	t.Parallel()
	m := StartMariaDB(t, MariaDBOptions{})
	ctx := t.Context()
	spec := ShardSpec{Databases: 3, Tables: 2, Rows: 100, Seed: 5}
	require.NoError(t, spec.Create(ctx, m))

	w := Workload{Seed: 11, Rate: 400, Transactions: 400, Duration: 30 * time.Second, MaxRowsPerTxn: 12,
		MultiShardFraction: 0.2, RollbackFraction: 0.05, KeyUpdateFraction: 0.1, Conns: 3}
	r, err := w.Run(ctx, m, spec)
	require.NoError(t, err)
	t.Logf("%d txns, %d changes, %d rolled back, %d multi-shard in %s (target %s at %v/s)",
		r.Txns, len(r.Changes), r.RolledBack, r.MultiShardTxns, r.Elapsed, time.Second, w.Rate)
	checkResult(t, r)
	require.Equal(t, 400, r.Txns+r.RolledBack, "stopped after Transactions")
	require.GreaterOrEqual(t, r.RolledBack, 20, "RollbackFraction is honoured")
	require.NotEmpty(t, r.RolledBackChanges)
	wantMulti := 0
	for i := range int64(400) {
		if w.withDefaults().multiShardSlot(i) && !w.withDefaults().rollbackSlot(i) {
			wantMulti++
		}
	}
	require.Greater(t, wantMulti, 70)
	require.InDelta(t, wantMulti, r.MultiShardTxns, 2, "MultiShardFraction is honoured")

	got, err := ReadMergedState(ctx, m, spec)
	require.NoError(t, err)
	want := r.Expected(spec.InitialState())
	require.Empty(t, want.Diff(got, 10), "model and source agree")

	// The run exercised every kind of change, big transactions and
	// every connection.
	ops := map[string]int{}
	keyChanges, conns := 0, map[int]bool{}
	for _, c := range r.Changes {
		ops[c.Op]++
		conns[c.Conn] = true
		if c.KeyChanged {
			keyChanges++
		}
	}
	require.Positive(t, ops[OpInsert])
	require.Positive(t, ops[OpUpdate])
	require.Positive(t, ops[OpDelete])
	require.Positive(t, keyChanges)
	require.Len(t, conns, 3)
	biggest := 0
	for _, cs := range r.TxnChanges() {
		biggest = max(biggest, len(cs))
	}
	require.Greater(t, biggest, 5)

	// A second workload continues from the source's current state with
	// ids above the first's; here on a Duration limit, as fast as possible.
	w2 := Workload{Seed: 12, Duration: 300 * time.Millisecond, MultiShardFraction: 0.5, FirstID: 1}
	r2, err := w2.Run(ctx, m, spec)
	require.NoError(t, err)
	checkResult(t, r2)
	require.Positive(t, r2.Txns)
	maxTok := uint64(0)
	for _, row := range got {
		if id, ok := TokenID(row["last_name"]); ok {
			maxTok = max(maxTok, id)
		}
	}
	require.Positive(t, maxTok)
	require.Equal(t, maxTok+1, r2.FirstID, "ids continue above the tokens present")
	got2, err := ReadMergedState(ctx, m, spec)
	require.NoError(t, err)
	require.Empty(t, r2.Expected(got).Diff(got2, 10))
}

func TestWorkloadOnTutorialData(t *testing.T) {
	t.Parallel()
	m := StartMariaDB(t, MariaDBOptions{})
	require.NoError(t, m.Exec(TutorialSQL))
	r, err := Workload{Seed: 3, Transactions: 60, MultiShardFraction: 0.3}.Run(t.Context(), m, TutorialSpec())
	require.NoError(t, err)
	checkResult(t, r)
	got, err := ReadMergedState(t.Context(), m, TutorialSpec())
	require.NoError(t, err)
	require.Empty(t, r.Expected(TutorialState()).Diff(got, 10))
	// Inserts use keys above the shard's largest, or keys this run deleted.
	maxKey := map[ShardID]int64{}
	for k := range TutorialState() {
		maxKey[k.Shard()] = max(maxKey[k.Shard()], k.Key)
	}
	gone := map[MergedKey]bool{}
	for _, c := range r.Changes {
		switch {
		case c.Op == OpInsert:
			require.True(t, c.Key > maxKey[c.Shard] || gone[c.MergedKey()], "insert of %s", c.MergedKey())
		case c.Op == OpDelete || c.KeyChanged:
			gone[MergedKey{DB: c.Shard.DB, Table: c.Shard.Table, Key: c.Key}] = true
		}
	}

	// A context ending stops the run with its error and what was committed
	// so far, which is still exact.
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	r2, err := Workload{Seed: 4, Rate: 20, Duration: time.Minute}.Run(ctx, m, TutorialSpec())
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotNil(t, r2)
	require.Positive(t, r2.Txns)
	require.Less(t, r2.Txns+r2.RolledBack, 40, "Rate holds the run back")
	got2, err := ReadMergedState(t.Context(), m, TutorialSpec())
	require.NoError(t, err)
	require.Empty(t, r2.Expected(got).Diff(got2, 10))
}

// With XAFraction a third of the transactions are XA transactions, a fifth
// of those rolled back after XA PREPARE and some decided after FLUSH
// BINARY LOGS; the model still agrees with the source.
func TestWorkloadXAModelMatchesSource(t *testing.T) {
	t.Parallel()
	m := StartMariaDB(t, MariaDBOptions{})
	ctx := t.Context()
	spec := ShardSpec{Databases: 2, Tables: 2, Rows: 50, Seed: 9}
	require.NoError(t, spec.Create(ctx, m))
	file := func() string {
		rows, err := m.Query("SHOW MASTER STATUS")
		require.NoError(t, err)
		return rows[0][0]
	}
	first := file()
	w := Workload{Seed: 13, Transactions: 150, Conns: 3, XAFraction: 1.0 / 3, XAFlushFraction: 0.2, RollbackFraction: -1}
	r, err := w.Run(ctx, m, spec)
	require.NoError(t, err)
	checkResult(t, r)
	require.InDelta(t, 50, r.XATxns+r.XARolledBack, 2, "XAFraction is honoured")
	require.InDelta(t, 10, r.XARolledBack, 2, "XARollbackFraction is honoured")
	require.Positive(t, r.XAFlushed)
	require.NotEqual(t, first, file(), "FLUSH BINARY LOGS ran")
	got, err := ReadMergedState(ctx, m, spec)
	require.NoError(t, err)
	require.Empty(t, r.Expected(spec.InitialState()).Diff(got, 10), "model and source agree")
	rows, err := m.Query("XA RECOVER")
	require.NoError(t, err)
	require.Empty(t, rows, "the workload left a prepared XA transaction")
}
