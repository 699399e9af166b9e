package doris

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
)

// TestAppendLogEncoding: into a target that is not Unique Key, inserts and
// updates append their after image and deletes append nothing (the
// MaxCompute append table's rules); no delete sign is sent.
func TestAppendLogEncoding(t *testing.T) {
	s := change.Schema{Columns: []change.Column{
		{Name: "database_name", Type: change.Type{Kind: change.KindString}},
		{Name: "v", Type: change.Type{Kind: change.KindInt}},
	}}
	enc, err := newEncoder(s, nil, []string{"database_name"}, false)
	require.NoError(t, err)
	var out []byte
	for _, r := range []change.Row{
		{Op: change.Insert, After: []change.Value{"a", int64(1)}},
		{Op: change.Update, Before: []change.Value{"a", int64(1)}, After: []change.Value{"b", int64(2)}},
		{Op: change.Delete, Before: []change.Value{"b", int64(2)}},
	} {
		out, err = enc.appendRow(out, r, 0)
		require.NoError(t, err)
	}
	require.Equal(t, "{\"database_name\":\"a\",\"v\":1}\n{\"database_name\":\"b\",\"v\":2}\n", string(out))

	sql, err := CreateDuplicateTableSQL(change.TableID{Database: "d", Table: "t"}, s, []string{"database_name"}, 4, 1, nil)
	require.NoError(t, err)
	require.Contains(t, sql, "DUPLICATE KEY(`database_name`)\nDISTRIBUTED BY RANDOM BUCKETS 4")
	require.Contains(t, sql, `"replication_num" = "1"`)
}
