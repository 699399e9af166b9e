package maxcompute

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/testenv/mcemu"
	"github.com/shardsync/shardsync/twopc"
)

func shardDel(i int) change.ShardDelete {
	return change.ShardDelete{Target: empTarget, Shard: shard(i), DatabaseColumn: "database_name", TableColumn: "table_name", Cause: "TRUNCATE"}
}

func TestDeleteShardSQL(t *testing.T) {
	d := shardDel(1)
	d.Shard.Database = `it's`
	require.Equal(t, "DELETE FROM p.`all_employees` WHERE `database_name` = 'it\\'s' AND `table_name` = 'employees_1';", DeleteShardSQL("p", "", d))
}

// A Delta table loses exactly the shard's rows; sessions committed later
// keep theirs; a repeat is harmless; a plain table refuses with
// twopc.ErrShardDelete.
func TestDeleteShardDelta(t *testing.T) {
	e := mcemu.New(mcemu.Options{})
	t.Cleanup(e.Close)
	s := newSink(t, e)
	ctx := t.Context()
	require.NoError(t, s.ApplySchema(ctx, empSchema(true)))
	m := model{}
	rows := []change.Row{ins(shard(1), 1, "a", "1.00"), ins(shard(2), 1, "b", "2.00"), ins(shard(1), 2, "c", "3.00")}
	runEpoch(t, s, 1, rows)
	m.apply(rows)
	require.NoError(t, s.DeleteShard(ctx, shardDel(1)))
	for k, v := range m {
		if v[0] == "emp_1" {
			delete(m, k)
		}
	}
	require.Equal(t, m.rows(), emuRows(e, "all_employees"))
	require.NoError(t, s.DeleteShard(ctx, shardDel(1)))
	rows = []change.Row{ins(shard(1), 1, "new", "4.00")}
	runEpoch(t, s, 2, rows)
	m.apply(rows)
	require.Equal(t, m.rows(), emuRows(e, "all_employees"))
	require.Len(t, e.Rows("all_employees"), 2)

	// a fresh process (recovery) without the table cached
	s2 := newSink(t, e)
	require.NoError(t, s2.DeleteShard(ctx, shardDel(2)))
	require.Len(t, e.Rows("all_employees"), 1)
}

func TestDeleteShardPlainTableRefuses(t *testing.T) {
	e := mcemu.New(mcemu.Options{})
	t.Cleanup(e.Close)
	s := newSink(t, e)
	require.NoError(t, s.ApplySchema(t.Context(), empSchema(false)))
	runEpoch(t, s, 1, []change.Row{ins(shard(1), 1, "a", "1.00")})
	err := s.DeleteShard(t.Context(), shardDel(1))
	require.ErrorIs(t, err, twopc.ErrShardDelete)
	require.ErrorContains(t, err, "append")
	require.Len(t, e.Rows("all_employees"), 1)
}
