package merge

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/testenv"
)

// fillingConsumer is a consumer that also does what a sink does on an
// added column with a default: the target's existing rows take it.
func fillingHandle(c *consumer, ev change.Event) bool {
	if ev.Kind == change.EventSchema {
		for _, ch := range ev.Schema.Changes {
			if ch.Kind != change.AddColumn {
				continue
			}
			for k, row := range c.state {
				if _, has := row[ch.Column.Name]; has || k.db == "" {
					continue
				}
				if ch.Column.Default != nil {
					row[ch.Column.Name] = *ch.Column.Default
				} else {
					row[ch.Column.Name] = nil
				}
			}
		}
	}
	return c.handle(ev)
}

func runFilling(t *testing.T, c *consumer, src *Source, stop func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Second)
	defer cancel()
	for {
		ev, err := src.Next(ctx)
		require.NoError(t, err)
		if fillingHandle(c, ev) && stop() {
			return
		}
	}
}

// sameAsSource compares the consumer's merged rows value by value with the
// shards' rows (columns id, v and, where given, bonus).
func sameAsSource(t *testing.T, m *testenv.MariaDB, c *consumer, shards []string, cols []string) {
	t.Helper()
	want := map[string]string{}
	for _, db := range shards {
		sel := make([]string, len(cols))
		for i, col := range cols {
			sel[i] = "IFNULL(CAST(" + col + " AS CHAR), '<nil>')"
		}
		rows, err := m.Query("SELECT " + strings.Join(sel, ", ") + " FROM " + db + ".t ORDER BY id")
		require.NoError(t, err)
		for _, r := range rows {
			want[db+"#"+r[0]] = strings.Join(r, "|")
		}
	}
	got := map[string]string{}
	for k, row := range c.state {
		if !slices.Contains(shards, k.db) {
			continue
		}
		vals := make([]string, len(cols))
		for i, col := range cols {
			v, ok := row[col]
			require.True(t, ok, "row %v has no column %s", k, col)
			vals[i] = fmt.Sprint(v)
		}
		got[k.db+"#"+vals[0]] = strings.Join(vals, "|")
	}
	require.Equal(t, want, got)
}

func threeShards(t *testing.T, serverID uint32) (*testenv.MariaDB, Route) {
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: serverID})
	for _, db := range []string{"s_1", "s_2", "s_3"} {
		require.NoError(t, m.Exec("CREATE DATABASE "+db, "CREATE TABLE "+db+".t (id INT PRIMARY KEY, v VARCHAR(20))"))
		var vals []string
		for i := 1; i <= 250; i++ {
			vals = append(vals, fmt.Sprintf("(%d,'%s-%d')", i, db, i))
		}
		require.NoError(t, m.Exec("INSERT INTO "+db+".t VALUES "+strings.Join(vals, ",")))
	}
	r, err := NewRoute(`s_[0-9]`, `t`, change.TableID{Database: "x", Table: "merged"})
	require.NoError(t, err)
	return m, r
}

// A restart whose resume position lies before ADD COLUMNs of the shards
// reads the events written before each ALTER with the schema they were
// written under (the token's schema history), and rows that existed before
// an ADD COLUMN … DEFAULT carry the default, as in the source.
func TestResumeBeforeAddColumnDefault(t *testing.T) {
	t.Parallel()
	m, route := threeShards(t, 31)
	cfg := testConfig(t, m, route)
	src, err := Open(t.Context(), cfg, nil, nil)
	require.NoError(t, err)
	c := newConsumer(t)
	end := currentPos(t, m)
	runFilling(t, c, src, func() bool { return c.caughtUp(end) })
	tok0, state0 := c.token, map[rowKey]map[string]any{}
	for k, v := range c.state {
		state0[k] = maps.Clone(v)
	}

	require.NoError(t, m.Exec(
		"INSERT INTO s_1.t VALUES (1000,'before')",
		"UPDATE s_1.t SET v='upd-before' WHERE id=1",
		"ALTER TABLE s_1.t ADD COLUMN bonus INT NOT NULL DEFAULT 7",
		"INSERT INTO s_1.t VALUES (1001,'after',9)",
		"UPDATE s_1.t SET bonus=8 WHERE id=2",
		"INSERT INTO s_2.t VALUES (1002,'s2-before')",
		"UPDATE s_2.t SET v='s2-upd' WHERE id=3",
		"ALTER TABLE s_2.t ADD COLUMN bonus INT NOT NULL DEFAULT 7",
		"INSERT INTO s_2.t VALUES (1003,'s2-after',5)",
		"DELETE FROM s_3.t WHERE id=4",
		"ALTER TABLE s_3.t ADD COLUMN bonus INT NOT NULL DEFAULT 7",
		"UPDATE s_3.t SET bonus=1 WHERE id=5",
	))
	end = currentPos(t, m)
	runFilling(t, c, src, func() bool { return c.caughtUp(end) })
	sameAsSource(t, m, c, []string{"s_1", "s_2", "s_3"}, []string{"id", "v", "bonus"})
	require.NoError(t, src.Close())

	// Crash: nothing after tok0 was committed; the target already has the
	// column (a sink's ALTER is not undone).
	c.crash()
	c.token, c.state = tok0, state0
	for _, row := range c.state {
		row["bonus"] = "7"
	}
	src, err = Open(t.Context(), cfg, tok0, nil)
	require.NoError(t, err)
	defer src.Close()
	runFilling(t, c, src, func() bool { return c.caughtUp(end) })
	sameAsSource(t, m, c, []string{"s_1", "s_2", "s_3"}, []string{"id", "v", "bonus"})
}

// A shard that adds a column the target has with another default than the
// one its rows carry there stops the stream with a clear message.
func TestAddColumnConflictingDefaultStops(t *testing.T) {
	t.Parallel()
	m, route := threeShards(t, 32)
	src, err := Open(t.Context(), testConfig(t, m, route), nil, nil)
	require.NoError(t, err)
	defer src.Close()
	c := newConsumer(t)
	end := currentPos(t, m)
	runFilling(t, c, src, func() bool { return c.caughtUp(end) })
	require.NoError(t, m.Exec("ALTER TABLE s_1.t ADD COLUMN bonus INT NOT NULL DEFAULT 7", "ALTER TABLE s_2.t ADD COLUMN bonus INT DEFAULT 3"))
	for {
		ev, err := src.Next(t.Context())
		if err != nil {
			require.ErrorIs(t, err, ErrIncompatibleSchema)
			require.Contains(t, err.Error(), "shard s_2.t added column bonus")
			require.Contains(t, err.Error(), `"3"`)
			require.Contains(t, err.Error(), `"7"`)
			return
		}
		fillingHandle(c, ev)
	}
}

// DDL at random points of a snapshot, in both snapshot modes: rows of one
// shape are never emitted under the other shape's schema. Compatible
// changes (ADD COLUMN with a default, a widened type) end exact; an
// incompatible one (a narrowed type, DROP, RENAME COLUMN) stops the stream with
// the incompatible-schema message, and what was committed before it is
// the source's state of those rows.
func TestDDLDuringSnapshot(t *testing.T) {
	t.Parallel()
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	for _, mode := range []string{SnapshotConsistent, SnapshotWatermark} {
		for _, tc := range []struct {
			name  string
			ddl   []string
			cols  []string
			stops string
		}{
			{name: "add", ddl: []string{"ALTER TABLE s_2.t ADD COLUMN bonus INT NOT NULL DEFAULT 7", "UPDATE s_2.t SET bonus=id WHERE id % 3 = 0", "INSERT INTO s_2.t VALUES (5000,'new',11)"}, cols: []string{"id", "v", "bonus"}},
			{name: "widen", ddl: []string{"ALTER TABLE s_2.t MODIFY COLUMN v VARCHAR(200)", "UPDATE s_2.t SET v=CONCAT(v, REPEAT('w', 60)) WHERE id % 4 = 0"}, cols: []string{"id", "v"}},
			{name: "narrow", ddl: []string{"ALTER TABLE s_2.t MODIFY COLUMN v VARCHAR(12)"}, stops: "not a widening"},
			{name: "drop", ddl: []string{"ALTER TABLE s_2.t DROP COLUMN v"}, stops: "lost column v"},
			{name: "rename", ddl: []string{"ALTER TABLE s_2.t RENAME COLUMN v TO w"}, stops: "s_2.t"},
		} {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				m, route := threeShards(t, 40+uint32(rng.IntN(1000)))
				cfg := testConfig(t, m, route)
				cfg.SnapshotMode = mode
				cfg.ChunkSize = 20
				cfg.BatchRows = 10
				cfg.Readers = 1
				src, err := Open(t.Context(), cfg, nil, nil)
				require.NoError(t, err)
				defer src.Close()
				c := newConsumer(t)
				// Run the DDL after a random number of snapshot rows of
				// s_2 reached the consumer: the reader is then at most a
				// few chunks ahead, so the DDL lands while s_2's chunks
				// are still being read (between two of its chunks).
				after := 1 + rng.IntN(200)
				seen := 0
				ctx, cancel := context.WithTimeout(t.Context(), 100*time.Second)
				defer cancel()
				var end binPos
				for {
					ev, err := src.Next(ctx)
					if err != nil {
						require.NotEmpty(t, tc.stops, "stream failed: %v", err)
						require.ErrorIs(t, err, ErrIncompatibleSchema)
						require.Contains(t, err.Error(), tc.stops)
						// Everything committed is the source's state of
						// those rows, read with their own shape.
						for k, row := range c.state {
							require.Equal(t, fmt.Sprintf("%s-%v", k.db, row["id"]), row["v"], "row %v", k)
						}
						// The stop has a way forward: skipping the change
						// (recorded as the operator would) lets a restart
						// from the last committed token go on past it,
						// the target keeping its columns, and every shard
						// ends with the source's rows.
						var stop *EventStopError
						require.ErrorAs(t, err, &stop, "the stop names no way forward")
						require.NotEmpty(t, stop.Skip)
						require.Contains(t, err.Error(), "shardsync skip-event --position "+stop.Position())
						require.NoError(t, src.Close())
						c.crash()
						cfg.Decisions = map[string]string{stop.Position(): DecisionSkip}
						again, err := Open(t.Context(), cfg, c.token, nil)
						require.NoError(t, err)
						defer again.Close()
						for !c.caughtUp(end) {
							ev, err := again.Next(ctx)
							require.NoError(t, err, "after skipping %s", stop.Position())
							fillingHandle(c, ev)
						}
						sameAsSource(t, m, c, []string{"s_1", "s_3"}, []string{"id", "v"})
						sameAsSource(t, m, c, []string{"s_2"}, []string{"id"})
						return
					}
					if ev.Kind == change.EventRows && end.File == "" {
						for _, r := range ev.Rows {
							if r.Source.Database == "s_2" {
								seen++
							}
						}
						if seen >= after {
							t.Logf("DDL after %d rows of s_2", seen)
							require.NoError(t, m.Exec(tc.ddl...))
							end = currentPos(t, m)
						}
					}
					fillingHandle(c, ev)
					if end.File != "" && c.caughtUp(end) {
						break
					}
				}
				require.Empty(t, tc.stops, "the stream did not stop")
				sameAsSource(t, m, c, []string{"s_1", "s_2", "s_3"}, tc.cols[:2])
				if len(tc.cols) > 2 {
					for k, row := range c.state {
						if k.db != "s_2" {
							require.Equal(t, "7", fmt.Sprint(row["bonus"]), "fill of %v", k)
						}
					}
					sameAsSource(t, m, c, []string{"s_2"}, tc.cols)
				}
			})
		}
	}
}

func TestCheckEvolutionRename(t *testing.T) {
	id := change.TableID{Database: "s_1", Table: "t"}
	i32 := colType{base: "int"}
	vc := colType{base: "varchar", length: 20}
	old := []shardCol{{name: "id", typ: i32}, {name: "v", typ: vc}}
	err := checkEvolution(id, old, []shardCol{{name: "id", typ: i32}, {name: "w", typ: vc}}, []string{"id"}, []string{"id"}, "ALTER TABLE t RENAME COLUMN v TO w")
	require.ErrorIs(t, err, ErrIncompatibleSchema)
	require.Contains(t, err.Error(), "shard s_1.t renamed column v to w")
	// Widening and adding at the end are compatible.
	require.NoError(t, checkEvolution(id, old, []shardCol{{name: "id", typ: colType{base: "bigint"}}, {name: "v", typ: colType{base: "varchar", length: 80}}, {name: "b", typ: i32}},
		[]string{"id"}, []string{"id"}, "ALTER TABLE t MODIFY …"))
}
