package doris

import (
	"context"
	"fmt"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/twopc"
)

var _ twopc.ShardDeleter = (*Sink)(nil)

// DeleteShardSQL is the statement DeleteShard runs: a DELETE of the rows
// whose metadata columns name the shard. Doris runs a DELETE as one
// synchronous load transaction of its own, ordered after every load
// committed before it (versions are assigned at commit), so rows loaded
// later are kept.
func DeleteShardSQL(d change.ShardDelete) string {
	return fmt.Sprintf("DELETE FROM %s.%s WHERE %s = %s AND %s = %s",
		quoteIdent(d.Target.Database), quoteIdent(d.Target.Table),
		quoteIdent(d.DatabaseColumn), quoteString(d.Shard.Database),
		quoteIdent(d.TableColumn), quoteString(d.Shard.Table))
}

// DeleteShard implements twopc.ShardDeleter with DeleteShardSQL over the
// FE's MySQL port (Config.QueryAddr). It returns when the FE answered the
// statement. Without a query address it fails at once, naming the flag.
// On error the statement may or may not have run; running it again is
// safe (the coordinator never writes newer rows of the shard before it
// succeeded).
func (s *Sink) DeleteShard(ctx context.Context, d change.ShardDelete) error {
	if s.cfg.QueryAddr == "" {
		return fmt.Errorf("doris: deleting the rows of shard %s from %s (%s) needs the FE's MySQL port: set --doris-query (sink.query-port, e.g. fe:9030): %w",
			d.Shard, d.Target, d.Cause, twopc.ErrShardDelete)
	}
	q := DeleteShardSQL(d)
	if err := s.exec(ctx, q); err != nil {
		return fmt.Errorf("doris: deleting the rows of shard %s from %s: %w", d.Shard, d.Target, err)
	}
	s.log.Info("doris: deleted shard rows", "target", d.Target.String(), "shard", d.Shard.String(), "cause", d.Cause)
	return nil
}
