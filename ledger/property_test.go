package ledger

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
)

var propSeed = flag.Uint64("ledger.seed", 0, "seed for TestPropertyCrashPoints (0: random)")

// model is what the ledger must hold: the protocol driver below updates it
// only after a ledger call returned nil (the call's fsync happened).
type model struct {
	states map[uint64]State
	start  map[uint64]change.Token
	end    map[uint64]change.Token
	next   uint64
	resume change.Token
	used   map[uint64]bool
}

// TestPropertyCrashPoints drives the ledger through the coordinator's
// protocol (open with intents, precommit, commit in order, abort, empty
// epochs, pipelining up to two unfinished epochs) and "crashes" at random
// points by closing and reopening the file, then runs recovery's ledger
// steps. After every reopen the ledger must equal the model: nothing
// acknowledged is lost, the resume position never skips an unfinished epoch
// nor goes back past a committed one, and no epoch number is reused.
//
// A crash inside one bbolt update cannot be simulated in-process; bbolt's
// promise is that an Update is all-or-nothing after fsync, which the
// reopened state relies on.
func TestPropertyCrashPoints(t *testing.T) {
	seed := *propSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (rerun with -ledger.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "ledger.db")
	keep := 1 + rng.IntN(6)
	opts := Options{Keep: keep, Timeout: time.Second}
	l, err := Open(path, opts)
	require.NoError(t, err)
	defer func() { _ = l.Close() }()

	m := &model{states: map[uint64]State{}, start: map[uint64]change.Token{}, end: map[uint64]change.Token{},
		next: 1, used: map[uint64]bool{}}
	tok := 0 // source position: each epoch reads a few "transactions"
	cur := uint64(1)
	pos := func() change.Token { return change.Token(fmt.Sprintf("pos-%06d", tok)) }
	var pending []uint64 // PRECOMMITTED epochs not yet committed, ascending
	steps := 300 + rng.IntN(300)
	crashes := 0

	check := func(where string) {
		t.Helper()
		next, err := l.NextEpoch()
		require.NoError(t, err, where)
		require.Equal(t, m.next, next, "%s: next epoch", where)
		res, err := l.Resume()
		require.NoError(t, err, where)
		require.Equal(t, m.resume, res, "%s: resume", where)
		eps, err := l.Epochs()
		require.NoError(t, err, where)
		unfinished := 0
		seen := map[uint64]bool{}
		for _, e := range eps {
			seen[e.Number] = true
			require.Equal(t, m.states[e.Number], e.State, "%s: epoch %d", where, e.Number)
			require.Equal(t, m.start[e.Number], e.Start, "%s: start of %d", where, e.Number)
			if !e.State.Finished() {
				unfinished++
			}
			if e.State == StateCommitted || e.State == StatePrecommitted {
				require.Equal(t, m.end[e.Number], e.End)
			}
		}
		for n, s := range m.states {
			if !s.Finished() {
				require.True(t, seen[n], "%s: unfinished epoch %d was pruned", where, n)
			}
		}
		require.LessOrEqual(t, unfinished, 2, where)
	}

	recoverAll := func() {
		// Recovery's ledger steps: PRECOMMITTED epochs commit in order (the
		// destination said committed), OPEN ones abort. Sometimes the
		// destination "aborted" a pre-committed txn: then that epoch and every
		// later one abort, and the resume position stays at its start.
		un, err := l.Unfinished()
		require.NoError(t, err)
		rewound := false
		for _, e := range un {
			switch {
			case e.State == StatePrecommitted && !rewound && rng.IntN(5) > 0:
				require.NoError(t, l.Commit(ctx, e.Number, "recovered"))
				m.states[e.Number], m.resume = StateCommitted, m.end[e.Number]
			default:
				if e.State == StatePrecommitted && !rewound {
					rewound = true
					// (A fresh ledger resumes from nil, which the model's first
					// epoch calls position 0.)
					require.Equal(t, positionOf(t, m.resume), positionOf(t, e.Start), "a rewind restarts exactly at the aborted epoch's start")
				}
				require.NoError(t, l.Abort(ctx, e.Number, "recovered"))
				m.states[e.Number] = StateAborted
			}
		}
		pending = nil
		tok = positionOf(t, m.resume)
		cur = m.next
	}

	for i := 0; i < steps; i++ {
		switch r := rng.IntN(100); {
		case r < 8: // crash: close and reopen, then recover
			crashes++
			require.NoError(t, l.Close())
			l, err = Open(path, opts)
			require.NoError(t, err)
			check(fmt.Sprintf("step %d after reopen", i))
			recoverAll()
			check(fmt.Sprintf("step %d after recovery", i))
		case r < 20 && len(pending) > 0: // commit the oldest pending epoch
			n := pending[0]
			require.NoError(t, l.Commit(ctx, n, ""))
			m.states[n], m.resume = StateCommitted, m.end[n]
			pending = pending[1:]
		case len(pending) >= 2: // pipeline full: the next epoch waits
			n := pending[0]
			require.ErrorIs(t, l.Commit(ctx, pending[1], ""), ErrOrder)
			require.NoError(t, l.Commit(ctx, n, ""))
			m.states[n], m.resume = StateCommitted, m.end[n]
			pending = pending[1:]
		case r < 30 && len(pending) == 0: // an empty epoch whose position moved
			tok += rng.IntN(3)
			require.NoError(t, l.Advance(ctx, cur, pos()))
			m.resume = pos()
			cur++
		case r < 35: // a write fails: the open epoch aborts in-process
			start := pos()
			require.NoError(t, l.Intend(ctx, cur, start, txn("doris", fmt.Sprintf("l_%d", cur))))
			m.record(cur, start)
			require.NoError(t, l.Abort(ctx, cur, "write failed"))
			m.states[cur] = StateAborted
			// The coordinator stops; the restart recovers and rereads.
			recoverAll()
		default: // a full epoch up to PRECOMMITTED
			start := pos()
			sinks := 1 + rng.IntN(3)
			var prepared []SinkTxn
			for s := 0; s < sinks; s++ {
				tx := txn(fmt.Sprintf("sink%d", s), fmt.Sprintf("p_t_%d", cur))
				require.NoError(t, l.Intend(ctx, cur, start, tx))
				tx.TxnID = fmt.Sprint(rng.Uint32())
				prepared = append(prepared, tx)
			}
			m.record(cur, start)
			tok += 1 + rng.IntN(4)
			require.NoError(t, l.Precommit(ctx, cur, pos(), prepared))
			m.states[cur], m.end[cur] = StatePrecommitted, pos()
			pending = append(pending, cur)
			cur++
		}
		// Every number below next is burnt, whatever happened to it.
		if m.next > 1 {
			burnt := uint64(1 + rng.IntN(int(m.next-1)))
			err := l.Intend(ctx, burnt, nil, txn("doris", "reuse"))
			if m.states[burnt] != StateOpen {
				require.Error(t, err, "epoch %d reused", burnt)
				require.True(t, errors.Is(err, ErrEpochReused) || errors.Is(err, ErrTransition), "%v", err)
			}
		}
	}
	check("end")
	t.Logf("%d steps, %d crashes, keep %d", steps, crashes, keep)
}

func (m *model) record(n uint64, start change.Token) {
	if m.used[n] {
		panic(fmt.Sprintf("driver reused epoch %d", n))
	}
	m.used[n] = true
	m.states[n], m.start[n] = StateOpen, start
	m.next = n + 1
}

func positionOf(t *testing.T, tok change.Token) int {
	if tok == nil {
		return 0
	}
	var n int
	_, err := fmt.Sscanf(string(tok), "pos-%06d", &n)
	require.NoError(t, err)
	return n
}
