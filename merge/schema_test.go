package merge

import (
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/testenv"
)

func TestAddColumnOnOneShardAndNewShard(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 5})
	require.NoError(t, m.Exec(testenv.TutorialSQL))
	src, err := Open(t.Context(), testConfig(t, m, empRoute(t)), nil, nil)
	require.NoError(t, err)
	defer src.Close()
	c := newConsumer(t)
	var schemaEvents []*change.TableSchema
	tgt := change.TableID{Database: "demo", Table: "all_employees_info"}
	end := currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })
	base := len(c.schemas[tgt].Columns)

	require.NoError(t, m.Exec(
		"ALTER TABLE emp_1.employees_2 ADD COLUMN bonus DECIMAL(10,2) DEFAULT 1.50",
		"INSERT INTO emp_1.employees_2 VALUES (90001,'1990-01-01','New','Col','M','2020-01-01', 7.25)",
		"INSERT INTO emp_2.employees_1 VALUES (90002,'1990-01-01','Old','Shape','F','2020-01-01')",
		"ALTER TABLE emp_2.employees_2 MODIFY COLUMN first_name VARCHAR(40) NOT NULL",
		"CREATE DATABASE emp_3",
		"CREATE TABLE emp_3.employees_9 (emp_no INT NOT NULL, birth_date DATE NOT NULL, first_name VARCHAR(14) NOT NULL, last_name VARCHAR(16) NOT NULL, gender ENUM('M','F') NOT NULL, hire_date DATE NOT NULL, PRIMARY KEY (emp_no))",
	))
	require.Error(t, m.Exec("CREATE TABLE emp_3.employees_9 (x INT)")) // exists: no-op
	require.NoError(t, m.Exec("CREATE DATABASE emp_4"))
	require.NoError(t, m.Exec(
		"CREATE TABLE emp_4.employees_1 LIKE emp_1.employees_1",
		"INSERT INTO emp_4.employees_1 VALUES (1,'1990-01-01','First','Row','M','2020-01-01')",
		"INSERT INTO emp_3.employees_9 VALUES (2,'1990-01-01','Second','Row','F','2020-01-01')",
	))
	end = currentPos(t, m)
	ctx := t.Context()
	for !c.caughtUp(end) {
		ev, err := src.Next(ctx)
		require.NoError(t, err)
		if ev.Kind == change.EventSchema {
			schemaEvents = append(schemaEvents, ev.Schema)
		}
		c.handle(ev)
	}
	// ADD COLUMN became a schema change before the row that needs it.
	require.NotEmpty(t, schemaEvents)
	first := schemaEvents[0]
	require.Equal(t, tgt, first.Target)
	require.Len(t, first.Changes, 1)
	require.Equal(t, change.AddColumn, first.Changes[0].Kind)
	require.Equal(t, "bonus", first.Changes[0].Column.Name)
	require.Contains(t, first.Cause, "ADD COLUMN bonus")
	require.Len(t, first.Schema.Columns, base+1)
	// Widening on another shard.
	var widened bool
	for _, se := range schemaEvents[1:] {
		for _, ch := range se.Changes {
			if ch.Kind == change.WidenColumn && ch.Column.Name == "first_name" {
				require.Equal(t, "varchar(40)", ch.Column.Type.SQL)
				widened = true
			}
		}
	}
	require.True(t, widened)

	get := func(db, table string, key int64) map[string]any {
		for k, r := range c.state {
			if k.db == db && k.table == table && r["emp_no"] == key {
				return r
			}
		}
		t.Fatalf("%s.%s #%d missing", db, table, key)
		return nil
	}
	require.Equal(t, change.Decimal("7.25"), get("emp_1", "employees_2", 90001)["bonus"])
	// A shard without the column carries the default it was added with
	// elsewhere (what the target's ADD COLUMN … DEFAULT gave every row).
	require.Equal(t, change.Decimal("1.50"), get("emp_2", "employees_1", 90002)["bonus"])
	require.Equal(t, "First", get("emp_4", "employees_1", 1)["first_name"])
	require.Equal(t, "Second", get("emp_3", "employees_9", 2)["first_name"])
	var shards []change.TableID
	for _, ti := range src.Targets() {
		shards = append(shards, ti.Shards...)
	}
	require.Contains(t, shards, change.TableID{Database: "emp_4", Table: "employees_1"})

	// An incompatible change stops the stream naming shard, column and statement.
	require.NoError(t, m.Exec("ALTER TABLE emp_1.employees_1 MODIFY COLUMN hire_date VARCHAR(20)"))
	for {
		ev, err := src.Next(ctx)
		if err != nil {
			require.ErrorIs(t, err, ErrIncompatibleSchema)
			require.Contains(t, err.Error(), "emp_1.employees_1")
			require.Contains(t, err.Error(), "hire_date")
			require.Contains(t, err.Error(), "MODIFY COLUMN hire_date VARCHAR(20)")
			break
		}
		c.handle(ev)
	}
}

func TestIncompatibleShardsAtStart(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 6})
	require.NoError(t, m.Exec("CREATE DATABASE s_1", "CREATE DATABASE s_2",
		"CREATE TABLE s_1.t (id INT PRIMARY KEY, v INT)", "CREATE TABLE s_2.t (id INT PRIMARY KEY, v DATE)"))
	r, err := NewRoute(`s_[0-9]`, `t`, change.TableID{Database: "x", Table: "y"})
	require.NoError(t, err)
	_, err = Open(t.Context(), testConfig(t, m, r), nil, nil)
	require.ErrorIs(t, err, ErrIncompatibleSchema)
	require.Contains(t, err.Error(), "s_2.t")
	require.Contains(t, err.Error(), "column v")

	none, err := NewRoute(`nomatch_*`, `t`, change.TableID{Database: "x", Table: "z"})
	require.NoError(t, err)
	_, err = Open(t.Context(), testConfig(t, m, none), nil, nil)
	require.ErrorIs(t, err, ErrNoShards)
	require.Contains(t, err.Error(), "nomatch_*")
	require.Contains(t, err.Error(), "not globs")
}

func TestTableWithoutPrimaryKey(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 7})
	require.NoError(t, m.Exec("CREATE DATABASE np_1", "CREATE TABLE np_1.log (msg VARCHAR(20), n INT)",
		"INSERT INTO np_1.log VALUES ('a',1),('b',2),('a',1),('c',3)"))
	r, err := NewRoute(`np_[0-9]`, `log`, change.TableID{Database: "x", Table: "log"})
	require.NoError(t, err)
	cfg := testConfig(t, m, r)
	cfg.ChunkSize = 2
	src, err := Open(t.Context(), cfg, nil, nil)
	require.NoError(t, err)
	defer src.Close()
	require.NoError(t, m.Exec("INSERT INTO np_1.log VALUES ('d',4)", "DELETE FROM np_1.log WHERE msg='a' LIMIT 1"))
	end := currentPos(t, m)
	var rows []change.Row
	var schema change.Schema
	ctx := t.Context()
	c := newConsumer(t)
	for !c.caughtUp(end) {
		ev, err := src.Next(ctx)
		require.NoError(t, err)
		if ev.Kind == change.EventSchema {
			schema = ev.Schema.Schema
		}
		rows = append(rows, ev.Rows...)
		c.handle(ev)
	}
	require.Empty(t, schema.Key)
	p := src.Progress()
	require.Len(t, p.Tables, 1)
	require.True(t, p.Tables[0].Whole)
	// Multiset of rows after applying: a,b,c,d (one 'a' deleted).
	bag := map[string]int{}
	for _, r := range rows {
		switch r.Op {
		case change.Insert:
			bag[r.After[2].(string)]++
		case change.Delete:
			bag[r.Before[2].(string)]--
		}
	}
	require.Equal(t, map[string]int{"a": 1, "b": 1, "c": 1, "d": 1}, bag)
}

// Not parallel: it measures the process heap, which other tests would
// disturb.
func TestHugeTransactionBoundedMemory(t *testing.T) {
	rows := 100_000
	if testing.Short() {
		rows = 20_000
	}
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 8, ExtraArgs: []string{"--max-allowed-packet=64M"}})
	require.NoError(t, m.Exec("CREATE DATABASE big_1", "CREATE TABLE big_1.t (id INT PRIMARY KEY, pad VARCHAR(200))"))
	r, err := NewRoute(`big_[0-9]`, `t`, change.TableID{Database: "x", Table: "big"})
	require.NoError(t, err)
	src, err := Open(t.Context(), testConfig(t, m, r), nil, nil)
	require.NoError(t, err)
	defer src.Close()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseline := ms.HeapAlloc
	// One transaction inserting rows rows (≈ 20 MB of row images).
	require.NoError(t, m.Exec("SET SESSION max_recursive_iterations=1000000",
		"INSERT INTO big_1.t WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM s WHERE n < "+itoa(int64(rows))+") SELECT n, REPEAT('x', 200) FROM s"))
	ctx := t.Context()
	got, events, commits := 0, 0, 0
	var peak uint64
	deadline := time.Now().Add(60 * time.Second)
	for got < rows || commits == 0 {
		require.True(t, time.Now().Before(deadline), "timed out after %d rows", got)
		ev, err := src.Next(ctx)
		require.NoError(t, err)
		switch ev.Kind {
		case change.EventRows:
			require.LessOrEqual(t, len(ev.Rows), 1024)
			got += len(ev.Rows)
			events++
			if events%20 == 0 {
				runtime.GC()
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapAlloc)
			}
		case change.EventCommit:
			if got > 0 {
				commits++
			}
		}
	}
	require.Equal(t, rows, got)
	require.Equal(t, 1, commits, "one source transaction, one commit")
	// Collecting the transaction would hold ≥ rows×(200 B + row overhead);
	// streaming holds a few batches.
	t.Logf("%d rows (%d MiB of values) in %d events, live heap grew by %d MiB at most", got, rows*200>>20, events, (peak-min(peak, baseline))>>20)
	require.Less(t, peak-min(peak, baseline), uint64(12<<20), "memory grows with the transaction")
}
