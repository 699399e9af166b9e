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

// A shard schema that the job first sees inside a transaction — the rows
// of a table created without a binlog entry, or of a shard altered
// without one (sql_log_bin=0, a statement shardsync does not parse) —
// is announced before the transaction's rows when none of them has been
// emitted yet, and the rows batched so far are widened to the new target
// columns. A transaction already streamed in part stops with a way
// forward: applying it reads the transaction again held in memory.
func TestSchemaFirstSeenInsideATransaction(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 67})
	require.NoError(t, m.Exec(testenv.TutorialSQL))
	cfg := testConfig(t, m, empRoute(t))
	cfg.BatchRows = 20
	src, err := Open(t.Context(), cfg, nil, nil)
	require.NoError(t, err)
	c := newConsumer(t)
	end := currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })

	emp := func(db, table string, no int, extra ...string) string {
		vals := fmt.Sprintf("%d,'1990-01-01','Mid','Txn','M','2020-01-01'", no)
		for _, e := range extra {
			vals += "," + e
		}
		return fmt.Sprintf("INSERT INTO %s.%s VALUES (%s)", db, table, vals)
	}
	get := func(db, table string, key int64) map[string]any {
		t.Helper()
		for k, r := range c.state {
			if k.db == db && k.table == table && r["emp_no"] == key {
				return r
			}
		}
		t.Fatalf("%s.%s #%d missing", db, table, key)
		return nil
	}
	readTo := func(src *Source, end binPos) error {
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		for !c.caughtUp(end) {
			ev, err := src.Next(ctx)
			if err != nil {
				return err
			}
			c.handle(ev)
		}
		return nil
	}

	// Not streamed yet: a row of an unchanged shard, then rows of a shard
	// altered and of a table created without binlog entries.
	require.NoError(t, m.Exec("SET sql_log_bin=0",
		"ALTER TABLE emp_2.employees_1 ADD COLUMN bonus INT NOT NULL DEFAULT 7",
		"CREATE DATABASE emp_7", "CREATE TABLE emp_7.employees_1 LIKE emp_1.employees_1",
		"SET sql_log_bin=1"))
	require.NoError(t, m.Exec("BEGIN",
		emp("emp_1", "employees_1", 91001),
		emp("emp_2", "employees_1", 91002, "8"),
		emp("emp_7", "employees_1", 91003),
		"COMMIT",
		emp("emp_1", "employees_1", 91004)))
	require.NoError(t, readTo(src, currentPos(t, m)))
	require.EqualValues(t, 8, get("emp_2", "employees_1", 91002)["bonus"])
	require.Contains(t, get("emp_1", "employees_1", 91001), "bonus", "the batched row was not widened")
	require.Equal(t, get("emp_1", "employees_1", 91004)["bonus"], get("emp_1", "employees_1", 91001)["bonus"],
		"a batched row of a shard without the column got another value than later rows of that shard")
	get("emp_7", "employees_1", 91003)

	// Streamed in part: more than BatchRows rows before the altered shard's.
	require.NoError(t, m.Exec("SET sql_log_bin=0", "ALTER TABLE emp_2.employees_2 ADD COLUMN extra VARCHAR(10)", "SET sql_log_bin=1"))
	stmts := []string{"BEGIN"}
	for i := range 30 {
		stmts = append(stmts, emp("emp_1", "employees_2", 92000+i))
	}
	stmts = append(stmts, emp("emp_2", "employees_2", 92100, "'x'"), "COMMIT")
	require.NoError(t, m.Exec(stmts...))
	end = currentPos(t, m)
	err = readTo(src, end)
	var stop *EventStopError
	require.ErrorAs(t, err, &stop)
	require.True(t, errors.Is(err, ErrIncompatibleSchema))
	require.NotEmpty(t, stop.Apply)
	require.Contains(t, err.Error(), "shardsync skip-event --position "+stop.Position()+" --apply")
	require.NotContains(t, err.Error(), "(skip:")
	require.NoError(t, src.Close())
	c.crash()

	// Without a decision the restart stops on it again.
	again, err := Open(t.Context(), cfg, c.token, nil)
	require.NoError(t, err)
	err = readTo(again, end)
	require.ErrorAs(t, err, &stop)
	require.NoError(t, again.Close())
	c.crash()

	cfg.Decisions = map[string]string{stop.Position(): DecisionApply}
	applied, err := Open(t.Context(), cfg, c.token, nil)
	require.NoError(t, err)
	defer applied.Close()
	require.NoError(t, readTo(applied, end))
	require.Equal(t, "x", get("emp_2", "employees_2", 92100)["extra"])
	for i := range 30 {
		r := get("emp_1", "employees_2", int64(92000+i))
		require.Contains(t, r, "extra")
		require.Nil(t, r["extra"])
	}
}
