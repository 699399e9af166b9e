package merge

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/testenv"
)

func TestTutorialShards(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 1})
	require.NoError(t, m.Exec(testenv.TutorialSQL))
	cfg := testConfig(t, m, empRoute(t))
	cfg.ChunkSize = 7 // several chunks per shard
	src, err := Open(t.Context(), cfg, nil, nil)
	require.NoError(t, err)
	defer src.Close()

	targets := src.Targets()
	require.Len(t, targets, 1)
	require.Len(t, targets[0].Shards, 4)
	sch := targets[0].Schema
	require.Equal(t, []string{"database_name", "table_name", "emp_no"}, sch.Key)
	require.Equal(t, "database_name", sch.Columns[0].Name)
	require.Equal(t, "table_name", sch.Columns[1].Name)

	c := newConsumer(t)
	end := currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })
	require.Len(t, c.state, testenv.TutorialRows)
	require.Equal(t, testenv.TutorialState(), c.strState())
	for k, row := range c.state {
		require.Equal(t, k.db, row["database_name"])
		require.Equal(t, k.table, row["table_name"])
	}
	p := src.Progress()
	require.True(t, p.Done)
	var rows int64
	for _, tp := range p.Tables {
		rows += tp.Rows
		require.Greater(t, tp.Chunks, 1)
	}
	require.EqualValues(t, testenv.TutorialRows, rows)

	// Binlog phase: a change after the snapshot arrives routed.
	require.NoError(t, m.Exec("INSERT INTO emp_2.employees_1 VALUES (10001,'1953-09-02','Georgi','Facello','M','1986-06-26')",
		"UPDATE emp_2.employees_1 SET first_name='Zed' WHERE emp_no=10001"))
	end = currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })
	found := false
	for k, row := range c.state {
		if k.db == "emp_2" && k.table == "employees_1" && row["emp_no"] == int64(10001) {
			require.Equal(t, "Zed", row["first_name"])
			found = true
		}
	}
	require.True(t, found)
}
