package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shardsync/shardsync/ledger"
	"github.com/shardsync/shardsync/merge"
)

// newSkipEventCommand is `shardsync skip-event`: the way forward from a
// stop on one source event (a statement the job will not apply on its
// own). The decision is recorded in the ledger; the next start reads it
// and applies or skips exactly that event.
func newSkipEventCommand() *cobra.Command {
	var (
		ledgerPath, position, note string
		apply                      bool
	)
	cmd := &cobra.Command{
		Use:   "skip-event",
		Short: "Skip (or with --apply, apply) the one source event a job stopped on, and let it go on",
		Long: `When a job stops on a source statement it will not apply on its own (a
TRUNCATE, DROP or RENAME of a shard under schema.change.behavior exception, a
column change shardsync cannot apply to the merged target, an XA COMMIT whose
rows no longer fit), the message names the binlog event and this command with
the event's position: its GTID, or binlog file:offset, or for a column change
schema:DB.TABLE@DIGEST (the shard's new definition, the same whether the
binlog or a snapshot chunk met the change first). PostgreSQL stops name an
LSN; a few stops can only be applied (the message then names --apply only).

  shardsync skip-event --ledger L --position P           skip that event
  shardsync skip-event --ledger L --position P --apply   apply it

The decision is recorded in the ledger (the job must be stopped: the ledger
is locked while it runs); start the job again and it goes on past the event.
Skipping a TRUNCATE or DROP leaves the shard's rows in the target; skipping a
column change keeps the target's columns (values of added columns are not
loaded, dropped columns are loaded as NULL). Applying a TRUNCATE or DROP
deletes the shard's rows from the target, as under evolve; applying a column
change applies it as evolve does (compatible changes only).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ledgerPath == "" || position == "" {
				return usagef("--ledger and --position are required: the job's ledger and the event's position from the stop message")
			}
			l, err := ledger.Open(ledgerPath, ledger.Options{})
			if err != nil {
				return err
			}
			defer l.Close()
			action := merge.DecisionSkip
			if apply {
				action = merge.DecisionApply
			}
			if err := l.Decide(cmd.Context(), ledger.Decision{Position: position, Action: action, Note: note}); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "recorded in %s: %s the source event at %s; start the job again to go on\n", ledgerPath, action, position)
			return err
		},
	}
	cmd.Flags().StringVar(&ledgerPath, "ledger", "", "the job's ledger file")
	cmd.Flags().StringVar(&position, "position", "", "the event's position as the stop message names it: GTID (e.g. 0-1-42), binlog file:offset, or schema:DB.TABLE@DIGEST")
	cmd.Flags().BoolVar(&apply, "apply", false, "apply the event instead of skipping it")
	cmd.Flags().StringVar(&note, "note", "", "why (kept in the ledger)")
	return cmd
}

// decisions reads the operator decisions recorded in the ledger.
func decisions(l *ledger.Ledger) (map[string]string, error) {
	ds, err := l.Decisions()
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(ds))
	for _, d := range ds {
		out[d.Position] = d.Action
	}
	return out, nil
}

// withWayForward completes a stop on a source event with the ledger path
// in the commands it names.
func withWayForward(err error, ledgerPath string) error {
	var stop *merge.EventStopError
	if err == nil || !errors.As(err, &stop) {
		return err
	}
	msg := strings.ReplaceAll(err.Error(), "shardsync skip-event --position", "shardsync skip-event --ledger "+ledgerPath+" --position")
	return &wayForwardError{msg: msg, err: err}
}

type wayForwardError struct {
	msg string
	err error
}

func (e *wayForwardError) Error() string { return e.msg }
func (e *wayForwardError) Unwrap() error { return e.err }
