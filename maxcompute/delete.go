package maxcompute

import (
	"context"
	"fmt"
	"strings"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/twopc"
)

var _ twopc.ShardDeleter = (*Sink)(nil)

// DeleteShardSQL is the statement DeleteShard runs on a transactional
// (Delta) table: MaxCompute's DELETE FROM <table> WHERE <condition>.
func DeleteShardSQL(project, schema string, d change.ShardDelete) string {
	qual := project
	if schema != "" {
		qual += ".`" + schema + "`"
	}
	return fmt.Sprintf("DELETE FROM %s.`%s` WHERE `%s` = %s AND `%s` = %s;", qual, tableName(d.Target),
		d.DatabaseColumn, sqlString(d.Shard.Database), d.TableColumn, sqlString(d.Shard.Table))
}

func sqlString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// DeleteShard implements twopc.ShardDeleter. On a Delta (transactional)
// table it runs DeleteShardSQL as a SQL instance and waits for it to
// succeed; upsert sessions committed before it are applied before it, and
// sessions committed after it keep their rows. A plain (append) table
// cannot delete rows by condition: it fails at once with
// twopc.ErrShardDelete, naming the table. A missing table has no rows to
// delete. On any other error the statement may or may not have run;
// repeating it is safe.
func (s *Sink) DeleteShard(ctx context.Context, d change.ShardDelete) error {
	name := tableName(d.Target)
	schema, err := s.tableSchema(ctx, d.Target)
	if err != nil {
		return err
	}
	tbl, ok, err := s.loadTable(ctx, schema, name)
	if err != nil {
		return err
	}
	if !ok {
		s.log.Info("maxcompute: shard delete: the target does not exist, nothing to delete", "table", name, "shard", d.Shard.String())
		return nil
	}
	if !tbl.Transactional() {
		return fmt.Errorf("maxcompute: deleting the rows of shard %s from %s (%s): it is an append (non-transactional) table, which cannot delete rows; use a Delta table (a target with a primary key) or skip the event: %w",
			d.Shard, s.displayName(schema, name), d.Cause, twopc.ErrShardDelete)
	}
	if err := s.execSQL(ctx, schema, DeleteShardSQL(s.cfg.Project, schema, d)); err != nil {
		return fmt.Errorf("maxcompute: deleting the rows of shard %s from %s: %w", d.Shard, s.displayName(schema, name), err)
	}
	return nil
}
