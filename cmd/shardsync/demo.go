package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
)

func newDemoCommand() *cobra.Command {
	var keep bool
	var source string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the Doris tutorial end to end on this machine (MariaDB + the Doris emulator)",
		Long: `Runs the Doris sharded-table tutorial with nothing to set up: starts a
throwaway MariaDB (Debian's mariadb-server must be installed) holding the
tutorial's four shards, starts the Doris FE/BE emulator on 127.0.0.1 and
127.0.0.2, runs a shardsync job that merges emp_N.employees_M into
demo.all_employees_info, shows the merged table, changes rows in two shards
and shows the target follow, then stops everything.

With --source postgres the shards are schemas emp_N of a throwaway
PostgreSQL 15 cluster (Debian's postgresql-15 must be installed), read
through a logical replication slot. With --source kafka, TiCDC-style
canal-json is produced into an in-process Kafka broker and merged.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch source {
			case "mysql":
				return runDemo(cmd.Context(), cmd.OutOrStdout(), keep, nil)
			case "postgres":
				return runDemo(cmd.Context(), cmd.OutOrStdout(), keep, startDemoPostgres)
			case "kafka":
				return runKafkaDemo(cmd.Context(), cmd.OutOrStdout(), keep)
			}
			return usagef("--source %q: use mysql, postgres or kafka", source)
		},
	}
	cmd.Flags().StringVar(&source, "source", "mysql", "mysql (MariaDB shards), postgres (PostgreSQL 15 schemas) or kafka (TiCDC canal-json produced into an in-process Kafka broker)")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the demo's directory (ledger, logs, MariaDB datadir) afterwards")
	return cmd
}

// demoStep prints what the demo is about to do.
func demoStep(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "\n==> "+format+"\n", args...)
}

// syncWriter serialises writes from the demo and the job it runs.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func runDemo(ctx context.Context, w io.Writer, keep bool, pgStart demoSourceStarter) (err error) {
	out := &syncWriter{w: w}
	dir, err := os.MkdirTemp("", "shardsync-demo-")
	if err != nil {
		return err
	}
	if keep {
		defer fmt.Fprintf(out, "\nThe demo's files are kept in %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	var srcArgs []string
	var srcExec func(...string) error
	prompt := "mariadb"
	if pgStart != nil {
		ds, err := pgStart(ctx, out, dir)
		if err != nil {
			return err
		}
		defer ds.stop()
		srcArgs, srcExec, prompt = ds.args, ds.exec, ds.prompt
	} else {
		demoStep(out, "Starting MariaDB with the binlog on (ROW format, GTIDs)")
		m, err := testenv.LaunchMariaDB(ctx, testenv.MariaDBOptions{Dir: filepath.Join(dir, "mariadb")})
		if err != nil {
			return err
		}
		defer m.Stop() //nolint:errcheck // best effort at the end of the demo
		fmt.Fprintf(out, "    MariaDB listens on %s\n", m.Addr())

		demoStep(out, "Creating the tutorial's shards: emp_1, emp_2 × employees_1, employees_2")
		if err := m.Exec(testenv.TutorialSQL); err != nil {
			return err
		}
		for _, db := range []string{"emp_1", "emp_2"} {
			for _, t := range []string{"employees_1", "employees_2"} {
				rows, err := m.Query("SELECT COUNT(*) FROM " + db + "." + t)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "    %s.%s: %s rows\n", db, t, rows[0][0])
			}
		}
		srcArgs, srcExec = []string{"--mysql", m.Addr()}, m.Exec
	}

	demoStep(out, "Starting the Doris emulator (FE 127.0.0.1, BE 127.0.0.2)")
	emu, err := dorisemu.Start(dorisemu.Options{})
	if err != nil {
		return err
	}
	defer emu.Close()
	fmt.Fprintf(out, "    FE HTTP %s, BE HTTP %s, FE MySQL port %s\n", emu.FEHTTPAddr(), emu.BEHTTPAddr(), emu.QueryAddr())

	args := []string{
		"--sources", "emp_[0-9]+", "--tables", "employees_[0-9]+", "--target", "demo.all_employees_info",
		"--doris-fe", emu.FEHTTPAddr(), "--doris-query", emu.QueryAddr(),
		"--ledger", filepath.Join(dir, "demo.ledger"), "--checkpoint-interval", "1s",
	}
	args = append(args[:6:6], append(srcArgs, args[6:]...)...)
	demoStep(out, "Running: shardsync %s", strings.Join(quoteArgs(args), " "))
	logPath := filepath.Join(dir, "shardsync.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	fmt.Fprintf(out, "    (the job's log goes to %s)\n", logPath)
	var opts jobOptions
	fs := pflag.NewFlagSet("demo", pflag.ContinueOnError)
	opts.addFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	j, err := prepare(opts, slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{ReplaceAttr: oneLineErrors})), out)
	if err != nil {
		return err
	}
	jobCtx, stopJob := context.WithCancel(ctx)
	defer stopJob()
	jobDone := make(chan error, 1)
	go func() { jobDone <- j.run(jobCtx) }()

	q, err := client.Connect(emu.QueryAddr(), "root", "", "")
	if err != nil {
		return fmt.Errorf("connecting to the emulator's MySQL port: %w", err)
	}
	defer q.Close()
	count := func() (int64, error) {
		r, err := q.Execute("SELECT COUNT(*) FROM demo.all_employees_info")
		if err != nil {
			return 0, err
		}
		defer r.Close()
		return r.GetInt(0, 0)
	}
	waitFor := func(what string, cond func() (bool, error)) error {
		deadline := time.Now().Add(60 * time.Second)
		for {
			select {
			case err := <-jobDone:
				return fmt.Errorf("the job stopped while waiting for %s: %w (log: %s)", what, err, logPath)
			default:
			}
			ok, err := cond()
			if ok {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s did not happen within 60s (last error: %v; log: %s)", what, err, logPath)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}

	demoStep(out, "Waiting for the snapshot to be committed in Doris")
	if err := waitFor("116 rows in demo.all_employees_info", func() (bool, error) {
		n, err := count()
		return n == testenv.TutorialRows, err
	}); err != nil {
		return err
	}
	if err := showQuery(out, q, "SELECT COUNT(*) FROM demo.all_employees_info"); err != nil {
		return err
	}
	if err := showQuery(out, q, "SELECT * FROM demo.all_employees_info ORDER BY emp_no LIMIT 5"); err != nil {
		return err
	}

	demoStep(out, "Changing the source: deleting 3 rows in emp_1.employees_1, updating 1 row in emp_2.employees_2")
	changes := []string{
		"DELETE FROM emp_1.employees_1 WHERE emp_no IN (10001, 10002, 10003)",
		"UPDATE emp_2.employees_2 SET first_name = 'Shardsync', last_name = 'Demo' WHERE emp_no = 10101",
	}
	for _, s := range changes {
		fmt.Fprintf(out, "    %s> %s;\n", prompt, s)
	}
	if err := srcExec(changes...); err != nil {
		return err
	}

	demoStep(out, "Waiting for the target to follow (the next checkpoint commits the changes)")
	if err := waitFor("the deletes and the update in demo.all_employees_info", func() (bool, error) {
		n, err := count()
		if err != nil || n != testenv.TutorialRows-3 {
			return false, err
		}
		r, err := q.Execute("SELECT first_name FROM demo.all_employees_info WHERE emp_no = 10101 ORDER BY emp_no LIMIT 1")
		if err != nil {
			return false, err
		}
		defer r.Close()
		v, err := r.GetString(0, 0)
		return v == "Shardsync", err
	}); err != nil {
		return err
	}
	if err := showQuery(out, q, "SELECT COUNT(*) FROM demo.all_employees_info"); err != nil {
		return err
	}
	if err := showQuery(out, q, "SELECT * FROM demo.all_employees_info WHERE emp_no = 10101 ORDER BY emp_no LIMIT 5"); err != nil {
		return err
	}
	if err := showQuery(out, q, "SELECT * FROM demo.all_employees_info WHERE database_name = 'emp_1' ORDER BY emp_no LIMIT 3"); err != nil {
		return err
	}

	demoStep(out, "Stopping the job cleanly (as SIGINT/SIGTERM would)")
	stopJob()
	if err := <-jobDone; err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("the job did not stop cleanly: %w (log: %s)", err, logPath)
	}
	fmt.Fprintln(out, "    stopped; every epoch is committed and recorded in the ledger")
	demoStep(out, "Done: 116 rows merged from 4 shards, then 3 deletes and 1 update followed exactly once")
	return nil
}

// showQuery runs a query on the emulator's MySQL port and prints it as a
// table, the way a person would see it in a MySQL client.
func showQuery(w io.Writer, c *client.Conn, q string) error {
	r, err := c.Execute(q)
	if err != nil {
		return err
	}
	defer r.Close()
	fmt.Fprintf(w, "    doris> %s;\n", q)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	names := make([]string, len(r.Fields))
	for i, f := range r.Fields {
		names[i] = string(f.Name)
	}
	fmt.Fprintf(tw, "    %s\n", strings.Join(names, "\t"))
	for _, row := range testenv.ResultStrings(r) {
		fmt.Fprintf(tw, "    %s\n", strings.Join(row, "\t"))
	}
	return tw.Flush()
}

func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, "[]*+ ") {
			a = "'" + a + "'"
		}
		out[i] = a
	}
	return out
}
