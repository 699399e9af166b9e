package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
)

// bench holds what the scenarios share.
type bench struct {
	cfg     config
	log     *slog.Logger
	bin     string
	dir     string // scratch space, removed by close
	readers int    // shardsync's default --readers (one per CPU)
	mariaDB string // server version, once a server ran
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newBench(ctx context.Context, c config, log *slog.Logger) (*bench, error) {
	dir, err := os.MkdirTemp("", "shardsync-bench-")
	if err != nil {
		return nil, err
	}
	b := &bench{cfg: c, log: log, bin: c.bin, dir: dir, readers: runtime.NumCPU()}
	if b.bin == "" {
		if b.bin, err = buildShardsync(ctx, dir); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}
	return b, nil
}

func (b *bench) close() { _ = os.RemoveAll(b.dir) }

// buildShardsync builds ./cmd/shardsync of the module this program belongs
// to (found with `go list`).
func buildShardsync(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "github.com/shardsync/shardsync").Output()
	if err != nil {
		return "", fmt.Errorf("finding the shardsync module (run inside it, or pass -shardsync): %w", err)
	}
	root := strings.TrimSpace(string(out))
	bin := filepath.Join(dir, "shardsync")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/shardsync")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/shardsync: %w\n%s", err, out)
	}
	return bin, nil
}

// startMariaDB starts a throwaway server tuned for loading data quickly
// (no fsync per commit, a buffer pool that holds the data).
func (b *bench) startMariaDB(ctx context.Context) (*testenv.MariaDB, error) {
	m, err := testenv.LaunchMariaDB(ctx, testenv.MariaDBOptions{ExtraArgs: []string{
		"--innodb-buffer-pool-size=1G", "--innodb-flush-log-at-trx-commit=0", "--sync-binlog=0",
		"--max-binlog-size=1G", "--innodb-log-file-size=256M",
	}})
	if err != nil {
		return nil, fmt.Errorf("starting MariaDB: %w", err)
	}
	if v, err := m.Variable("version"); err == nil {
		b.mariaDB = v
	}
	return m, nil
}

func stopMariaDB(m *testenv.MariaDB) {
	_ = m.Stop()
	m.Remove()
}

// result is one scenario's measurements.
type result struct {
	name  string
	scale int // data multiplier (1, or memScale for the memory re-runs)
	rows  int64
	// End-to-end shardsync rate and the raw go-mysql rate beside it.
	secs, rate       float64
	rawSecs, rawRate float64
	rawWhat          string
	// Steady state.
	steady                   bool
	wantRate, achievedRate   float64
	p50, p99, pmax           time.Duration
	cpuCores, cpuPer1kChange float64
	// Usage of the shardsync process.
	cpu     time.Duration
	peakRSS int64
	failed  error
}

func (r result) ratio() float64 {
	if r.rawRate == 0 {
		return 0
	}
	return r.rate / r.rawRate
}

// runAll runs the chosen scenarios in order; a failed scenario is
// recorded and the others still run.
func (b *bench) runAll(ctx context.Context) (*results, error) {
	res := &results{cfg: b.cfg, started: time.Now(), readers: b.readers}
	want := map[string]bool{}
	for _, s := range strings.Split(b.cfg.scenarios, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains([]string{"snapshot", "binlog", "steady"}, s) {
			return nil, fmt.Errorf("unknown scenario %q: use snapshot, binlog, steady", s)
		}
		want[s] = true
	}
	add := func(r result, err error) {
		if err != nil {
			r.failed = err
			b.log.Error("scenario failed", "scenario", r.name, "scale", r.scale, "err", err)
		}
		res.list = append(res.list, r)
	}
	scales := []int{1}
	if b.cfg.memScale > 1 {
		scales = append(scales, b.cfg.memScale)
	}
	for _, sc := range scales {
		if want["snapshot"] {
			add(b.snapshot(ctx, sc))
		}
		if want["binlog"] {
			add(b.binlog(ctx, sc))
		}
		if want["steady"] && sc == 1 {
			add(b.steady(ctx))
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return res, nil
}

// job is one target of a scenario and the arguments that run shardsync
// on it.
type job struct {
	emu    *dorisemu.Emulator
	db, tb string
	args   []string
	http   string
}

func (b *bench) newJob(m *testenv.MariaDB, emu *dorisemu.Emulator, prefix, name string) (*job, error) {
	j := &job{emu: emu, db: "bench", tb: name}
	j.args = []string{
		"--sources", prefix + "[0-9]+", "--tables", "employees_[0-9]+", "--target", j.db + "." + j.tb,
		"--mysql", m.Addr(), "--doris-fe", emu.FEHTTPAddr(), "--doris-query", emu.QueryAddr(),
		"--ledger", filepath.Join(b.dir, name+".ledger"), "--checkpoint-interval", b.cfg.checkpoint.String(),
		"--server-id", "4242", "--log-level", "warn", "--progress", "never",
	}
	if b.cfg.profileDir != "" {
		p, err := testenv.FreePort("127.0.0.1")
		if err != nil {
			return nil, err
		}
		j.http = "127.0.0.1:" + strconv.Itoa(p)
		j.args = append(j.args, "--http-addr", j.http, "--pprof")
	}
	return j, nil
}

func (b *bench) start(ctx context.Context, j *job, profileName string) (*child, error) {
	c, err := startChild(b.bin, j.args, j.http)
	if err != nil {
		return nil, err
	}
	if b.cfg.profileDir != "" && profileName != "" {
		go func() {
			file := filepath.Join(b.cfg.profileDir, profileName+".pprof")
			if err := c.profile(ctx, b.cfg.profileFor, file); err != nil {
				b.log.Warn("no CPU profile", "file", file, "err", err)
			}
		}()
	}
	return c, nil
}

// loaded is how many rows the target's committed loads hold, and the
// commit time of the load at which the count first reached want (zero if
// it has not).
func (j *job) loaded(want int64) (int64, time.Time) {
	var n int64
	var at time.Time
	for _, l := range j.emu.Loads() {
		if l.DB != j.db || l.Table != j.tb {
			continue
		}
		n += l.LoadedRows
		if at.IsZero() && want > 0 && n >= want {
			at = l.CommitTime
		}
	}
	return n, at
}

// waitLoaded waits until the target holds want rows and returns the commit
// time of the load that completed them.
func (j *job) waitLoaded(ctx context.Context, c *child, want int64, within time.Duration) (time.Time, error) {
	deadline := time.Now().Add(within)
	for {
		n, at := j.loaded(want)
		if !at.IsZero() {
			return at, nil
		}
		if c.exited() {
			return time.Time{}, fmt.Errorf("shardsync exited with %d of %d rows loaded; output ends:\n%s", n, want, c.out.tail(30))
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("only %d of %d rows loaded after %s; shardsync output ends:\n%s", n, want, within, c.out.tail(30))
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// settle waits two checkpoint intervals and checks that exactly want rows
// were loaded: nothing missing, nothing twice.
func (b *bench) settle(j *job, want int64) error {
	time.Sleep(2*b.cfg.checkpoint + 200*time.Millisecond)
	if n, _ := j.loaded(0); n != want {
		return fmt.Errorf("the target holds %d loaded rows, want exactly %d", n, want)
	}
	return nil
}

// timeout is a generous bound for loading rows at a slow 5k rows/s.
func timeout(rows int64) time.Duration { return 60*time.Second + time.Duration(rows/5000)*time.Second }

func (b *bench) snapshot(ctx context.Context, scale int) (r result, err error) {
	r = result{name: "snapshot", scale: scale}
	perShard := (b.cfg.snapRows*scale + benchShards - 1) / benchShards
	b.log.Info("snapshot: preparing", "rows", perShard*benchShards)
	m, err := b.startMariaDB(ctx)
	if err != nil {
		return r, err
	}
	defer stopMariaDB(m)
	spec := benchSpec("snap_")
	if err := spec.Create(ctx, m); err != nil {
		return r, err
	}
	if err := fill(ctx, m, spec, 1, perShard, 50_000); err != nil {
		return r, err
	}
	rawN, rawD, err := rawSnapshot(ctx, m, spec, b.readers)
	if err != nil {
		return r, err
	}
	r.rows = int64(perShard * benchShards)
	if int64(rawN) != r.rows {
		return r, fmt.Errorf("raw snapshot read %d rows, want %d", rawN, r.rows)
	}
	r.rawSecs, r.rawRate = rawD.Seconds(), float64(rawN)/rawD.Seconds()
	r.rawWhat = fmt.Sprintf("chunked SELECT, %d readers", b.readers)

	emu, err := dorisemu.Start(dorisemu.Options{CountOnly: true})
	if err != nil {
		return r, err
	}
	defer emu.Close()
	j, err := b.newJob(m, emu, spec.DBPrefix, fmt.Sprintf("snapshot_x%d", scale))
	if err != nil {
		return r, err
	}
	b.log.Info("snapshot: running shardsync", "rows", r.rows, "raw_rows_per_s", int(r.rawRate))
	c, err := b.start(ctx, j, fmt.Sprintf("snapshot_x%d", scale))
	if err != nil {
		return r, err
	}
	defer c.kill()
	at, err := j.waitLoaded(ctx, c, r.rows, timeout(r.rows))
	if err != nil {
		return r, err
	}
	d := at.Sub(c.started)
	r.secs, r.rate = d.Seconds(), float64(r.rows)/d.Seconds()
	if err := b.settle(j, r.rows); err != nil {
		return r, err
	}
	u, err := c.stop()
	r.cpu, r.peakRSS = u.cpu, u.peakRSS
	b.logChild(c)
	return r, err
}

func (b *bench) binlog(ctx context.Context, scale int) (r result, err error) {
	r = result{name: "binlog", scale: scale}
	perShard := (b.cfg.binlogRows*scale + benchShards - 1) / benchShards
	base := perShard * 6 / 10
	m, err := b.startMariaDB(ctx)
	if err != nil {
		return r, err
	}
	defer stopMariaDB(m)
	spec := benchSpec("blog_")
	if err := spec.Create(ctx, m); err != nil {
		return r, err
	}
	if err := fill(ctx, m, spec, 1, base, 50_000); err != nil {
		return r, err
	}
	emu, err := dorisemu.Start(dorisemu.Options{CountOnly: true})
	if err != nil {
		return r, err
	}
	defer emu.Close()
	j, err := b.newJob(m, emu, spec.DBPrefix, fmt.Sprintf("binlog_x%d", scale))
	if err != nil {
		return r, err
	}
	// First run: snapshot the base rows, then stop; the changes are made
	// while shardsync is down, so the second run catches up on them.
	b.log.Info("binlog: initial snapshot", "rows", base*benchShards)
	c0, err := b.start(ctx, j, "")
	if err != nil {
		return r, err
	}
	baseRows := int64(base * benchShards)
	if _, err := j.waitLoaded(ctx, c0, baseRows, timeout(baseRows)); err != nil {
		c0.kill()
		return r, err
	}
	if err := b.settle(j, baseRows); err != nil {
		c0.kill()
		return r, err
	}
	if _, err := c0.stop(); err != nil {
		return r, err
	}

	start, err := masterPos(m)
	if err != nil {
		return r, err
	}
	b.log.Info("binlog: making changes", "per_shard", perShard)
	if err := makeChanges(ctx, m, spec, base, perShard); err != nil {
		return r, err
	}
	end, err := masterPos(m)
	if err != nil {
		return r, err
	}
	rawN, rawD, err := rawBinlog(ctx, m, start, end)
	if err != nil {
		return r, err
	}
	r.rows = int64(rawN)
	r.rawSecs, r.rawRate = rawD.Seconds(), float64(rawN)/rawD.Seconds()
	r.rawWhat = "GetEvent decode loop"

	b.log.Info("binlog: catching up", "changes", rawN, "raw_rows_per_s", int(r.rawRate))
	// The catch-up run keeps the ledger (it resumes where the first run
	// committed) but takes its own label prefix: the CountOnly emulator
	// keeps no rows, not even the first run's row in shardsync_claims, so
	// under the same prefix the sink would find no claim of its ledger,
	// try to write generation 1 again, hit the first run's claim label
	// ("Label Already Exists") and refuse the target as claimed by another
	// job. Against a real Doris the claim would be read back and the same
	// prefix would do.
	j.args = append(slices.Clip(j.args), "--label-prefix", fmt.Sprintf("bench_binlog_x%d_catchup", scale))
	c, err := b.start(ctx, j, fmt.Sprintf("binlog_x%d", scale))
	if err != nil {
		return r, err
	}
	defer c.kill()
	at, err := j.waitLoaded(ctx, c, baseRows+r.rows, timeout(r.rows))
	if err != nil {
		return r, err
	}
	d := at.Sub(c.started)
	r.secs, r.rate = d.Seconds(), float64(r.rows)/d.Seconds()
	if err := b.settle(j, baseRows+r.rows); err != nil {
		return r, err
	}
	u, err := c.stop()
	r.cpu, r.peakRSS = u.cpu, u.peakRSS
	b.logChild(c)
	return r, err
}

func (b *bench) logChild(c *child) {
	if b.cfg.keepChildLog {
		b.log.Info("shardsync output (tail)", "out", c.out.tail(10))
	}
}
