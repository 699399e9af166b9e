package twopctest

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/twopc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// FakeHarness is the Harness for the fake sink, used by this package's test
// and usable as an example for real sinks.
func FakeHarness() Harness {
	table := func(name string) change.TableSchema {
		return change.TableSchema{Target: change.TableID{Database: "demo", Table: name}, Schema: change.Schema{
			Columns: []change.Column{{Name: "id", Type: change.Type{Kind: change.KindInt}}},
			Key:     []string{"id"},
		}}
	}
	return Harness{
		New:    func(*testing.T) twopc.Sink { return NewSink("fake") },
		Reopen: func(_ *testing.T, s twopc.Sink) twopc.Sink { return s.(*Sink).Restart() },
		Tables: [2]change.TableSchema{table("a"), table("b")},
		Rows: func(target change.TableID, n int) []change.Row {
			rows := make([]change.Row, n)
			for i := range rows {
				rows[i] = change.Row{Op: change.Insert, Target: target, Source: change.TableID{Database: "s", Table: "t"}, After: []change.Value{int64(i)}}
			}
			return rows
		},
		Sent: func(_ *testing.T, s twopc.Sink, label string) bool { return s.(*Sink).Sent(label) },
		Visible: func(_ *testing.T, s twopc.Sink, target change.TableID) int {
			n := 0
			for _, r := range s.(*Sink).Visible() {
				if r.Target == target {
					n++
				}
			}
			return n
		},
	}
}

func TestFakeConformance(t *testing.T) {
	RunConformance(t, FakeHarness())
}

func TestFakeDestinationFaults(t *testing.T) {
	h := FakeHarness()
	s := NewSink("fake")
	rec := &recorder{t: t, h: h, s: s}
	tx, err := s.Begin(t.Context(), 7, rec)
	require.NoError(t, err)
	target := h.Tables[0].Target
	require.NoError(t, tx.Write(t.Context(), h.Rows(target, 2)))
	require.NoError(t, tx.Write(t.Context(), nil))
	ps, err := tx.PreCommit(t.Context())
	require.NoError(t, err)
	require.Len(t, ps, 1)
	require.Error(t, tx.Write(t.Context(), h.Rows(target, 1)), "write after pre-commit")
	require.Len(t, s.Violations(), 1)

	require.True(t, s.Expire(ps[0].Label), "expire of a pre-committed txn")
	o, err := s.Commit(t.Context(), ps[0])
	require.NoError(t, err)
	require.Equal(t, twopc.Aborted, o, "commit after the destination aborted it")

	s.Forget(ps[0].Label)
	o, err = s.Commit(t.Context(), ps[0])
	require.NoError(t, err)
	require.Equal(t, twopc.Unknown, o, "commit of a forgotten txn")

	s.SetFaults(Faults{Before: func(op Op, _ uint64, _ string) error {
		if op == OpCommit {
			return fmt.Errorf("503: %w", ErrInjected)
		}
		return nil
	}})
	_, err = s.Commit(t.Context(), ps[0])
	require.ErrorIs(t, err, ErrInjected)
	s.Crash()
	_, err = s.Abort(t.Context(), ps[0])
	require.ErrorIs(t, err, ErrCrashed)
	require.False(t, s.Restart().dead, "a restarted sink is alive")
}
