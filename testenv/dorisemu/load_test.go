package dorisemu

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestFERedirect pins §1.2: auth, Expect presence, 307 to the other
// loopback IP with credentials in Location, body never read by the FE.
func TestFERedirect(t *testing.T) {
	e := startEmu(t, Options{Password: "s3cret"})
	_, bePort, _ := net.SplitHostPort(e.BEHTTPAddr())
	require.True(t, strings.HasPrefix(e.FEHTTPAddr(), "127.0.0.1:"))
	require.True(t, strings.HasPrefix(e.BEHTTPAddr(), "127.0.0.2:"))

	put := func(path string, hdr map[string]string, body io.Reader) *http.Response {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+e.FEHTTPAddr()+path, body)
		require.NoError(t, err)
		req.SetBasicAuth("root", "s3cret")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := noRedirectClient().Do(req)
		require.NoError(t, err)
		t.Cleanup(func() { _ = resp.Body.Close() })
		return resp
	}
	readJSON := func(resp *http.Response) map[string]any {
		var m map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
		return m
	}

	resp := put("/api/demo/users/_stream_load", nil, strings.NewReader("x"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, map[string]any{"status": "FAILED", "msg": "There is no 100-continue header"}, readJSON(resp))

	resp = put("/api/demo/users/_stream_load", map[string]string{"Expect": "100-continue"}, strings.NewReader("x"))
	require.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode)
	require.Equal(t, "http://root:s3cret@127.0.0.2:"+bePort+"/api/demo/users/_stream_load?", resp.Header.Get("Location"))

	resp = put("/api/demo/users/_stream_load_2pc", map[string]string{"txn_operation": "commit"}, nil)
	require.Equal(t, map[string]any{"status": "FAILED", "msg": "No transaction id or label selected."}, readJSON(resp))
	resp = put("/api/demo/_stream_load_2pc", map[string]string{"txn_id": "5"}, nil)
	require.Equal(t, map[string]any{"status": "FAILED", "msg": "No transaction operation('commit' or 'abort') selected."}, readJSON(resp))
	resp = put("/api/demo/_stream_load_2pc", map[string]string{"label": "x", "txn_operation": "abort"}, nil)
	require.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode, "2PC needs no Expect")
	require.Equal(t, "http://root:s3cret@127.0.0.2:"+bePort+"/api/demo/_stream_load_2pc?", resp.Header.Get("Location"))

	// Wrong password: unauthorized envelope.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+e.FEHTTPAddr()+"/api/demo/users/_stream_load", nil)
	require.NoError(t, err)
	req.SetBasicAuth("root", "bad")
	req.Header.Set("Expect", "100-continue")
	resp, err = noRedirectClient().Do(req)
	require.NoError(t, err)
	m := readJSON(resp)
	_ = resp.Body.Close()
	require.Equal(t, float64(401), m["code"])

	t.Run("FE answers 307 without reading the body", func(t *testing.T) {
		c, err := net.Dial("tcp", e.FEHTTPAddr())
		require.NoError(t, err)
		defer c.Close()
		_, err = fmt.Fprintf(c, "PUT /api/demo/users/_stream_load?x=1 HTTP/1.1\r\nHost: fe\r\nAuthorization: Basic cm9vdDpzM2NyZXQ=\r\n"+
			"Expect: 100-continue\r\nTransfer-Encoding: chunked\r\nlabel: raw\r\n\r\n")
		require.NoError(t, err)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		require.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode)
		require.Equal(t, "http://root:s3cret@127.0.0.2:"+bePort+"/api/demo/users/_stream_load?x=1", resp.Header.Get("Location"))
	})

	t.Run("Go client follows the redirect across hosts with Location credentials", func(t *testing.T) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+e.FEHTTPAddr()+"/api/demo/users/_stream_load",
			strings.NewReader(`{"id":42,"name":"via-fe"}`))
		require.NoError(t, err)
		req.SetBasicAuth("root", "s3cret")
		for k, v := range map[string]string{"Expect": "100-continue", "label": "viafe", "format": "json", "two_phase_commit": "true"} {
			req.Header.Set(k, v)
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		r := decodeLoad(t, b)
		require.Equal(t, "Success", r.str("Status"), r.Raw)
		require.Equal(t, int64(1), r.num("NumberLoadedRows"))
		// Commit through the FE as well.
		req, err = http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+e.FEHTTPAddr()+"/api/demo/users/_stream_load_2pc", nil)
		require.NoError(t, err)
		req.SetBasicAuth("root", "s3cret")
		req.Header.Set("txn_id", fmt.Sprint(r.num("TxnId")))
		req.Header.Set("txn_operation", "commit")
		resp2, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		require.NoError(t, err)
		defer resp2.Body.Close()
		b, err = io.ReadAll(resp2.Body)
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("{\n    \"status\": \"Success\",\n    \"msg\": \"transaction [%d] commit successfully.\"\n}", r.num("TxnId")), string(b))
		rows, err := e.Rows("demo", "users")
		require.NoError(t, err)
		require.Equal(t, "via-fe", rows[0]["name"])
	})

	t.Run("2.0 FE needs txn_id", func(t *testing.T) {
		e2 := startEmu(t, Options{Version: "2.0"})
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+e2.FEHTTPAddr()+"/api/demo/_stream_load_2pc", nil)
		require.NoError(t, err)
		req.SetBasicAuth("root", "")
		req.Header.Set("label", "x")
		req.Header.Set("txn_operation", "commit")
		resp, err := noRedirectClient().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, map[string]any{"status": "FAILED", "msg": "No transaction id selected."}, readJSON(resp))
	})
}

func TestFEInfoEndpoints(t *testing.T) {
	e := startEmu(t, Options{})
	host, port, _ := net.SplitHostPort(e.BEHTTPAddr())
	m := feGet(t, e, "/api/backends?is_alive=true")
	require.Equal(t, "success", m["msg"])
	require.Equal(t, float64(0), m["code"])
	require.Equal(t, map[string]any{"backends": []any{map[string]any{"ip": host, "http_port": json.Number(port), "is_alive": true}}},
		normalizeNumbers(m["data"]))

	m = feGet(t, e, "/api/demo/users/_schema")
	require.Equal(t, "success", m["msg"])
	data := m["data"].(map[string]any)
	require.Equal(t, "UNIQUE_KEYS", data["keysType"])
	require.Equal(t, float64(200), data["status"])
	props := data["properties"].([]any)
	require.Len(t, props, 4)
	require.Equal(t, map[string]any{"name": "id", "type": "BIGINT", "comment": "", "aggregation_type": ""}, props[0])
	require.Equal(t, map[string]any{"name": "name", "type": "VARCHAR", "comment": "", "aggregation_type": "REPLACE"}, props[1])
	require.Equal(t, map[string]any{"name": "score", "type": "DECIMAL32", "comment": "", "aggregation_type": "REPLACE", "precision": "5", "scale": "2"}, props[2])
	m = feGet(t, e, "/api/demo/events/_schema")
	require.Equal(t, "DUPLICATE_KEYS", m["data"].(map[string]any)["keysType"])
	require.Equal(t, "NONE", m["data"].(map[string]any)["properties"].([]any)[1].(map[string]any)["aggregation_type"])
	m = feGet(t, e, "/api/demo/nope/_schema")
	require.Equal(t, float64(1), m["code"])
	m = feGet(t, e, "/api/nodb/get_load_state?label=x")
	require.Equal(t, float64(1), m["code"])
}

func normalizeNumbers(v any) any {
	b, _ := json.Marshal(v)
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	var out any
	_ = d.Decode(&out)
	return out
}

// TestLoadSemantics covers Unique upsert/delete, Duplicate append, CSV and
// JSON, columns/hidden_columns/merge_type, and Loads().
func TestLoadSemantics(t *testing.T) {
	e := startEmu(t, Options{})
	commit := func(r loadResp) {
		t.Helper()
		require.Equal(t, "Success", r.str("Status"), r.Raw)
		st, msg := commitID(t, e, r.num("TxnId"))
		require.Equal(t, "Success", st, msg)
	}
	commit(load2PC(t, e, "u1",
		`{"id":1,"name":"a","score":1.5,"born":"2000-01-02","__DORIS_DELETE_SIGN__":"0"}`,
		`{"id":2,"name":"b","score":"2.25"}`,
		`{"id":3,"name":"c"}`,
		`{"id":1,"name":"a2"}`, // later row wins
	))
	commit(load2PC(t, e, "u2", `{"id":2,"name":"b","__DORIS_DELETE_SIGN__":"1"}`))
	rows, err := e.Rows("demo", "users")
	require.NoError(t, err)
	require.Equal(t, []map[string]any{
		{"id": int64(1), "name": "a2", "score": nil, "born": nil},
		{"id": int64(3), "name": "c", "score": nil, "born": nil},
	}, rows)

	// CSV with a columns header (reordered, delete sign included).
	commit(beLoad(t, e, "users", "u3", "x,5,0\ny,3,1\n", map[string]string{
		"two_phase_commit": "true", "column_separator": ",", "columns": "name,id," + DeleteSignColumn,
	}))
	// merge_type DELETE.
	commit(beLoad(t, e, "users", "u4", "1\n", map[string]string{"two_phase_commit": "true", "columns": "id", "merge_type": "DELETE"}))
	rows, err = e.Rows("demo", "users")
	require.NoError(t, err)
	require.Equal(t, []map[string]any{{"id": int64(5), "name": "x", "score": nil, "born": nil}}, rows)

	// Duplicate Key: appends, even identical rows.
	r := beLoad(t, e, "events", "d1", "2024-01-01 10:00:00\tclick\t1\n2024-01-01 10:00:00\tclick\t1\n2023-12-31 00:00:00\tview\t\\N", nil)
	require.Equal(t, "Success", r.str("Status"), r.Raw)
	rows, err = e.Rows("demo", "events")
	require.NoError(t, err)
	require.Equal(t, []map[string]any{
		{"ts": "2023-12-31 00:00:00", "kind": "view", "n": nil},
		{"ts": "2024-01-01 10:00:00", "kind": "click", "n": int64(1)},
		{"ts": "2024-01-01 10:00:00", "kind": "click", "n": int64(1)},
	}, rows)
	r = beLoad(t, e, "events", "d2", "x", map[string]string{"merge_type": "DELETE"})
	require.Equal(t, "[ANALYSIS_ERROR]TStatus: errCode = 2, detailMessage = load by MERGE or DELETE is only supported in unique tables.", r.str("Message"))
	require.Positive(t, r.num("TxnId"), "plan errors come after begin")
	ti, _ := e.Txn("d2")
	require.Equal(t, StateAborted, ti.State)

	loads := e.Loads()
	require.Len(t, loads, 5)
	require.Equal(t, "u1", loads[0].Label)
	require.Len(t, loads[0].Ops, 4)
	require.Equal(t, RowOp{Delete: false, Row: map[string]any{"id": int64(3), "name": "c", "score": nil, "born": nil}}, loads[0].Ops[2])
	require.True(t, loads[1].Ops[0].Delete)
	require.Equal(t, StateVisible, loads[4].State)
	require.Equal(t, int64(3), loads[4].LoadedRows)

	r = beLoad(t, e, "users", "m1", "9,z", map[string]string{"columns": "id,name", "merge_type": "MERGE", "column_separator": ","})
	require.Equal(t, "[ANALYSIS_ERROR]TStatus: errCode = 2, detailMessage = Excepted DELETE ON clause when merge type is MERGE.", r.str("Message"))
	r = beLoad(t, e, "users", "m2", "9,z", map[string]string{"columns": "id,nosuch", "column_separator": ","})
	require.Equal(t, "[ANALYSIS_ERROR]TStatus: errCode = 2, detailMessage = Unknown column 'nosuch' in 'users'", r.str("Message"))
}

// TestDataQuality: strict mode, filtered rows, max_filter_ratio, ErrorURL.
func TestDataQuality(t *testing.T) {
	e := startEmu(t, Options{})
	body := strings.Join([]string{
		"1\tok\t1.00\t2024-01-01",
		"2\ttoolongname\t1.00\t2024-01-01", // VARCHAR(8): always filtered
		"3\tbad\t12345.6\t2024-01-01",      // DECIMAL(5,2) overflow
		"x\tbadint\t1\t2024-01-01",         // id NOT NULL, not an int
		"5\tbaddate\t1\t2024-13-45",        // bad date
		"6\tshort",                         // too few columns
	}, "\n")
	cases := []struct {
		name              string
		hdr               map[string]string
		status            string
		loaded, filtered  int64
		wantRows          int
		errURL            bool
		nullScoreOrBornOK bool
	}{
		{"default ratio 0 fails", map[string]string{}, "Fail", 3, 3, 0, true, false},
		{"non-strict ratio 1: bad values become NULL", map[string]string{"max_filter_ratio": "1"}, "Success", 3, 3, 3, true, true},
		{"strict ratio 1: bad values filtered", map[string]string{"max_filter_ratio": "1", "strict_mode": "true"}, "Success", 1, 5, 1, true, false},
		{"strict ratio below filtered share fails", map[string]string{"max_filter_ratio": "0.5", "strict_mode": "true"}, "Fail", 1, 5, 0, true, false},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			label := fmt.Sprintf("dq%d", i)
			require.NoError(t, e.Exec("DROP TABLE IF EXISTS demo.users"))
			require.NoError(t, e.Exec(testDDL))
			r := beLoad(t, e, "users", label, body, tc.hdr)
			require.Equal(t, tc.status, r.str("Status"), r.Raw)
			require.Equal(t, int64(6), r.num("NumberTotalRows"))
			require.Equal(t, tc.loaded, r.num("NumberLoadedRows"))
			require.Equal(t, tc.filtered, r.num("NumberFilteredRows"))
			if tc.status == "Fail" {
				require.Equal(t, "[DATA_QUALITY_ERROR]too many filtered rows", r.str("Message"))
				ti, _ := e.Txn(label)
				require.Equal(t, StateAborted, ti.State)
			}
			rows, err := e.Rows("demo", "users")
			require.NoError(t, err)
			require.Len(t, rows, tc.wantRows)
			url := r.str("ErrorURL")
			require.Equal(t, tc.errURL, url != "")
			resp, err := http.Get(url) //nolint:noctx // test helper
			require.NoError(t, err)
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.Contains(t, string(b), "too long than schema")
			require.Contains(t, string(b), "src line [6\tshort]")
			if tc.nullScoreOrBornOK {
				require.Nil(t, rows[1]["score"])
				require.Nil(t, rows[2]["born"])
			}
		})
	}
}

// TestEmptyBody: Content-Length 0 → Success with 0 rows (Flink's probe).
func TestEmptyBody(t *testing.T) {
	e := startEmu(t, Options{})
	r := beLoad(t, e, "users", "probe", "", map[string]string{"two_phase_commit": "true", "format": "json"})
	require.Equal(t, "Success", r.str("Status"), r.Raw)
	require.Equal(t, "true", r.str("TwoPhaseCommit"))
	require.Equal(t, int64(0), r.num("NumberTotalRows"))
	require.Equal(t, int64(0), r.num("LoadBytes"))
	ti, _ := e.Txn("probe")
	require.Equal(t, StatePrecommitted, ti.State)
}

// TestDisconnectMidBody: the client goes away mid-body → ABORTED, label
// reusable, nothing applied.
func TestDisconnectMidBody(t *testing.T) {
	e := startEmu(t, Options{})
	finish := openLoad(t, e, "cut")
	ti, _ := e.Txn("cut")
	finish(false)
	require.Eventually(t, func() bool {
		x, _ := e.TxnByID(ti.ID)
		return x.State == StateAborted
	}, 5*time.Second, 5*time.Millisecond)
	x, _ := e.TxnByID(ti.ID)
	require.Contains(t, x.AbortReason, "sender is gone")
	r := load2PC(t, e, "cut", `{"id":1}`)
	require.Equal(t, "Success", r.str("Status"))
	require.Empty(t, e.Loads())
}

// TestReplyBeforeBody: a label conflict is answered while the chunked
// client is still uploading (§1.3 step 7).
func TestReplyBeforeBody(t *testing.T) {
	e := startEmu(t, Options{})
	precommitted(t, e, "busy")
	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+e.BEHTTPAddr()+"/api/demo/users/_stream_load", pr)
	require.NoError(t, err)
	req.SetBasicAuth("root", "")
	req.Header.Set("label", "busy")
	req.Header.Set("two_phase_commit", "true")
	go func() { _, _ = pw.Write([]byte("1\tx\n")) }() // never finishes the body
	resp, err := noRedirectClient().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	r := decodeLoad(t, b)
	require.Equal(t, "Label Already Exists", r.str("Status"))
	require.Equal(t, "PRECOMMITTED", r.str("ExistingJobStatus"))
}

// TestStreamingFlatMemory streams a large chunked CSV body in CountOnly mode
// and checks that the heap stays flat (no whole-body buffering).
func TestStreamingFlatMemory(t *testing.T) {
	e := startEmu(t, Options{CountOnly: true})
	const total = 32 << 20
	line := []byte("123456\tsomename\t1.25\t2024-01-02\n")
	pr, pw := io.Pipe()
	go func() {
		var sent int
		buf := make([]byte, 0, 64<<10)
		for sent < total {
			buf = buf[:0]
			for len(buf)+len(line) <= cap(buf) {
				buf = append(buf, line...)
			}
			n, err := pw.Write(buf)
			sent += n
			if err != nil {
				return
			}
		}
		_ = pw.Close()
	}()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
			}
		}
	}()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+e.BEHTTPAddr()+"/api/demo/users/_stream_load", io.NopCloser(pr))
	require.NoError(t, err)
	req.SetBasicAuth("root", "")
	req.Header.Set("label", "big")
	req.Header.Set("two_phase_commit", "true")
	resp, err := (&http.Client{}).Do(req)
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	close(stop)
	<-sampled
	require.NoError(t, err)
	r := decodeLoad(t, b)
	require.Equal(t, "Success", r.str("Status"), r.Raw)
	require.GreaterOrEqual(t, r.num("LoadBytes"), int64(total))
	require.Equal(t, r.num("LoadBytes")/int64(len(line)), r.num("NumberLoadedRows"))
	require.Less(t, peak.Load(), uint64(20<<20), "heap grew with the body: not streamed")
}
