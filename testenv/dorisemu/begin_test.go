package dorisemu

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBeginDecisionTable pins spec §4.2 / §2.2 / §2.3: what a load PUT
// answers depending on the label's existing txns, limits and headers.
func TestBeginDecisionTable(t *testing.T) {
	long := strings.Repeat("a", 129)
	cases := []struct {
		name    string
		opts    Options
		label   string
		setup   func(t *testing.T, e *Emulator, label string) int64 // returns the existing txn id, if any
		table   string
		hdr     map[string]string
		status  string
		jobStat string
		msg     string // exact Message; %d is replaced by the existing txn id
		noTxn   bool   // TxnId must be -1
	}{
		{name: "fresh label", label: "fresh", status: "Success", msg: "OK"},
		{
			name: "label of a PREPARE txn", label: "running",
			setup: func(t *testing.T, e *Emulator, label string) int64 {
				openLoad(t, e, label)
				ti, _ := e.Txn(label)
				return ti.ID
			},
			status: "Label Already Exists", jobStat: "RUNNING", noTxn: true,
			msg: "[LABEL_ALREADY_EXISTS]TStatus: errCode = 2, detailMessage = Label [running] has already been used, relate to txn [%d]",
		},
		{
			name: "label of a PRECOMMITTED txn", label: "pre",
			setup: func(t *testing.T, e *Emulator, label string) int64 {
				return load2PC(t, e, label, `{"id":1}`).num("TxnId")
			},
			status: "Label Already Exists", jobStat: "PRECOMMITTED", noTxn: true,
			msg: "[LABEL_ALREADY_EXISTS]TStatus: errCode = 2, detailMessage = Label [pre] has already been used, relate to txn [%d]",
		},
		{
			name: "label of a COMMITTED txn", label: "committed", opts: Options{PublishDelay: time.Hour},
			setup: func(t *testing.T, e *Emulator, label string) int64 {
				id := load2PC(t, e, label, `{"id":1}`).num("TxnId")
				st, _ := commitID(t, e, id)
				require.Equal(t, "Success", st)
				return id
			},
			status: "Label Already Exists", jobStat: "FINISHED", noTxn: true,
			msg: "[LABEL_ALREADY_EXISTS]TStatus: errCode = 2, detailMessage = Label [committed] has already been used, relate to txn [%d]",
		},
		{
			name: "label of a VISIBLE txn", label: "visible",
			setup: func(t *testing.T, e *Emulator, label string) int64 {
				r := beLoad(t, e, "users", label, "1\ta\t1.5\t2024-01-02", nil)
				require.Equal(t, "Success", r.str("Status"))
				return r.num("TxnId")
			},
			status: "Label Already Exists", jobStat: "FINISHED", noTxn: true,
			msg: "[LABEL_ALREADY_EXISTS]TStatus: errCode = 2, detailMessage = Label [visible] has already been used, relate to txn [%d]",
		},
		{
			name: "label whose only txn is ABORTED is reusable", label: "aborted",
			setup: func(t *testing.T, e *Emulator, label string) int64 {
				id := load2PC(t, e, label, `{"id":1}`).num("TxnId")
				st, _ := abortID(t, e, id)
				require.Equal(t, "Success", st)
				return id
			},
			status: "Success", msg: "OK",
		},
		{
			name: "label with a dot", label: "a.b", status: "Fail", noTxn: true,
			msg: "[ANALYSIS_ERROR]TStatus: errCode = 2, detailMessage = Label format error. regex: ^[-_A-Za-z0-9:]{1,128}$, label: a.b",
		},
		{
			name: "label of 129 chars", label: long, status: "Fail", noTxn: true,
			msg: "[ANALYSIS_ERROR]TStatus: errCode = 2, detailMessage = Label format error. regex: ^[-_A-Za-z0-9:]{1,128}$, label: " + long,
		},
		{
			name: "label of 128 chars with all allowed characters", label: strings.Repeat("aZ9-_:", 21) + "xy",
			status: "Success", msg: "OK",
		},
		{
			name: "unknown table", label: "t1", table: "nope", status: "Fail", noTxn: true,
			msg: "[ANALYSIS_ERROR]TStatus: errCode = 7, detailMessage = table not found, tableName=nope",
		},
		{
			name: "running txn limit", label: "over", opts: Options{MaxRunningTxnPerDB: 2},
			setup: func(t *testing.T, e *Emulator, _ string) int64 {
				load2PC(t, e, "l1", `{"id":1}`)
				load2PC(t, e, "l2", `{"id":2}`)
				return 0
			},
			status: "Fail", noTxn: true,
			msg: "[ANALYSIS_ERROR]TStatus: errCode = 2, detailMessage = current running txns on db %DB is 2, larger than limit 2",
		},
		{
			name: "wrong password", label: "pw", hdr: map[string]string{"Authorization": "Basic cm9vdDp4"}, // root:x
			status: "Fail", noTxn: true,
			msg: "[ANALYSIS_ERROR]TStatus: errCode = 2, detailMessage = Access denied for user 'root@127.0.0.1' (using password: YES)",
		},
		{
			name: "no Authorization", label: "noauth", hdr: map[string]string{"Authorization": ""},
			status: "Fail", noTxn: true, msg: "[INTERNAL_ERROR]no valid Basic authorization",
		},
		{
			name: "unknown format", label: "fmt", hdr: map[string]string{"format": "xml"},
			status: "Fail", noTxn: true, msg: "[INTERNAL_ERROR]unknown data format, format=xml",
		},
		{
			name: "group commit with label", label: "gc", hdr: map[string]string{"group_commit": "async_mode"},
			status: "Fail", noTxn: true, msg: "[INVALID_ARGUMENT]label and group_commit can't be set at the same time",
		},
		{
			name: "1.2 message format", label: "old", opts: Options{Version: "1.2"},
			setup: func(t *testing.T, e *Emulator, label string) int64 {
				return load2PC(t, e, label, `{"id":1}`).num("TxnId")
			},
			status: "Label Already Exists", jobStat: "PRECOMMITTED", noTxn: true,
			msg: "errCode = 2, detailMessage = Label [old] has already been used, relate to txn [%d]",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := startEmu(t, tc.opts)
			var existing int64
			if tc.setup != nil {
				existing = tc.setup(t, e, tc.label)
			}
			table := tc.table
			if table == "" {
				table = "users"
			}
			hdr := map[string]string{"two_phase_commit": "true"}
			for k, v := range tc.hdr {
				hdr[k] = v
			}
			r := beLoad(t, e, table, tc.label, "", hdr)
			require.Equal(t, tc.status, r.str("Status"), r.Raw)
			msg := strings.ReplaceAll(tc.msg, "%d", fmt.Sprint(existing))
			msg = strings.ReplaceAll(msg, "%DB", fmt.Sprint(e.dbs["demo"].ID))
			require.Equal(t, msg, r.str("Message"))
			require.Equal(t, tc.label, r.str("Label"))
			require.Equal(t, "true", r.str("TwoPhaseCommit"))
			if tc.jobStat != "" {
				require.Equal(t, tc.jobStat, r.str("ExistingJobStatus"))
			} else {
				require.NotContains(t, r.JSON, "ExistingJobStatus")
			}
			if tc.noTxn {
				require.Equal(t, int64(-1), r.num("TxnId"))
			} else {
				require.Positive(t, r.num("TxnId"))
				require.NotEqual(t, existing, r.num("TxnId"))
			}
			if tc.status == "Label Already Exists" {
				// Flink's LABEL_EXIST_PATTERN must find the existing txn id.
				m := regexp.MustCompile(`Label \[(.*)\] has already been used, relate to txn \[(\d+)\]`).FindStringSubmatch(r.str("Message"))
				require.Len(t, m, 3)
				require.Equal(t, fmt.Sprint(existing), m[2])
			}
		})
	}
}

// TestUnknownDatabase: a begin against a missing database.
func TestUnknownDatabase(t *testing.T) {
	e := startEmu(t, Options{})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+e.BEHTTPAddr()+"/api/nodb/users/_stream_load", strings.NewReader(""))
	require.NoError(t, err)
	req.SetBasicAuth("root", "")
	resp, err := noRedirectClient().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	r := decodeLoad(t, b)
	require.Equal(t, "Fail", r.str("Status"))
	require.Equal(t, int64(-1), r.num("TxnId"))
	require.Equal(t, "[ANALYSIS_ERROR]TStatus: errCode = 2, detailMessage = unknown database, database=nodb", r.str("Message"))
}

// TestLoadReplyShape pins the keys, their order and JSON types (spec §2.1).
func TestLoadReplyShape(t *testing.T) {
	for _, v := range []struct {
		version string
		keys    []string
	}{
		{"2.1", []string{"TxnId", "Label", "Comment", "TwoPhaseCommit", "Status", "Message", "NumberTotalRows", "NumberLoadedRows",
			"NumberFilteredRows", "NumberUnselectedRows", "LoadBytes", "LoadTimeMs", "BeginTxnTimeMs", "StreamLoadPutTimeMs",
			"ReadDataTimeMs", "WriteDataTimeMs", "ReceiveDataTimeMs", "CommitAndPublishTimeMs"}},
		{"1.2", []string{"TxnId", "Label", "TwoPhaseCommit", "Status", "Message", "NumberTotalRows", "NumberLoadedRows",
			"NumberFilteredRows", "NumberUnselectedRows", "LoadBytes", "LoadTimeMs", "BeginTxnTimeMs", "StreamLoadPutTimeMs",
			"ReadDataTimeMs", "WriteDataTimeMs", "CommitAndPublishTimeMs"}},
	} {
		t.Run(v.version, func(t *testing.T) {
			e := startEmu(t, Options{Version: v.version})
			body := `{"id":1,"name":"a"}` + "\n" + `{"id":2,"name":"b"}`
			r := load2PC(t, e, "shape", body)
			keyRE := regexp.MustCompile(`(?m)^    "([A-Za-z]+)": `)
			var keys []string
			for _, m := range keyRE.FindAllStringSubmatch(r.Raw, -1) {
				keys = append(keys, m[1])
			}
			require.Equal(t, v.keys, keys)
			require.True(t, strings.HasPrefix(r.Raw, "{\n    \"TxnId\": "), r.Raw)
			require.True(t, strings.HasSuffix(r.Raw, "\n}\n"), r.Raw)
			require.Regexp(t, `"TxnId": \d+,`, r.Raw)
			require.Contains(t, r.Raw, `"TwoPhaseCommit": "true",`)
			require.Contains(t, r.Raw, `"Status": "Success",`)
			require.Contains(t, r.Raw, `"Message": "OK",`)
			require.Equal(t, int64(2), r.num("NumberTotalRows"))
			require.Equal(t, int64(2), r.num("NumberLoadedRows"))
			require.Equal(t, int64(len(body)), r.num("LoadBytes"))
			require.Equal(t, int64(0), r.num("CommitAndPublishTimeMs"))
		})
	}
}
