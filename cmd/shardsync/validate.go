package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/shardsync/shardsync/ledger"
	"github.com/shardsync/shardsync/twopc"
)

func newValidateCommand() *cobra.Command {
	var opts jobOptions
	var file string
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check a pipeline file (or flags) and the connections without moving data",
		Long: `Checks the configuration the way a start would (unknown keys, regexes,
addresses, secrets present), then connects to the source (binlog settings,
matching shards and the targets they go to), to the sinks, and opens the
ledger read-only to report unfinished epochs. Nothing is written anywhere.

Every problem is listed in one run, each with its line in the pipeline
file: unknown keys, missing sections, bad values, and then the connection
checks of every address that could be read (unreachable hosts).

Exit code 0: ready to run; 2: the configuration is wrong; 1: a connection
check failed (each check is printed).`,
		Example: `  shardsync validate -f pipeline.yaml
  shardsync validate -f pipeline.yaml --mysql 127.0.0.1:3307`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return validateAll(cmd.Context(), cmd.Flags(), opts, file, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	opts.addFlags(cmd.Flags())
	cmd.Flags().StringVarP(&file, "file", "f", "", "Flink CDC pipeline YAML; flags override it")
	return cmd
}

// validateAll lists every configuration problem (with its line in the
// pipeline file), then runs the connection checks of every address that
// could be read.
func validateAll(ctx context.Context, flags *pflag.FlagSet, opts jobOptions, file string, w, stderr io.Writer) error {
	var problems []error
	if file != "" {
		o, warns, err := loadPipelineFile(file, osLookupEnv, flags)
		if err != nil && o.fileLines == nil && len(warns) == 0 {
			return err // unreadable, not YAML, empty: nothing more to check
		}
		problems = append(problems, leaves(err)...)
		opts = o
		for _, wn := range warns {
			fmt.Fprintln(stderr, "warning:", wn)
		}
	}
	log := slog.New(slog.DiscardHandler)
	if l, err := newLogger(stderr, opts.logFormat, opts.logLevel); err == nil {
		log = l
	}
	j, perrs := prepareAll(opts, log, io.Discard)
	for _, e := range perrs {
		problems = append(problems, leaves(e)...)
	}
	if len(problems) == 0 {
		return j.validate(ctx, w)
	}
	fmt.Fprintf(w, "configuration: %d problem(s)\n", len(problems))
	for _, p := range problems {
		fmt.Fprintf(w, "FAIL %s\n", withLine(errText(unwrapUsage(p)), file, opts.fileLines))
	}
	if failed := j.checkConnections(ctx, w); failed > 0 {
		fmt.Fprintf(w, "%d connection check(s) failed\n", failed)
	}
	return usagef("%d configuration problem(s); fix them and run validate again", len(problems))
}

// leaves splits joined errors into the single problems they hold.
func leaves(err error) []error {
	if err == nil {
		return nil
	}
	if u, ok := err.(usageError); ok {
		err = u.err
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	return []error{err}
}

var flagRef = regexp.MustCompile(`--([a-z0-9][a-z0-9-]*)`)

// withLine prefixes a flag's problem with the line of the pipeline-file
// key that set the flag, when one did and the text has no line yet.
func withLine(msg, file string, lines map[string]int) string {
	if file == "" || strings.HasPrefix(msg, file+":") {
		return msg
	}
	for _, m := range flagRef.FindAllStringSubmatch(msg, -1) {
		if l, ok := lines[m[1]]; ok {
			return fmt.Sprintf("%s:%d: %s", file, l, msg)
		}
	}
	return msg
}

// validate checks the connections and the ledger without writing.
func (j *job) validate(ctx context.Context, w io.Writer) error {
	fmt.Fprintf(w, "configuration: ok (label prefix %s, ledger %s)\n", j.prefix, j.ledger)
	if len(j.rules) > 0 {
		fmt.Fprint(w, indent(describeRules(j.rules)))
	}
	if failed := j.checkConnections(ctx, w); failed > 0 {
		return fmt.Errorf("%d check(s) failed; fix them and run validate again", failed)
	}
	fmt.Fprintln(w, "ready to run")
	return nil
}

// checkConnections runs every connection check, printing each, and
// returns how many failed.
func (j *job) checkConnections(ctx context.Context, w io.Writer) int {
	failed := 0
	check := func(what string, err error) {
		if err != nil {
			failed++
			fmt.Fprintf(w, "FAIL %s: %s\n", what, errText(err))
			return
		}
		fmt.Fprintf(w, "ok   %s\n", what)
	}

	err := j.checkSource(ctx)
	check("source "+j.componentAddrs()[componentSource]+" (login, source settings)", err)
	if err == nil {
		routes, derr := j.discover(ctx)
		check("source shards match the patterns", derr)
		if derr == nil {
			fmt.Fprint(w, indent(describeRoutes(routes)))
		}
	}
	if j.dorisCfg != nil {
		for _, fe := range j.dorisCfg.FENodes {
			check("doris FE "+fe+" (HTTP, credentials)", httpReachable(ctx, fe, j.dorisCfg.User, j.dorisCfg.Password))
		}
		for _, be := range j.dorisCfg.BENodes {
			check("doris BE "+be+" (HTTP)", httpReachable(ctx, be, "", ""))
		}
		if j.dorisCfg.QueryAddr != "" {
			check("doris FE MySQL protocol "+j.dorisCfg.QueryAddr+" (login)", mysqlLogin(ctx, j.dorisCfg.QueryAddr, j.dorisCfg.User, j.dorisCfg.Password))
		}
	}
	if j.mcCfg != nil {
		check("maxcompute endpoint "+j.mcCfg.Endpoint+" (reachable; credentials are checked at start)", httpReachable(ctx, j.mcCfg.Endpoint, "", ""))
	}
	check("ledger "+j.ledger, j.checkLedger(w))
	return failed
}

// checkSource logs in and checks the binlog settings shardsync needs.
func (j *job) checkSource(ctx context.Context) error {
	c, err := dialSource(ctx, j.opts.mysqlAddr, j.opts.mysqlUser, j.mysqlPW)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Execute("SELECT @@log_bin, @@binlog_format, @@binlog_row_image")
	if err != nil {
		return fmt.Errorf("reading the binlog settings: %w", err)
	}
	defer r.Close()
	logBin, _ := r.GetInt(0, 0)
	format, _ := r.GetString(0, 1)
	image, _ := r.GetString(0, 2)
	var problems []string
	if logBin != 1 {
		problems = append(problems, "the binlog is off (start the server with log_bin)")
	}
	if !strings.EqualFold(format, "ROW") {
		problems = append(problems, fmt.Sprintf("binlog_format is %s (set binlog_format=ROW)", format))
	}
	if !strings.EqualFold(image, "FULL") {
		problems = append(problems, fmt.Sprintf("binlog_row_image is %s (set binlog_row_image=FULL)", image))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// checkLedger opens an existing ledger to report unfinished epochs, or
// checks that a new one can be created; it writes nothing.
func (j *job) checkLedger(w io.Writer) error {
	if _, err := os.Stat(j.ledger); errors.Is(err, os.ErrNotExist) {
		dir := filepath.Dir(j.ledger)
		f, err := os.CreateTemp(dir, ".shardsync-validate-*")
		if err != nil {
			return fmt.Errorf("the ledger does not exist yet and cannot be created in %s: %w", dir, err)
		}
		name := f.Name()
		f.Close()
		_ = os.Remove(name)
		fmt.Fprintln(w, "     (new ledger: the job starts with a snapshot)")
		return nil
	}
	l, err := ledger.Open(j.ledger, ledger.Options{Timeout: 500 * time.Millisecond})
	if err != nil {
		if errors.Is(err, ledger.ErrLocked) {
			fmt.Fprintln(w, "     (the ledger is held by a running job)")
			return nil
		}
		return err
	}
	defer l.Close()
	p, err := twopc.Plan(l)
	if err != nil {
		return err
	}
	if len(p.Items) == 0 {
		fmt.Fprintf(w, "     (resumes at %s)\n", tokenText(p.Resume))
	}
	for _, it := range p.Items {
		fmt.Fprintf(w, "     epoch %d %s: %s\n", it.Epoch, it.State, it.Explain)
	}
	return nil
}

// httpReachable sends one GET to a node; any HTTP answer but 401/403 and
// 5xx counts as reachable.
func httpReachable(ctx context.Context, node, user, password string) error {
	u := strings.TrimRight(node, "/")
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/api/health", nil)
	if err != nil {
		return err
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) {
			return fmt.Errorf("not reachable: %w", ne)
		}
		return fmt.Errorf("not reachable: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("the credentials were refused (%s)", resp.Status)
	case resp.StatusCode >= 500:
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}

// mysqlLogin logs in over the MySQL protocol and runs SELECT 1.
func mysqlLogin(ctx context.Context, addr, user, password string) error {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d := &net.Dialer{}
	c, err := client.ConnectWithDialer(dctx, "tcp", addr, user, password, "", d.DialContext)
	if err != nil {
		return fmt.Errorf("logging in as %q: %v", user, err)
	}
	defer c.Close()
	if _, err := c.Execute("SELECT 1"); err != nil {
		return fmt.Errorf("running SELECT 1: %w", err)
	}
	return nil
}
