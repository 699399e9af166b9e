package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/merge"
	"github.com/shardsync/shardsync/testenv"
)

// testCfg is a source configuration for pg's database postgres.
func testCfg(t *testing.T, pg *testenv.Postgres, schemas, tables, slot string) Config {
	r, err := merge.NewRoute(schemas, tables, change.TableID{Database: "dw", Table: "all"})
	require.NoError(t, err)
	c := DefaultConfig()
	c.Addr, c.User, c.Database, c.SSLMode = pg.Addr(), "postgres", "postgres", "disable"
	c.Slot, c.Publication = slot, slot+"_pub"
	c.Routes = []merge.Route{r}
	c.ChunkSize = 7
	c.BatchRows = 5
	c.StatusInterval = 200 * time.Millisecond
	c.DiscoverInterval = 300 * time.Millisecond
	c.IdleProgress = 100 * time.Millisecond
	return c
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// model applies the stream the way an exactly-once sink would, and fails
// on anything a duplicate or a loss would cause: an insert of a key that
// exists, an update or delete of one that does not.
type model struct {
	t       *testing.T
	mu      sync.Mutex
	schemas map[change.TableID]change.Schema
	rows    map[string][]change.Value // key: db.table.id
	pending []change.Row
	last    change.Token
	commits int
}

func newModel(t *testing.T) *model {
	return &model{t: t, schemas: map[change.TableID]change.Schema{}, rows: map[string][]change.Value{}}
}

func (m *model) key(r change.Row, vals []change.Value) string {
	s := m.schemas[r.Target]
	var parts []string
	for _, k := range s.Key {
		parts = append(parts, fmt.Sprint(vals[s.Index(k)]))
	}
	return strings.Join(parts, "|")
}

func (m *model) apply(ev change.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch ev.Kind {
	case change.EventSchema:
		require.Empty(m.t, m.pending, "schema events come between transactions")
		m.schemas[ev.Schema.Target] = ev.Schema.Schema
		// Rows already stored keep their width; pad them.
		for k, v := range m.rows {
			if n := len(ev.Schema.Schema.Columns); len(v) < n {
				m.rows[k] = append(v, make([]change.Value, n-len(v))...)
			}
		}
	case change.EventRows:
		for _, r := range ev.Rows {
			require.Len(m.t, rowOf(r), len(m.schemas[r.Target].Columns), "rows match the announced schema")
		}
		m.pending = append(m.pending, ev.Rows...)
	case change.EventCommit, change.EventProgress:
		if ev.Kind == change.EventProgress {
			require.Empty(m.t, m.pending, "progress comes between transactions")
		}
		for _, r := range m.pending {
			switch r.Op {
			case change.Insert:
				k := m.key(r, r.After)
				_, dup := m.rows[k]
				require.False(m.t, dup, "insert of existing row %s (a duplicate)", k)
				m.rows[k] = r.After
			case change.Update:
				kb, ka := m.key(r, r.Before), m.key(r, r.After)
				_, ok := m.rows[kb]
				require.True(m.t, ok, "update of missing row %s", kb)
				delete(m.rows, kb)
				m.rows[ka] = r.After
			case change.Delete:
				k := m.key(r, r.Before)
				_, ok := m.rows[k]
				require.True(m.t, ok, "delete of missing row %s", k)
				delete(m.rows, k)
			}
		}
		m.pending = nil
		m.last = ev.Token
		m.commits++
	}
}

func rowOf(r change.Row) []change.Value {
	if r.After != nil {
		return r.After
	}
	return r.Before
}

// snapshot renders the model's rows as sorted text lines.
func (m *model) lines() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, v := range m.rows {
		out = append(out, render(v))
	}
	sort.Strings(out)
	return out
}

func render(vals []change.Value) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		switch x := v.(type) {
		case nil:
			parts[i] = "NULL"
		case []byte:
			parts[i] = fmt.Sprintf("%x", x)
		default:
			parts[i] = fmt.Sprint(x)
		}
	}
	return strings.Join(parts, ",")
}

// consume reads src into m until cond holds (checked after each commit)
// or the deadline passes.
func consume(t *testing.T, src *Source, m *model, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	for {
		ev, err := src.Next(ctx)
		require.NoError(t, err)
		m.apply(ev)
		if ev.Kind == change.EventCommit || ev.Kind == change.EventProgress {
			src.Committed(ev.Token)
			if cond() {
				return
			}
		}
	}
}

// has reports whether the model holds a row whose rendering contains s.
func (m *model) has(s string) bool {
	for _, l := range m.lines() {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// snapshotDone reports whether the last commit the model applied carries a
// token whose tables are all snapshotted. Source.Progress is not usable
// for this: it reports the producer, which runs ahead of the consumer by
// the events buffer, so it can say Done while chunks are still unread.
func (m *model) snapshotDone() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.last == nil {
		return false
	}
	st, err := parseToken(m.last)
	if err != nil || len(st.Tables) == 0 {
		return false
	}
	for _, t := range st.Tables {
		if !t.Done {
			return false
		}
	}
	return true
}
