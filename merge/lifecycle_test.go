package merge

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/testenv"
)

func sid(db, table string) testenv.ShardID { return testenv.ShardID{DB: db, Table: table} }

func insertRows(t *testing.T, m *testenv.MariaDB, sh testenv.ShardID, from, to int) {
	t.Helper()
	for k := from; k <= to; k++ {
		require.NoError(t, m.Exec(fmt.Sprintf("INSERT INTO `%s`.`%s` (emp_no, birth_date, first_name, last_name, gender, hire_date) VALUES (%d, '1990-01-02', 'F%d', 'L%d', 'M', '2020-03-04')", sh.DB, sh.Table, k, k, k)))
	}
}

// startWithStaging starts a server holding spec's shards and emp_1.staging,
// a table outside the routes with the first staged rows of emp_2.employees_1
// (to be renamed into a route).
func startWithStaging(t *testing.T, serverID uint32, spec testenv.ShardSpec, staged int) *testenv.MariaDB {
	t.Helper()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: serverID})
	require.NoError(t, spec.Create(t.Context(), m))
	require.NoError(t, m.Exec("CREATE TABLE emp_1.staging LIKE emp_1.employees_1",
		fmt.Sprintf("INSERT INTO emp_1.staging SELECT * FROM emp_2.employees_1 WHERE emp_no <= %d", staged)))
	return m
}

// TRUNCATE in the snapshot phase and in the binlog phase, DROP (rows kept),
// RENAME out of and into the routes, and a re-created shard: the merged
// stream equals the shards that exist plus the rows kept of those that left.
func TestShardLifecycleKeep(t *testing.T) {
	t.Parallel()
	m := startWithStaging(t, 31, testenv.ShardSpec{Databases: 2, Tables: 2, Rows: 400, Seed: 3}, 120)
	cfg := testConfig(t, m, empRoute(t))
	cfg.ChunkSize, cfg.Readers, cfg.BatchRows = 50, 1, 20
	src, err := Open(t.Context(), cfg, nil, discardLogger())
	require.NoError(t, err)
	defer src.Close()

	// snapshot phase: the statements land in the binlog while chunks are read
	c := newConsumer(t)
	var n int
	c.run(t.Context(), src, func() bool { n++; return n > 2 })
	require.False(t, src.Progress().Done, "the snapshot must still run")
	// keys in the range of the chunks read after the truncate
	require.NoError(t, m.Exec("TRUNCATE TABLE emp_1.employees_1",
		"INSERT INTO emp_1.employees_1 SELECT * FROM emp_2.employees_1 WHERE emp_no > 390",
		"UPDATE emp_2.employees_1 SET last_name = 'upd' WHERE emp_no < 30"))
	insertRows(t, m, sid("emp_1", "employees_1"), 1001, 1005)
	end := currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })

	// binlog phase
	kept := map[string]testenv.MergedState{}
	var err2 error
	kept["emp_2.employees_2"], err2 = testenv.ReadShardsState(t.Context(), m, []testenv.ShardID{sid("emp_2", "employees_2")})
	require.NoError(t, err2)
	require.NoError(t, m.Exec("DROP TABLE emp_2.employees_2",
		"RENAME TABLE emp_1.employees_2 TO emp_1.old_2",
		"RENAME TABLE emp_1.staging TO emp_1.employees_7",
		"TRUNCATE TABLE emp_2.employees_1",
		"CREATE TABLE emp_2.employees_2 LIKE emp_1.employees_1"))
	insertRows(t, m, sid("emp_2", "employees_1"), 7, 9)
	insertRows(t, m, sid("emp_1", "employees_7"), 500, 502)
	insertRows(t, m, sid("emp_2", "employees_2"), 1001, 1002)
	require.NoError(t, m.Exec("UPDATE emp_1.employees_7 SET last_name = 'moved' WHERE emp_no < 10"))
	end = currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })

	want, err := testenv.ReadShardsState(t.Context(), m, []testenv.ShardID{sid("emp_1", "employees_1"), sid("emp_2", "employees_1"),
		sid("emp_1", "employees_7"), sid("emp_2", "employees_2")})
	require.NoError(t, err)
	old2, err := testenv.ReadShardsState(t.Context(), m, []testenv.ShardID{sid("emp_1", "old_2")})
	require.NoError(t, err)
	want.Merge(kept["emp_2.employees_2"]).Merge(old2.Relabel(sid("emp_1", "old_2"), sid("emp_1", "employees_2")))
	require.Empty(t, want.Diff(c.strState(), 10), "merged stream differs from the shards")
	require.Len(t, c.deletes, 2, "two truncates")
	var left []string
	for _, d := range src.Departed() {
		require.False(t, d.Deleted)
		left = append(left, d.Shard.String())
	}
	require.ElementsMatch(t, []string{"emp_2.employees_2", "emp_1.employees_2"}, left)
}

// With dropped rows deleted, DROP TABLE and DROP DATABASE delete; under
// exception a TRUNCATE stops with its position, and a skip decision on
// that position lets a reopened stream go on past it.
func TestShardLifecycleDeleteAndDecisions(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 32})
	spec := testenv.ShardSpec{Databases: 3, Tables: 1, Rows: 60, Seed: 4}
	require.NoError(t, spec.Create(t.Context(), m))
	cfg := testConfig(t, m, empRoute(t))
	cfg.DroppedShardRows = DroppedDelete
	src, err := Open(t.Context(), cfg, nil, discardLogger())
	require.NoError(t, err)
	c := newConsumer(t)
	end := currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })
	require.NoError(t, m.Exec("DROP TABLE emp_1.employees_1", "DROP DATABASE emp_2"))
	end = currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })
	require.NoError(t, src.Close())
	want, err := testenv.ReadShardsState(t.Context(), m, []testenv.ShardID{sid("emp_3", "employees_1")})
	require.NoError(t, err)
	require.Empty(t, want.Diff(c.strState(), 10))
	require.Len(t, c.deletes, 2)

	// exception: stop on the TRUNCATE, naming its position
	cfg.SchemaChange = BehaviorException
	src, err = Open(t.Context(), cfg, c.token, discardLogger())
	require.NoError(t, err)
	require.NoError(t, m.Exec("TRUNCATE TABLE emp_3.employees_1"))
	insertRows(t, m, sid("emp_3", "employees_1"), 100, 101)
	var stop *EventStopError
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		ev, err := src.Next(ctx)
		if err != nil {
			require.True(t, errors.As(err, &stop), "%v", err)
			require.ErrorIs(t, err, ErrIncompatibleSchema)
			break
		}
		c.handle(ev)
	}
	require.NoError(t, src.Close())
	require.NotEmpty(t, stop.GTID)
	require.Contains(t, stop.Error(), "skip-event --position "+stop.GTID)

	// the operator skips it: the rows stay, later rows arrive
	cfg.Decisions = map[string]string{stop.Position(): DecisionSkip}
	src, err = Open(t.Context(), cfg, c.token, discardLogger())
	require.NoError(t, err)
	defer src.Close()
	end = currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })
	now, err := testenv.ReadShardsState(t.Context(), m, []testenv.ShardID{sid("emp_3", "employees_1")})
	require.NoError(t, err)
	require.Empty(t, want.Merge(now).Diff(c.strState(), 10))
}

// Column changes: ignore keeps the target's columns (no schema change,
// rows go on, and the token keeps it so across restarts); exception stops naming the position, and an apply decision
// applies the change as evolve does.
func TestSchemaChangeBehaviorOnAlter(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 33})
	spec := testenv.ShardSpec{Databases: 1, Tables: 2, Rows: 20, Seed: 5}
	require.NoError(t, spec.Create(t.Context(), m))
	cfg := testConfig(t, m, empRoute(t))
	cfg.SchemaChange = BehaviorIgnore
	src, err := Open(t.Context(), cfg, nil, discardLogger())
	require.NoError(t, err)
	c := newConsumer(t)
	end := currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })
	target := src.Targets()[0].Target
	cols := len(c.schemas[target].Columns)
	require.NoError(t, m.Exec("ALTER TABLE emp_1.employees_1 ADD COLUMN extra INT"))
	insertRows(t, m, sid("emp_1", "employees_1"), 900, 901)
	end = currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })
	require.Len(t, c.schemas[target].Columns, cols, "ignore: the target keeps its columns")
	require.Contains(t, c.state, rowKey{"emp_1", "employees_1", "901|"})
	require.NoError(t, src.Close())

	cfg.SchemaChange = BehaviorException
	src, err = Open(t.Context(), cfg, c.token, discardLogger())
	require.NoError(t, err)
	require.NoError(t, m.Exec("ALTER TABLE emp_1.employees_2 ADD COLUMN extra2 INT"))
	insertRows(t, m, sid("emp_1", "employees_2"), 900, 900)
	var stop *EventStopError
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		ev, err := src.Next(ctx)
		if err != nil {
			require.True(t, errors.As(err, &stop), "%v", err)
			break
		}
		c.handle(ev)
	}
	require.NoError(t, src.Close())
	require.Contains(t, stop.Statement, "extra2")
	cfg.Decisions = map[string]string{stop.Position(): DecisionApply}
	src, err = Open(t.Context(), cfg, c.token, discardLogger())
	require.NoError(t, err)
	defer src.Close()
	end = currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })
	// +1: extra2 (applied); extra stays ignored across the reopens, since
	// the token restores the target's columns as announced
	require.Len(t, c.schemas[target].Columns, cols+1, "apply: the column is added to the target")
	for _, col := range c.schemas[target].Columns {
		require.NotEqual(t, "extra", col.Name, "ignore: the ignored column stays out after a restart")
	}
	require.Contains(t, c.state, rowKey{"emp_1", "employees_2", "900|"})
}

// A restart whose token lies before a RENAME into a route finds the
// renamed table at start; replaying the RENAME must still snapshot it (its
// rows have no binlog events after the token), and a table CREATEd after
// the token must not be snapshotted over its binlog rows.
func TestRenameIntoRouteReplayedAfterRestart(t *testing.T) {
	t.Parallel()
	m := startWithStaging(t, 34, testenv.ShardSpec{Databases: 2, Tables: 1, Rows: 50, Seed: 6}, 30)
	cfg := testConfig(t, m, empRoute(t))
	src, err := Open(t.Context(), cfg, nil, discardLogger())
	require.NoError(t, err)
	c := newConsumer(t)
	end := currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })
	require.NoError(t, src.Close()) // the job stops (or crashes) here

	// while it is stopped: a table renamed in, one created, both written
	require.NoError(t, m.Exec("RENAME TABLE emp_1.staging TO emp_1.employees_7",
		"CREATE TABLE emp_2.employees_9 LIKE emp_1.employees_1"))
	insertRows(t, m, sid("emp_1", "employees_7"), 500, 502)
	insertRows(t, m, sid("emp_2", "employees_9"), 600, 603)
	require.NoError(t, m.Exec("UPDATE emp_1.employees_7 SET last_name = 'moved' WHERE emp_no < 10"))

	src, err = Open(t.Context(), cfg, c.token, discardLogger())
	require.NoError(t, err)
	defer src.Close()
	end = currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })
	want, err := testenv.ReadShardsState(t.Context(), m, []testenv.ShardID{sid("emp_1", "employees_1"), sid("emp_2", "employees_1"),
		sid("emp_1", "employees_7"), sid("emp_2", "employees_9")})
	require.NoError(t, err)
	require.Empty(t, want.Diff(c.strState(), 10), "merged stream differs from the shards")
}
