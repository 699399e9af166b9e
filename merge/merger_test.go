package merge

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
)

func TestMergerUnionKeyAndEvolution(t *testing.T) {
	r, err := NewRoute(`s_[0-9]+`, `t_[0-9]+`, change.TableID{Database: "d", Table: "all"})
	require.NoError(t, err)
	m := NewTableMerger([]Route{r}, "", "")
	a := change.TableID{Database: "s_1", Table: "t_1"}
	b := change.TableID{Database: "s_2", Table: "t_2"}
	require.Equal(t, 0, m.RouteOf(a))
	require.Equal(t, -1, m.RouteOf(change.TableID{Database: "s_1x", Table: "t_1"}))
	id := ShardColumn{Name: "id", Type: ColType{Base: "int"}}
	ch, isNew, err := m.AddShard(a, 0, []ShardColumn{id, {Name: "v", Type: ColType{Base: "varchar", Length: 10}}}, []string{"id"}, "")
	require.NoError(t, err)
	require.True(t, isNew)
	require.Empty(t, ch)
	// b has a wider id and an extra column: widened and added, nullable.
	ch, isNew, err = m.AddShard(b, 0, []ShardColumn{{Name: "id", Type: ColType{Base: "bigint"}}, {Name: "w", Type: ColType{Base: "date"}}}, []string{"id"}, "")
	require.NoError(t, err)
	require.False(t, isNew)
	require.Len(t, ch, 3) // id widened, w added, v becomes nullable
	s, ok := m.Schema(r.Target)
	require.True(t, ok)
	require.Equal(t, []string{"database_name", "table_name", "id"}, s.Key)
	require.Equal(t, "bigint", s.Columns[2].Type.SQL)
	row, err := m.TargetRow(a, []change.Value{int64(7), "x"})
	require.NoError(t, err)
	require.Equal(t, []change.Value{"s_1", "t_1", int64(7), "x", nil}, row)
	// A dropped column is refused; an added one is announced.
	_, err = m.ChangeShard(a, []ShardColumn{id}, []string{"id"}, "relation changed")
	require.True(t, errors.Is(err, ErrIncompatibleSchema), err)
	ch, err = m.ChangeShard(a, []ShardColumn{id, {Name: "v", Type: ColType{Base: "varchar", Length: 10}}, {Name: "z", Type: ColType{Base: "double"}}}, []string{"id"}, "relation changed")
	require.NoError(t, err)
	require.Len(t, ch, 1)
	require.Equal(t, change.AddColumn, ch[0].Kind)
	// A shard with another key is refused.
	_, _, err = m.AddShard(change.TableID{Database: "s_3", Table: "t_3"}, 0, []ShardColumn{id, {Name: "k", Type: ColType{Base: "int"}}}, []string{"id", "k"}, "")
	require.True(t, errors.Is(err, ErrIncompatibleSchema), err)
}
