package testenv

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// ReadShardsState reads every row of the given shards (tables with the
// employees columns) as the merged table must hold them; a shard that does
// not exist is an error.
func ReadShardsState(ctx context.Context, m *MariaDB, shards []ShardID) (MergedState, error) {
	c, err := m.Connect("")
	if err != nil {
		return nil, err
	}
	defer c.Close()
	st := make(MergedState)
	for _, sh := range shards {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("reading %s: %w", sh, err)
		}
		r, err := c.Execute("SELECT " + strings.Join(Columns, ",") + " FROM " + sh.quoted())
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", sh, err)
		}
		for _, vals := range ResultStrings(r) {
			row := make(map[string]string, len(Columns))
			for i, col := range Columns {
				row[col] = vals[i]
			}
			key, err := strconv.ParseInt(row["emp_no"], 10, 64)
			if err != nil {
				r.Close()
				return nil, fmt.Errorf("reading %s: emp_no %q is not an integer", sh, row["emp_no"])
			}
			st[MergedKey{DB: sh.DB, Table: sh.Table, Key: key}] = row
		}
		r.Close()
	}
	return st, nil
}

// Relabel returns the rows of shard from as if they were rows of shard to
// (what a merged target keeps of a shard renamed away from the name to).
func (st MergedState) Relabel(from, to ShardID) MergedState {
	out := MergedState{}
	for k, v := range st {
		if k.DB == from.DB && k.Table == from.Table {
			out[MergedKey{DB: to.DB, Table: to.Table, Key: k.Key}] = v
		}
	}
	return out
}

// Merge adds every row of o to st (o wins on equal keys) and returns st.
func (st MergedState) Merge(o MergedState) MergedState {
	for k, v := range o {
		st[k] = v
	}
	return st
}
