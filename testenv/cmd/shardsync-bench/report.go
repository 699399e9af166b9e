package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// Targets from the performance issue.
const (
	targetRatio      = 0.8
	targetRSS        = 150 << 20
	targetRSSGrowth  = 1.25 // peak RSS at memScale× data / at 1× ("flat")
	targetFreshSlack = 300 * time.Millisecond
)

// results are all scenarios of one run.
type results struct {
	cfg     config
	started time.Time
	readers int
	list    []result
}

func (rs *results) err() error {
	var errs []error
	for _, r := range rs.list {
		if r.failed != nil {
			errs = append(errs, fmt.Errorf("%s ×%d: %w", r.name, r.scale, r.failed))
		}
	}
	return errors.Join(errs...)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func (rs *results) find(name string, scale int) *result {
	for i := range rs.list {
		if r := &rs.list[i]; r.name == name && r.scale == scale && r.failed == nil {
			return r
		}
	}
	return nil
}

// markdown renders the measured table and the targets.
func (rs *results) markdown() string {
	var b strings.Builder
	b.WriteString("| scenario | data | shardsync | raw go-mysql | ratio | shardsync CPU | peak RSS |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, r := range rs.list {
		data := fmt.Sprintf("%d rows", r.rows)
		if r.scale > 1 {
			data += fmt.Sprintf(" (×%d)", r.scale)
		}
		if r.failed != nil {
			fmt.Fprintf(&b, "| %s | %s | failed: %s | | | | |\n", r.name, data, oneLine(r.failed.Error()))
			continue
		}
		if r.steady {
			fmt.Fprintf(&b, "| steady | %d changes at %.0f/s (asked %.0f/s) for %.0fs | freshness p50 %s, p99 %s, max %s | | | %.2f cores (%.1f ms per 1k changes) | %s |\n",
				r.rows, r.achievedRate, r.wantRate, r.secs, ms(r.p50), ms(r.p99), ms(r.pmax), r.cpuCores, r.cpuPer1kChange, mib(r.peakRSS))
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f rows/s (%.1fs) | %.0f rows/s (%.1fs, %s) | %.2f | %.1fs | %s |\n",
			r.name, data, r.rate, r.secs, r.rawRate, r.rawSecs, r.rawWhat, r.ratio(), r.cpu.Seconds(), mib(r.peakRSS))
	}
	b.WriteString("\n| target | measured | |\n|---|---|---|\n")
	for _, name := range []string{"snapshot", "binlog"} {
		if r := rs.find(name, 1); r != nil {
			fmt.Fprintf(&b, "| %s ratio ≥ %.1f | %.2f | %s |\n", name, targetRatio, r.ratio(), verdict(r.ratio() >= targetRatio))
		}
	}
	var peak int64
	for _, r := range rs.list {
		if r.failed == nil {
			peak = max(peak, r.peakRSS)
		}
	}
	if peak > 0 {
		fmt.Fprintf(&b, "| peak RSS ≤ 150 MiB (all scenarios) | %s | %s |\n", mib(peak), verdict(peak <= targetRSS))
	}
	if s := rs.cfg.memScale; s > 1 {
		for _, name := range []string{"snapshot", "binlog"} {
			a, z := rs.find(name, 1), rs.find(name, s)
			if a != nil && z != nil && a.peakRSS > 0 {
				g := float64(z.peakRSS) / float64(a.peakRSS)
				fmt.Fprintf(&b, "| %s peak RSS flat in data size (×%d data → ≤ ×%.2f RSS) | %s → %s (×%.2f) | %s |\n",
					name, s, targetRSSGrowth, mib(a.peakRSS), mib(z.peakRSS), g, verdict(g <= targetRSSGrowth))
			}
		}
	}
	if r := rs.find("steady", 1); r != nil {
		lim := rs.cfg.checkpoint + targetFreshSlack
		fmt.Fprintf(&b, "| steady p99 freshness ≤ checkpoint %s + 300 ms | %s | %s |\n", rs.cfg.checkpoint, ms(r.p99), verdict(r.p99 <= lim))
	}
	return b.String()
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.ReplaceAll(s, "|", "/")
}

// document is results.md: how the run was made, on what, and the table.
func (rs *results) document(ctx context.Context, b *bench) string {
	var d strings.Builder
	d.WriteString("# shardsync benchmark results\n\n")
	fmt.Fprintf(&d, "Run %s by `scripts/bench` (testenv/cmd/shardsync-bench). All numbers below come from this one run.\n\n",
		rs.started.UTC().Format(time.RFC3339))
	d.WriteString("## Machine\n\n")
	fmt.Fprintf(&d, "- CPU: %s, %d logical CPUs\n", cpuModel(), runtime.NumCPU())
	fmt.Fprintf(&d, "- Memory: %s\n", memTotal())
	fmt.Fprintf(&d, "- Kernel: %s\n", firstLine(cmdOut(ctx, "uname", "-sr")))
	fmt.Fprintf(&d, "- Go: %s; go-mysql %s\n", runtime.Version(), modVersion("github.com/go-mysql-org/go-mysql"))
	fmt.Fprintf(&d, "- MariaDB: %s\n", or(b.mariaDB, "unknown"))
	fmt.Fprintf(&d, "- shardsync: %s\n", firstLine(cmdOut(ctx, b.bin, "version")))
	fmt.Fprintf(&d, "- Load on the machine when the run started: %s\n\n", loadAvg())
	d.WriteString("## Setup\n\n")
	fmt.Fprintf(&d, `- 16 shards (4 databases × 4 tables of the tutorial's employees schema) merged into one Doris
  Unique Key target by the real shardsync binary, run as a child process with
  --checkpoint-interval %s and default readers (%d) and chunk size (%d). Its CPU time and peak RSS
  (VmHWM of the child, read from /proc just before it is stopped) are its own; MariaDB, the Doris emulator and the
  workload run on the same machine and compete for the same CPUs.
- The Doris emulator runs in CountOnly mode (it parses and checks every row but keeps none) for
  snapshot and binlog; every run checks that exactly the expected number of rows was committed.
- snapshot: shardsync's rate is rows / (process start → commit of the load holding the last row);
  raw is chunked key-ordered SELECTs (%d rows each, text protocol) through go-mysql with %d connections
  in parallel.
- binlog: the changes (80%% large transactions of 5000-row INSERT…SELECT / UPDATE / DELETE, 20%% small
  transactions of 2 inserts + 1 update + 1 delete) are made while shardsync is stopped; its rate is
  changes / (restart → commit of the load holding the last change). Raw is a go-mysql GetEvent loop
  decoding the same binlog range with shardsync's decoder settings. An update counts as one change.
- steady: 4 connections send autocommit INSERT/UPDATE/DELETE statements of 1–9 rows at a constant
  row rate; freshness of a transaction is the time from sending its statement to the COMMITTED time
  of the Doris load holding its rows (the emulator keeps rows here, to match them). CPU is
  shardsync's over the writing window and the drain after it.
- memory: snapshot and binlog again with %d× the data.

`, rs.cfg.checkpoint, rs.readers, chunkRows, chunkRows, rs.readers, rs.cfg.memScale)
	if rs.cfg.profileDir != "" {
		fmt.Fprintf(&d, "- This run also profiled shardsync (--pprof, a %s CPU profile per scenario), which costs it a little CPU.\n\n", rs.cfg.profileFor)
	}
	d.WriteString("## Results\n\n")
	d.WriteString(rs.markdown())
	return d.String()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if s == "" {
		return "unknown"
	}
	return s
}

func cmdOut(ctx context.Context, name string, args ...string) string {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return string(out)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			var kb int64
			if _, err := fmt.Sscan(strings.TrimSpace(v), &kb); err == nil {
				return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	return "unknown"
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func modVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == path {
				return m.Version
			}
		}
	}
	return "unknown"
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// notesHeading starts the hand-written section of results.md; writeResults
// carries it over from the file it replaces.
const notesHeading = "## Where the time goes"

// withNotes appends to doc the hand-written notes section of old (the
// previous results file), if it has one: from its notesHeading line to the
// end.
func withNotes(doc, old string) string {
	i := strings.Index(old, "\n"+notesHeading)
	if i < 0 {
		return doc
	}
	return strings.TrimRight(doc, "\n") + "\n\n" + strings.TrimLeft(old[i:], "\n")
}
