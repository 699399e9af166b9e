package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDemo runs `shardsync demo` as a user would and checks what it shows.
func TestDemo(t *testing.T) {
	out, err := run(t, "demo")
	require.NoError(t, err, out)
	for _, want := range []string{
		"Starting MariaDB", "emp_1.employees_1: 36 rows", "Starting the Doris emulator",
		"demo.all_employees_info ← emp_1.employees_1, emp_1.employees_2, emp_2.employees_1, emp_2.employees_2",
		"doris> SELECT COUNT(*) FROM demo.all_employees_info;\n    count(*)\n    116\n",
		"database_name  table_name   emp_no",
		"mariadb> DELETE FROM emp_1.employees_1 WHERE emp_no IN (10001, 10002, 10003);",
		"count(*)\n    113\n",
		"Shardsync", "Stopping the job cleanly", "Done:",
	} {
		require.Contains(t, out, want)
	}
	require.NotContains(t, strings.ToLower(out), "error")
}

// TestDemoPostgres runs `shardsync demo --source postgres`.
func TestDemoPostgres(t *testing.T) {
	out, err := run(t, "demo", "--source", "postgres")
	require.NoError(t, err, out)
	for _, want := range []string{
		"Starting PostgreSQL 15", "emp_1.employees_1: 36 rows",
		"demo.all_employees_info ← emp_1.employees_1, emp_1.employees_2, emp_2.employees_1, emp_2.employees_2",
		"doris> SELECT COUNT(*) FROM demo.all_employees_info;\n    count(*)\n    116\n",
		"postgres> DELETE FROM emp_1.employees_1 WHERE emp_no IN (10001, 10002, 10003);",
		"count(*)\n    113\n", "Shardsync", "Done:",
	} {
		require.Contains(t, out, want)
	}
	require.NotContains(t, strings.ToLower(out), "error")
}
