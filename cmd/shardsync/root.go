package main

import (
	"io"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

const rootExample = `  # merge emp_N.employees_M into demo.all_employees_info in Doris
  export SHARDSYNC_MYSQL_PASSWORD=... SHARDSYNC_DORIS_PASSWORD=...
  shardsync --sources 'emp_[0-9]+' --tables 'employees_[0-9]+' --target demo.all_employees_info \
    --mysql 10.0.0.5:3306 --doris-fe 10.0.0.9:8030 --doris-query 10.0.0.9:9030

  # the same with Flink CDC's db.table selector, target named emp.employees
  shardsync --sources 'emp_[0-9]+.employees_[0-9]+' --doris-fe fe:8030 --doris-query fe:9030

  # a Flink CDC pipeline file; flags override it
  shardsync -f pipeline.yaml --http-addr 127.0.0.1:9464
  shardsync validate -f pipeline.yaml`

const rootLong = `shardsync merges sharded MySQL/MariaDB tables (databases emp_1…emp_N holding
tables employees_1…employees_M) into one table per route in Apache Doris or
MaxCompute, and keeps it up to date from the binlog with exactly-once delivery:
a lock-free chunked snapshot, then the binlog, cut into epochs that are
pre-committed in the sink, recorded in a local ledger, and then committed.

The job is given by flags or by a Flink CDC pipeline file (-f pipeline.yaml);
flags given next to -f override the file.`

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
	var file string
	opts.addFlags(root.Flags())
	root.Flags().StringVarP(&file, "file", "f", "", "Flink CDC pipeline YAML (source:, sink:, route:, pipeline:); flags override it")
	root.RunE = func(cmd *cobra.Command, _ []string) error {
		if cmd.Flags().NFlag() == 0 {
			return cmd.Help()
		}
		j, err := prepareFromCommand(cmd.Flags(), opts, file, cmd.ErrOrStderr(), cmd.OutOrStdout())
		if err != nil {
			return err
		}
		return j.run(cmd.Context())
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newVersionCommand(), newTxnCommand(), newDemoCommand(), newStatusCommand(), newValidateCommand(), newDocsCommand(), newSkipEventCommand(), newPostgresCommand())
	return root
}

// prepareFromCommand builds the job from the flags, or from a pipeline file
// with the flags over it, and its logger; warnings about the file are
// logged.
func prepareFromCommand(flags *pflag.FlagSet, opts jobOptions, file string, stderr, stdout io.Writer) (*job, error) {
	var warns []string
	if file != "" {
		var err error
		if opts, warns, err = loadPipelineFile(file, osLookupEnv, flags); err != nil {
			return nil, err
		}
	}
	log, err := newLogger(stderr, opts.logFormat, opts.logLevel)
	if err != nil {
		return nil, err
	}
	for _, w := range warns {
		log.Warn(w)
	}
	j, err := prepare(opts, log, stdout)
	if err != nil {
		return nil, err
	}
	if opts.progress == "always" || (opts.progress == "auto" && isTerminal(stderr)) {
		j.progressOut = stderr
	}
	return j, nil
}
