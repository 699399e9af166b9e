package twopctest

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/twopc"
)

// Harness connects RunConformance to one Sink implementation and its
// destination (a real server or a protocol emulator).
type Harness struct {
	// New returns a sink on a fresh, empty destination. Required.
	New func(t *testing.T) twopc.Sink
	// Reopen returns a second Sink (as a later process would build it) over
	// the destination of s. Nil means s itself is reused.
	Reopen func(t *testing.T, s twopc.Sink) twopc.Sink
	// Tables are two target tables with their schemas. Required.
	Tables [2]change.TableSchema
	// Rows returns n insert rows for target, matching its schema. Required.
	Rows func(target change.TableID, n int) []change.Row
	// Sent reports whether any byte of the transaction label has reached
	// the destination. Optional: without it, "Intend before first byte" is
	// checked only as "Intend before Write returns".
	Sent func(t *testing.T, s twopc.Sink, label string) bool
	// Visible counts committed rows in target. Optional.
	Visible func(t *testing.T, s twopc.Sink, target change.TableID) int
}

// recorder records intents and checks that none of them was already sent.
type recorder struct {
	t       *testing.T
	h       Harness
	s       twopc.Sink
	mu      sync.Mutex
	intents []twopc.Prepared
}

func (r *recorder) Intend(ctx context.Context, p twopc.Prepared) error {
	require.Equal(r.t, r.s.Name(), p.Sink, "Intend: Sink must be the sink's name")
	require.NotEmpty(r.t, p.Label, "Intend: Label is required")
	require.NotEmpty(r.t, p.Target.Table, "Intend: Target is required")
	if r.h.Sent != nil {
		require.False(r.t, r.h.Sent(r.t, r.s, p.Label), "Intend(%s) called after a byte of it was sent", p.Label)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, x := range r.intents {
		if x.Label == p.Label {
			require.Equal(r.t, x.Target, p.Target, "a repeated Intend(%s) must keep its target", p.Label)
			if p.TxnID != "" || len(p.Extra) > 0 {
				r.intents[i].TxnID, r.intents[i].Extra = p.TxnID, p.Extra
			}
			return nil
		}
	}
	r.intents = append(r.intents, p)
	return nil
}

// intent returns what was recorded for label: what recovery would hold.
func (r *recorder) intent(label string) twopc.Prepared {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.intents {
		if p.Label == label {
			return p
		}
	}
	r.t.Fatalf("label %s was never intended", label)
	return twopc.Prepared{}
}

func (r *recorder) labels() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, p := range r.intents {
		out = append(out, p.Label)
	}
	return out
}

// RunConformance checks that a twopc.Sink keeps the contract twopc relies
// on: Intend before the first byte; one Prepared per target written, each
// with its label intended; nothing for an epoch without rows; idempotent
// Commit and Abort, also from a later process; abort from what was
// intended (the label, and the txn id a sink re-intended); the
// outcomes Commit and Abort report after each other; distinct labels per
// epoch; idempotent ApplySchema.
func RunConformance(t *testing.T, h Harness) {
	require.NotNil(t, h.New, "Harness.New")
	require.NotNil(t, h.Rows, "Harness.Rows")
	a, b := h.Tables[0].Target, h.Tables[1].Target
	reopen := func(t *testing.T, s twopc.Sink) twopc.Sink {
		if h.Reopen == nil {
			return s
		}
		r := h.Reopen(t, s)
		t.Cleanup(func() { _ = r.Close() })
		return r
	}
	newSink := func(t *testing.T) twopc.Sink {
		s := h.New(t)
		t.Cleanup(func() { _ = s.Close() })
		for _, ts := range h.Tables {
			require.NoError(t, s.ApplySchema(t.Context(), ts))
		}
		return s
	}
	// prepare writes n rows to each target in epoch and pre-commits.
	prepare := func(t *testing.T, s twopc.Sink, epoch uint64, n int, targets ...change.TableID) ([]twopc.Prepared, *recorder) {
		rec := &recorder{t: t, h: h, s: s}
		tx, err := s.Begin(t.Context(), epoch, rec)
		require.NoError(t, err)
		for _, tg := range targets {
			require.NoError(t, tx.Write(t.Context(), h.Rows(tg, n)))
		}
		ps, err := tx.PreCommit(t.Context())
		require.NoError(t, err)
		return ps, rec
	}
	visible := func(t *testing.T, s twopc.Sink, target change.TableID, want int) {
		if h.Visible != nil {
			require.Equal(t, want, h.Visible(t, s, target), "visible rows in %s", target)
		}
	}

	t.Run("ApplySchemaIsIdempotent", func(t *testing.T) {
		s := newSink(t)
		for _, ts := range h.Tables {
			require.NoError(t, s.ApplySchema(t.Context(), ts))
		}
	})

	t.Run("PreCommitReturnsOnePreparedPerTarget", func(t *testing.T) {
		s := newSink(t)
		ps, rec := prepare(t, s, 1, 3, a, b, a)
		require.Len(t, ps, 2, "one Prepared per target written")
		var targets []change.TableID
		for _, p := range ps {
			require.Equal(t, s.Name(), p.Sink)
			require.NotEmpty(t, p.TxnID, "PreCommit must return the txn id")
			require.Contains(t, rec.labels(), p.Label, "prepared label %s was never intended", p.Label)
			targets = append(targets, p.Target)
		}
		require.ElementsMatch(t, []change.TableID{a, b}, targets)
		require.Len(t, rec.labels(), 2, "one intent per target")
		visible(t, s, a, 0)
	})

	t.Run("EmptyEpochPreparesNothing", func(t *testing.T) {
		s := newSink(t)
		ps, rec := prepare(t, s, 1, 0)
		require.Empty(t, ps)
		require.Empty(t, rec.labels())
	})

	t.Run("LabelsDifferPerEpoch", func(t *testing.T) {
		s := newSink(t)
		p1, _ := prepare(t, s, 1, 1, a)
		p2, _ := prepare(t, s, 2, 1, a)
		require.NotEqual(t, p1[0].Label, p2[0].Label)
	})

	t.Run("CommitIsIdempotent", func(t *testing.T) {
		s := newSink(t)
		ps, _ := prepare(t, s, 1, 4, a)
		for range 2 {
			o, err := s.Commit(t.Context(), ps[0])
			require.NoError(t, err)
			require.Equal(t, twopc.Committed, o)
		}
		o, err := reopen(t, s).Commit(t.Context(), ps[0])
		require.NoError(t, err)
		require.Equal(t, twopc.Committed, o, "commit from a later process")
		visible(t, s, a, 4)
		o, err = s.Abort(t.Context(), ps[0])
		require.NoError(t, err)
		require.Equal(t, twopc.Committed, o, "Abort of a committed txn reports Committed")
		visible(t, s, a, 4)
	})

	t.Run("AbortIsIdempotent", func(t *testing.T) {
		s := newSink(t)
		ps, _ := prepare(t, s, 1, 2, a)
		for range 2 {
			o, err := s.Abort(t.Context(), ps[0])
			require.NoError(t, err)
			require.Equal(t, twopc.Aborted, o)
		}
		o, err := reopen(t, s).Abort(t.Context(), ps[0])
		require.NoError(t, err)
		require.Equal(t, twopc.Aborted, o)
		o, err = s.Commit(t.Context(), ps[0])
		require.NoError(t, err)
		require.Equal(t, twopc.Aborted, o, "Commit of an aborted txn reports Aborted")
		visible(t, s, a, 0)
	})

	t.Run("AbortOfIntendedTxn", func(t *testing.T) {
		// Recovery of an OPEN epoch knows only what was intended: the
		// label, and the txn id where the sink re-intended it.
		s := newSink(t)
		ps, rec := prepare(t, s, 1, 2, a)
		o, err := reopen(t, s).Abort(t.Context(), rec.intent(ps[0].Label))
		require.NoError(t, err)
		require.Equal(t, twopc.Aborted, o)
		o, err = s.Commit(t.Context(), ps[0])
		require.NoError(t, err)
		require.Equal(t, twopc.Aborted, o)
	})

	t.Run("AbortOfUnknownLabel", func(t *testing.T) {
		s := newSink(t)
		o, err := s.Abort(t.Context(), twopc.Prepared{Sink: s.Name(), Target: a, Label: "never_begun_label_42"})
		require.NoError(t, err)
		require.Equal(t, twopc.Aborted, o, "a label that never existed counts as aborted")
	})

	t.Run("TxnAbortThenRecoveryAbort", func(t *testing.T) {
		s := newSink(t)
		rec := &recorder{t: t, h: h, s: s}
		tx, err := s.Begin(t.Context(), 1, rec)
		require.NoError(t, err)
		require.NoError(t, tx.Write(t.Context(), h.Rows(a, 3)))
		require.NoError(t, tx.Abort(t.Context()))
		for _, l := range rec.labels() {
			o, err := s.Abort(t.Context(), twopc.Prepared{Sink: s.Name(), Target: a, Label: l})
			require.NoError(t, err)
			require.Equal(t, twopc.Aborted, o)
		}
		visible(t, s, a, 0)
	})

	t.Run("IntendErrorStopsTheWrite", func(t *testing.T) {
		s := newSink(t)
		rec := &failingRecorder{}
		tx, err := s.Begin(t.Context(), 1, rec)
		require.NoError(t, err)
		require.Error(t, tx.Write(t.Context(), h.Rows(a, 1)), "a Write whose Intend failed must fail")
		_ = tx.Abort(t.Context())
		visible(t, s, a, 0)
		require.NotEmpty(t, rec.refused, "Write must call Intend")
		if h.Sent != nil {
			for _, l := range rec.refused {
				require.False(t, h.Sent(t, s, l), "label %s was sent although Intend failed", l)
			}
		}
	})
}

// failingRecorder refuses every intent, remembering the labels.
type failingRecorder struct {
	mu      sync.Mutex
	refused []string
}

func (r *failingRecorder) Intend(_ context.Context, p twopc.Prepared) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refused = append(r.refused, p.Label)
	return ErrInjected
}
