package merge

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/testenv"
)

// MariaDB writes CREATE TABLE … SELECT as one transaction that mixes DDL
// and rows: a GTID event (flagged DDL, not standalone), the CREATE TABLE
// query, the table map and rows of the new table, then XID (InnoDB). The
// new table joins the route it matches, and its rows are one source
// transaction with the CREATE: no token between them, and a restart from
// the token before it delivers all its rows, from the token after it none.
func TestCreateTableSelectMariaDB(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 66})
	require.NoError(t, m.Exec(testenv.TutorialSQL))
	cfg := testConfig(t, m, empRoute(t))
	src, err := Open(t.Context(), cfg, nil, nil)
	require.NoError(t, err)
	c := newConsumer(t)
	end := currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })
	before := c.token

	require.NoError(t, m.Exec("CREATE DATABASE emp_5",
		"CREATE TABLE emp_5.employees_1 (PRIMARY KEY (emp_no)) SELECT * FROM emp_1.employees_1",
		"CREATE TABLE emp_5.unrouted (PRIMARY KEY (emp_no)) SELECT * FROM emp_1.employees_2",
		"INSERT INTO emp_2.employees_1 VALUES (90009,'1990-01-01','After','Ctas','M','2020-01-01')"))
	rows, err := m.Query("SELECT COUNT(*) FROM emp_5.employees_1")
	require.NoError(t, err)
	n, err := strconv.Atoi(rows[0][0])
	require.NoError(t, err)
	require.Positive(t, n)
	newShard := change.TableID{Database: "emp_5", Table: "employees_1"}

	// read returns the events up to the binlog end, handled by c.
	read := func(src *Source) []change.Event {
		end := currentPos(t, m)
		var evs []change.Event
		for !c.caughtUp(end) {
			ev, err := src.Next(t.Context())
			require.NoError(t, err)
			evs = append(evs, ev)
			c.handle(ev)
		}
		return evs
	}
	// ctasRows checks that the new shard's rows came as one transaction
	// and returns how many there were and the token that ended it.
	ctasRows := func(evs []change.Event) (int, change.Token) {
		count, open := 0, false
		var tok change.Token
		for _, ev := range evs {
			switch ev.Kind {
			case change.EventRows:
				for _, r := range ev.Rows {
					if r.Source == newShard {
						require.Equal(t, change.Insert, r.Op)
						count++
						open = true
					} else {
						require.False(t, open, "a row of another shard inside CREATE TABLE … SELECT")
					}
				}
			case change.EventCommit, change.EventProgress:
				if open {
					tok, open = ev.Token, false
				}
			}
		}
		require.False(t, open)
		return count, tok
	}
	evs := read(src)
	got, after := ctasRows(evs)
	require.Equal(t, n, got, "rows of CREATE TABLE … SELECT")
	require.NotNil(t, after)
	require.Len(t, c.schemas[change.TableID{Database: "demo", Table: "all_employees_info"}].Columns, 8)
	var shards []change.TableID
	for _, ti := range src.Targets() {
		shards = append(shards, ti.Shards...)
	}
	require.Contains(t, shards, newShard)
	require.NotContains(t, shards, change.TableID{Database: "emp_5", Table: "unrouted"})
	for k := range c.state {
		require.NotEqual(t, "unrouted", k.table)
	}
	require.NoError(t, src.Close())

	// A restart from the token before delivers the whole transaction;
	// from the token after it, nothing of it.
	for _, tc := range []struct {
		tok  change.Token
		want int
	}{{before, n}, {after, 0}} {
		src, err := Open(t.Context(), cfg, tc.tok, nil)
		require.NoError(t, err)
		c.token = tc.tok
		got, _ := ctasRows(read(src))
		require.Equal(t, tc.want, got)
		require.NoError(t, src.Close())
	}
}
