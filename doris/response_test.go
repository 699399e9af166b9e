package doris

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestClassifyLoad(t *testing.T) {
	cases := []struct {
		name  string
		body  string
		class Class
		txn   int64
	}{
		{"2pc success (docs)", `{
    "TxnId": 18036,
    "Label": "55c8ffc9-1c40-4d51-b75e-f2265b3602ef",
    "TwoPhaseCommit": "true",
    "Status": "Success",
    "Message": "OK",
    "NumberTotalRows": 100,
    "NumberLoadedRows": 100,
    "NumberFilteredRows": 0,
    "NumberUnselectedRows": 0,
    "LoadBytes": 1031,
    "LoadTimeMs": 77,
    "BeginTxnTimeMs": 1,
    "StreamLoadPutTimeMs": 1,
    "ReadDataTimeMs": 0,
    "WriteDataTimeMs": 58,
    "CommitAndPublishTimeMs": 0
}
`, ClassSuccess, 18036},
		{"publish timeout", `{"TxnId": 7, "Status": "Publish Timeout", "Message": "transaction commit successfully, BUT data will be visible later"}`, ClassSuccess, 7},
		{"label exists 1.2 finished", `{"TxnId": -1, "Label": "doris_dev_user_1_23", "TwoPhaseCommit": "true", "Status": "Label Already Exists", "ExistingJobStatus": "FINISHED", "Message": "errCode = 2, detailMessage = Label [doris_dev_user_1_23] has already been used, relate to txn [50985]"}`, ClassAlreadyDone, 50985},
		{"label exists 2.0 precommitted with stack", `{"TxnId": -1, "Status": "Label Already Exists", "ExistingJobStatus": "PRECOMMITTED", "Message": "[LABEL_ALREADY_EXISTS]errCode = 2, detailMessage = Label [l1] has already been used, relate to txn [50054]\n0. /root/src/doris-2.0/be/src/common/stack_trace.cpp:302: StackTrace::tryCapture() @ 0x000000000ba2b2a7"}`, ClassLabelExists, 50054},
		{"label exists 2.1 running", `{"TxnId": -1, "Status": "Label Already Exists", "ExistingJobStatus": "RUNNING", "Message": "[LABEL_ALREADY_EXISTS]TStatus: errCode = 2, detailMessage = Label [x] has already been used, relate to txn [77]"}`, ClassLabelExists, 77},
		{"label exists 3.x cloud", `{"TxnId": -1, "Status": "Label Already Exists", "ExistingJobStatus": "FINISHED", "Message": "[LABEL_ALREADY_EXISTS]TStatus: errCode = 2, detailMessage = Label [x] has already been used, relate to txn [602531767123968], status=[TXN_STATUS_VISIBLE]"}`, ClassAlreadyDone, 602531767123968},
		{"running txn limit", `{"TxnId": -1, "Status": "Fail", "Message": "[ANALYSIS_ERROR]TStatus: errCode = 2, detailMessage = current running txns on db 805314 is 1000, larger than limit 1000"}`, ClassRetryable, -1},
		{"filtered rows", `{"TxnId": 9, "Status": "Fail", "Message": "[DATA_QUALITY_ERROR]too many filtered rows", "NumberFilteredRows": 1, "ErrorURL": "http://be:8040/api/_load_error_log?file=__shard_3/error_log_insert_stmt_1"}`, ClassTerminal, 9},
		{"label format", `{"TxnId": -1, "Status": "Fail", "Message": "[ANALYSIS_ERROR]TStatus: errCode = 2, detailMessage = Label format error. regex: ^[-_A-Za-z0-9:]{1,128}$, label: a.b"}`, ClassTerminal, -1},
		{"2pc disabled", `{"TxnId": -1, "Status": "Fail", "Message": "Two phase commit (2PC) for stream load was disabled"}`, ClassTerminal, -1},
		{"FE no expect", `{"status":"FAILED","msg":"There is no 100-continue header"}`, ClassTerminal, 0},
		{"FE no backend", `{"status":"FAILED","msg":"No backend load available., policy: needLoadAvailable"}`, ClassRetryable, 0},
		{"too many versions", `{"TxnId": 3, "Status": "Fail", "Message": "[E-235]too many versions, versions=501 tablet=1"}`, ClassRetryable, 3},
		{"not json", `<html>bad gateway</html>`, ClassTerminal, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := Classify(OpLoad, 200, []byte(tc.body))
			require.Equal(t, tc.class, v.Class, "verdict %s", v)
			require.Equal(t, tc.txn, v.TxnID)
			require.NotContains(t, v.Message, "\n")
		})
	}
}

func TestClassify2PC(t *testing.T) {
	type want struct{ commit, abort Class }
	cases := []struct {
		name string
		body string
		want want
	}{
		{"success id", `{
    "status": "Success",
    "msg": "transaction [18036] commit successfully."
}`, want{ClassSuccess, ClassSuccess}},
		{"success label", `{"status": "Success", "msg": "label [L] abort successfully."}`, want{ClassSuccess, ClassSuccess}},
		{"already committed", `{"status": "ANALYSIS_ERROR", "msg": "TStatus: errCode = 2, detailMessage = transaction [5] is already committed, not pre-committed."}`, want{ClassAlreadyDone, ClassCommitted}},
		{"already visible 2.1", `{"status": "ANALYSIS_ERROR", "msg": "TStatus: errCode = 2, detailMessage = transaction [1] is already visible, not pre-committed."}`, want{ClassAlreadyDone, ClassCommitted}},
		{"already VISIBLE old caps", `{"status": "ANALYSIS_ERROR", "msg": "errCode = 2, detailMessage = transaction [1] is already VISIBLE, not pre-committed."}`, want{ClassAlreadyDone, ClassCommitted}},
		{"abort of committed", `{"status": "ANALYSIS_ERROR", "msg": "TStatus: errCode = 2, detailMessage = transaction [1] is already COMMITTED, could not abort."}`, want{ClassAlreadyDone, ClassCommitted}},
		{"abort of visible", `{"status": "ANALYSIS_ERROR", "msg": "errCode = 2, detailMessage = transaction [1] is already VISIBLE, could not abort."}`, want{ClassAlreadyDone, ClassCommitted}},
		{"timeout by txn manager", `{ "status": "ANALYSIS_ERROR", "msg": "TStatus: errCode = 2, detailMessage = transaction [243259] is already aborted. abort reason: timeout by txn manager" }`, want{ClassAborted, ClassAlreadyDone}},
		{"user abort", `{"status": "ANALYSIS_ERROR", "msg": "TStatus: errCode = 2, detailMessage = transaction [1] is already aborted. abort reason: User Abort"}`, want{ClassAborted, ClassAlreadyDone}},
		{"abort of aborted (comma)", `{"status": "ANALYSIS_ERROR", "msg": "TStatus: errCode = 2, detailMessage = transaction [1] is already aborted, abort reason: User Abort"}`, want{ClassAborted, ClassAlreadyDone}},
		{"txn not found", `{"status": "ANALYSIS_ERROR", "msg": "TStatus: errCode = 2, detailMessage = transaction [42] not found"}`, want{ClassNotFound, ClassNotFound}},
		{"label not found", `{"status": "ANALYSIS_ERROR", "msg": "TStatus: errCode = 2, detailMessage = transaction not found, label=abc"}`, want{ClassNotFound, ClassNotFound}},
		{"running not found", `{"status": "ANALYSIS_ERROR", "msg": "TStatus: errCode = 2, detailMessage = running transaction not found, label=abc"}`, want{ClassNotFound, ClassNotFound}},
		{"prepare", `{"status": "ANALYSIS_ERROR", "msg": "TStatus: errCode = 2, detailMessage = transaction [1] is prepare, not pre-committed."}`, want{ClassRetryable, ClassRetryable}},
		{"lock timeout", `{"status": "ANALYSIS_ERROR", "msg": "TStatus: errCode = 2, detailMessage = get tableList write lock timeout, tableList=(t1)"}`, want{ClassRetryable, ClassRetryable}},
		{"not master", `{"status": "NOT_MASTER", "msg": "TStatus: not master"}`, want{ClassRetryable, ClassRetryable}},
		{"unknown db", `{"status": "ANALYSIS_ERROR", "msg": "TStatus: errCode = 2, detailMessage = unknown database, database=x"}`, want{ClassTerminal, ClassTerminal}},
		{"bad txn id", `{"status":"INTERNAL_ERROR","msg":"convert txn_id [x] failed, reason=stoull"}`, want{ClassTerminal, ClassTerminal}},
		{"old BE label", `{"status":"INTERNAL_ERROR","msg":"convert txn_id [] failed, reason=stoull"}`, want{ClassUnsupported, ClassUnsupported}},
		{"old FE label", `{"status":"FAILED","msg":"No transaction id selected."}`, want{ClassUnsupported, ClassUnsupported}},
		{"bad op", `{"status":"INTERNAL_ERROR","msg":"transaction operation should be 'commit' or 'abort'"}`, want{ClassTerminal, ClassTerminal}},
		{"cloud illegal", `{"status":"INTERNAL_ERROR","msg":"failed abort txn, with illegal input, db_id=-1 txn_id=-1 label= txn_2pc_op=abort"}`, want{ClassTerminal, ClassTerminal}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want.commit, Classify(OpCommit, 200, []byte(tc.body)).Class, "commit")
			require.Equal(t, tc.want.abort, Classify(OpAbort, 200, []byte(tc.body)).Class, "abort")
		})
	}
}

func TestClassifyHTTPStatus(t *testing.T) {
	for status, want := range map[int]Class{500: ClassRetryable, 502: ClassRetryable, 503: ClassRetryable,
		429: ClassRetryable, 401: ClassTerminal, 403: ClassTerminal, 404: ClassTerminal, 400: ClassTerminal} {
		for _, op := range []Op{OpLoad, OpCommit, OpAbort} {
			require.Equal(t, want, Classify(op, status, []byte("x")).Class, "%s %d", op, status)
		}
	}
}

func TestParseLoadState(t *testing.T) {
	st, v := parseLoadState(200, []byte(`{"msg":"success","code":0,"data":"VISIBLE","count":0}`))
	require.Equal(t, ClassSuccess, v.Class)
	require.Equal(t, "VISIBLE", st)
	st, v = parseLoadState(200, []byte(`{"msg":"success","code":0,"data":"UNKNOWN","count":0}`))
	require.Equal(t, ClassSuccess, v.Class)
	require.Equal(t, "UNKNOWN", st)
	_, v = parseLoadState(200, []byte(`{"msg":"Error","code":1,"data":"unknown database"}`))
	require.Equal(t, ClassTerminal, v.Class)
	_, v = parseLoadState(503, nil)
	require.Equal(t, ClassRetryable, v.Class)
}

func FuzzClassify(f *testing.F) {
	f.Add(uint8(1), 200, []byte(`{"Status":"Success","TxnId":1}`))
	f.Add(uint8(2), 200, []byte(`{"status":"ANALYSIS_ERROR","msg":"transaction [1] not found"}`))
	f.Fuzz(func(t *testing.T, op uint8, status int, body []byte) {
		v := Classify(Op(op%3+1), status, body)
		if v.Class == ClassInvalid {
			t.Fatalf("unclassified reply %q", body)
		}
	})
}
