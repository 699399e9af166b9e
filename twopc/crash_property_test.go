package twopc_test

import (
	"errors"
	"flag"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/ledger"
	"github.com/shardsync/shardsync/twopc"
	"github.com/shardsync/shardsync/twopc/twopctest"
)

var crashSeed = flag.Uint64("twopc.seed", 0, "seed for TestPropertyCrashRestart (0: random)")

// TestPropertyCrashRestart runs the whole protocol (coordinator, ledger,
// recovery) over two fake sinks and kills the "process" at a random sink
// call, either before or after the call takes effect: from then on the
// sinks fail every call, Run returns, and the ledger file is closed and
// reopened by the next process. Sometimes the downtime is long enough for
// the destinations to abort every pre-committed transaction (Doris's
// pre-commit timeout), which forces recovery to rewind.
//
// Invariants checked after every recovery: the visible rows are exactly the
// rows of the source transactions before the resume token (nothing lost,
// nothing twice), no label is reused, and epoch numbers only grow. At the
// end a crash-free run delivers every row exactly once.
func TestPropertyCrashRestart(t *testing.T) {
	seed := *crashSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (rerun with -twopc.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 1))

	s := makeScript(30)
	path := filepath.Join(t.TempDir(), "ledger.db")
	dest := [2]*twopctest.Sink{twopctest.NewSink("doris"), twopctest.NewSink("maxcompute")}
	lastNext := uint64(0)
	rounds := 6 + rng.IntN(6)
	rewinds := 0
	for round := 0; round <= rounds; round++ {
		final := round == rounds
		// A new process: new sink values over the same destinations, the
		// ledger reopened.
		sinks := [2]*twopctest.Sink{dest[0].Restart(), dest[1].Restart()}
		dest = sinks
		l, err := ledger.Open(path, ledger.Options{Timeout: time.Second})
		require.NoError(t, err)

		before, err := l.Unfinished()
		require.NoError(t, err)
		rep, err := twopc.Resolve(t.Context(), l, []twopc.Sink{sinks[0], sinks[1]},
			twopc.ResolveOptions{Retry: testConfig().Commit}, testLogger(t))
		require.NoError(t, err, "round %d: recovery", round)
		for _, st := range rep.Steps {
			if st.Txn == nil && st.Action == twopc.ActionCommit && st.Outcome == ledger.StateAborted.String() {
				rewinds++
			}
		}
		resumeAt := indexOf(t, rep.Resume)
		for _, d := range sinks {
			requireExactlyOnce(t, d, s, resumeAt)
		}
		next, err := l.NextEpoch()
		require.NoError(t, err)
		require.GreaterOrEqual(t, next, lastNext, "round %d: epoch numbers never go back", round)
		lastNext = next
		t.Logf("round %d: %d unfinished epochs recovered, resume at txn %d, next epoch %d", round, len(before), resumeAt, next)

		cfg := testConfig()
		cfg.CheckpointInterval = time.Duration(1+rng.IntN(10)) * time.Millisecond
		cfg.MaxEpochRows = 1 + rng.IntN(6)
		c, err := twopc.New(cfg, l, []twopc.Sink{sinks[0], sinks[1]}, testLogger(t))
		require.NoError(t, err)

		var crashed atomic.Bool
		if !final {
			var calls atomic.Int64
			crashAt := int64(1 + rng.IntN(40))
			afterEffect := rng.IntN(2) == 0
			expire := rng.IntN(2) == 0
			var once sync.Once
			crash := func() error {
				once.Do(func() {
					crashed.Store(true)
					sinks[0].Crash()
					sinks[1].Crash()
					if expire {
						expireUncommittedEpochs(sinks)
					}
				})
				return twopctest.ErrCrashed
			}
			hook := func(after bool) func(twopctest.Op, uint64, string) error {
				return func(op twopctest.Op, _ uint64, _ string) error {
					if after != afterEffect {
						return nil
					}
					if calls.Add(1) >= crashAt {
						return crash()
					}
					return nil
				}
			}
			for _, d := range sinks {
				d.SetFaults(twopctest.Faults{Before: hook(false), After: hook(true)})
			}
		}
		src := s.open(t, rep.Resume)
		err = runUntil(t, c, src, func() bool { return crashed.Load() || src.done() })
		if final || !crashed.Load() {
			require.NoError(t, err, "round %d", round)
		} else if err != nil {
			require.NotContains(t, err.Error(), "Label Already Exists", "round %d: a label was reused", round)
			require.False(t, errors.Is(err, twopc.ErrProtocol), "round %d: %v", round, err)
		}
		require.NoError(t, l.Close())
	}
	for _, d := range dest {
		requireExactlyOnce(t, d, s, len(s.txns))
	}
	t.Logf("%d rounds, %d rewinds", rounds, rewinds)
}

// expireUncommittedEpochs aborts, at the destinations, every pre-committed
// transaction of each epoch of which nothing is committed yet: the
// destinations' pre-commit timeout passed while shardsync was down. (An
// epoch half committed when the timeout hits is the genuinely in-doubt case;
// TestRecoveryTable covers it.)
func expireUncommittedEpochs(sinks [2]*twopctest.Sink) {
	committed := map[uint64]bool{}
	for _, d := range sinks {
		for _, tx := range d.Txns() {
			if tx.State == twopctest.StateCommitted {
				committed[tx.Epoch] = true
			}
		}
	}
	for _, d := range sinks {
		for _, tx := range d.Txns() {
			if !committed[tx.Epoch] {
				d.Expire(tx.Label)
			}
		}
	}
}
