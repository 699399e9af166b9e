package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	perrors "github.com/pingcap/errors"
	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/merge"
	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
	"github.com/shardsync/shardsync/twopc"
)

// Outage tests. In the normal run an outage lasts until the job has retried
// it many more times than the old limit (6 restarts without progress) with
// a scaled backoff cap; with SHARDSYNC_LONG_TESTS=1 the outage lasts the
// literal 5 minutes and the job runs with its default backoff.

func longTests() bool { return os.Getenv("SHARDSYNC_LONG_TESTS") == "1" }

// outagePlan is how long an outage lasts and the job's backoff flags.
type outagePlan struct {
	min      time.Duration // the outage lasts at least this long
	attempts int           // and until the job made more attempts than this
	flags    []string
}

func planOutage() outagePlan {
	if longTests() {
		return outagePlan{min: 5 * time.Minute, attempts: maxRestarts}
	}
	return outagePlan{min: 10 * time.Second, attempts: 2 * maxRestarts,
		flags: []string{"--restart-initial-backoff", "100ms", "--restart-max-backoff", "400ms"}}
}

func getHTTP(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func jobStatus(t *testing.T, addr string) statusReport {
	t.Helper()
	code, body := getHTTP(t, "http://"+addr+"/status")
	require.Equal(t, http.StatusOK, code, body)
	var r statusReport
	require.NoError(t, json.Unmarshal([]byte(body), &r))
	return r
}

func downOf(r statusReport, component string) *outageStatus {
	for i := range r.Unreachable {
		if r.Unreachable[i].Component == component {
			return &r.Unreachable[i]
		}
	}
	return nil
}

// rideOut keeps the outage of component going until the plan is met,
// checking what the running job shows meanwhile, and returns the attempts.
func rideOut(t *testing.T, c *child, addr, component string, p outagePlan, began time.Time) int {
	t.Helper()
	deadline := began.Add(p.min + 5*time.Minute)
	for {
		require.False(t, c.exited(), "shardsync exited during the outage:\n%s", bufferTail(c.out.String(), 30))
		r := jobStatus(t, addr)
		if d := downOf(r, component); d != nil && time.Since(began) >= p.min && d.Attempts > p.attempts {
			code, body := getHTTP(t, "http://"+addr+"/readyz")
			require.Equal(t, http.StatusServiceUnavailable, code, body)
			require.Contains(t, body, component+" ")
			require.Contains(t, body, "unreachable since")
			_, metrics := getHTTP(t, "http://"+addr+"/metrics")
			require.Contains(t, metrics, `shardsync_unreachable{component="`+component+`"} 1`)
			require.Contains(t, metrics, `shardsync_unreachable_attempts{component="`+component+`"}`)
			require.NotContains(t, metrics, `shardsync_unreachable_since_timestamp_seconds{component="`+component+`"} 0`)
			require.WithinDuration(t, began, d.Since, 2*time.Minute)
			require.NotEmpty(t, d.LastError)
			// One warning per backoff step, not one per attempt.
			warns := strings.Count(c.out.String(), component+" is unreachable; waiting it out") +
				strings.Count(c.out.String(), component+" is still unreachable; waiting it out")
			require.Less(t, warns, d.Attempts, "a warning per attempt")
			require.NotContains(t, c.out.String(), ".go:", "no stack frames in the log")
			t.Logf("%s down %s: %d attempts, %d warnings; status: %+v", component, time.Since(began).Round(time.Second), d.Attempts, warns, *d)
			return d.Attempts
		}
		require.True(t, time.Now().Before(deadline), "the outage plan was not reached; status %+v", r)
		time.Sleep(500 * time.Millisecond)
	}
}

// waitReady waits until the job says it is ready and nothing is down.
func waitReady(t *testing.T, c *child, addr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, body := getHTTP(t, "http://"+addr+"/readyz")
		if code == http.StatusOK && len(jobStatus(t, addr).Unreachable) == 0 {
			return
		}
		require.False(t, c.exited(), "shardsync exited:\n%s", bufferTail(c.out.String(), 30))
		require.True(t, time.Now().Before(deadline), "not ready within %s: %d %s", within, code, body)
		time.Sleep(200 * time.Millisecond)
	}
}

func outageRig(t *testing.T, seed int64, p outagePlan, extra ...string) (*rig, string) {
	port, err := freeLoopbackPort()
	require.NoError(t, err)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := append([]string{"--http-addr", addr}, p.flags...)
	r := newRig(t, testenv.ShardSpec{DBPrefix: "oemp_", Databases: 2, Tables: 2, Rows: 100, Seed: seed}, dorisemu.Options{},
		append(args, extra...)...)
	return r, addr
}

// TestOutageSourceWaitedOut stops the source MariaDB while the job runs,
// for longer than the job used to survive, with changes made just before
// the stop and after the start. The job waits (not ready, the source shown
// as unreachable in status, readyz and metrics, one warning per backoff
// step) and ends exact.
func TestOutageSourceWaitedOut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts MariaDB")
	}
	p := planOutage()
	r, addr := outageRig(t, 31, p)
	c := r.start(t)
	r.waitConverged(t, c, r.source(t), 60*time.Second)
	waitReady(t, c, addr, 30*time.Second)

	before, err := testenv.Workload{Seed: 31, Rate: 200, Duration: 2 * time.Second, MaxRowsPerTxn: 5}.Run(t.Context(), r.m, r.spec)
	require.NoError(t, err)
	require.NoError(t, r.m.Stop())
	began := time.Now()
	rideOut(t, c, addr, componentSource, p, began)
	require.NoError(t, r.m.Start(t.Context()))

	after, err := testenv.Workload{Seed: 32, Rate: 200, Duration: 2 * time.Second, MaxRowsPerTxn: 5}.Run(t.Context(), r.m, r.spec)
	require.NoError(t, err)
	r.waitConverged(t, c, r.source(t), 3*time.Minute)
	waitReady(t, c, addr, time.Minute)
	require.Contains(t, c.out.String(), "source is reachable again")
	require.Equal(t, 0, c.stop(t))
	n := r.requireExactlyOnce(t, before, after)
	t.Logf("source outage of %s ridden out; %d changes each applied exactly once", time.Since(began).Round(time.Second), n)
}

// TestOutageSinkWaitedOut takes the Doris BE down while changes arrive, for
// longer than the job used to survive (it exited at the first recovery
// that could not reach the sink). The job waits, shows doris as
// unreachable, and ends exact once the BE is back.
func TestOutageSinkWaitedOut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts MariaDB")
	}
	p := planOutage()
	extra := []string{"--doris-retries", "1"}
	if longTests() {
		extra = nil
	}
	r, addr := outageRig(t, 41, p, extra...)
	c := r.start(t)
	r.waitConverged(t, c, r.source(t), 60*time.Second)
	waitReady(t, c, addr, 30*time.Second)

	require.NoError(t, r.emu.Faults().BEDown(true))
	began := time.Now()
	during, err := testenv.Workload{Seed: 41, Rate: 200, Duration: 3 * time.Second, MaxRowsPerTxn: 5}.Run(t.Context(), r.m, r.spec)
	require.NoError(t, err)
	rideOut(t, c, addr, "doris", p, began)
	require.NoError(t, r.emu.Faults().BEDown(false))

	r.waitConverged(t, c, r.source(t), 3*time.Minute)
	waitReady(t, c, addr, time.Minute)
	require.Contains(t, c.out.String(), "doris is reachable again")
	require.Equal(t, 0, c.stop(t))
	n := r.requireExactlyOnce(t, during)
	t.Logf("doris outage of %s ridden out; %d changes each applied exactly once", time.Since(began).Round(time.Second), n)
}

// TestOutageClassification: what is waited out, what stops at once, and
// that the component is named.
func TestOutageClassification(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	outages := map[string]error{
		"source refused": fromComponent(componentSource, fmt.Errorf("%w: 127.0.0.1:3306 unreachable after 2 retries: %w", merge.ErrConnect, refused)),
		"source reset":   fromComponent(componentSource, fmt.Errorf("reading: %w", syscall.ECONNRESET)),
		"source gone":    fromComponent(componentSource, perrors.Trace(mysql.ErrBadConn)),
		"source 1053":    fromComponent(componentSource, &mysql.MyError{Code: 1053, Message: "Server shutdown in progress"}),
		"dns":            fromComponent("doris", &net.DNSError{Err: "no such host", Name: "fe", IsNotFound: true}),
		"doris 5xx":      fromComponent("doris", fmt.Errorf("committing: still transient: %w", twopc.ErrUnavailable)),
		"timeout":        fromComponent("maxcompute", fmt.Errorf("uploading: %w", os.ErrDeadlineExceeded)),
		"joined":         errors.Join(fromComponent("doris", refused), errors.New("aborting too")),
		"recovering":     fmt.Errorf("recovering from ledger l: %w", fromComponent("doris", fmt.Errorf("giving up: %w", refused))),
	}
	for name, err := range outages {
		c, ok := outageOf(err)
		require.True(t, ok, name)
		require.NotEmpty(t, c, name)
	}
	c, _ := outageOf(outages["dns"])
	require.Equal(t, "doris", c)

	notOutages := map[string]error{
		"untagged":      refused,
		"bad password":  fromComponent(componentSource, fmt.Errorf("%w: refused the login (ERROR 1045): %w", merge.ErrConnect, merge.ErrAccessDenied)),
		"1045 in chain": fromComponent(componentSource, fmt.Errorf("%w: binlog: %w", merge.ErrConnect, &mysql.MyError{Code: 1045})),
		"purged":        fromComponent(componentSource, fmt.Errorf("%w: gone", merge.ErrBinlogPurged)),
		"schema":        fromComponent(componentSource, fmt.Errorf("%w: narrowing", merge.ErrIncompatibleSchema)),
		"in doubt":      fromComponent("doris", fmt.Errorf("%w: epoch 3", twopc.ErrInDoubt)),
		"rejected":      fromComponent("doris", errors.New("doris load failed: too many filtered rows")),
	}
	for name, err := range notOutages {
		_, ok := outageOf(err)
		require.False(t, ok, name)
	}
	for _, name := range []string{"bad password", "purged", "schema", "in doubt"} {
		require.True(t, terminal(notOutages[name]), name)
	}
}

func TestBackoffStep(t *testing.T) {
	var got []time.Duration
	for n := 1; n <= 8; n++ {
		got = append(got, backoffStep(time.Second, 30*time.Second, n))
	}
	require.Equal(t, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second,
		30 * time.Second, 30 * time.Second, 30 * time.Second}, got)
	require.Equal(t, 30*time.Second, backoffStep(time.Second, 30*time.Second, 1000))
}
