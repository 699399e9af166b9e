package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

var bucketDecisions = []byte("decisions")

// Decision is an operator's decision on one source event that stopped the
// job (`shardsync skip-event`): skip it, or apply it. Position is the
// event's GTID or binlog file:offset as the stop message named it.
type Decision struct {
	Position string    `json:"position"`
	Action   string    `json:"action"` // "skip" or "apply"
	Note     string    `json:"note,omitempty"`
	Time     time.Time `json:"time"`
}

// Decide records d durably (replacing an earlier decision on the same
// position). Positions never repeat in a source, so decisions are kept.
func (l *Ledger) Decide(ctx context.Context, d Decision) error {
	if d.Position == "" || (d.Action != "skip" && d.Action != "apply") {
		return fmt.Errorf("recording a decision: position %q and action %q (skip or apply) are required", d.Position, d.Action)
	}
	if d.Time.IsZero() {
		d.Time = l.now().UTC()
	}
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encoding the decision on %s: %w", d.Position, err)
	}
	return l.update(ctx, fmt.Sprintf("recording the decision to %s the source event at %s", d.Action, d.Position), func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bucketDecisions)
		if err != nil {
			return err
		}
		return bk.Put([]byte(d.Position), b)
	})
}

// Decisions returns every recorded decision, by position.
func (l *Ledger) Decisions() ([]Decision, error) {
	var out []Decision
	err := l.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketDecisions)
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(k, v []byte) error {
			var d Decision
			if err := json.Unmarshal(v, &d); err != nil {
				return damaged(l.path, fmt.Sprintf("decision %q: %v", k, err))
			}
			out = append(out, d)
			return nil
		})
	})
	return out, err
}
