package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat; it is
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// child is one run of the shardsync binary.
type child struct {
	cmd      *exec.Cmd
	out      *lockedBuffer
	done     chan struct{}
	started  time.Time
	httpAddr string
}

// lockedBuffer keeps the last part of a child's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 { // keep the tail only
		tail := append([]byte(nil), l.b.Bytes()[l.b.Len()-256<<10:]...)
		l.b.Reset()
		l.b.Write(tail)
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := strings.Split(strings.TrimRight(l.b.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startChild runs bin with args; httpAddr (may be empty) is where it serves
// /debug/pprof when asked to.
func startChild(bin string, args []string, httpAddr string) (*child, error) {
	c := &child{out: &lockedBuffer{}, done: make(chan struct{}), httpAddr: httpAddr}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Env = os.Environ()
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c.started = time.Now()
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	return c, nil
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// cpu is the user+system CPU time the running child has used so far.
func (c *child) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("reading shardsync's CPU time: %w", err)
	}
	// Fields after the command name (which may hold spaces) start at
	// field 3; utime and stime are fields 14 and 15.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc stat line %q", s)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parsing /proc stat line %q: %w", s, err)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// usage is what the kernel accounted to a child that has exited.
type usage struct {
	cpu     time.Duration
	peakRSS int64 // bytes
	wall    time.Duration
}

// peakRSS is the running child's VmHWM: the high-water mark of its
// resident set since exec. (The rusage of a finished child is no use here:
// its ru_maxrss also counts the parent's RSS, which the child shared
// between fork and exec.)
func (c *child) peakRSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("reading shardsync's peak RSS: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing %q: %w", l, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", c.cmd.Process.Pid)
}

// stop reads the child's peak RSS, sends SIGTERM, waits for a clean exit
// and returns the child's usage over its whole life.
func (c *child) stop() (usage, error) {
	hwm, err := c.peakRSS()
	if err != nil {
		c.kill()
		return usage{}, err
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(90 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
		return usage{}, fmt.Errorf("shardsync did not stop within 90s of SIGTERM; output ends:\n%s", c.out.tail(30))
	}
	u := usage{wall: time.Since(c.started), peakRSS: hwm}
	st := c.cmd.ProcessState
	u.cpu = st.UserTime() + st.SystemTime()
	if code := st.ExitCode(); code != 0 {
		return u, fmt.Errorf("shardsync exited with %s; output ends:\n%s", st, c.out.tail(30))
	}
	return u, nil
}

// kill ends a child that failed.
func (c *child) kill() {
	if !c.exited() {
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// profile fetches a CPU profile of d from the child's /debug/pprof into
// file. It runs until d passes or ctx ends.
func (c *child) profile(ctx context.Context, d time.Duration, file string) error {
	if c.httpAddr == "" {
		return nil
	}
	secs := max(1, int(d/time.Second))
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", c.httpAddr, secs)
	var resp *http.Response
	var err error
	for range 50 { // the server comes up shortly after start
		var req *http.Request
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err = http.DefaultClient.Do(req); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("fetching a CPU profile from %s: %w", url, err)
	}
	if err := save(resp, file); err != nil {
		return err
	}
	// The heap in use right after the CPU profile: what holds memory.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.httpAddr+"/debug/pprof/heap", nil)
	if err != nil {
		return err
	}
	if resp, err = http.DefaultClient.Do(req); err != nil {
		return fmt.Errorf("fetching a heap profile: %w", err)
	}
	return save(resp, strings.TrimSuffix(file, ".pprof")+"_heap.pprof")
}

func save(resp *http.Response, file string) error {
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching %s: %s", resp.Request.URL, resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return fmt.Errorf("writing %s: %w", file, err)
	}
	return f.Close()
}
