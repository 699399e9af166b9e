// Command doris-emulator runs the Apache Doris FE/BE emulator of package
// dorisemu as a standalone process: for the demo, crash tests that restart
// it with the same -dir, and people trying shardsync by hand.
//
// It prints its addresses, one KEY=host:port line each (FE_HTTP, BE_HTTP,
// QUERY), then "READY", and serves until SIGINT or SIGTERM.
//
//	doris-emulator -dir /tmp/doris-state -fe-http-port 8030 -be-http-port 8040 -query-port 9030
//	mysql -h127.0.0.1 -P9030 -uroot -e 'CREATE DATABASE demo'
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/shardsync/shardsync/testenv/dorisemu"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "doris-emulator:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("doris-emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o dorisemu.Options
	fs.StringVar(&o.FEHost, "fe-host", "127.0.0.1", "loopback IP for the FE HTTP and MySQL ports")
	fs.StringVar(&o.BEHost, "be-host", "127.0.0.2", "loopback IP for the BE HTTP port")
	fs.IntVar(&o.FEHTTPPort, "fe-http-port", 8030, "FE HTTP port (0 = any free port)")
	fs.IntVar(&o.BEHTTPPort, "be-http-port", 8040, "BE HTTP port (0 = any free port)")
	fs.IntVar(&o.QueryPort, "query-port", 9030, "MySQL-protocol port (0 = any free port)")
	fs.StringVar(&o.User, "user", "root", "the only accepted user")
	fs.StringVar(&o.Password, "password", "", "that user's password")
	fs.StringVar(&o.Dir, "dir", "", "state directory; state survives restarts with the same -dir")
	fs.StringVar(&o.Version, "doris-version", "2.1", "emulated Doris version: 2.1, 2.0 or 1.2")
	fs.DurationVar(&o.PrepareTimeout, "prepare-timeout", 0, "PREPARE txn timeout without a timeout header (0 = Doris default)")
	fs.DurationVar(&o.PrecommitTimeout, "precommit-timeout", 0, "PRECOMMITTED txn timeout (0 = 1h like Doris, negative = never)")
	fs.DurationVar(&o.LabelKeepMax, "label-keep-max", 0, "how long finished labels are kept (0 = 12h)")
	fs.IntVar(&o.LabelNumThreshold, "label-num-threshold", 0, "finished txns kept per database (0 = 2000, -1 = unlimited)")
	fs.IntVar(&o.MaxRunningTxnPerDB, "max-running-txn-per-db", 0, "running txn limit per database (0 = 1000)")
	fs.DurationVar(&o.PublishDelay, "publish-delay", 0, "time a committed txn stays COMMITTED before VISIBLE")
	fs.BoolVar(&o.CountOnly, "count-only", false, "benchmark mode: count rows, keep none")
	verbose := fs.Bool("v", false, "log every request and txn transition")
	if err := fs.Parse(args); err != nil {
		return err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e, err := dorisemu.Start(o)
	if err != nil {
		return fmt.Errorf("starting the Doris emulator: %w", err)
	}
	fmt.Fprintf(stdout, "FE_HTTP=%s\nBE_HTTP=%s\nQUERY=%s\nREADY\n", e.FEHTTPAddr(), e.BEHTTPAddr(), e.QueryAddr())
	<-ctx.Done()
	o.Logger.Info("stopping on signal")
	if err := e.Close(); err != nil {
		return fmt.Errorf("closing the Doris emulator: %w", err)
	}
	return nil
}
