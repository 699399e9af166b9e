package main

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/maxcompute"
	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
	"github.com/shardsync/shardsync/testenv/mcemu"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// shardsyncBinary builds the real shardsync binary once per test process.
func shardsyncBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "shardsync-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "shardsync")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return binPath
}

// child is one run of the shardsync binary.
type child struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{} // closed when the process has exited
}

func startChild(t *testing.T, args []string, env ...string) *child {
	t.Helper()
	c := &child{out: &lockedBuffer{}, done: make(chan struct{})}
	c.cmd = exec.Command(shardsyncBinary(t), args...)
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, c.cmd.Start())
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	return c
}

// kill stops the child with SIGKILL, as a crash would.
func (c *child) kill(t *testing.T) {
	t.Helper()
	_ = c.cmd.Process.Kill()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("shardsync did not die after SIGKILL")
	}
}

// stop sends SIGTERM and returns the exit code.
func (c *child) stop(t *testing.T) int {
	t.Helper()
	// The signal handler is installed before the job prints its header;
	// a SIGTERM before that would kill the process, as for any program.
	for i := 0; i < 300 && !c.exited() && !strings.Contains(c.out.String(), "shardsync: label prefix"); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(90 * time.Second):
		_ = c.cmd.Process.Kill()
		t.Fatalf("shardsync did not stop within 90s of SIGTERM; output:\n%s", c.out)
	}
	return c.cmd.ProcessState.ExitCode()
}

// exited reports whether the child has ended.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// tryTargetState renders the emulator's visible target rows like
// testenv.MergedState so the two compare directly.
func tryTargetState(t *testing.T, emu *dorisemu.Emulator, db, table string) (testenv.MergedState, error) {
	t.Helper()
	rows, err := emu.Rows(db, table)
	if err != nil {
		return nil, err
	}
	st := testenv.MergedState{}
	for _, r := range rows {
		k := testenv.MergedKey{DB: fmt.Sprint(r["database_name"]), Table: fmt.Sprint(r["table_name"]), Key: toInt(t, r["emp_no"])}
		vals := map[string]string{}
		for _, c := range testenv.Columns {
			vals[c] = render(r[c])
		}
		st[k] = vals
	}
	return st, nil
}

func toInt(t *testing.T, v any) int64 {
	t.Helper()
	n, err := strconv.ParseInt(render(v), 10, 64)
	require.NoError(t, err, "emp_no %v", v)
	return n
}

func render(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case string:
		return x
	case []byte:
		return string(x)
	default:
		return fmt.Sprint(x)
	}
}

// sameState fails with a readable diff when got differs from want.
func sameState(want, got testenv.MergedState) (bool, string) {
	if len(want) == len(got) {
		equal := true
		for k, w := range want {
			if g, ok := got[k]; !ok || !maps.Equal(w, g) {
				equal = false
				break
			}
		}
		if equal {
			return true, ""
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "want %d rows, got %d\n", len(want), len(got))
	n := 0
	keys := slices.Collect(maps.Keys(want))
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	for _, k := range keys {
		w, wok := want[k]
		g, gok := got[k]
		if wok && gok && maps.Equal(w, g) {
			continue
		}
		fmt.Fprintf(&b, "  %s: want %v, got %v\n", k, w, g)
		if n++; n >= 10 {
			break
		}
	}
	return false, b.String()
}

// bufferTail returns the last n lines of a buffer's text.
func bufferTail(s string, n int) string {
	lines := bytes.Split([]byte(strings.TrimRight(s, "\n")), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

func freeLoopbackPort() (int, error) { return testenv.FreePort("127.0.0.1") }

// rig is a source, a Doris emulator and the arguments of a shardsync child
// that merges the source's shards into rigDB.rigTable.
type rig struct {
	m    *testenv.MariaDB
	emu  *dorisemu.Emulator
	mc   *mcemu.Emulator // nil unless withMaxCompute
	spec testenv.ShardSpec
	dir  string
	args []string
	env  []string
	runs []*child
}

const (
	rigDB    = "crash"
	rigTable = "merged"
)

func newRig(t *testing.T, spec testenv.ShardSpec, emuOpts dorisemu.Options, extra ...string) *rig {
	t.Helper()
	r := &rig{spec: spec, dir: t.TempDir()}
	r.m = testenv.StartMariaDB(t, testenv.MariaDBOptions{})
	require.NoError(t, spec.Create(t.Context(), r.m))
	var err error
	r.emu, err = dorisemu.Start(emuOpts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.emu.Close() })
	r.args = append([]string{
		"--sources", spec.DBPrefix + "[0-9]+", "--tables", "employees_[0-9]+", "--target", rigDB + "." + rigTable,
		"--mysql", r.m.Addr(), "--doris-fe", r.emu.FEHTTPAddr(), "--doris-query", r.emu.QueryAddr(),
		"--ledger", filepath.Join(r.dir, "job.ledger"), "--checkpoint-interval", "150ms",
		"--server-id", "777", "--log-level", "debug",
	}, extra...)
	t.Cleanup(func() {
		for _, c := range r.runs {
			if !c.exited() {
				c.kill(t)
			}
		}
		if t.Failed() {
			for i, c := range r.runs {
				t.Logf("run %d output (tail):\n%s", i, bufferTail(c.out.String(), 40))
			}
		}
	})
	return r
}

// withMaxCompute adds a MaxCompute emulator as a second sink of the job:
// both sinks take part in the same epochs.
func (r *rig) withMaxCompute(t *testing.T) {
	t.Helper()
	r.mc = mcemu.New(mcemu.Options{})
	t.Cleanup(r.mc.Close)
	r.args = append(r.args, "--sink", "doris,maxcompute", "--maxcompute-endpoint", r.mc.Endpoint(),
		"--maxcompute-project", r.mc.Project(), "--maxcompute-access-id", r.mc.AccessID(), "--maxcompute-buckets", "4")
	r.env = append(r.env, maxcompute.EnvAccessKey+"="+r.mc.AccessKey())
}

// mcTargetState renders the MaxCompute target like targetState.
func mcTargetState(t *testing.T, emu *mcemu.Emulator, table string) (testenv.MergedState, error) {
	t.Helper()
	ti, ok := emu.Table(table)
	if !ok {
		return nil, fmt.Errorf("maxcompute table %s does not exist yet", table)
	}
	st := testenv.MergedState{}
	for _, row := range emu.Rows(table) {
		r := map[string]any{}
		for i, c := range ti.Columns {
			v := row[i]
			if tm, ok := v.(time.Time); ok {
				v = tm.Format(time.DateOnly)
			}
			r[c.Name] = v
		}
		k := testenv.MergedKey{DB: render(r["database_name"]), Table: render(r["table_name"]), Key: toInt(t, r["emp_no"])}
		vals := map[string]string{}
		for _, c := range testenv.Columns {
			vals[c] = render(r[c])
		}
		st[k] = vals
	}
	return st, nil
}

// start runs the shardsync binary with the rig's arguments.
func (r *rig) start(t *testing.T) *child {
	t.Helper()
	c := startChild(t, r.args, r.env...)
	r.runs = append(r.runs, c)
	return c
}

// source reads the merged state the target must reach.
func (r *rig) source(t *testing.T) testenv.MergedState {
	t.Helper()
	st, err := testenv.ReadMergedState(t.Context(), r.m, r.spec)
	require.NoError(t, err)
	return st
}

// waitConverged waits until the target equals want while c runs.
func (r *rig) waitConverged(t *testing.T, c *child, want testenv.MergedState, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, err := tryTargetState(t, r.emu, rigDB, rigTable)
		ok, diff := sameState(want, got)
		if err != nil {
			diff = err.Error()
		}
		if ok && r.mc != nil {
			got, err = mcTargetState(t, r.mc, rigTable)
			ok, diff = sameState(want, got)
			if err != nil {
				diff = err.Error()
			}
			diff = "maxcompute: " + diff
		}
		if ok {
			return
		}
		require.False(t, c.exited(), "shardsync exited:\n%s", bufferTail(c.out.String(), 30))
		if time.Now().After(deadline) {
			t.Fatalf("target did not converge to the source within %s:\n%s", within, diff)
		}
		time.Sleep(150 * time.Millisecond)
	}
}

// requireExactlyOnce checks that no row operation was applied twice and
// that each change of the given workloads was applied exactly once.
func (r *rig) requireExactlyOnce(t *testing.T, results ...*testenv.WorkloadResult) int {
	t.Helper()
	all := appliedOps(t, r.emu, rigDB, rigTable)
	for k, n := range all {
		require.Equal(t, 1, n, "%s was applied %d times", k, n)
	}
	checked := 0
	for _, res := range results {
		for _, k := range expectedOps(res) {
			require.Equal(t, 1, all[k], "change %s applied %d times", k, all[k])
			checked++
		}
	}
	return checked
}
