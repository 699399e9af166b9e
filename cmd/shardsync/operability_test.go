package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/merge"
	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
)

// Secrets of the operability run; none may appear in any output.
const (
	srcSecret   = "Src-S3cret-9f2e41"
	dorisSecret = "Doris-S3cret-7a1c08"
)

// scrape fetches /metrics.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return string(b)
}

// metric sums the samples of name whose labels include every pair of want
// (a Prometheus text exposition, labels sorted by name).
func metric(body, name string, want ...string) (float64, bool) {
	sum, found := 0.0, false
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		series, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		n, labels, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			if !strings.Contains(labels, want[i]+`="`+want[i+1]+`"`) {
				match = false
			}
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err == nil {
			sum += v
			found = true
		}
	}
	return sum, found
}

func httpStatus(addr, path string) int {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// runCLI runs the binary to completion and returns its output and exit code.
func runCLI(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	c := startChild(t, args, env...)
	select {
	case <-c.done:
	case <-time.After(60 * time.Second):
		c.kill(t)
		t.Fatalf("shardsync %v did not finish:\n%s", args, c.out)
	}
	return c.out.String(), c.cmd.ProcessState.ExitCode()
}

// TestOperabilityPipelineRun runs the real binary from a pipeline file with
// secrets set, against MariaDB and the Doris emulator, and checks that the
// metrics move, that status reports the running and then the stopped job,
// that validate passes, and that no secret appears in any output.
func TestOperabilityPipelineRun(t *testing.T) {
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{})
	require.NoError(t, m.Exec(testenv.TutorialSQL,
		"CREATE USER 'sync'@'127.0.0.1' IDENTIFIED BY '"+srcSecret+"'",
		"GRANT ALL PRIVILEGES ON *.* TO 'sync'@'127.0.0.1'"))
	emu, err := dorisemu.Start(dorisemu.Options{Password: dorisSecret})
	require.NoError(t, err)
	t.Cleanup(func() { _ = emu.Close() })
	port, err := freeLoopbackPort()
	require.NoError(t, err)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", port)

	dir := t.TempDir()
	ledgerPath := filepath.Join(dir, "emp.ledger")
	pipeline := filepath.Join(dir, "pipeline.yaml")
	require.NoError(t, os.WriteFile(pipeline, []byte(fmt.Sprintf(`source:
  type: mysql
  hostname: %s
  port: %d
  username: sync
  password: ${SHARDSYNC_MYSQL_PASSWORD}
  tables: emp_[0-9]+.employees_[0-9]+
  server-id: 5400-5404
  heartbeat.interval: 30s
sink:
  type: doris
  fenodes: %s
  username: root
  jdbc-url: jdbc:mysql://%s
  sink.label-prefix: ops_test
route:
  - source-table: emp_[0-9]+.employees_[0-9]+
    sink-table: demo.all_employees_info
pipeline:
  name: ops test
  checkpoint-interval: 300ms
  ledger: %s
  http-addr: %s
  log-format: json
  log-level: debug
`, m.Host(), m.Port(), emu.FEHTTPAddr(), emu.QueryAddr(), ledgerPath, httpAddr)), 0o600))
	env := []string{envMySQLPassword + "=" + srcSecret, envDorisPassword + "=" + dorisSecret}
	var outputs []string
	defer func() {
		for i, o := range outputs {
			require.NotContains(t, o, srcSecret, "output %d shows the source password", i)
			require.NotContains(t, o, dorisSecret, "output %d shows the Doris password", i)
		}
	}()

	t.Log("Given a valid pipeline file, validate checks it and every connection")
	out, code := runCLI(t, env, "validate", "-f", pipeline)
	outputs = append(outputs, out)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "ready to run")
	require.Contains(t, out, "demo.all_employees_info ← emp_1.employees_1")
	require.Contains(t, out, "heartbeat.interval", "the Flink-only key is named in a warning")
	require.NoFileExists(t, ledgerPath, "validate writes nothing")

	bad := []string{envMySQLPassword + "=" + srcSecret, envDorisPassword + "=wrong-" + dorisSecret}
	out, code = runCLI(t, bad, "validate", "-f", pipeline)
	outputs = append(outputs, out)
	require.Equal(t, exitFailure, code, out)
	require.Contains(t, out, "FAIL doris")

	t.Log("When the job runs from the file")
	c := startChild(t, []string{"-f", pipeline}, env...)
	defer func() {
		if !c.exited() {
			c.kill(t)
		}
		outputs = append(outputs, c.out.String())
		if t.Failed() {
			t.Logf("job output (tail):\n%s", bufferTail(c.out.String(), 40))
		}
	}()
	require.Eventually(t, func() bool {
		rows, err := emu.Rows("demo", "all_employees_info")
		return err == nil && len(rows) == testenv.TutorialRows && httpStatus(httpAddr, "/readyz") == http.StatusOK
	}, 60*time.Second, 200*time.Millisecond, "the snapshot is committed and the job is ready")
	require.Equal(t, http.StatusOK, httpStatus(httpAddr, "/healthz"))
	require.Equal(t, http.StatusNotFound, httpStatus(httpAddr, "/debug/pprof/"), "pprof is off unless asked for")

	t.Log("Then the snapshot metrics moved")
	var body string
	require.Eventually(t, func() bool {
		body = scrape(t, httpAddr)
		done, _ := metric(body, "shardsync_snapshot_table_done")
		written, _ := metric(body, "shardsync_rows_written_total", "sink", "doris", "op", "insert")
		return done == 4 && written >= testenv.TutorialRows
	}, 30*time.Second, 200*time.Millisecond, "snapshot metrics")
	for _, c := range []struct {
		name   string
		labels []string
		min    float64
	}{
		{"shardsync_rows_read_total", []string{"target", "demo.all_employees_info", "op", "insert"}, testenv.TutorialRows},
		{"shardsync_epochs_total", []string{"outcome", "committed"}, 1},
		{"shardsync_snapshot_rows", nil, testenv.TutorialRows},
		{"shardsync_snapshot_chunks", nil, 4},
		{"shardsync_phase", []string{"phase", "streaming"}, 1},
		{"shardsync_commit_duration_seconds_count", nil, 1},
		{"shardsync_ledger_fsync_duration_seconds_count", nil, 1},
		{"shardsync_sink_call_duration_seconds_count", []string{"sink", "doris", "op", "precommit"}, 1},
		{"shardsync_last_committed_epoch", nil, 1},
	} {
		v, ok := metric(body, c.name, c.labels...)
		require.True(t, ok, "%s%v is exported", c.name, c.labels)
		require.GreaterOrEqual(t, v, c.min, "%s%v", c.name, c.labels)
	}

	t.Log("When the source changes, the binlog metrics move")
	require.NoError(t, m.Exec("DELETE FROM emp_1.employees_1 WHERE emp_no IN (10001,10002,10003)",
		"UPDATE emp_2.employees_2 SET first_name='Changed' WHERE emp_no=10101"))
	require.Eventually(t, func() bool {
		body = scrape(t, httpAddr)
		del, _ := metric(body, "shardsync_rows_written_total", "op", "delete")
		upd, _ := metric(body, "shardsync_rows_written_total", "op", "update")
		e2e, _ := metric(body, "shardsync_end_to_end_latency_seconds_count")
		return del == 3 && upd == 1 && e2e >= 1
	}, 30*time.Second, 200*time.Millisecond, "binlog changes counted")
	for _, name := range []string{"shardsync_binlog_lag_seconds", "shardsync_last_visible_source_commit_timestamp_seconds"} {
		v, ok := metric(body, name)
		require.True(t, ok, name)
		require.GreaterOrEqual(t, v, 0.0, name)
	}
	ts, _ := metric(body, "shardsync_last_visible_source_commit_timestamp_seconds")
	require.InDelta(t, float64(time.Now().Unix()), ts, 120, "the newest visible source commit is recent")
	read, _ := metric(body, "shardsync_rows_read_total", "op", "delete")
	require.Equal(t, 3.0, read)
	outputs = append(outputs, body)

	t.Log("Then status reports the running job")
	out, code = runCLI(t, nil, "status", "--http-addr", httpAddr)
	outputs = append(outputs, out)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "ops test: running, phase streaming")
	require.Contains(t, out, "emp_2.employees_2")
	require.Contains(t, out, "binlog lag:")
	out, code = runCLI(t, nil, "status", "--http-addr", httpAddr, "--json")
	outputs = append(outputs, out)
	require.Equal(t, 0, code, out)
	var running statusReport
	require.NoError(t, json.Unmarshal([]byte(out), &running), out)
	require.Equal(t, "running", running.State)
	require.Equal(t, phaseStreaming, running.Phase)
	require.Len(t, running.Tables, 4)
	require.Positive(t, running.LastCommittedEpoch)
	require.NotNil(t, running.BinlogLagSeconds)
	require.NotEmpty(t, running.Position)

	t.Log("When the job stops, status reads its ledger")
	require.Eventually(t, func() bool {
		return strings.Contains(c.out.String(), `"msg":"snapshot finished; following the binlog"`)
	}, 10*time.Second, 100*time.Millisecond, "progress is logged when not on a terminal")
	require.Equal(t, 0, c.stop(t), bufferTail(c.out.String(), 20))
	require.Contains(t, c.out.String(), `"level":"WARN"`)

	t.Log("A restart with text logs (a flag over the file) resumes from the ledger")
	c2 := startChild(t, []string{"-f", pipeline, "--log-format", "text"}, env...)
	require.Eventually(t, func() bool { return httpStatus(httpAddr, "/readyz") == http.StatusOK }, 30*time.Second, 100*time.Millisecond)
	require.NoError(t, m.Exec("UPDATE emp_2.employees_2 SET first_name='Again' WHERE emp_no=10101"))
	require.Eventually(t, func() bool {
		v, _ := metric(scrape(t, httpAddr), "shardsync_rows_written_total", "op", "update")
		return v == 1
	}, 30*time.Second, 100*time.Millisecond, "the restarted job follows the binlog")
	require.Equal(t, 0, c2.stop(t), bufferTail(c2.out.String(), 20))
	outputs = append(outputs, c2.out.String())
	require.Contains(t, c2.out.String(), "level=INFO")
	out, code = runCLI(t, nil, "status", "--ledger", ledgerPath)
	outputs = append(outputs, out)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "job: stopped, phase streaming")
	require.Contains(t, out, "nothing unfinished or in doubt")
	out, code = runCLI(t, env, "status", "-f", pipeline, "--json")
	outputs = append(outputs, out)
	require.Equal(t, 0, code, out)
	var stopped statusReport
	require.NoError(t, json.Unmarshal([]byte(out), &stopped), out)
	require.Equal(t, "stopped", stopped.State)
	require.Equal(t, phaseStreaming, stopped.Phase)
	require.GreaterOrEqual(t, stopped.LastCommittedEpoch, running.LastCommittedEpoch)
	require.NotEmpty(t, stopped.Position)
	require.Empty(t, stopped.Unfinished)
	require.False(t, stopped.InDoubt)

	raw, err := os.ReadFile(ledgerPath)
	require.NoError(t, err)
	outputs = append(outputs, string(raw))
}

func tp(table string, rows, est int64, chunks int, done bool) merge.TableProgress {
	db, tbl, _ := strings.Cut(table, ".")
	return merge.TableProgress{Table: change.TableID{Database: db, Table: tbl}, Target: change.TableID{Database: "demo", Table: "t"},
		Rows: rows, EstimatedRows: est, Chunks: chunks, Done: done}
}

func mergeProgress(ts ...merge.TableProgress) merge.SnapshotProgress {
	p := merge.SnapshotProgress{Done: true, Tables: ts}
	for _, t := range ts {
		p.Done = p.Done && t.Done
	}
	return p
}

func TestRenderProgress(t *testing.T) {
	p := mergeProgress(
		tp("emp_1.employees_1", 100, 100, 1, true),
		tp("emp_1.employees_2", 50, 200, 2, false),
	)
	s := summarize(p)
	require.Equal(t, progressSummary{tables: 2, done: 1, rows: 150, estimate: 300, chunks: 3}, s)
	require.Equal(t, 15*time.Second, s.eta(10))
	require.Zero(t, s.eta(0))
	text := renderProgress(p, 10)
	require.Contains(t, text, "snapshot: 1/2 tables done, 150/~300 rows (50%), 3 chunks, 10 rows/s, ETA 15s")
	require.Contains(t, text, "emp_1.employees_2")
	require.Contains(t, text, "50/~200 rows")
}
