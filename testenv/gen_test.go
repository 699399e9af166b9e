package testenv

import (
	"maps"
	"strconv"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestShardSpecIsDeterministic(t *testing.T) {
	t.Parallel()
	spec := ShardSpec{Databases: 3, Tables: 2, Rows: 300, Seed: 42}
	again := ShardSpec{Databases: 3, Tables: 2, Rows: 300, Seed: 42}
	other := ShardSpec{Databases: 3, Tables: 2, Rows: 300, Seed: 43}

	require.Equal(t, spec.InitialState(), again.InitialState(), "same seed, same rows")
	for _, sh := range spec.Shards() {
		require.Equal(t, spec.RowsFor(sh), again.RowsFor(sh))
	}

	a, b := spec.InitialState(), other.InitialState()
	require.Len(t, b, len(a))
	differ := 0
	for k, row := range a {
		other, ok := b[k]
		require.True(t, ok, "a seed changes values, never keys: %s", k)
		if !maps.Equal(row, other) {
			differ++
		}
	}
	require.Greater(t, differ, len(a)*9/10, "another seed gives (nearly) all-different rows")

	// Shards differ from each other even though they share keys.
	s1, s2 := spec.Shards()[0], spec.Shards()[1]
	require.NotEqual(t, spec.RowsFor(s1), spec.RowsFor(s2))

	// Pinned values: the generator must not drift between Go versions or
	// refactorings, or recorded expectations elsewhere would break.
	require.Equal(t, pinnedRow, ShardSpec{Seed: 1}.Row(ShardID{DB: "emp_1", Table: "employees_1"}, 1))
}

// pinnedRow is ShardSpec{Seed: 1}.Row(emp_1.employees_1, 1) as first
// generated.
var pinnedRow = map[string]string{
	"emp_no": "1", "birth_date": "1956-03-02", "first_name": "Anneke", "last_name": "Haddadi",
	"gender": "F", "hire_date": "1988-03-26",
}

func TestShardSpecNamesAndValues(t *testing.T) {
	t.Parallel()
	spec := ShardSpec{Databases: 2, Tables: 3, Rows: 500, Seed: 7}
	require.Equal(t, []ShardID{
		{"emp_1", "employees_1"}, {"emp_1", "employees_2"}, {"emp_1", "employees_3"},
		{"emp_2", "employees_1"}, {"emp_2", "employees_2"}, {"emp_2", "employees_3"},
	}, spec.Shards())
	require.Equal(t, "emp_2.employees_3", spec.Shards()[5].String())
	require.Equal(t, []ShardID{{"s_1", "t_1"}}, ShardSpec{DBPrefix: "s_", TablePrefix: "t_", Databases: 1, Tables: 1}.Shards())

	st := spec.InitialState()
	require.Len(t, st, 6*500)
	for k, row := range st {
		require.Len(t, row, len(Columns))
		require.Equal(t, strconv.FormatInt(k.Key, 10), row["emp_no"])
		require.True(t, k.Key >= 1 && k.Key <= 500)
		for _, col := range []string{"birth_date", "hire_date"} {
			_, err := time.Parse(time.DateOnly, row[col])
			require.NoError(t, err, "%s %s", k, col)
		}
		require.LessOrEqual(t, utf8.RuneCountInString(row["first_name"]), 14)
		require.LessOrEqual(t, utf8.RuneCountInString(row["last_name"]), 16)
		_, isToken := TokenID(row["last_name"])
		require.False(t, isToken, "generated names never look like workload tokens")
		require.Contains(t, []string{"M", "F"}, row["gender"])
	}

	require.Error(t, ShardSpec{Databases: 0, Tables: 1}.Validate())
	require.Error(t, ShardSpec{Databases: 1, Tables: 1, Rows: -1}.Validate())
	require.Error(t, ShardSpec{DBPrefix: "x`; DROP", Databases: 1, Tables: 1}.Validate())
	require.NoError(t, ShardSpec{Databases: 1, Tables: 1}.Validate())
}

func TestTutorialState(t *testing.T) {
	t.Parallel()
	st := TutorialState()
	require.Len(t, st, TutorialRows)
	require.Equal(t, map[string]string{"emp_no": "10001", "birth_date": "1953-09-02", "first_name": "Georgi",
		"last_name": "Facello", "gender": "M", "hire_date": "1986-06-26"},
		st[MergedKey{DB: "emp_1", Table: "employees_1", Key: 10001}])
	shards := map[ShardID]int{}
	for k := range st {
		shards[k.Shard()]++
	}
	require.ElementsMatch(t, TutorialSpec().Shards(), keysOf(shards))
}

func keysOf[K comparable, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestCreateMatchesInitialState(t *testing.T) {
	t.Parallel()
	m := StartMariaDB(t, MariaDBOptions{})
	ctx := t.Context()

	spec := ShardSpec{DBPrefix: "gen_", Databases: 2, Tables: 3, Rows: 2500, Seed: 99}
	start := time.Now()
	require.NoError(t, spec.Create(ctx, m))
	t.Logf("created %d rows in %s", 6*spec.Rows, time.Since(start))
	got, err := ReadMergedState(ctx, m, spec)
	require.NoError(t, err)
	require.Empty(t, spec.InitialState().Diff(got, 10))

	// A second Create must refuse rather than mix data.
	require.ErrorContains(t, spec.Create(ctx, m), "already exists")

	// The tutorial's shards on the same server read back as TutorialState.
	require.NoError(t, m.Exec(TutorialSQL))
	got, err = ReadMergedState(ctx, m, TutorialSpec())
	require.NoError(t, err)
	require.Empty(t, TutorialState().Diff(got, 10))

	// Diff reports each kind of difference.
	want := spec.InitialState()
	bad := want.Clone()
	k1 := MergedKey{DB: "gen_1", Table: "employees_1", Key: 1}
	k2 := MergedKey{DB: "gen_1", Table: "employees_1", Key: 2}
	delete(bad, k1)
	bad[k2]["first_name"] = "Changed"
	bad[MergedKey{DB: "gen_9", Table: "x", Key: 1}] = map[string]string{}
	require.Len(t, want.Diff(bad, 0), 3)
	require.NotEqual(t, "Changed", want[k2]["first_name"], "Clone is deep")
}
