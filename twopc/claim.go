package twopc

import (
	"context"
	"errors"

	"github.com/shardsync/shardsync/change"
)

// ErrForeignTarget means a target holds rows that were not written under
// the job's ledger (another ledger, or no shardsync ledger at all), or is
// claimed by another job with the same label prefix. Loading on would
// re-snapshot over those rows without removing the ones deleted at the
// source meanwhile, so the job stops for the operator.
var ErrForeignTarget = errors.New("target holds rows written under another ledger")

// Owner is the ledger a job writes under, as a Claimer records it at each
// target before the job's first row reaches it.
type Owner struct {
	// LedgerID is the ledger's id (ledger.Ledger.ID).
	LedgerID string
	// Holder names this process for messages ("host pid 123").
	Holder string
	// Adopt: the ledger is from before ledger ids (IDAssigned), so rows it
	// wrote carry no record; a target with rows and no record is adopted.
	Adopt bool
	// Fresh: the ledger has committed nothing, so the source will be read
	// from the beginning (a full snapshot).
	Fresh bool
	// Recreate: the operator asked (--recreate-target) to empty a target
	// that holds rows of another ledger and snapshot it again. Only
	// honoured with a Fresh ledger; a target already recorded as this
	// ledger's is never emptied.
	Recreate bool
	// Share is set when the job is one of several that write the same
	// targets by a static split of one source (Kafka --kafka-partitions):
	// the job's label prefix. Each member keeps its own claim (a lost or
	// replaced ledger of a member is still refused), and a fresh member
	// may join a target that holds rows — the other members' — without a
	// claim of its own.
	Share string
}

// Claimer is implemented by sinks that record, at each target, which
// ledger writes it.
type Claimer interface {
	// ClaimTargets checks every target before the stream starts: a target
	// recorded as the owner's is fine; a target that is missing or empty
	// is recorded as the owner's; a target holding rows of another ledger
	// (or unrecorded rows, unless Adopt) fails with an error wrapping
	// ErrForeignTarget that names the target and the operator's choices,
	// unless Recreate empties it first. On error nothing was loaded; a
	// target may have been emptied only when Recreate was set.
	ClaimTargets(ctx context.Context, targets []change.TableID, o Owner) error
}
