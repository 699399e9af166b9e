package dorisemu

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testDDL = `CREATE TABLE demo.users (
	id BIGINT NOT NULL,
	name VARCHAR(8),
	score DECIMAL(5, 2),
	born DATE
) UNIQUE KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1 PROPERTIES ("replication_num" = "1")`

const testDupDDL = `CREATE TABLE demo.events (
	ts DATETIME NOT NULL,
	kind VARCHAR(16) NOT NULL,
	n INT
) DUPLICATE KEY(ts) DISTRIBUTED BY HASH(ts) BUCKETS 2`

// startEmu starts an emulator with database demo and tables users (Unique)
// and events (Duplicate).
func startEmu(t *testing.T, opts Options) *Emulator {
	t.Helper()
	e, err := Start(opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, e.Close()) })
	require.NoError(t, e.Exec("CREATE DATABASE IF NOT EXISTS demo"))
	require.NoError(t, e.Exec(strings.Replace(testDDL, "CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1)))
	require.NoError(t, e.Exec(strings.Replace(testDupDDL, "CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1)))
	return e
}

// client never follows redirects unless a test asks it to.
func noRedirectClient() *http.Client {
	return &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type loadResp struct {
	Raw  string
	JSON map[string]any
}

func (r loadResp) str(k string) string { s, _ := r.JSON[k].(string); return s }
func (r loadResp) num(k string) int64 {
	n, _ := r.JSON[k].(json.Number)
	i, _ := n.Int64()
	return i
}

func decodeLoad(t *testing.T, body []byte) loadResp {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	m := map[string]any{}
	require.NoError(t, dec.Decode(&m), "body: %s", body)
	return loadResp{Raw: string(body), JSON: m}
}

// beLoad sends a stream load straight to the BE.
func beLoad(t *testing.T, e *Emulator, table, label, body string, hdr map[string]string) loadResp {
	t.Helper()
	return beLoadPath(t, e, "/api/demo/"+table+"/_stream_load", label, body, hdr)
}

// beLoadPath sends a stream load to path on the BE.
func beLoadPath(t *testing.T, e *Emulator, path, label, body string, hdr map[string]string) loadResp {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+e.BEHTTPAddr()+path, strings.NewReader(body))
	require.NoError(t, err)
	req.SetBasicAuth("root", "")
	req.Header.Set("Expect", "100-continue")
	if label != "" {
		req.Header.Set("label", label)
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := noRedirectClient().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", b)
	return decodeLoad(t, b)
}

// load2PC sends an NDJSON 2PC load of rows to demo.users on the BE.
func load2PC(t *testing.T, e *Emulator, label string, rows ...string) loadResp {
	t.Helper()
	return beLoad(t, e, "users", label, strings.Join(rows, "\n"), map[string]string{
		"two_phase_commit": "true", "format": "json", "read_json_by_line": "true",
		"hidden_columns": DeleteSignColumn,
	})
}

// twoPC sends a 2PC operation to addr (FE or BE) and returns the HTTP
// response status and decoded {"status","msg"} (for BE).
func twoPC(t *testing.T, addr, db string, hdr map[string]string) (status, msg string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, fmt.Sprintf("http://%s/api/%s/_stream_load_2pc", addr, db), nil)
	require.NoError(t, err)
	req.SetBasicAuth("root", "")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := noRedirectClient().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", b)
	var m map[string]string
	require.NoError(t, json.Unmarshal(b, &m), "body: %s", b)
	return m["status"], m["msg"]
}

func commitID(t *testing.T, e *Emulator, id int64) (string, string) {
	t.Helper()
	return twoPC(t, e.BEHTTPAddr(), "demo", map[string]string{"txn_id": fmt.Sprint(id), "txn_operation": "commit"})
}

func abortID(t *testing.T, e *Emulator, id int64) (string, string) {
	t.Helper()
	return twoPC(t, e.BEHTTPAddr(), "demo", map[string]string{"txn_id": fmt.Sprint(id), "txn_operation": "abort"})
}

// feGet does an authenticated GET on the FE and decodes the envelope.
func feGet(t *testing.T, e *Emulator, path string) map[string]any {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+e.FEHTTPAddr()+path, nil)
	require.NoError(t, err)
	req.SetBasicAuth("root", "")
	resp, err := noRedirectClient().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var m map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	return m
}

func loadState(t *testing.T, e *Emulator, label string) string {
	t.Helper()
	m := feGet(t, e, "/api/demo/get_load_state?label="+label)
	require.Equal(t, "success", m["msg"])
	return m["data"].(string)
}

// openLoad starts a chunked 2PC load that stays PREPARE until the returned
// finish func is called (finish(true) ends the body normally).
func openLoad(t *testing.T, e *Emulator, label string) (finish func(complete bool) loadResp) {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut,
		fmt.Sprintf("http://%s/api/demo/users/_stream_load", e.BEHTTPAddr()), io.NopCloser(pr))
	require.NoError(t, err)
	req.SetBasicAuth("root", "")
	req.Header.Set("label", label)
	req.Header.Set("two_phase_commit", "true")
	req.Header.Set("format", "json")
	req.Header.Set("read_json_by_line", "true")
	type result struct {
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := noRedirectClient().Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- result{b, err}
	}()
	_, err = pw.Write([]byte(`{"id": 1, "name": "open"}` + "\n"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		ti, ok := e.Txn(label)
		return ok && ti.State == StatePrepare
	}, 5*time.Second, 5*time.Millisecond)
	finished := false
	finish = func(complete bool) loadResp {
		if finished {
			return loadResp{}
		}
		finished = true
		if complete {
			require.NoError(t, pw.Close())
		} else {
			_ = pw.CloseWithError(fmt.Errorf("client gave up"))
		}
		r := <-done
		if !complete {
			return loadResp{}
		}
		require.NoError(t, r.err)
		return decodeLoad(t, r.body)
	}
	t.Cleanup(func() { finish(false) })
	return finish
}
