// Command shardsync-bench measures shardsync against this machine's own
// limits and prints the results as ratios measured in one run.
//
// It starts throwaway MariaDB servers (testenv) and the Doris emulator
// (testenv/dorisemu, in CountOnly mode so the emulator checks and counts
// rows but keeps none), runs the real shardsync binary as a child process
// (so its CPU and memory are read from the kernel for that process alone)
// and runs these scenarios:
//
//   - snapshot: 16 shards merged into one target; shardsync's end-to-end
//     rows/s beside the rate of reading the same rows with chunked SELECTs
//     through go-mysql alone, with the same number of parallel readers;
//   - binlog: row changes already in the binlog (inserts, updates, deletes;
//     large and small transactions); shardsync's catch-up rows/s beside a
//     decode-only go-mysql read of the same binlog range;
//   - steady: a constant rate of changes with a 1 s checkpoint interval;
//     freshness (source commit → load COMMITTED in the sink) and CPU;
//   - memory: shardsync's peak RSS in each scenario, and again for snapshot
//     and binlog with -mem-scale times the data.
//
// The table goes to stdout and, with the machine's CPU, memory and
// versions, to the -out file (Markdown).
//
//	shardsync-bench -out bench/results.md
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "shardsync-bench:", err)
		os.Exit(1)
	}
}

// config is what one benchmark run does.
type config struct {
	bin          string        // shardsync binary; empty: build it
	out          string        // results file; empty: none
	snapRows     int           // rows of the snapshot scenario, over all shards
	binlogRows   int           // row changes of the binlog scenario
	steadyRate   int           // changes/s of the steady scenario
	steadyDur    time.Duration // how long the steady scenario runs
	memScale     int           // data multiplier of the memory re-runs (0/1: none)
	checkpoint   time.Duration // shardsync --checkpoint-interval
	profileDir   string        // CPU profiles of shardsync per scenario
	profileFor   time.Duration // length of each of those profiles
	selfProfile  string        // CPU profile of this process (emulator, drivers)
	scenarios    string        // comma-separated subset
	keepChildLog bool          // print shardsync's output tail on success too
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("shardsync-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	fs.StringVar(&c.bin, "shardsync", "", "shardsync binary to measure (default: build ./cmd/shardsync of this module)")
	fs.StringVar(&c.out, "out", "", "also write the results (Markdown, with machine details) to this file")
	fs.IntVar(&c.snapRows, "snapshot-rows", 2_000_000, "rows of the snapshot scenario over all 16 shards")
	fs.IntVar(&c.binlogRows, "binlog-changes", 1_000_000, "row changes in the binlog for the binlog scenario (at least)")
	fs.IntVar(&c.steadyRate, "steady-rate", 5000, "row changes per second in the steady scenario")
	fs.DurationVar(&c.steadyDur, "steady-duration", 60*time.Second, "how long the steady scenario writes")
	fs.IntVar(&c.memScale, "mem-scale", 4, "repeat snapshot and binlog with this many times the data to show memory does not grow with it (0 or 1: skip)")
	fs.DurationVar(&c.checkpoint, "checkpoint-interval", time.Second, "shardsync --checkpoint-interval in every scenario")
	fs.StringVar(&c.profileDir, "profile-dir", "", "write a CPU profile of shardsync (from its /debug/pprof) per scenario to this directory")
	fs.DurationVar(&c.profileFor, "profile-duration", 15*time.Second, "length of each -profile-dir profile, from the start of the measured run")
	fs.StringVar(&c.selfProfile, "self-cpuprofile", "", "write a CPU profile of this process (the emulator and the workload drivers) to this file")
	fs.StringVar(&c.scenarios, "scenarios", "snapshot,binlog,steady", "scenarios to run, comma-separated")
	fs.BoolVar(&c.keepChildLog, "v", false, "print progress and the tail of shardsync's output after each run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (flags only)", fs.Args())
	}
	if c.snapRows < 16 || c.binlogRows < 160 || c.steadyRate < 10 || c.steadyDur < time.Second {
		return errors.New("sizes too small: -snapshot-rows ≥ 16, -binlog-changes ≥ 160, -steady-rate ≥ 10, -steady-duration ≥ 1s")
	}
	level := slog.LevelWarn
	if c.keepChildLog {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if c.selfProfile != "" {
		f, err := os.Create(c.selfProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("starting the CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	b, err := newBench(ctx, c, log)
	if err != nil {
		return err
	}
	defer b.close()
	res, err := b.runAll(ctx)
	if err != nil {
		return err
	}
	table := res.markdown()
	fmt.Fprint(stdout, table)
	if c.out != "" {
		doc := res.document(ctx, b)
		if old, err := os.ReadFile(c.out); err == nil {
			doc = withNotes(doc, string(old))
		}
		if err := os.WriteFile(c.out, []byte(doc), 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", c.out, err)
		}
		fmt.Fprintf(stdout, "\nwritten to %s\n", c.out)
	}
	return res.err()
}
