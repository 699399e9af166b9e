package doris_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/doris"
	"github.com/shardsync/shardsync/testenv/dorisemu"
	"github.com/shardsync/shardsync/twopc"
)

const (
	ledgerA = "aaaaaaaaaaaaaaaa"
	ledgerB = "bbbbbbbbbbbbbbbb"
)

func withLedger(id string) func(*doris.Config) {
	return func(c *doris.Config) { c.LedgerID = id }
}

// TestEmuLabelsCarryLedgerID: a replaced ledger starts its epochs at 1
// again; with the ledger id in the label its loads never meet the old
// ledger's labels ("Label Already Exists").
func TestEmuLabelsCarryLedgerID(t *testing.T) {
	e := startEmu(t, dorisemu.Options{})
	a, _ := emuSink(t, e, withLedger(ledgerA))
	b, _ := emuSink(t, e, withLedger(ledgerB))
	require.NoError(t, a.ApplySchema(t.Context(), empSchema(target)))
	require.NoError(t, b.ApplySchema(t.Context(), empSchema(target)))
	pa := epoch(t, a, 1, ins(target, "emp_1", 1, "a"))
	require.Equal(t, "ss_"+ledgerA+"_demo:all_emp_1", pa[0].Label)
	require.Equal(t, twopc.Committed, commit(t, a, pa[0]))
	pb := epoch(t, b, 1, ins(target, "emp_1", 2, "b"))
	require.Equal(t, "ss_"+ledgerB+"_demo:all_emp_1", pb[0].Label)
	require.Equal(t, twopc.Committed, commit(t, b, pb[0]))
	for _, l := range []string{pa[0].Label, pb[0].Label} {
		require.Regexp(t, doris.LabelRE, l)
	}
}

func TestEmuClaimTargets(t *testing.T) {
	e := startEmu(t, dorisemu.Options{})
	ctx := t.Context()
	a, _ := emuSink(t, e, withLedger(ledgerA))
	b, _ := emuSink(t, e, withLedger(ledgerB))
	ownA := twopc.Owner{LedgerID: ledgerA, Holder: "host-a pid 1", Fresh: true}
	ownB := twopc.Owner{LedgerID: ledgerB, Holder: "host-b pid 2", Fresh: true}

	// A missing target is claimed; a repeat by the same ledger is fine.
	require.NoError(t, a.ClaimTargets(ctx, []change.TableID{target, target}, ownA))
	require.NoError(t, a.ApplySchema(ctx, empSchema(target)))
	require.Equal(t, twopc.Committed, commit(t, a, epoch(t, a, 1, ins(target, "emp_1", 1, "a"), ins(target, "emp_1", 2, "b"))[0]))
	ownA.Fresh = false
	require.NoError(t, a.ClaimTargets(ctx, []change.TableID{target}, ownA))

	// Another ledger with the same prefix: one message with the choices.
	err := b.ClaimTargets(ctx, []change.TableID{target}, ownB)
	require.ErrorIs(t, err, twopc.ErrForeignTarget)
	require.ErrorContains(t, err, "target demo.all_emp holds rows written under ledger "+ledgerA)
	require.ErrorContains(t, err, "host-a pid 1")
	require.ErrorContains(t, err, "Restore the ledger file")
	require.ErrorContains(t, err, "--recreate-target")
	require.Len(t, rowsByKey(t, e, target), 2, "a refused claim changes nothing")

	// --recreate-target with a ledger that committed data: refused.
	notFresh := ownB
	notFresh.Fresh, notFresh.Recreate = false, true
	err = b.ClaimTargets(ctx, []change.TableID{target}, notFresh)
	require.ErrorIs(t, err, twopc.ErrForeignTarget)
	require.ErrorContains(t, err, "has already committed data")
	require.Len(t, rowsByKey(t, e, target), 2)

	// --recreate-target with a fresh ledger empties and claims the target.
	recreate := ownB
	recreate.Recreate = true
	require.NoError(t, b.ClaimTargets(ctx, []change.TableID{target}, recreate))
	require.Empty(t, rowsByKey(t, e, target))
	_, cols, err := e.Query("SHOW CREATE TABLE demo.all_emp")
	require.NoError(t, err)
	require.NotEmpty(t, cols, "the definition stays")
	// Now A's ledger is the foreign one; and the flag left on B's command
	// line never empties B's own target again.
	require.NoError(t, b.ApplySchema(ctx, empSchema(target)))
	require.Equal(t, twopc.Committed, commit(t, b, epoch(t, b, 1, ins(target, "emp_1", 7, "b"))[0]))
	recreate.Fresh = false
	require.NoError(t, b.ClaimTargets(ctx, []change.TableID{target}, recreate))
	require.Len(t, rowsByKey(t, e, target), 1)
	require.ErrorIs(t, a.ClaimTargets(ctx, []change.TableID{target}, ownA), twopc.ErrForeignTarget)
}

// TestEmuClaimEmptyForeign: an empty target claimed by another ledger is
// refused (that job may be running before its first load) unless the new
// ledger is fresh and --recreate-target is given; a claimed target that was
// dropped is claimed again.
func TestEmuClaimEmptyForeign(t *testing.T) {
	e := startEmu(t, dorisemu.Options{})
	ctx := t.Context()
	a, _ := emuSink(t, e, withLedger(ledgerA))
	b, _ := emuSink(t, e, withLedger(ledgerB))
	require.NoError(t, a.ClaimTargets(ctx, []change.TableID{target}, twopc.Owner{LedgerID: ledgerA, Holder: "host-a pid 1", Fresh: true}))
	require.NoError(t, a.ApplySchema(ctx, empSchema(target)))
	err := b.ClaimTargets(ctx, []change.TableID{target}, twopc.Owner{LedgerID: ledgerB, Fresh: true})
	require.ErrorIs(t, err, twopc.ErrForeignTarget)
	require.ErrorContains(t, err, "is empty but claimed by ledger "+ledgerA)
	require.ErrorContains(t, err, "host-a pid 1")
	require.NoError(t, b.ClaimTargets(ctx, []change.TableID{target}, twopc.Owner{LedgerID: ledgerB, Fresh: true, Recreate: true}))
	require.ErrorIs(t, a.ClaimTargets(ctx, []change.TableID{target}, twopc.Owner{LedgerID: ledgerA}), twopc.ErrForeignTarget)

	_, _, err = e.Query("DROP TABLE demo.all_emp")
	require.NoError(t, err)
	require.NoError(t, a.ClaimTargets(ctx, []change.TableID{target}, twopc.Owner{LedgerID: ledgerA, Fresh: true}), "a dropped target is free")
}

// TestEmuClaimUnclaimedRows: rows no ledger claimed (an earlier shardsync
// whose ledger was lost) stop a new ledger; a ledger from before ids that
// wrote them adopts them.
func TestEmuClaimUnclaimedRows(t *testing.T) {
	e := startEmu(t, dorisemu.Options{})
	ctx := t.Context()
	old, _ := emuSink(t, e, nil) // a shardsync from before ledger ids
	require.NoError(t, old.ApplySchema(ctx, empSchema(target)))
	require.Equal(t, twopc.Committed, commit(t, old, epoch(t, old, 1, ins(target, "emp_1", 1, "a"))[0]))

	b, _ := emuSink(t, e, withLedger(ledgerB))
	err := b.ClaimTargets(ctx, []change.TableID{target}, twopc.Owner{LedgerID: ledgerB, Fresh: true})
	require.ErrorIs(t, err, twopc.ErrForeignTarget)
	require.ErrorContains(t, err, "no ledger of this label prefix claimed")

	a, _ := emuSink(t, e, withLedger(ledgerA))
	require.NoError(t, a.ClaimTargets(ctx, []change.TableID{target}, twopc.Owner{LedgerID: ledgerA, Adopt: true}))
	require.ErrorIs(t, b.ClaimTargets(ctx, []change.TableID{target}, twopc.Owner{LedgerID: ledgerB, Fresh: true}), twopc.ErrForeignTarget)
	require.Len(t, rowsByKey(t, e, target), 1)
}

// TestEmuClaimRace: two jobs with different ledgers claim the same empty
// target at once; Doris's label rule lets exactly one through.
func TestEmuClaimRace(t *testing.T) {
	// Committed claims turn visible late, so both jobs read "no claim".
	e := startEmu(t, dorisemu.Options{PublishDelay: time.Hour})
	ctx := t.Context()
	a, _ := emuSink(t, e, withLedger(ledgerA))
	b, _ := emuSink(t, e, withLedger(ledgerB))
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []*doris.Sink{a, b} {
		id := []string{ledgerA, ledgerB}[i]
		wg.Go(func() {
			errs[i] = s.ClaimTargets(ctx, []change.TableID{target}, twopc.Owner{LedgerID: id, Fresh: true})
		})
	}
	wg.Wait()
	failed := 0
	for _, err := range errs {
		if err != nil {
			require.ErrorIs(t, err, twopc.ErrForeignTarget)
			require.ErrorContains(t, err, "claimed at the same moment")
			failed++
		}
	}
	require.Equal(t, 1, failed, "exactly one of two racing jobs is refused: %v", errs)
}
