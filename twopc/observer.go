package twopc

import "time"

// Observer receives the coordinator's measurements. Implementations must be
// cheap and safe for concurrent use; the operability layer adapts it to
// Prometheus. A nil Observer in Config means NopObserver.
type Observer interface {
	// EpochFinished is called once per epoch when it is settled in the
	// running process: committed, aborted, or empty (only the position moved).
	EpochFinished(s EpochStats)
	// SinkCall is called after every PreCommit, Commit and Abort call on a
	// sink, with its duration and error (nil on success).
	SinkCall(sink, op string, d time.Duration, err error)
}

// EpochStats describes one settled epoch.
type EpochStats struct {
	Epoch   uint64
	Outcome string // "committed", "aborted" or "empty"
	Cut     string // why the epoch closed: "timer", "size", "schema", "shutdown", or "" when aborted
	Rows    int    // rows written to each sink
	Txns    int    // sink transactions prepared
	// Stream is the time from the epoch's open to its barrier, PreCommit the
	// barrier to the PRECOMMITTED record, Commit the record to COMMITTED.
	Stream, PreCommit, Commit time.Duration
}

// NopObserver discards everything.
type NopObserver struct{}

// EpochFinished implements Observer.
func (NopObserver) EpochFinished(EpochStats) {}

// SinkCall implements Observer.
func (NopObserver) SinkCall(string, string, time.Duration, error) {}
