package merge

import (
	"context"
	"fmt"
	mysqlpkg "github.com/go-mysql-org/go-mysql/mysql"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/testenv"
)

var nextServerID atomic.Uint32

func testConfig(t testing.TB, m *testenv.MariaDB, routes ...Route) Config {
	t.Helper()
	cfg := Config{Addr: m.Addr(), User: m.User(), Password: m.Password(), ServerID: 1100 + nextServerID.Add(1),
		Routes: routes, Heartbeat: 200 * time.Millisecond, ReadTimeout: 3 * time.Second, ChunkSize: 100, Readers: 2,
		ConnectRetries: 2, RetryBackoff: 50 * time.Millisecond}
	return cfg
}

func empRoute(t testing.TB) Route {
	r, err := NewRoute(`emp_[0-9]+`, `employees_[0-9]+`, change.TableID{Database: "demo", Table: "all_employees_info"})
	require.NoError(t, err)
	return r
}

// rowKey is a merged-table key.
type rowKey struct {
	db, table, key string
}

// consumer applies a stream to a keyed map the way an exactly-once sink
// would: rows of a transaction are buffered and applied at its commit.
type consumer struct {
	t       testing.TB
	schemas map[change.TableID]change.Schema
	state   map[rowKey]map[string]any
	pending []change.Row
	token   change.Token
	// counts of each row image applied, by a caller-chosen identity
	seen     map[string]int
	identify func(r change.Row, schema change.Schema) []string
	commits  int
	deletes  []change.ShardDelete
}

func newConsumer(t testing.TB) *consumer {
	return &consumer{t: t, schemas: map[change.TableID]change.Schema{}, state: map[rowKey]map[string]any{}, seen: map[string]int{}}
}

func rowMap(s change.Schema, vals []change.Value) map[string]any {
	m := make(map[string]any, len(vals))
	for i, c := range s.Columns {
		m[c.Name] = vals[i]
	}
	return m
}

func keyOf(s change.Schema, vals []change.Value) rowKey {
	m := rowMap(s, vals)
	k := ""
	if len(s.Key) < 2 { // no key: the whole row (duplicates collapse)
		return rowKey{fmt.Sprint(m["database_name"]), fmt.Sprint(m["table_name"]), fmt.Sprint(vals)}
	}
	for _, c := range s.Key[2:] {
		k += fmt.Sprint(m[c]) + "|"
	}
	return rowKey{m["database_name"].(string), m["table_name"].(string), k}
}

// handle takes one event; it reports whether the event ended a
// transaction (a checkpoint point).
func (c *consumer) handle(ev change.Event) bool {
	switch ev.Kind {
	case change.EventSchema:
		require.Empty(c.t, c.pending, "schema event inside a transaction")
		c.schemas[ev.Schema.Target] = ev.Schema.Schema
		return true
	case change.EventRows:
		for _, r := range ev.Rows {
			s, ok := c.schemas[r.Target]
			require.True(c.t, ok, "row for %s before its schema", r.Target)
			if r.After != nil {
				require.Len(c.t, r.After, len(s.Columns))
			}
			if r.Before != nil {
				require.Len(c.t, r.Before, len(s.Columns))
			}
		}
		c.pending = append(c.pending, ev.Rows...)
		return false
	case change.EventCommit, change.EventProgress:
		require.NotEmpty(c.t, ev.Token)
		if ev.Kind == change.EventProgress {
			require.Empty(c.t, c.pending, "progress inside a transaction")
		}
		for _, r := range c.pending {
			s := c.schemas[r.Target]
			if c.identify != nil {
				for _, id := range c.identify(r, s) {
					c.seen[id]++
				}
			}
			switch r.Op {
			case change.Insert:
				c.state[keyOf(s, r.After)] = rowMap(s, r.After)
			case change.Update:
				delete(c.state, keyOf(s, r.Before))
				c.state[keyOf(s, r.After)] = rowMap(s, r.After)
			case change.Delete:
				delete(c.state, keyOf(s, r.Before))
			}
		}
		c.pending = nil
		c.token = ev.Token
		if ev.Kind == change.EventCommit {
			c.commits++
		}
		return true
	case change.EventShardDelete:
		require.Empty(c.t, c.pending, "shard delete inside a transaction")
		for _, d := range ev.Deletes {
			for k := range c.state {
				if k.db == d.Shard.Database && k.table == d.Shard.Table {
					delete(c.state, k)
				}
			}
		}
		c.token = ev.Token
		c.deletes = append(c.deletes, ev.Deletes...)
		return true
	}
	c.t.Fatalf("unexpected event kind %d", ev.Kind)
	return false
}

// crash forgets what was not committed.
func (c *consumer) crash() { c.pending = nil }

// run reads events until stop says so (checked at checkpoints) or the
// deadline passes.
func (c *consumer) run(ctx context.Context, src *Source, stop func() bool) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 100*time.Second)
	defer cancel()
	for {
		ev, err := src.Next(ctx)
		require.NoError(c.t, err)
		if c.handle(ev) && stop() {
			return
		}
	}
}

// caughtUp reports whether the consumer's token is at or past pos and the
// snapshot is done.
func (c *consumer) caughtUp(pos binPos) bool {
	if c.token == nil {
		return false
	}
	st, err := parseToken(c.token)
	require.NoError(c.t, err)
	return st.SnapshotDone && compareFilePos(st.Pos.File, st.Pos.Pos, pos.File, pos.Pos) >= 0
}

func currentPos(t testing.TB, m *testenv.MariaDB) binPos {
	t.Helper()
	rows, err := m.Query("SHOW MASTER STATUS")
	require.NoError(t, err)
	n, err := strconv.ParseUint(rows[0][1], 10, 32)
	require.NoError(t, err)
	return binPos{File: rows[0][0], Pos: uint32(n)}
}

// strState renders the consumer state like testenv.MergedState.
func (c *consumer) strState() testenv.MergedState {
	out := testenv.MergedState{}
	for k, row := range c.state {
		m := map[string]string{}
		for _, col := range testenv.Columns {
			m[col] = fmt.Sprint(row[col])
		}
		key, err := strconv.ParseInt(m["emp_no"], 10, 64)
		require.NoError(c.t, err)
		out[testenv.MergedKey{DB: k.db, Table: k.table, Key: key}] = m
	}
	return out
}

func mysqlPos(p binPos) mysqlPosition { return mysqlPosition{Name: p.File, Pos: p.Pos} }

type mysqlPosition = mysqlpkg.Position

type mysqlError = mysqlpkg.MyError

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
