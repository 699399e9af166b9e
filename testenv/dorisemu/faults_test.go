package dorisemu

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestFaults(t *testing.T) {
	t.Run("FailNext", func(t *testing.T) {
		e := startEmu(t, Options{})
		e.Faults().FailNext(BEStreamLoad, http.StatusServiceUnavailable)
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+e.BEHTTPAddr()+"/api/demo/users/_stream_load", strings.NewReader(""))
		require.NoError(t, err)
		req.SetBasicAuth("root", "")
		req.Header.Set("label", "f1")
		resp, err := noRedirectClient().Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		_, ok := e.Txn("f1")
		require.False(t, ok, "no txn begun")
		r := beLoad(t, e, "users", "f1", "", nil)
		require.Equal(t, "Success", r.str("Status"), "one-shot")
		require.Equal(t, 1, e.Faults().Injected()["fail:be_stream_load"])

		e.Faults().FailNext(FEBackends, http.StatusBadGateway)
		req, _ = http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+e.FEHTTPAddr()+"/api/backends", nil)
		req.SetBasicAuth("root", "")
		resp, err = noRedirectClient().Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusBadGateway, resp.StatusCode)
	})

	t.Run("ResetMidBody rolls back", func(t *testing.T) {
		e := startEmu(t, Options{})
		e.Faults().ResetMidBody(10, false)
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+e.BEHTTPAddr()+"/api/demo/users/_stream_load",
			strings.NewReader(strings.Repeat(`{"id":1}`+"\n", 1000)))
		require.NoError(t, err)
		req.SetBasicAuth("root", "")
		req.Header.Set("label", "rst")
		req.Header.Set("format", "json")
		req.Header.Set("read_json_by_line", "true")
		_, err = noRedirectClient().Do(req)
		require.Error(t, err)
		require.Eventually(t, func() bool { ti, _ := e.Txn("rst"); return ti.State == StateAborted }, 5*time.Second, 5*time.Millisecond)
		r := load2PC(t, e, "rst", `{"id":1}`)
		require.Equal(t, "Success", r.str("Status"), "label reusable after rollback")
	})

	t.Run("DropCommitReply applies the commit", func(t *testing.T) {
		e := startEmu(t, Options{})
		id := precommitted(t, e, "drop")
		e.Faults().DropCommitReply()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+e.BEHTTPAddr()+"/api/demo/_stream_load_2pc", nil)
		require.NoError(t, err)
		req.SetBasicAuth("root", "")
		req.Header.Set("txn_id", fmt.Sprint(id))
		req.Header.Set("txn_operation", "commit")
		_, err = noRedirectClient().Do(req)
		require.Error(t, err, "reply lost")
		ti, _ := e.TxnByID(id)
		require.Equal(t, StateVisible, ti.State)
		_, msg := commitID(t, e, id)
		require.Contains(t, msg, "is already visible, not pre-committed.")
	})

	t.Run("DropLoadReply precommits", func(t *testing.T) {
		e := startEmu(t, Options{})
		e.Faults().DropLoadReply()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+e.BEHTTPAddr()+"/api/demo/users/_stream_load", strings.NewReader("1\ta\t1\t2024-01-01"))
		require.NoError(t, err)
		req.SetBasicAuth("root", "")
		req.Header.Set("label", "dl")
		req.Header.Set("two_phase_commit", "true")
		_, err = noRedirectClient().Do(req)
		require.Error(t, err)
		ti, _ := e.Txn("dl")
		require.Equal(t, StatePrecommitted, ti.State)
	})

	t.Run("BEDown", func(t *testing.T) {
		e := startEmu(t, Options{})
		require.NoError(t, e.Faults().BEDown(true))
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+e.BEHTTPAddr()+"/api/demo/users/_stream_load", strings.NewReader(""))
		require.NoError(t, err)
		_, err = noRedirectClient().Do(req)
		// A closed port refuses; a connect racing the close may be reset.
		require.True(t, errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET), "BE down: %v", err)
		m := feGet(t, e, "/api/backends?is_alive=true")
		require.Equal(t, map[string]any{"backends": []any{}}, m["data"])
		req, _ = http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+e.FEHTTPAddr()+"/api/demo/users/_stream_load", strings.NewReader(""))
		req.SetBasicAuth("root", "")
		req.Header.Set("Expect", "100-continue")
		resp, err := noRedirectClient().Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.Contains(t, string(b), `"msg":"No backend load available., policy: `)

		require.NoError(t, e.Faults().BEDownSilently(true))
		resp, err = noRedirectClient().Do(req.Clone(t.Context()))
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode, "FE has not noticed yet")

		require.NoError(t, e.Faults().BEDown(false))
		r := beLoad(t, e, "users", "up", "", nil)
		require.Equal(t, "Success", r.str("Status"))
	})

	t.Run("OmitContinue and DelayContinue", func(t *testing.T) {
		e := startEmu(t, Options{})
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{ExpectContinueTimeout: 200 * time.Millisecond}}
		for i, arm := range []func(){
			func() { e.Faults().OmitContinue(true) },
			func() { e.Faults().OmitContinue(false); e.Faults().DelayContinue(300 * time.Millisecond) },
		} {
			arm()
			pr, pw := io.Pipe()
			go func() {
				_, _ = pw.Write([]byte(`{"id":1}` + "\n"))
				_ = pw.Close()
			}()
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+e.BEHTTPAddr()+"/api/demo/users/_stream_load", pr)
			require.NoError(t, err)
			req.SetBasicAuth("root", "")
			req.Header.Set("Expect", "100-continue")
			req.Header.Set("label", fmt.Sprintf("oc%d", i))
			req.Header.Set("format", "json")
			req.Header.Set("two_phase_commit", "true")
			start := time.Now()
			resp, err := client.Do(req)
			require.NoError(t, err)
			b, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			require.NoError(t, err)
			r := decodeLoad(t, b)
			require.Equal(t, "Success", r.str("Status"), r.Raw)
			require.Equal(t, int64(1), r.num("NumberLoadedRows"))
			require.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)
		}
		client.CloseIdleConnections()
	})

	t.Run("slow publish", func(t *testing.T) {
		e := startEmu(t, Options{})
		e.Faults().SetPublishDelay(time.Minute)
		id := precommitted(t, e, "slow")
		st, _ := commitID(t, e, id)
		require.Equal(t, "Success", st)
		require.Equal(t, "COMMITTED", loadState(t, e, "slow"))
		e.Advance(time.Minute)
		require.Equal(t, "VISIBLE", loadState(t, e, "slow"))
		require.NoError(t, e.Faults().Reset())
	})
}
