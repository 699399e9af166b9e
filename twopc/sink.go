package twopc

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/shardsync/shardsync/change"
)

// Sink is a destination that takes part in epochs with two-phase commit.
//
// One Sink value serves a whole process: the coordinator calls Begin once
// per epoch, and recovery calls Commit and Abort with Prepared records that
// may have been written by an earlier process. Methods are safe for
// concurrent use unless a method says otherwise.
type Sink interface {
	// Name identifies the sink in the ledger, labels and logs ("doris",
	// "maxcompute"). It must not change between runs.
	Name() string

	// ApplySchema makes the target match ts: creates it when missing, adds
	// columns, widens types. The coordinator calls it between epochs (never
	// with an epoch of this sink open), before the first row that needs it.
	// On failure nothing of the epoch stream has been written; the job stops
	// with the error.
	ApplySchema(ctx context.Context, ts change.TableSchema) error

	// Begin opens the sink's part of epoch. Nothing is sent to the
	// destination until the first Write; before the sink sends the first byte
	// of a sink transaction it calls rec.Intend with that transaction's label,
	// so that recovery knows every label that might exist.
	Begin(ctx context.Context, epoch uint64, rec Recorder) (Txn, error)

	// Commit makes a pre-committed transaction visible. It is safe to repeat
	// and to call from a later process. It returns:
	//   Committed, nil — committed now, or found already committed;
	//   Aborted, nil   — the destination aborted it (e.g. a pre-commit
	//                    timeout passed); its data is not there;
	//   Unknown, nil   — the destination has no trace of it and cannot say
	//                    whether it was committed: an operator must decide;
	//   _, err         — it could not be settled now (unreachable, retries
	//                    exhausted); nothing is known to have changed.
	Commit(ctx context.Context, p Prepared) (Outcome, error)

	// Abort rolls back a transaction that was never recorded as
	// pre-committed. p carries at least Label; TxnID when known. It is safe to
	// repeat. It returns Aborted when the transaction is aborted or never
	// existed, Committed when the destination says it was committed (which
	// the ledger never allows: the caller reports it), or an error when it
	// could not be settled now.
	Abort(ctx context.Context, p Prepared) (Outcome, error)

	// Close releases connections. It does not abort anything: open
	// transactions are left to Txn.Abort or to recovery.
	Close() error
}

// Txn is one sink's part of one epoch. Its methods are called from one
// goroutine at a time.
type Txn interface {
	// Write streams rows into the epoch. Rows may be for several targets;
	// the sink starts one transaction per target on its first row. Write may
	// block for back-pressure. An error fails the epoch: the coordinator
	// calls Abort and the rows are read again from the source.
	Write(ctx context.Context, rows []change.Row) error

	// PreCommit ends every stream of the epoch and makes its data durable
	// but invisible. It returns one Prepared per sink transaction begun (none
	// when the epoch wrote nothing to this sink). On error, nothing of the
	// epoch may be committed; the coordinator aborts it.
	PreCommit(ctx context.Context) ([]Prepared, error)

	// Abort abandons everything the epoch began on this sink, best effort:
	// recovery aborts by label whatever Abort could not reach.
	Abort(ctx context.Context) error
}

// Recorder records durably that a sink transaction is about to begin.
type Recorder interface {
	// Intend must return before any byte of the transaction p.Label reaches
	// the destination. The first call for a label sets Sink, Target and
	// Label. A destination that names the transaction itself (a MaxCompute
	// session id) calls Intend again for the same label with TxnID and
	// Extra set, after the name is known and before the first data byte;
	// the record is updated, so recovery can abort that transaction by its
	// id and not only by its label.
	Intend(ctx context.Context, p Prepared) error
}

// Prepared identifies one sink transaction, enough to commit or abort it
// from another process.
type Prepared struct {
	Sink   string         `json:"sink"`
	Target change.TableID `json:"target"`
	Label  string         `json:"label"`
	TxnID  string         `json:"txn_id,omitempty"`
	// Extra is sink-specific (e.g. MaxCompute block ids), opaque to twopc.
	Extra json.RawMessage `json:"extra,omitempty"`
}

func (p Prepared) String() string {
	if p.TxnID != "" {
		return fmt.Sprintf("%s %s label=%s txn_id=%s", p.Sink, p.Target, p.Label, p.TxnID)
	}
	return fmt.Sprintf("%s %s label=%s", p.Sink, p.Target, p.Label)
}

// Outcome is what a destination says became of a transaction.
type Outcome uint8

// The outcomes of Commit and Abort.
const (
	Unknown Outcome = iota
	Committed
	Aborted
)

func (o Outcome) String() string {
	switch o {
	case Committed:
		return "committed"
	case Aborted:
		return "aborted"
	}
	return "unknown"
}
