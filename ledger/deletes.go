package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/shardsync/shardsync/change"
)

// RecordDeletes records delete epoch n: shard deletes that take the source
// from start to end (the statement that caused them, e.g. a TRUNCATE of a
// shard) and touch no sink transaction. The epoch is created PRECOMMITTED
// at once, its decision being made: whoever finds it unfinished runs the
// deletes (again) and then commits it. Every earlier epoch must be finished
// (else ErrOrder), so that the deletes come after every row that precedes
// them in the source and before any row that follows; n must be unused.
func (l *Ledger) RecordDeletes(ctx context.Context, n uint64, start, end change.Token, deletes []change.ShardDelete) error {
	if len(deletes) == 0 {
		return fmt.Errorf("recording delete epoch %d: no deletes", n)
	}
	for _, d := range deletes {
		if d.Target.Table == "" || d.Shard.Table == "" || d.DatabaseColumn == "" || d.TableColumn == "" {
			return fmt.Errorf("recording delete epoch %d: delete %+v lacks a target, shard or metadata column", n, d)
		}
	}
	return l.update(ctx, fmt.Sprintf("recording delete epoch %d", n), func(tx *bolt.Tx) error {
		if _, err := l.get(tx, n); err == nil {
			return fmt.Errorf("epoch %d already has a record: %w", n, ErrEpochReused)
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		if err := l.checkOrder(tx, n); err != nil {
			return err
		}
		if err := l.claim(tx, n); err != nil {
			return err
		}
		now := l.now().UTC()
		e := Epoch{Number: n, State: StatePrecommitted, Start: bytes.Clone(start), End: bytes.Clone(end),
			Deletes: slices.Clone(deletes), Opened: now}
		return l.put(tx, e)
	})
}
