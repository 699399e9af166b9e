package twopc

import (
	"errors"
	"fmt"
	"strings"

	"github.com/shardsync/shardsync/ledger"
)

// ErrRestart marks errors after which the job is consistent and may simply
// be started again: Recover settles the ledger and the source reopens at
// the resume position. The CLI may loop on it instead of exiting.
var ErrRestart = errors.New("restart from the last committed position")

// ErrNeedsRecovery means Run was called while the ledger holds unfinished
// epochs; call Recover (or `shardsync txn resolve`) first.
var ErrNeedsRecovery = errors.New("ledger holds unfinished epochs")

// ErrProtocol means a sink or the ledger showed a state the protocol never
// allows (e.g. an epoch committed after an earlier one was aborted). It is
// never retried; a person must look.
var ErrProtocol = errors.New("exactly-once protocol violated")

// ErrUnavailable marks a sink error that says the destination is down or
// overloaded for now (it answered "try again": a 5xx, no backend alive, a
// lock timeout) after the sink's own retries. Errors of an unreachable
// destination (refused, reset, timed out, DNS) need not wrap it: they carry
// their net error. The job waits such outages out (cmd/shardsync).
var ErrUnavailable = errors.New("destination unavailable")

// ErrInDoubt is wrapped by InDoubtError.
var ErrInDoubt = errors.New("transaction in doubt")

// InDoubtError says that a pre-committed epoch cannot be settled
// automatically: a sink cannot tell whether a transaction was committed,
// or some of the epoch's transactions committed while others were aborted.
type InDoubtError struct {
	Epoch uint64
	// Txns are the epoch's prepared transactions with what the sinks said.
	Txns     []Prepared
	Outcomes []Outcome
	// Ledger is the ledger path, for the suggested command.
	Ledger string
}

func (e *InDoubtError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "epoch %d is in doubt: shardsync cannot tell whether all of its transactions were committed:", e.Epoch)
	for i, p := range e.Txns {
		fmt.Fprintf(&b, "\n  sink %s target %s label %s txn_id %s: %s", p.Sink, p.Target, p.Label, orDash(p.TxnID), e.Outcomes[i])
	}
	fmt.Fprintf(&b, "\nCheck the target tables, then settle it with one of:"+
		"\n  shardsync txn resolve --ledger %s --epoch %d --assume committed   # its rows are in the targets: mark it COMMITTED and resume after it"+
		"\n  shardsync txn resolve --ledger %s --epoch %d --assume aborted     # its rows are not in the targets: abort it and re-read it from its start"+
		"\n(add --dry-run to see the actions first). Where some transactions committed and others aborted, either choice loses or repeats the rows of one part.",
		e.Ledger, e.Epoch, e.Ledger, e.Epoch)
	return b.String()
}

// Unwrap makes errors.Is(err, ErrInDoubt) true.
func (e *InDoubtError) Unwrap() error { return ErrInDoubt }

// RewindError says that a sink aborted a pre-committed transaction of Epoch
// (e.g. Doris's pre-commit timeout passed): the epoch must be read again
// from its start position. It wraps ErrRestart: Recover performs the rewind.
type RewindError struct {
	Epoch uint64
	Txn   Prepared
}

func (e *RewindError) Error() string {
	return fmt.Sprintf("epoch %d must be re-read: sink %s aborted pre-committed transaction label %s txn_id %s; "+
		"restart to rewind to the epoch's start position", e.Epoch, e.Txn.Sink, e.Txn.Label, orDash(e.Txn.TxnID))
}

// Unwrap makes errors.Is(err, ErrRestart) true.
func (e *RewindError) Unwrap() error { return ErrRestart }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func toLedger(p Prepared) ledger.SinkTxn {
	return ledger.SinkTxn{Sink: p.Sink, Target: p.Target, Label: p.Label, TxnID: p.TxnID, Extra: p.Extra}
}

func fromLedger(t ledger.SinkTxn) Prepared {
	return Prepared{Sink: t.Sink, Target: t.Target, Label: t.Label, TxnID: t.TxnID, Extra: t.Extra}
}
