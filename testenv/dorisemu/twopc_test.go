package dorisemu

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fixture puts a txn with label into a state and returns its id.
type fixture func(t *testing.T, e *Emulator, label string) int64

func precommitted(t *testing.T, e *Emulator, label string) int64 {
	r := load2PC(t, e, label, `{"id":7,"name":"x"}`)
	require.Equal(t, "Success", r.str("Status"), r.Raw)
	return r.num("TxnId")
}

func committed(t *testing.T, e *Emulator, label string) int64 {
	e.Faults().HoldPublish(true)
	id := precommitted(t, e, label)
	st, msg := commitID(t, e, id)
	require.Equal(t, "Success", st, msg)
	return id
}

func visible(t *testing.T, e *Emulator, label string) int64 {
	id := precommitted(t, e, label)
	st, msg := commitID(t, e, id)
	require.Equal(t, "Success", st, msg)
	return id
}

func userAborted(t *testing.T, e *Emulator, label string) int64 {
	id := precommitted(t, e, label)
	st, msg := abortID(t, e, id)
	require.Equal(t, "Success", st, msg)
	return id
}

func timedOut(t *testing.T, e *Emulator, label string) int64 {
	id := precommitted(t, e, label)
	e.Advance(3601 * time.Second)
	return id
}

func preparing(t *testing.T, e *Emulator, label string) int64 {
	openLoad(t, e, label)
	ti, ok := e.Txn(label)
	require.True(t, ok)
	return ti.ID
}

// Test2PCDecisionTable pins every row of spec §3.3 with exact strings.
func Test2PCDecisionTable(t *testing.T) {
	const ts = "TStatus: errCode = 2, detailMessage = "
	cases := []struct {
		name    string
		setup   fixture
		hdr     map[string]string // %ID and %L are replaced
		db      string
		status  string
		msg     string
		after   TxnState // expected state afterwards ("" = not checked)
		version string
	}{
		{"commit id PRECOMMITTED", precommitted, map[string]string{"txn_id": "%ID", "txn_operation": "commit"}, "",
			"Success", "transaction [%ID] commit successfully.", StateVisible, ""},
		{"commit id COMMITTED", committed, map[string]string{"txn_id": "%ID", "txn_operation": "commit"}, "",
			"ANALYSIS_ERROR", ts + "transaction [%ID] is already committed, not pre-committed.", StateCommitted, ""},
		{"commit id VISIBLE", visible, map[string]string{"txn_id": "%ID", "txn_operation": "commit"}, "",
			"ANALYSIS_ERROR", ts + "transaction [%ID] is already visible, not pre-committed.", StateVisible, ""},
		{"commit id ABORTED by user", userAborted, map[string]string{"txn_id": "%ID", "txn_operation": "commit"}, "",
			"ANALYSIS_ERROR", ts + "transaction [%ID] is already aborted. abort reason: User Abort", StateAborted, ""},
		{"commit id ABORTED by timeout", timedOut, map[string]string{"txn_id": "%ID", "txn_operation": "commit"}, "",
			"ANALYSIS_ERROR", ts + "transaction [%ID] is already aborted. abort reason: timeout by txn manager", StateAborted, ""},
		{"commit id PREPARE", preparing, map[string]string{"txn_id": "%ID", "txn_operation": "commit"}, "",
			"ANALYSIS_ERROR", ts + "transaction [%ID] is prepare, not pre-committed.", StatePrepare, ""},
		{"commit id unknown", nil, map[string]string{"txn_id": "987654", "txn_operation": "commit"}, "",
			"ANALYSIS_ERROR", ts + "transaction [987654] not found", "", ""},
		{"abort id unknown", nil, map[string]string{"txn_id": "987654", "txn_operation": "abort"}, "",
			"ANALYSIS_ERROR", ts + "transaction [987654] not found", "", ""},
		{"abort id -1 (Flink probe edge)", nil, map[string]string{"txn_id": "-1", "txn_operation": "abort"}, "",
			"ANALYSIS_ERROR", ts + "transaction [-1] not found", "", ""},
		{"abort id PRECOMMITTED", precommitted, map[string]string{"txn_id": "%ID", "txn_operation": "abort"}, "",
			"Success", "transaction [%ID] abort successfully.", StateAborted, ""},
		{"abort id PREPARE", preparing, map[string]string{"txn_id": "%ID", "txn_operation": "abort"}, "",
			"Success", "transaction [%ID] abort successfully.", StateAborted, ""},
		{"abort id ABORTED", userAborted, map[string]string{"txn_id": "%ID", "txn_operation": "abort"}, "",
			"ANALYSIS_ERROR", ts + "transaction [%ID] is already aborted, abort reason: User Abort", StateAborted, ""},
		{"abort id COMMITTED", committed, map[string]string{"txn_id": "%ID", "txn_operation": "abort"}, "",
			"ANALYSIS_ERROR", ts + "transaction [%ID] is already COMMITTED, could not abort.", StateCommitted, ""},
		{"abort id VISIBLE", visible, map[string]string{"txn_id": "%ID", "txn_operation": "abort"}, "",
			"ANALYSIS_ERROR", ts + "transaction [%ID] is already VISIBLE, could not abort.", StateVisible, ""},
		{"commit label unknown", nil, map[string]string{"label": "%L", "txn_operation": "commit"}, "",
			"ANALYSIS_ERROR", ts + "transaction not found, label=%L", "", ""},
		{"abort label unknown", nil, map[string]string{"label": "%L", "txn_operation": "abort"}, "",
			"ANALYSIS_ERROR", ts + "transaction not found, label=%L", "", ""},
		{"commit label PRECOMMITTED", precommitted, map[string]string{"label": "%L", "txn_operation": "commit"}, "",
			"Success", "label [%L] commit successfully.", StateVisible, ""},
		{"commit label PREPARE", preparing, map[string]string{"label": "%L", "txn_operation": "commit"}, "",
			"ANALYSIS_ERROR", ts + "running transaction not found, label=%L", StatePrepare, ""},
		{"commit label ABORTED", userAborted, map[string]string{"label": "%L", "txn_operation": "commit"}, "",
			"ANALYSIS_ERROR", ts + "running transaction not found, label=%L", StateAborted, ""},
		{"commit label VISIBLE", visible, map[string]string{"label": "%L", "txn_operation": "commit"}, "",
			"ANALYSIS_ERROR", ts + "running transaction not found, label=%L", StateVisible, ""},
		{"abort label PRECOMMITTED", precommitted, map[string]string{"label": "%L", "txn_operation": "abort"}, "",
			"Success", "label [%L] abort successfully.", StateAborted, ""},
		{"abort label PREPARE", preparing, map[string]string{"label": "%L", "txn_operation": "abort"}, "",
			"Success", "label [%L] abort successfully.", StateAborted, ""},
		{"abort label COMMITTED", committed, map[string]string{"label": "%L", "txn_operation": "abort"}, "",
			"ANALYSIS_ERROR", ts + "running transaction not found, label=%L", StateCommitted, ""},
		{"label and id", precommitted, map[string]string{"label": "%L", "txn_id": "%ID", "txn_operation": "commit"}, "",
			"Success", "label [%L] transaction [%ID] commit successfully.", StateVisible, ""},
		{"unknown database", precommitted, map[string]string{"txn_id": "%ID", "txn_operation": "commit"}, "nodb",
			"ANALYSIS_ERROR", ts + "unknown database, database=nodb", StatePrecommitted, ""},
		{"bad txn_id", nil, map[string]string{"txn_id": "abc", "txn_operation": "commit"}, "",
			"INTERNAL_ERROR", "convert txn_id [abc] failed, reason=stoull", "", ""},
		{"bad operation", precommitted, map[string]string{"txn_id": "%ID", "txn_operation": "Commit"}, "",
			"INTERNAL_ERROR", "transaction operation should be 'commit' or 'abort'", StatePrecommitted, ""},
		{"2.0 BE needs txn_id", precommitted, map[string]string{"label": "%L", "txn_operation": "commit"}, "",
			"INTERNAL_ERROR", "convert txn_id [] failed, reason=stoull", StatePrecommitted, "2.0"},
		{"2.0 message has no TStatus prefix", userAborted, map[string]string{"txn_id": "%ID", "txn_operation": "commit"}, "",
			"ANALYSIS_ERROR", "errCode = 2, detailMessage = transaction [%ID] is already aborted. abort reason: User Abort", StateAborted, "2.0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := startEmu(t, Options{Version: tc.version})
			label := "lbl_" + strings.NewReplacer(" ", "_", "(", "", ")", "", ".", "_").Replace(tc.name)
			var id int64
			if tc.setup != nil {
				id = tc.setup(t, e, label)
			}
			repl := strings.NewReplacer("%ID", fmt.Sprint(id), "%L", label)
			hdr := map[string]string{}
			for k, v := range tc.hdr {
				hdr[k] = repl.Replace(v)
			}
			db := tc.db
			if db == "" {
				db = "demo"
			}
			st, msg := twoPC(t, e.BEHTTPAddr(), db, hdr)
			require.Equal(t, tc.status, st)
			require.Equal(t, repl.Replace(tc.msg), msg)
			if tc.after != "" {
				ti, ok := e.TxnByID(id)
				require.True(t, ok)
				require.Equal(t, tc.after, ti.State)
			}
		})
	}
}

// TestFlinkPatterns checks the regexes of the Flink contract test against
// the emulator's strings (spec §3.3).
func TestFlinkPatterns(t *testing.T) {
	committedRE := regexp.MustCompile(`transaction \[(\d+)\] is already \b(COMMITTED|committed|VISIBLE|visible)\b, not pre-committed.`)
	abortedRE := regexp.MustCompile(`transaction \[(\d+)\] is already|transaction \[(\d+)\] not found`)
	e := startEmu(t, Options{})
	id := visible(t, e, "flink1")
	_, msg := commitID(t, e, id)
	require.Regexp(t, committedRE, msg)
	_, msg = abortID(t, e, id)
	require.Regexp(t, abortedRE, msg)
	id = userAborted(t, e, "flink2")
	_, msg = abortID(t, e, id)
	require.Regexp(t, abortedRE, msg)
	_, msg = commitID(t, e, id)
	require.Regexp(t, abortedRE, msg)
}

// TestCommitAfterTableDropped: commit fails, abort still works (§3.3).
func TestCommitAfterTableDropped(t *testing.T) {
	e := startEmu(t, Options{})
	id := precommitted(t, e, "dropped")
	tblID := e.dbs["demo"].tables["users"].ID
	require.NoError(t, e.Exec("DROP TABLE demo.users"))
	st, msg := commitID(t, e, id)
	require.Equal(t, "ANALYSIS_ERROR", st)
	require.Equal(t, fmt.Sprintf("TStatus: errCode = 7, detailMessage = table not found, tableId=%d", tblID), msg)
	st, msg = abortID(t, e, id)
	require.Equal(t, "Success", st, msg)
}

// TestCommitPublishesLater: commit → COMMITTED, VISIBLE after PublishDelay;
// rows appear only when visible; a repeated commit sees each state (§3.4).
func TestCommitPublishesLater(t *testing.T) {
	e := startEmu(t, Options{PublishDelay: 10 * time.Second})
	id := precommitted(t, e, "pub")
	require.Equal(t, "PRECOMMITTED", loadState(t, e, "pub"))
	st, _ := commitID(t, e, id)
	require.Equal(t, "Success", st)
	require.Equal(t, "COMMITTED", loadState(t, e, "pub"))
	rows, err := e.Rows("demo", "users")
	require.NoError(t, err)
	require.Empty(t, rows)
	_, msg := commitID(t, e, id)
	require.Contains(t, msg, "is already committed, not pre-committed.")
	e.Advance(10 * time.Second)
	require.Equal(t, "VISIBLE", loadState(t, e, "pub"))
	_, msg = commitID(t, e, id)
	require.Contains(t, msg, "is already visible, not pre-committed.")
	rows, err = e.Rows("demo", "users")
	require.NoError(t, err)
	require.Equal(t, []map[string]any{{"id": int64(7), "name": "x", "score": nil, "born": nil}}, rows)
	require.Equal(t, "UNKNOWN", loadState(t, e, "never"))

	// Without 2PC a slow publish answers "Publish Timeout".
	r := beLoad(t, e, "users", "plain", "8\tb\t\\N\t\\N", nil)
	require.Equal(t, "Publish Timeout", r.str("Status"), r.Raw)
	require.Equal(t, "[PUBLISH_TIMEOUT]transaction commit successfully, BUT data will be visible later", r.str("Message"))
	require.Equal(t, "false", r.str("TwoPhaseCommit"))
	require.Equal(t, "COMMITTED", loadState(t, e, "plain"))
}

// TestTimeouts pins §4.3: PREPARE timeout from the `timeout` header, the
// PRECOMMITTED timeout, and that an aborted label is reusable.
func TestTimeouts(t *testing.T) {
	cases := []struct {
		name    string
		opts    Options
		setup   fixture
		advance time.Duration
		want    TxnState
	}{
		{"PRECOMMITTED before timeout", Options{}, precommitted, 3599 * time.Second, StatePrecommitted},
		{"PRECOMMITTED after default 3600s", Options{}, precommitted, 3601 * time.Second, StateAborted},
		{"PRECOMMITTED custom timeout", Options{PrecommitTimeout: time.Minute}, precommitted, 61 * time.Second, StateAborted},
		{"PRECOMMITTED never times out when disabled (1.2 FEs)", Options{PrecommitTimeout: -1}, precommitted, 100 * time.Hour, StatePrecommitted},
		{"PREPARE after PrepareTimeout", Options{PrepareTimeout: time.Minute}, preparing, 61 * time.Second, StateAborted},
		{"PREPARE before PrepareTimeout", Options{PrepareTimeout: time.Minute}, preparing, 59 * time.Second, StatePrepare},
		{"COMMITTED never times out", Options{PublishDelay: 100 * time.Hour}, func(t *testing.T, e *Emulator, l string) int64 {
			id := precommitted(t, e, l)
			st, _ := commitID(t, e, id)
			require.Equal(t, "Success", st)
			return id
		}, 50 * time.Hour, StateCommitted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := startEmu(t, tc.opts)
			id := tc.setup(t, e, "to")
			e.Advance(tc.advance)
			ti, ok := e.TxnByID(id)
			require.True(t, ok)
			require.Equal(t, tc.want, ti.State)
			if tc.want == StateAborted {
				require.Equal(t, ReasonTimeout, ti.AbortReason)
				require.Equal(t, "ABORTED", loadState(t, e, "to"))
				r := load2PC(t, e, "to", `{"id":1}`)
				require.Equal(t, "Success", r.str("Status"), "an aborted label is reusable")
				require.Len(t, e.LabelTxns("demo", "to"), 2)
			}
		})
	}

	t.Run("timeout header", func(t *testing.T) {
		e := startEmu(t, Options{})
		r := beLoad(t, e, "users", "th", "", map[string]string{"two_phase_commit": "true", "timeout": "5"})
		require.Equal(t, "Success", r.str("Status"))
		ti, _ := e.Txn("th")
		require.Equal(t, StatePrecommitted, ti.State, "the timeout header bounds PREPARE only")
		r = beLoad(t, e, "users", "th2", "", map[string]string{"timeout": "0"})
		require.Equal(t, "[ANALYSIS_ERROR]TStatus: errCode = 2, detailMessage = Invalid timeout: '0'. Expected values should be between 1 and 259200 seconds", r.str("Message"))
	})

	t.Run("load finishing after its txn timed out", func(t *testing.T) {
		e := startEmu(t, Options{PrepareTimeout: time.Minute})
		finish := openLoad(t, e, "late")
		ti, _ := e.Txn("late")
		e.Advance(2 * time.Minute)
		r := finish(true)
		require.Equal(t, "Fail", r.str("Status"))
		require.Equal(t, fmt.Sprintf("[ANALYSIS_ERROR]TStatus: errCode = 2, detailMessage = transaction [%d] is already aborted. abort reason: timeout by txn manager", ti.ID), r.str("Message"))
	})
}

// TestLabelPurge pins label retention by age and by count (§4.3).
func TestLabelPurge(t *testing.T) {
	t.Run("by age", func(t *testing.T) {
		e := startEmu(t, Options{LabelKeepMax: time.Hour})
		id := visible(t, e, "old")
		abortedID := userAborted(t, e, "gone")
		e.Advance(59 * time.Minute)
		_, ok := e.TxnByID(id)
		require.True(t, ok)
		e.Advance(2 * time.Minute)
		_, ok = e.TxnByID(id)
		require.False(t, ok)
		_, ok = e.TxnByID(abortedID)
		require.False(t, ok)
		st, msg := commitID(t, e, id)
		require.Equal(t, "ANALYSIS_ERROR", st)
		require.Equal(t, fmt.Sprintf("TStatus: errCode = 2, detailMessage = transaction [%d] not found", id), msg)
		require.Equal(t, "UNKNOWN", loadState(t, e, "old"))
		r := load2PC(t, e, "old", `{"id":1}`)
		require.Equal(t, "Success", r.str("Status"), "a purged label is reusable")
		require.Len(t, e.Loads(), 1, "Loads keeps history after purge")
	})
	t.Run("by count", func(t *testing.T) {
		e := startEmu(t, Options{LabelNumThreshold: 2})
		ids := []int64{visible(t, e, "c1"), visible(t, e, "c2"), userAborted(t, e, "c3")}
		_, ok := e.TxnByID(ids[0])
		require.False(t, ok, "oldest finished txn is purged beyond the threshold")
		for _, id := range ids[1:] {
			_, ok := e.TxnByID(id)
			require.True(t, ok)
		}
		pre := precommitted(t, e, "c4")
		ids = append(ids, visible(t, e, "c5"))
		_, ok = e.TxnByID(ids[1])
		require.False(t, ok)
		_, ok = e.TxnByID(pre)
		require.True(t, ok, "running txns are never purged")
	})
	t.Run("count disabled", func(t *testing.T) {
		e := startEmu(t, Options{LabelNumThreshold: -1})
		id := visible(t, e, "k1")
		visible(t, e, "k2")
		visible(t, e, "k3")
		_, ok := e.TxnByID(id)
		require.True(t, ok)
	})
}
