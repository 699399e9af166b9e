package doris_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/doris"
	"github.com/shardsync/shardsync/testenv/dorisemu"
	"github.com/shardsync/shardsync/twopc"
)

func shardDelete(shard string) change.ShardDelete {
	return change.ShardDelete{Target: target, Shard: change.TableID{Database: shard, Table: "employees_1"},
		DatabaseColumn: "database_name", TableColumn: "table_name", Cause: "TRUNCATE " + shard + ".employees_1"}
}

func TestDeleteShardSQL(t *testing.T) {
	d := shardDelete("emp_'1\"")
	require.Equal(t, "DELETE FROM `demo`.`all_emp` WHERE `database_name` = \"emp_'1\\\"\" AND `table_name` = \"employees_1\"", doris.DeleteShardSQL(d))
}

// DeleteShard removes exactly the shard's rows, including rows of a load
// committed but not yet published before it, keeps rows of later loads,
// is safe to repeat, and survives an FE restart (journal replay) in order.
func TestEmuDeleteShard(t *testing.T) {
	dir := t.TempDir()
	e := startEmu(t, dorisemu.Options{Dir: dir})
	s, _ := emuSink(t, e, nil)
	ctx := t.Context()
	require.NoError(t, s.ApplySchema(ctx, empSchema(target)))
	prep := epoch(t, s, 1, ins(target, "emp_1", 1, "a"), ins(target, "emp_2", 1, "b"), ins(target, "emp_1", 2, "c"))
	require.Equal(t, twopc.Committed, commit(t, s, prep[0]))

	// committed, not yet visible: the delete comes after it in version order
	e.Faults().HoldPublish(true)
	prep = epoch(t, s, 2, ins(target, "emp_1", 3, "d"), ins(target, "emp_2", 2, "e"))
	require.Equal(t, twopc.Committed, commit(t, s, prep[0]))
	require.NoError(t, s.DeleteShard(ctx, shardDelete("emp_1")))
	e.Faults().HoldPublish(false)
	got := rowsByKey(t, e, target)
	require.Len(t, got, 2)
	require.Contains(t, got, "emp_2/employees_1/1")
	require.Contains(t, got, "emp_2/employees_1/2")

	// rows of the shard loaded after the delete stay; a repeat removes
	// nothing it should not (no later rows were committed in between)
	require.NoError(t, s.DeleteShard(ctx, shardDelete("emp_1")))
	prep = epoch(t, s, 3, ins(target, "emp_1", 1, "new"))
	require.Equal(t, twopc.Committed, commit(t, s, prep[0]))
	want := rowsByKey(t, e, target)
	require.Len(t, want, 3)
	require.Equal(t, "new", want["emp_1/employees_1/1"]["name"])

	// the journal replays the delete in its place
	require.NoError(t, e.Close())
	e2 := startEmu(t, dorisemu.Options{Dir: dir})
	require.Equal(t, want, rowsByKey(t, e2, target))

	// without the query port the sink says which flag is missing
	s2, _ := emuSink(t, e2, func(c *doris.Config) { c.QueryAddr = "" })
	err := s2.DeleteShard(ctx, shardDelete("emp_2"))
	require.ErrorIs(t, err, twopc.ErrShardDelete)
	require.ErrorContains(t, err, "--doris-query")
}
