package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
)

func tid(db, t string) change.TableID { return change.TableID{Database: db, Table: t} }

func TestParsePatterns(t *testing.T) {
	tests := []struct {
		name, sources, tables string
		match, nomatch        []change.TableID
		err                   string
	}{
		{name: "db regex and table regex", sources: "emp_[0-9]+", tables: "employees_[0-9]+",
			match:   []change.TableID{tid("emp_1", "employees_1"), tid("emp_12", "employees_3")},
			nomatch: []change.TableID{tid("emp_x", "employees_1"), tid("xemp_1", "employees_1"), tid("emp_1", "employees_1_bak")}},
		{name: "db only captures every table", sources: "emp_[0-9]+",
			match: []change.TableID{tid("emp_1", "anything")}, nomatch: []change.TableID{tid("emp", "t")}},
		{name: "flink db.table form", sources: `emp_[0-9]+.employees_[0-9]+`,
			match: []change.TableID{tid("emp_2", "employees_9")}, nomatch: []change.TableID{tid("emp_2", "salaries")}},
		{name: "flink escaped dot is a regex dot", sources: `app.\.*`,
			match: []change.TableID{tid("app", "orders"), tid("app", "a.b")}, nomatch: []change.TableID{tid("app2", "orders")}},
		{name: "comma list", sources: `a.t_[0-9]+, b.u_[0-9]{1,2}`,
			match: []change.TableID{tid("a", "t_1"), tid("b", "u_1")}, nomatch: []change.TableID{tid("a", "u_1"), tid("b", "t_1")}},
		{name: "bad regex", sources: "emp_[0-9", err: "not a valid regular expression"},
		{name: "missing sources", sources: "", err: "--sources is required"},
		{name: "both forms", sources: "a.b", tables: "c", err: "already names tables"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pats, err := parsePatterns(tc.sources, tc.tables)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				require.ErrorAs(t, err, new(usageError))
				return
			}
			require.NoError(t, err)
			any := func(id change.TableID) bool {
				for _, p := range pats {
					if p.matches(id) {
						return true
					}
				}
				return false
			}
			for _, id := range tc.match {
				require.True(t, any(id), "%s should match", id)
			}
			for _, id := range tc.nomatch {
				require.False(t, any(id), "%s should not match", id)
			}
		})
	}
}

func TestPlanRoutesDerivesTargets(t *testing.T) {
	pats, err := parsePatterns("emp_[0-9]+", "")
	require.NoError(t, err)
	shards := []change.TableID{tid("emp_1", "employees_1"), tid("emp_1", "employees_2"), tid("emp_2", "employees_1"),
		tid("emp_2", "salaries_1"), tid("other", "employees_1")}
	routes, err := planRoutes(pats, nil, shards)
	require.NoError(t, err)
	require.Len(t, routes, 2)
	require.Equal(t, tid("emp", "employees"), routes[0].target)
	require.Equal(t, []change.TableID{tid("emp_1", "employees_1"), tid("emp_1", "employees_2"), tid("emp_2", "employees_1")}, routes[0].shards)
	require.Equal(t, tid("emp", "salaries"), routes[1].target)
	require.True(t, routes[0].table.MatchString("employees_77"), "a shard created later joins its target")
	require.False(t, routes[0].table.MatchString("employees_archive"))
	require.Contains(t, describeRoutes(routes), "emp.employees ← emp_1.employees_1, emp_1.employees_2, emp_2.employees_1")
}

func TestPlanRoutesExplicitTarget(t *testing.T) {
	pats, err := parsePatterns("emp_[0-9]+", "employees_[0-9]+")
	require.NoError(t, err)
	target, err := parseTarget("demo.all_employees_info")
	require.NoError(t, err)
	routes, err := planRoutes(pats, target, []change.TableID{tid("emp_1", "employees_1"), tid("emp_2", "employees_2"), tid("emp_2", "x")})
	require.NoError(t, err)
	require.Len(t, routes, 1)
	require.Len(t, routes[0].shards, 2)
	_, err = parseTarget("nodot")
	require.ErrorContains(t, err, "must be database.table")
}

func TestPlanRoutesNeedsLiteralPrefix(t *testing.T) {
	pats, err := parsePatterns("[a-z]+_[0-9]+", "")
	require.NoError(t, err)
	_, err = planRoutes(pats, nil, nil)
	require.ErrorContains(t, err, "give --target")
}

func TestStripShardNumber(t *testing.T) {
	for in, want := range map[string]string{"employees_2": "employees", "employees12": "employees", "t-3": "t", "42": "42", "plain": "plain"} {
		require.Equal(t, want, stripShardNumber(in), in)
	}
	require.Equal(t, "emp", literalPrefix("emp_[0-9]+"))
}
