// Command shardsync moves changes from sharded MySQL/MariaDB tables into
// Apache Doris (and MaxCompute) with exactly-once delivery.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}
