package testenv

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPostgresClusterStartsLogicalAndRestarts(t *testing.T) {
	pg := StartPostgres(t, PostgresOptions{})
	rows, err := pg.Query("postgres", "SHOW wal_level")
	require.NoError(t, err)
	require.Equal(t, "logical", rows[0][0])
	require.NoError(t, pg.Exec("postgres", "CREATE TABLE t (id int primary key)", "INSERT INTO t VALUES (1)"))
	pg.Kill()
	require.NoError(t, pg.Start(t.Context()))
	rows, err = pg.Query("postgres", "SELECT count(*) FROM t")
	require.NoError(t, err)
	require.Equal(t, "1", rows[0][0])
}

func TestTutorialPostgresSQLLoads(t *testing.T) {
	pg := StartPostgres(t, PostgresOptions{})
	require.NoError(t, pg.Exec("postgres", TutorialPostgresSQL()))
	rows, err := pg.Query("postgres", `SELECT (SELECT count(*) FROM emp_1.employees_1) + (SELECT count(*) FROM emp_1.employees_2) + (SELECT count(*) FROM emp_2.employees_1) + (SELECT count(*) FROM emp_2.employees_2)`)
	require.NoError(t, err)
	require.Equal(t, "116", rows[0][0])
}
