package doris

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/twopc"
)

const (
	fakeUser = "loader"
	fakePass = "s3cr3t-p@ss"
)

// fakeDoris is an httptest FE on 127.0.0.1 and BE on 127.0.0.2 doing what
// the real ones do at the HTTP level: the FE 307s loads and 2PC calls to the
// BE with the credentials in the Location's userinfo and never reads a
// body; the BE demands Basic auth and a chunked body.
type fakeDoris struct {
	fe, be *httptest.Server
	beAddr string // what the FE redirects to

	mu      sync.Mutex
	beLoads []string // bodies the BE received
	feLoads int
	commits []string
	beReply func(w http.ResponseWriter, r *http.Request) bool // answers early when true
	nextTxn atomic.Int64
}

func listenOn(t *testing.T, ip string) net.Listener {
	ln, err := net.Listen("tcp", ip+":0")
	require.NoError(t, err)
	return ln
}

func newFakeDoris(t *testing.T) *fakeDoris {
	f := &fakeDoris{}
	f.nextTxn.Store(1000)
	f.be = httptest.NewUnstartedServer(http.HandlerFunc(f.serveBE))
	f.be.Listener = listenOn(t, "127.0.0.2")
	f.be.Start()
	t.Cleanup(f.be.Close)
	f.beAddr = f.be.Listener.Addr().String()
	f.fe = httptest.NewUnstartedServer(http.HandlerFunc(f.serveFE))
	f.fe.Listener = listenOn(t, "127.0.0.1")
	f.fe.Start()
	t.Cleanup(f.fe.Close)
	return f
}

func checkAuth(w http.ResponseWriter, r *http.Request) bool {
	u, p, ok := r.BasicAuth()
	if !ok || u != fakeUser || p != fakePass {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"status":"FAILED","msg":"no valid Basic authorization"}`)
		return false
	}
	return true
}

func (f *fakeDoris) serveFE(w http.ResponseWriter, r *http.Request) {
	if !checkAuth(w, r) {
		return
	}
	switch {
	case strings.HasSuffix(r.URL.Path, "/_schema"):
		fmt.Fprint(w, `{"msg":"success","code":0,"data":{"keysType":"UNIQUE_KEYS","properties":[`+
			`{"name":"database_name","type":"VARCHAR","aggregation_type":""},`+
			`{"name":"table_name","type":"VARCHAR","aggregation_type":""},`+
			`{"name":"id","type":"INT","aggregation_type":""},`+
			`{"name":"v","type":"STRING","aggregation_type":"REPLACE"}],"status":200},"count":0}`)
	case strings.HasSuffix(r.URL.Path, "/_stream_load") || strings.HasSuffix(r.URL.Path, "/_stream_load_2pc"):
		if strings.HasSuffix(r.URL.Path, "/_stream_load") && r.Header.Get("Expect") == "" {
			fmt.Fprint(w, `{"status":"FAILED","msg":"There is no 100-continue header"}`)
			return
		}
		f.mu.Lock()
		f.feLoads++
		f.mu.Unlock()
		// The FE never reads the body. Go's server would send 100 Continue
		// on a Read; not reading means a client that waits for it gets the
		// 307 first, as from a real FE.
		loc := "http://" + fakeUser + ":" + fakePass + "@" + f.beAddr + r.URL.Path + "?" + r.URL.RawQuery
		w.Header().Set("Location", loc)
		w.Header().Set("Content-Type", "text/html;charset=utf-8")
		w.WriteHeader(http.StatusTemporaryRedirect)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeDoris) serveBE(w http.ResponseWriter, r *http.Request) {
	if !checkAuth(w, r) {
		return
	}
	switch {
	case strings.HasSuffix(r.URL.Path, "/_stream_load_2pc"):
		f.mu.Lock()
		f.commits = append(f.commits, r.Header.Get("txn_operation")+":"+r.Header.Get("txn_id")+r.Header.Get("label"))
		f.mu.Unlock()
		fmt.Fprintf(w, `{"status":"Success","msg":"transaction [%s] %s successfully."}`, r.Header.Get("txn_id"), r.Header.Get("txn_operation"))
	case strings.HasSuffix(r.URL.Path, "/_stream_load"):
		f.mu.Lock()
		early := f.beReply
		f.mu.Unlock()
		if early != nil && early(w, r) {
			return
		}
		if r.Header.Get("label") == "" {
			// The client's BE lookup must never reach a BE.
			http.Error(w, "unlabelled load on BE", http.StatusBadRequest)
			return
		}
		if r.ContentLength != -1 || len(r.TransferEncoding) == 0 || r.TransferEncoding[0] != "chunked" {
			http.Error(w, "want chunked body", http.StatusBadRequest)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		f.mu.Lock()
		f.beLoads = append(f.beLoads, string(body))
		f.mu.Unlock()
		n := bytes.Count(body, []byte("\n"))
		fmt.Fprintf(w, `{"TxnId": %d, "Label": %q, "TwoPhaseCommit": "true", "Status": "Success", "Message": "OK", "NumberTotalRows": %d, "NumberLoadedRows": %d, "NumberFilteredRows": 0, "LoadBytes": %d}`+"\n",
			f.nextTxn.Add(1), r.Header.Get("label"), n, n, len(body))
	default:
		http.NotFound(w, r)
	}
}

type memRecorder struct {
	mu     sync.Mutex
	labels []string
}

func (m *memRecorder) Intend(_ context.Context, p twopc.Prepared) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.labels = append(m.labels, p.Label)
	return nil
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func fakeSink(t *testing.T, fe, be []string) (*Sink, *syncBuffer) {
	cfg := DefaultConfig()
	cfg.FENodes = fe
	cfg.BENodes = be
	cfg.User, cfg.Password = fakeUser, fakePass
	cfg.LabelPrefix = "t"
	cfg.RetryWaitMin, cfg.RetryWaitMax = 5*time.Millisecond, 20*time.Millisecond
	cfg.Retries = 2
	logs := &syncBuffer{}
	s, err := New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s, logs
}

var fakeTarget = change.TableID{Database: "demo", Table: "all_emp"}

func fakeSchema() change.TableSchema {
	return change.TableSchema{Target: fakeTarget, Schema: change.Schema{
		Columns: []change.Column{
			{Name: "database_name", Type: change.Type{Kind: change.KindString, SQL: "varchar(64)", Length: 64}},
			{Name: "table_name", Type: change.Type{Kind: change.KindString, SQL: "varchar(64)", Length: 64}},
			{Name: "id", Type: change.Type{Kind: change.KindInt, SQL: "int"}},
			{Name: "v", Type: change.Type{Kind: change.KindString, SQL: "text"}, Nullable: true},
		},
		Key: []string{"id"},
	}}
}

func fakeRows(n, from int) []change.Row {
	rows := make([]change.Row, n)
	for i := range rows {
		rows[i] = change.Row{Op: change.Insert, Target: fakeTarget,
			After: []change.Value{"emp_1", "employees_1", int64(from + i), strings.Repeat("v", 100)}}
	}
	return rows
}

func TestRedirectAcrossHosts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		be       func(f *fakeDoris) []string
		reissued bool
	}{
		// The sink asks the FE with an empty PUT and streams straight to the BE.
		{"resolve BE first", func(*fakeDoris) []string { return nil }, false},
		// A load PUT hits a redirecting node: the 307 beats 100 Continue, Go
		// closes the body, and the sink re-issues with the same reader.
		{"re-issue with same reader", func(f *fakeDoris) []string { return []string{f.fe.Listener.Addr().String()} }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeDoris(t)
			s, logs := fakeSink(t, []string{f.fe.Listener.Addr().String()}, tc.be(f))
			ctx := t.Context()
			require.NoError(t, s.ApplySchema(ctx, fakeSchema()))
			rec := &memRecorder{}
			tx, err := s.Begin(ctx, 42, rec)
			require.NoError(t, err)
			for i := range 50 {
				require.NoError(t, tx.Write(ctx, fakeRows(100, i*100)))
			}
			prep, err := tx.PreCommit(ctx)
			require.NoError(t, err)
			require.Len(t, prep, 1)
			require.Equal(t, []string{"t_demo:all_emp_42"}, rec.labels)
			require.Equal(t, twopc.Prepared{Sink: "doris", Target: fakeTarget, Label: "t_demo:all_emp_42", TxnID: "1001"}, prep[0])

			o, err := s.Commit(ctx, prep[0])
			require.NoError(t, err)
			require.Equal(t, twopc.Committed, o)

			f.mu.Lock()
			defer f.mu.Unlock()
			require.Len(t, f.beLoads, 1)
			require.Equal(t, 5000, strings.Count(f.beLoads[0], "\n"))
			require.Contains(t, f.beLoads[0], `{"database_name":"emp_1","table_name":"employees_1","id":0,"v":"`)
			require.Equal(t, []string{"commit:1001"}, f.commits)
			require.NotContains(t, logs.String(), fakePass)
			require.Equal(t, tc.reissued, strings.Contains(logs.String(), "doris load redirected"))
			require.Equal(t, 2, f.feLoads, "one load (lookup or redirected PUT) and one commit via the FE")
		})
	}
}

func TestRedirectSecretNeverLeaks(t *testing.T) {
	f := newFakeDoris(t)
	dead := listenOn(t, "127.0.0.2")
	f.beAddr = dead.Addr().String()
	require.NoError(t, dead.Close()) // the BE is gone: connection refused
	s, logs := fakeSink(t, []string{f.fe.Listener.Addr().String()}, []string{f.fe.Listener.Addr().String()})
	ctx := t.Context()
	require.NoError(t, s.ApplySchema(ctx, fakeSchema()))
	tx, err := s.Begin(ctx, 1, &memRecorder{})
	require.NoError(t, err)
	err = tx.Write(ctx, fakeRows(10, 0))
	if err == nil {
		_, err = tx.PreCommit(ctx)
	}
	require.Error(t, err)
	require.NotContains(t, err.Error(), fakePass)
	require.Contains(t, err.Error(), f.beAddr)

	_, err = s.Commit(ctx, twopc.Prepared{Sink: "doris", Target: fakeTarget, Label: "x", TxnID: "5"})
	require.Error(t, err)
	require.NotContains(t, err.Error(), fakePass)
	require.NotContains(t, logs.String(), fakePass)
}

// TestEarlyReply: the BE answers before reading the body (label taken);
// the writer must get that answer, not hang on a full pipe.
func TestEarlyReply(t *testing.T) {
	f := newFakeDoris(t)
	f.beReply = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("label") == "" {
			return false
		}
		fmt.Fprint(w, `{"TxnId": -1, "Label": "x", "TwoPhaseCommit": "true", "Status": "Label Already Exists", "ExistingJobStatus": "RUNNING", "Message": "[LABEL_ALREADY_EXISTS]TStatus: errCode = 2, detailMessage = Label [x] has already been used, relate to txn [77]"}`)
		return true
	}
	s, _ := fakeSink(t, []string{f.fe.Listener.Addr().String()}, nil)
	ctx := t.Context()
	require.NoError(t, s.ApplySchema(ctx, fakeSchema()))
	tx, err := s.Begin(ctx, 1, &memRecorder{})
	require.NoError(t, err)
	for i := 0; err == nil && i < 2000; i++ {
		err = tx.Write(ctx, fakeRows(100, i*100)) // ~25 MB, far beyond any buffer
	}
	if err == nil {
		_, err = tx.PreCommit(ctx)
	}
	require.ErrorContains(t, err, "Label Already Exists")
	require.ErrorContains(t, err, "relate to txn [77]")
}

func TestLoadHeaders(t *testing.T) {
	c := &client{cfg: Config{Headers: map[string]string{"timeout": "600", "strict_mode": "true"}}}
	h := c.loadHeaders("l1", true)
	require.Equal(t, "600", h.Get("timeout"))
	require.Equal(t, "true", h.Get("two_phase_commit"))
	require.Equal(t, "json", h.Get("format"))
	require.Equal(t, "true", h.Get("read_json_by_line"))
	require.Equal(t, DeleteSign, h.Get("hidden_columns"))
	require.Equal(t, "100-continue", h.Get("Expect"))
	require.Equal(t, "l1", h.Get("label"))
}
