package main

import (
	"log/slog"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/doris"
	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
	"github.com/shardsync/shardsync/twopc"
)

func faultSpec(seed int64) testenv.ShardSpec {
	return testenv.ShardSpec{DBPrefix: "femp_", Databases: 2, Tables: 2, Rows: 300, Seed: seed}
}

// runWorkload runs w against the rig's source in the background.
func runWorkload(t *testing.T, r *rig, w testenv.Workload) <-chan *testenv.WorkloadResult {
	ch := make(chan *testenv.WorkloadResult, 1)
	go func() {
		res, err := w.Run(t.Context(), r.m, r.spec)
		if err != nil {
			t.Errorf("workload: %v", err)
		}
		ch <- res
	}()
	return ch
}

// TestFaultDorisErrorsWhileStreaming injects Doris 5xx answers, connection
// resets mid-body, and lost load and commit replies (applied, reply never
// sent) while a workload runs. The job must absorb every one (retrying, or
// restarting from its ledger) and end with the exact state, each change
// applied once.
func TestFaultDorisErrorsWhileStreaming(t *testing.T) {
	r := newRig(t, faultSpec(1), dorisemu.Options{})
	c := r.start(t)
	r.waitConverged(t, c, r.source(t), 60*time.Second)

	wl := runWorkload(t, r, testenv.Workload{Seed: 1, Rate: 100, Duration: 6 * time.Second, MaxRowsPerTxn: 10, MultiShardFraction: 0.3})
	f := r.emu.Faults()
	inject := []func(){
		func() { f.FailNext(dorisemu.BEStreamLoad, 500) },
		func() { f.FailNext(dorisemu.FEStreamLoad, 503) },
		func() { f.FailNext(dorisemu.FE2PC, 503) },
		func() { f.FailNext(dorisemu.BE2PC, 500) },
		func() { f.ResetMidBody(300, false) },
		func() { f.ResetMidBody(300, true) },
		func() { f.DropCommitReply() },
		func() { f.DropLoadReply() },
	}
	for i := 0; i < 2*len(inject); i++ {
		inject[i%len(inject)]()
		time.Sleep(350 * time.Millisecond)
	}
	res := <-wl
	require.NotNil(t, res)
	r.waitConverged(t, c, r.source(t), 90*time.Second)
	require.Equal(t, 0, c.stop(t))
	n := r.requireExactlyOnce(t, res)
	injected := f.Injected()
	t.Logf("faults that fired: %v; %d changes each applied exactly once", injected, n)
	require.NotEmpty(t, injected)
}

// precommittedTxn returns a txn of the target left PRECOMMITTED.
func precommittedTxn(emu *dorisemu.Emulator) (dorisemu.TxnInfo, bool) {
	for id := int64(1000); id < 1_000_000; id++ {
		ti, ok := emu.TxnByID(id)
		if !ok {
			if id > 1100 {
				// ids are dense from 1001; scan a little past gaps
				if _, next := emu.TxnByID(id + 1); !next {
					return dorisemu.TxnInfo{}, false
				}
			}
			continue
		}
		if ti.State == dorisemu.TxnState("PRECOMMITTED") && ti.Table == rigTable {
			return ti, true
		}
	}
	return dorisemu.TxnInfo{}, false
}

// stopWithPrecommitted makes commits fail, runs a workload until an epoch
// is pre-committed but not committed, and kills the job there: the ledger
// then holds a PRECOMMITTED epoch.
func stopWithPrecommitted(t *testing.T, r *rig, c *child, seed int64) (*testenv.WorkloadResult, dorisemu.TxnInfo) {
	t.Helper()
	f := r.emu.Faults()
	for range 500 {
		f.FailNext(dorisemu.FE2PC, 503)
	}
	res := <-runWorkload(t, r, testenv.Workload{Seed: seed, Transactions: 40, MaxRowsPerTxn: 5, FirstID: 1 << 40})
	require.NotNil(t, res)
	var ti dorisemu.TxnInfo
	// A commit is attempted only after the PRECOMMITTED record is in the
	// ledger, so a failed commit attempt proves the ledger has it.
	require.Eventually(t, func() bool {
		var ok bool
		ti, ok = precommittedTxn(r.emu)
		return ok && f.Injected()["fail:"+string(dorisemu.FE2PC)] > 0
	}, 30*time.Second, 50*time.Millisecond, "an epoch is pre-committed while its commit fails")
	c.kill(t)
	require.NoError(t, f.Reset())
	return res, ti
}

// TestFaultPrecommitTimeoutWhileStopped stops the job between pre-commit and
// commit, lets Doris's pre-commit timeout abort the transaction while the
// job is down, and restarts it: recovery must rewind to the epoch's start
// and re-read it, losing nothing and duplicating nothing.
func TestFaultPrecommitTimeoutWhileStopped(t *testing.T) {
	r := newRig(t, faultSpec(2), dorisemu.Options{})
	c := r.start(t)
	r.waitConverged(t, c, r.source(t), 60*time.Second)
	res, ti := stopWithPrecommitted(t, r, c, 2)

	r.emu.Advance(3601 * time.Second) // stream_load_default_precommit_timeout_second passes
	after, ok := r.emu.TxnByID(ti.ID)
	require.True(t, ok)
	require.Equal(t, dorisemu.TxnState("ABORTED"), after.State)
	require.Contains(t, after.AbortReason, "timeout")

	c = r.start(t)
	r.waitConverged(t, c, r.source(t), 60*time.Second)
	require.Equal(t, 0, c.stop(t))
	require.Contains(t, c.out.String(), "action=commit outcome=aborted", "recovery found the pre-committed txn aborted and rewound")
	t.Logf("%d changes each applied exactly once after the rewind", r.requireExactlyOnce(t, res))
}

var inDoubtEpoch = regexp.MustCompile(`epoch (\d+) is in doubt`)

// TestFaultLabelPurgedInDoubt covers the one case recovery cannot settle by
// itself: the job stopped after pre-commit, the commit was applied but its
// reply lost, and by restart Doris has purged the label (label retention
// passed). The job must stop with exit 3 and the documented operator
// message; `txn resolve --assume committed` then settles it and the job
// resumes to the exact state.
func TestFaultLabelPurgedInDoubt(t *testing.T) {
	r := newRig(t, faultSpec(3), dorisemu.Options{})
	c := r.start(t)
	r.waitConverged(t, c, r.source(t), 60*time.Second)
	res, ti := stopWithPrecommitted(t, r, c, 3)

	// The commit reaches Doris (as if its reply had been lost) ...
	cfg := doris.DefaultConfig()
	cfg.FENodes, cfg.LabelPrefix = []string{r.emu.FEHTTPAddr()}, "test"
	s, err := doris.New(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	o, err := s.Commit(t.Context(), twopc.Prepared{Sink: "doris", Target: change.TableID{Database: rigDB, Table: rigTable},
		Label: ti.Label, TxnID: strconv.FormatInt(ti.ID, 10)})
	require.NoError(t, err)
	require.Equal(t, twopc.Committed, o)
	// ... and the label is purged while the job is down.
	r.emu.Advance(13 * time.Hour)
	_, remembered := r.emu.TxnByID(ti.ID)
	require.False(t, remembered, "the label was purged")

	c = r.start(t)
	select {
	case <-c.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("shardsync did not stop on the in-doubt epoch:\n%s", bufferTail(c.out.String(), 30))
	}
	out := c.out.String()
	require.Equal(t, exitInDoubt, c.cmd.ProcessState.ExitCode(), out)
	m := inDoubtEpoch.FindStringSubmatch(out)
	require.NotNil(t, m, "the message names the epoch in doubt:\n%s", out)
	require.Contains(t, out, ti.Label)
	require.Contains(t, out, "shardsync txn resolve")

	list := startChild(t, []string{"txn", "list", "--ledger", r.args[13]})
	<-list.done
	require.Equal(t, 0, list.cmd.ProcessState.ExitCode(), list.out.String())
	require.Contains(t, list.out.String(), ti.Label)
	resolve := startChild(t, []string{"txn", "resolve", "--ledger", r.args[13], "--epoch", m[1], "--assume", "committed",
		"--doris-fe", r.emu.FEHTTPAddr()})
	<-resolve.done
	require.Equal(t, 0, resolve.cmd.ProcessState.ExitCode(), resolve.out.String())
	require.Contains(t, resolve.out.String(), "epoch "+m[1])

	c = r.start(t)
	more := <-runWorkload(t, r, testenv.Workload{Seed: 33, Transactions: 30, MaxRowsPerTxn: 4, FirstID: 2 << 40})
	require.NotNil(t, more)
	r.waitConverged(t, c, r.source(t), 60*time.Second)
	require.Equal(t, 0, c.stop(t))
	t.Logf("%d changes each applied exactly once after the operator's decision", r.requireExactlyOnce(t, res, more))
}

// TestFaultMariaDBRestartedUnderTheJob restarts the source server while the
// job follows its binlog; the job reconnects from its last committed
// position and ends exact.
func TestFaultMariaDBRestartedUnderTheJob(t *testing.T) {
	r := newRig(t, faultSpec(4), dorisemu.Options{})
	c := r.start(t)
	r.waitConverged(t, c, r.source(t), 60*time.Second)
	res1 := <-runWorkload(t, r, testenv.Workload{Seed: 4, Transactions: 150, Rate: 100, MaxRowsPerTxn: 6})
	require.NotNil(t, res1)
	require.NoError(t, r.m.Restart(t.Context()))
	res2 := <-runWorkload(t, r, testenv.Workload{Seed: 5, Transactions: 150, Rate: 100, MaxRowsPerTxn: 6, FirstID: res1.LastID + 1})
	require.NotNil(t, res2)
	r.waitConverged(t, c, r.source(t), 90*time.Second)
	require.Equal(t, 0, c.stop(t))
	t.Logf("%d changes each applied exactly once across the source restart", r.requireExactlyOnce(t, res1, res2))
}
