package main

import (
	"github.com/spf13/cobra"
)

const rootLong = `shardsync merges sharded MySQL/MariaDB tables (databases emp_1…emp_N holding
tables employees_1…employees_M) into one table per route in Apache Doris or
MaxCompute, and keeps it up to date from the binlog with exactly-once delivery:
a lock-free chunked snapshot, then the binlog, cut into epochs that are
pre-committed in the sink, recorded in a local ledger, and then committed.`

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "shardsync",
		Short:         "Merge sharded MySQL/MariaDB tables into Doris or MaxCompute, exactly once",
		Long:          rootLong,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newVersionCommand())
	return root
}
