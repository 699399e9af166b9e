package ledger

import "errors"

// ErrLocked means another process holds the ledger file open. The error
// text names the file and, when known, the holder (pid, host, start time).
var ErrLocked = errors.New("ledger is in use by another process")

// ErrDamaged means the ledger file cannot be read as a shardsync ledger. The
// file is never reset or rewritten when this is returned: it may be the only
// record of pre-committed sink transactions.
var ErrDamaged = errors.New("ledger is damaged")

// ErrNotFound means the ledger holds no record of the requested epoch.
var ErrNotFound = errors.New("epoch not found in ledger")

// ErrTransition means a state change the epoch state machine does not allow
// (e.g. committing an ABORTED epoch).
var ErrTransition = errors.New("invalid epoch state transition")

// ErrEpochReused means a caller tried to create an epoch whose number was
// already handed out. Epoch numbers are never reused, so labels never are.
var ErrEpochReused = errors.New("epoch number already used")

// ErrOrder means a caller tried to finish an epoch while an earlier epoch is
// still unfinished: commits happen strictly in epoch order.
var ErrOrder = errors.New("epoch finished out of order")

// ErrIntent means a sink reported a prepared transaction whose label was
// never recorded with Intend: the sink broke the rule "Intend before the
// first byte", so recovery could not have found that transaction.
var ErrIntent = errors.New("prepared transaction without a recorded intent")
