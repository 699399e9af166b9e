package twopc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shardsync/shardsync/change"
)

// ShardDeleter is implemented by sinks that can remove one shard's rows from
// a merged target (a TRUNCATE of the shard, or a DROP or RENAME the job is
// set to apply). A sink without it stops the job when a shard delete
// arrives, before anything is recorded.
//
// # Ordering and exactly-once
//
// A shard delete is an epoch of its own (a delete epoch). The coordinator
// cuts the open epoch at the source event, waits until every earlier epoch
// is COMMITTED, records the delete epoch PRECOMMITTED in the ledger (its
// decision: from here on it must happen), runs DeleteShard on every sink,
// and records it COMMITTED, which moves the resume position past the
// source statement. Only then does the next epoch write a row. So at any
// moment the target holds exactly the rows of the shard that precede the
// statement in the source and no later one, and repeating the delete after
// a crash (recovery finds the epoch PRECOMMITTED) removes the same rows:
// the delete happens once in effect, in its place in the stream.
type ShardDeleter interface {
	// DeleteShard removes from d.Target every row whose metadata columns
	// name d.Shard, and returns when that is durable and visible. It is
	// safe to repeat. On error nothing is known (some, all or none of the
	// rows may be gone); the job stops and recovery runs it again.
	DeleteShard(ctx context.Context, d change.ShardDelete) error
}

// checkDeleters fails when a sink cannot delete a shard's rows, naming the
// sink, the shard and the ways forward.
func (c *Coordinator) checkDeleters(d change.ShardDelete) error {
	for _, s := range c.sinks {
		if _, ok := s.(ShardDeleter); !ok {
			return fmt.Errorf("sink %s cannot delete the rows of shard %s from %s (%s): %w",
				s.Name(), d.Shard, d.Target, d.Cause, ErrShardDelete)
		}
	}
	return nil
}

// applyDelete runs delete epoch cur for ev (a change.EventShardDelete)
// after every earlier epoch is settled. On return without error the delete
// is COMMITTED in the ledger and the resume position is ev.Token.
func (r *run) applyDelete(cur *epoch, ev change.Event) error {
	c := r.c
	for _, d := range ev.Deletes {
		if err := c.checkDeleters(d); err != nil {
			return err
		}
	}
	if err := r.waitSettled(); err != nil {
		return err
	}
	t0 := time.Now()
	first := ev.Deletes[0]
	if err := c.ledger.RecordDeletes(r.work, cur.n, cur.start, ev.Token, ev.Deletes); err != nil {
		return fmt.Errorf("recording the delete of shard %s from %s: %w", first.Shard, first.Target, err)
	}
	if err := runDeletes(r.work, c.sinks, c.cfg.Commit, c, cur.n, ev.Deletes); err != nil {
		return fmt.Errorf("%w; delete epoch %d stays PRECOMMITTED and the next start runs it again: %w", err, cur.n, ErrRestart)
	}
	if err := c.ledger.Commit(r.work, cur.n, "shard delete: "+first.Cause); err != nil {
		return fmt.Errorf("recording delete epoch %d as COMMITTED: %w; the next start runs it again (idempotent): %w", cur.n, err, ErrRestart)
	}
	r.lastResume = ev.Token // the committer is idle: waitSettled and the next hand-off order this write
	for _, d := range ev.Deletes {
		c.log.Info("shard rows deleted", "epoch", cur.n, "shard", d.Shard.String(), "target", d.Target.String(), "cause", d.Cause)
	}
	c.obs.EpochFinished(EpochStats{Epoch: cur.n, Outcome: "committed", Cut: "shard delete", Commit: time.Since(t0)})
	return nil
}

// waitSettled returns once every epoch handed to the committer is settled.
func (r *run) waitSettled() error {
	done := make(chan struct{})
	select {
	case r.jobs <- job{done: done}:
	case <-r.failed:
		return r.failErr
	}
	select {
	case <-done:
		return nil
	case <-r.failed:
		return r.failErr
	}
}

// runDeletes runs every delete on every sink, each with the retry policy.
func runDeletes(ctx context.Context, sinks []Sink, p RetryPolicy, c *Coordinator, n uint64, ds []change.ShardDelete) error {
	for _, d := range ds {
		for _, s := range sinks {
			del, ok := s.(ShardDeleter)
			if !ok {
				return fmt.Errorf("sink %s cannot delete the rows of shard %s from %s: %w", s.Name(), d.Shard, d.Target, ErrShardDelete)
			}
			t0 := time.Now()
			var refused error
			_, err := settle(ctx, p, c.log, fmt.Sprintf("deleting shard %s from %s on sink %s (epoch %d)", d.Shard, d.Target, s.Name(), n),
				func(ctx context.Context) (Outcome, error) {
					if err := del.DeleteShard(ctx, d); errors.Is(err, ErrShardDelete) {
						refused = err // no retry helps: the operator decides
						return Unknown, nil
					} else if err != nil {
						return Unknown, err
					}
					return Committed, nil
				})
			if refused != nil {
				err = refused
			}
			c.obs.SinkCall(s.Name(), "delete", time.Since(t0), err)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// ErrShardDelete means a shard delete reached a sink that cannot apply it
// (it does not implement ShardDeleter, or its target cannot delete rows by
// condition). Restarting meets the same event: the operator decides (see
// `shardsync skip-event`).
var ErrShardDelete = errors.New("sink cannot delete a shard's rows")
