package main

import (
	"github.com/spf13/cobra"
)

const rootExample = `  # merge emp_N.employees_M into demo.all_employees_info in Doris
  export SHARDSYNC_MYSQL_PASSWORD=... SHARDSYNC_DORIS_PASSWORD=...
  shardsync --sources 'emp_[0-9]+' --tables 'employees_[0-9]+' --target demo.all_employees_info \
    --mysql 10.0.0.5:3306 --doris-fe 10.0.0.9:8030 --doris-query 10.0.0.9:9030

  # the same with Flink CDC's db.table selector, target named emp.employees
  shardsync --sources 'emp_[0-9]+.employees_[0-9]+' --doris-fe fe:8030 --doris-query fe:9030`

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
		Example:       rootExample,
	}
	var opts jobOptions
	opts.addFlags(root.Flags())
	root.RunE = func(cmd *cobra.Command, _ []string) error {
		if cmd.Flags().NFlag() == 0 {
			return cmd.Help()
		}
		log, err := newLogger(cmd.ErrOrStderr(), opts.logFormat, opts.logLevel)
		if err != nil {
			return err
		}
		j, err := prepare(opts, log, cmd.OutOrStdout())
		if err != nil {
			return err
		}
		return j.run(cmd.Context())
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newVersionCommand(), newTxnCommand(), newDemoCommand())
	return root
}
