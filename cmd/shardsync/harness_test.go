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

	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
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
	done chan error
}

func startChild(t *testing.T, args []string, env ...string) *child {
	t.Helper()
	c := &child{out: &lockedBuffer{}, done: make(chan error, 1)}
	c.cmd = exec.Command(shardsyncBinary(t), args...)
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, c.cmd.Start())
	go func() { c.done <- c.cmd.Wait() }()
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
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(90 * time.Second):
		_ = c.cmd.Process.Kill()
		t.Fatalf("shardsync did not stop within 90s of SIGTERM; output:\n%s", c.out)
	}
	return c.cmd.ProcessState.ExitCode()
}

// exited reports whether the child ended by itself.
func (c *child) exited() bool {
	select {
	case err := <-c.done:
		c.done <- err
		return true
	default:
		return false
	}
}

// targetState renders the emulator's visible target rows like
// testenv.MergedState so the two compare directly.
func targetState(t *testing.T, emu *dorisemu.Emulator, db, table string) testenv.MergedState {
	t.Helper()
	rows, err := emu.Rows(db, table)
	require.NoError(t, err)
	st := testenv.MergedState{}
	for _, r := range rows {
		k := testenv.MergedKey{DB: fmt.Sprint(r["database_name"]), Table: fmt.Sprint(r["table_name"]), Key: toInt(t, r["emp_no"])}
		vals := map[string]string{}
		for _, c := range testenv.Columns {
			vals[c] = render(r[c])
		}
		st[k] = vals
	}
	return st
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
