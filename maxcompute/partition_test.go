package maxcompute

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/testenv/mcemu"
	"github.com/shardsync/shardsync/twopc"
	"github.com/shardsync/shardsync/twopc/twopctest"
)

// regSchema is empSchema plus a region column, the dynamic partition
// column of these tests.
func regSchema(keyed bool) change.TableSchema {
	ts := empSchema(keyed)
	ts.Schema.Columns = append(ts.Schema.Columns, col("region", change.KindString, "varchar(8)", false))
	return ts
}

func rimg(src change.TableID, id int64, name, region string) []change.Value {
	return []change.Value{src.Database, src.Table, id, name, change.Decimal("1.00"), region}
}

func rins(src change.TableID, id int64, name, region string) change.Row {
	return change.Row{Op: change.Insert, Target: empTarget, Source: src, After: rimg(src, id, name, region)}
}

func rupd(src change.TableID, id int64, oldRegion, name, region string) change.Row {
	return change.Row{Op: change.Update, Target: empTarget, Source: src,
		Before: rimg(src, id, "?", oldRegion), After: rimg(src, id, name, region)}
}

func rdel(src change.TableID, id int64, region string) change.Row {
	return change.Row{Op: change.Delete, Target: empTarget, Source: src, Before: rimg(src, id, "?", region)}
}

// regionRows renders the emulator's rows as db|table|id|name@partition.
func regionRows(e *mcemu.Emulator, table string) []string {
	var out []string
	for _, r := range e.Rows(table) {
		out = append(out, fmt.Sprintf("%v|%v|%v|%v@%v", r[0], r[1], r[2], r[3], r[len(r)-1]))
	}
	sort.Strings(out)
	return out
}

// A Delta table partitioned by a column: one session per partition per
// epoch, and an update that moves a row to another partition deletes it
// from the old one (Flink CDC writes only the new one and leaves the old row
// behind).
func TestDynamicPartitionDeltaMovesRows(t *testing.T) {
	e := mcemu.New(mcemu.Options{})
	t.Cleanup(e.Close)
	s := newSink(t, e, func(c *Config) { c.Partition = "region" })
	require.NoError(t, s.ApplySchema(t.Context(), regSchema(true)))
	info, ok := e.Table("all_employees")
	require.True(t, ok)
	require.Equal(t, []mcemu.Column{{Name: "region", Type: "STRING"}}, info.Partitions)
	for _, c := range info.Columns {
		require.NotEqual(t, "region", c.Name, "the partition column is not a data column")
	}

	rec := &recorder{}
	tx, err := s.Begin(t.Context(), 1, rec)
	require.NoError(t, err)
	require.NoError(t, tx.Write(t.Context(), []change.Row{
		rins(shard(1), 1, "a", "cn"), rins(shard(1), 2, "b", "cn"), rins(shard(2), 1, "c", "us"),
	}))
	ps, err := tx.PreCommit(t.Context())
	require.NoError(t, err)
	require.Len(t, ps, 2, "one session per partition")
	require.NotEqual(t, ps[0].Label, ps[1].Label)
	for _, p := range ps {
		require.Contains(t, p.String(), p.TxnID)
		out, err := newSink(t, e, func(c *Config) { c.Partition = "region" }).Commit(t.Context(), p)
		require.NoError(t, err, "a later process commits from the Prepared alone")
		require.Equal(t, twopc.Committed, out)
	}
	require.Equal(t, []string{"region=cn", "region=us"}, e.Partitions("all_employees"))
	require.Equal(t, []string{"emp_1|employees_1|1|a@cn", "emp_1|employees_1|2|b@cn", "emp_2|employees_2|1|c@us"},
		regionRows(e, "all_employees"))

	runEpoch(t, s, 2, []change.Row{
		rupd(shard(1), 1, "cn", "a-moved", "eu"), // a new partition, created on the way
		rupd(shard(1), 2, "cn", "b2", "cn"),      // same partition: a plain upsert
		rdel(shard(2), 1, "us"),
		rins(shard(2), 9, "z", "us"),
		rupd(shard(2), 9, "us", "z-moved", "cn"),
		rupd(shard(2), 9, "cn", "z-back", "us"), // moved twice in one epoch
	})
	require.Equal(t, []string{
		"emp_1|employees_1|1|a-moved@eu", "emp_1|employees_1|2|b2@cn", "emp_2|employees_2|9|z-back@us",
	}, regionRows(e, "all_employees"))

	err = s.ApplySchema(t.Context(), empSchema(true))
	require.ErrorContains(t, err, "partition level region: the source has no such column")
}

// A fixed partition from the pipeline file, on a Delta and a plain table;
// an existing partitioned table without the option is refused with the fix.
func TestStaticPartition(t *testing.T) {
	for _, keyed := range []bool{true, false} {
		t.Run(fmt.Sprintf("keyed=%v", keyed), func(t *testing.T) {
			e := mcemu.New(mcemu.Options{})
			t.Cleanup(e.Close)
			s := newSink(t, e, func(c *Config) { c.Partition = "ds=20240101" })
			require.NoError(t, s.ApplySchema(t.Context(), empSchema(keyed)))
			runEpoch(t, s, 1, []change.Row{ins(shard(1), 1, "a", "1.00"), ins(shard(2), 1, "b", "2.00")})
			runEpoch(t, s, 2, []change.Row{upd(shard(1), 1, 1, "a2", "3.00")})
			require.Equal(t, []string{"ds=20240101"}, e.Partitions("all_employees"))
			var got []string
			for _, r := range e.Rows("all_employees") {
				got = append(got, fmt.Sprintf("%v|%v@%v", r[2], r[3], r[5]))
			}
			sort.Strings(got)
			want := []string{"1|a2@20240101", "1|b@20240101"}
			if !keyed {
				want = []string{"1|a2@20240101", "1|a@20240101", "1|b@20240101"}
			}
			require.Equal(t, want, got)

			err := newSink(t, e).ApplySchema(t.Context(), empSchema(keyed))
			require.ErrorContains(t, err, "is partitioned by (ds): set the sink option partition")
			err = newSink(t, e, func(c *Config) { c.Partition = "dt=1" }).ApplySchema(t.Context(), empSchema(keyed))
			require.ErrorContains(t, err, "partition column 1 of table shardsync.all_employees is ds")
		})
	}
}

func TestPartitionOptionErrors(t *testing.T) {
	for _, tc := range []struct{ opt, want string }{
		{"region,ds=1", "fixed levels come first"},
		{"ds=a/b", "a partition value cannot"},
		{"ds=1,ds=2", "names ds twice"},
		{"1x", "is not a column name"},
	} {
		_, err := parsePartitionOption(tc.opt)
		require.ErrorContains(t, err, tc.want, tc.opt)
	}
	e := mcemu.New(mcemu.Options{})
	t.Cleanup(e.Close)
	err := newSink(t, e, func(c *Config) { c.Partition = "id" }).ApplySchema(t.Context(), empSchema(true))
	require.ErrorContains(t, err, "is a key column")
	err = newSink(t, e, func(c *Config) { c.Partition = "salary" }).ApplySchema(t.Context(), empSchema(true))
	require.ErrorContains(t, err, "must be an integer or a string")

	// a NULL partition value stops the epoch with the row's table and the fix
	s := newSink(t, e, func(c *Config) { c.Partition = "region" })
	require.NoError(t, s.ApplySchema(t.Context(), regSchema(false)))
	tx, err := s.Begin(t.Context(), 1, &recorder{})
	require.NoError(t, err)
	r := rins(shard(1), 1, "a", "x")
	r.After[5] = nil
	require.ErrorContains(t, tx.Write(t.Context(), []change.Row{r}), "partition column region: the value is NULL")
}

// With the schema model the target's database names the schema:
// project.schema.table through SQL, the REST API and both tunnels, also
// when a later process commits.
func TestSchemaModelThreeLevelNames(t *testing.T) {
	for _, keyed := range []bool{true, false} {
		t.Run(fmt.Sprintf("keyed=%v", keyed), func(t *testing.T) {
			e := mcemu.New(mcemu.Options{SchemaModel: true})
			t.Cleanup(e.Close)
			s := newSink(t, e, func(c *Config) { c.Partition = "region" })
			require.NoError(t, s.ApplySchema(t.Context(), regSchema(keyed)))
			info, ok := e.Table("demo.all_employees")
			require.True(t, ok, "the table is in schema demo")
			require.Equal(t, "demo", info.Schema)
			_, ok = e.Table("all_employees")
			require.False(t, ok, "not in schema default")
			require.Contains(t, strings.Join(e.DDLLog(), "\n"), "shardsync.`demo`.`all_employees`")

			tx, err := s.Begin(t.Context(), 1, &recorder{})
			require.NoError(t, err)
			require.NoError(t, tx.Write(t.Context(), []change.Row{rins(shard(1), 1, "a", "cn"), rins(shard(1), 2, "b", "us")}))
			ps, err := tx.PreCommit(t.Context())
			require.NoError(t, err)
			require.Len(t, ps, 2)
			for _, p := range ps {
				out, err := newSink(t, e).Commit(t.Context(), p)
				require.NoError(t, err)
				require.Equal(t, twopc.Committed, out)
			}
			require.Equal(t, []string{"emp_1|employees_1|1|a@cn", "emp_1|employees_1|2|b@us"}, regionRows(e, "demo.all_employees"))
		})
	}
}

// The shared twopc conformance suite on a schema-model project with a fixed
// partition (one session per target, as the suite expects).
func TestConformancePartitionedInSchema(t *testing.T) {
	n := 0
	tables := [2]change.TableSchema{empSchema(true), empSchema(false)}
	tables[1].Target = change.TableID{Database: "demo", Table: "plain_employees"}
	part := func(c *Config) { c.Partition = "ds=20240101" }
	emus := map[twopc.Sink]*mcemu.Emulator{} // one emulator per subtest's sink
	twopctest.RunConformance(t, twopctest.Harness{
		New: func(t *testing.T) twopc.Sink {
			e := mcemu.New(mcemu.Options{SchemaModel: true})
			t.Cleanup(e.Close)
			s := newSink(t, e, part)
			emus[s] = e
			return s
		},
		Reopen: func(t *testing.T, s twopc.Sink) twopc.Sink {
			r := newSink(t, emus[s], part)
			emus[r] = emus[s]
			return r
		},
		Tables: tables,
		Rows: func(target change.TableID, k int) []change.Row {
			out := make([]change.Row, k)
			for i := range out {
				n++
				src := shard(1)
				out[i] = change.Row{Op: change.Insert, Target: target, Source: src, After: img(src, int64(n*1000+i), "r", "1.00")}
			}
			return out
		},
		Visible: func(t *testing.T, s twopc.Sink, target change.TableID) int {
			return len(emus[s].Rows(target.Database + "." + target.Table))
		},
	})
}

// An epoch that stopped before its commit point with sessions in several
// partitions: every session was recorded before its first record, and
// recovery aborts each from its record; none can commit afterwards.
func TestOpenEpochAbortsEveryPartitionSession(t *testing.T) {
	e := mcemu.New(mcemu.Options{})
	t.Cleanup(e.Close)
	part := func(c *Config) { c.Partition = "region" }
	a := newSink(t, e, part)
	require.NoError(t, a.ApplySchema(t.Context(), regSchema(true)))
	rec := &recorder{}
	tx, err := a.Begin(t.Context(), 3, rec)
	require.NoError(t, err)
	require.NoError(t, tx.Write(t.Context(), []change.Row{rins(shard(1), 1, "a", "cn"), rins(shard(1), 2, "b", "us"), rins(shard(1), 3, "c", "eu")}))
	// the process dies here
	last := map[string]twopc.Prepared{}
	for _, p := range rec.intents {
		last[p.Label] = p
	}
	require.Len(t, last, 3, "one label per partition")
	b := newSink(t, e, part)
	for _, p := range last {
		require.NotEmpty(t, p.TxnID, "the session id was recorded")
		out, err := b.Abort(t.Context(), p)
		require.NoError(t, err)
		require.Equal(t, twopc.Aborted, out)
		out, err = b.Commit(t.Context(), p)
		require.NoError(t, err)
		require.Equal(t, twopc.Aborted, out)
	}
	require.Empty(t, e.Rows("all_employees"))
}
