package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shardsync/shardsync/ledger"
	"github.com/shardsync/shardsync/twopc"
)

func newTxnCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "txn",
		Short: "Inspect and settle the sink transactions a stopped job left unfinished",
		Long: `A job records every epoch in its ledger: OPEN before any byte reaches a sink,
PRECOMMITTED once every sink pre-committed (the commit point), COMMITTED after
the commits. A job that stopped abruptly leaves OPEN or PRECOMMITTED epochs;
the next start settles them itself. These commands show and settle them
without starting the stream, e.g. when a transaction is in doubt.`,
	}
	cmd.AddCommand(newTxnListCommand(), newTxnResolveCommand())
	return cmd
}

func newTxnListCommand() *cobra.Command {
	var ledgerPath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the unfinished epochs in a ledger and what recovery would do with each",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ledgerPath == "" {
				return usagef("--ledger is required: the job's ledger file")
			}
			l, err := ledger.Open(ledgerPath, ledger.Options{})
			if err != nil {
				return err
			}
			defer l.Close()
			p, err := twopc.Plan(l)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), p)
			}
			return printPlan(cmd.OutOrStdout(), p)
		},
	}
	cmd.Flags().StringVar(&ledgerPath, "ledger", "", "the job's ledger file")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printPlan(w io.Writer, p *twopc.RecoveryPlan) error {
	fmt.Fprintf(w, "ledger %s: next epoch %d, resume at %s\n", p.Ledger, p.Next, tokenText(p.Resume))
	if len(p.Items) == 0 {
		_, err := fmt.Fprintln(w, "nothing unfinished: the next start resumes at once")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EPOCH\tSTATE\tACTION\tSINK\tTARGET\tLABEL\tTXN ID")
	for _, it := range p.Items {
		if len(it.Txns) == 0 {
			fmt.Fprintf(tw, "%d\t%s\t%s\t-\t-\t-\t-\n", it.Epoch, it.State, it.Action)
		}
		for _, t := range it.Txns {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", it.Epoch, it.State, it.Action, t.Sink, t.Target, t.Label, dash(t.TxnID))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, it := range p.Items {
		fmt.Fprintf(w, "epoch %d: %s\n", it.Epoch, it.Explain)
	}
	return nil
}

func tokenText(t []byte) string {
	if len(t) == 0 {
		return "the beginning (snapshot)"
	}
	return string(t)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newTxnResolveCommand() *cobra.Command {
	var (
		ledgerPath, assume string
		epoch              uint64
		dryRun, asJSON     bool
		sinkOpts           jobOptions
	)
	cmd := &cobra.Command{
		Use:   "resolve",
		Short: "Settle the unfinished epochs now, as recovery would, without starting the stream",
		Long: `Settles every unfinished epoch of the ledger as a start-up would: aborts OPEN
epochs, commits PRECOMMITTED ones, rewinds when a sink aborted a pre-committed
transaction. It prints each action and its outcome.

An epoch in doubt (a sink cannot tell whether its transaction was committed)
needs your decision: check the target table, then pass
--epoch N --assume committed (its rows are there: mark it committed) or
--epoch N --assume aborted (they are not: abort it, and the job re-reads it).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ledgerPath == "" {
				return usagef("--ledger is required: the job's ledger file")
			}
			opts := twopc.ResolveOptions{DryRun: dryRun}
			switch assume {
			case "":
				if epoch != 0 {
					return usagef("--epoch needs --assume committed or --assume aborted")
				}
			case "committed", "aborted":
				if epoch == 0 {
					return usagef("--assume needs --epoch N (see `shardsync txn list`)")
				}
				o := twopc.Committed
				if assume == "aborted" {
					o = twopc.Aborted
				}
				opts.Assume = map[uint64]twopc.Outcome{epoch: o}
			default:
				return usagef("--assume %q: use committed or aborted", assume)
			}
			prefix := sinkOpts.labelPrefix
			if prefix == "" {
				prefix = "shardsync" // labels come from the ledger; the prefix only passes validation
			}
			dc, mc, err := sinkOpts.sinkConfigs(prefix)
			if err != nil {
				return err
			}
			log, err := newLogger(cmd.ErrOrStderr(), "text", "warn")
			if err != nil {
				return err
			}
			l, err := ledger.Open(ledgerPath, ledger.Options{})
			if err != nil {
				return err
			}
			defer l.Close()
			sinks, err := openSinks(dc, mc, log)
			if err != nil {
				return err
			}
			defer func() {
				for _, s := range sinks {
					_ = s.Close()
				}
			}()
			rep, rerr := twopc.Resolve(cmd.Context(), l, sinks, opts, log)
			if rep != nil {
				if asJSON {
					if err := writeJSON(cmd.OutOrStdout(), rep); err != nil {
						return err
					}
				} else {
					printReport(cmd.OutOrStdout(), rep)
				}
			}
			return markInDoubt(rerr)
		},
	}
	f := cmd.Flags()
	f.StringVar(&ledgerPath, "ledger", "", "the job's ledger file")
	f.BoolVar(&dryRun, "dry-run", false, "print the actions without contacting sinks or writing the ledger")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.Uint64Var(&epoch, "epoch", 0, "the in-doubt epoch to settle with --assume")
	f.StringVar(&assume, "assume", "", "settle --epoch as committed or aborted, on your word")
	sinkOpts.addSinkFlags(f)
	return cmd
}

func printReport(w io.Writer, rep *twopc.Report) {
	mode := ""
	if rep.DryRun {
		mode = " (dry run: nothing was done)"
	}
	fmt.Fprintf(w, "ledger %s%s\n", rep.Ledger, mode)
	if len(rep.Steps) == 0 {
		fmt.Fprintln(w, "nothing unfinished")
	}
	for _, s := range rep.Steps {
		what := "ledger"
		if s.Txn != nil {
			what = fmt.Sprintf("%s %s label %s txn %s", s.Txn.Sink, s.Txn.Target, s.Txn.Label, dash(s.Txn.TxnID))
		}
		line := fmt.Sprintf("epoch %d %s: %s → %s", s.Epoch, s.Action, what, s.Outcome)
		if s.Error != "" {
			line += " (" + strings.TrimSpace(s.Error) + ")"
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintf(w, "resume position: %s\n", tokenText(rep.Resume))
}
