package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/shardsync/shardsync/twopc"
)

// Exit codes. They are part of the command's interface: scripts and
// supervisors act on them.
const (
	exitOK       = 0 // done, or stopped cleanly by a signal
	exitFailure  = 1 // the job failed; the message says why and what to do
	exitUsage    = 2 // bad flags, configuration or input; nothing was written
	exitInDoubt  = 3 // a sink transaction is in doubt: an operator must run `shardsync txn resolve`
	exitInternal = 4 // a bug: please report it with the log
)

// usageError marks errors in the user's input (flags, files, regexes).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef returns a usage error: exit code 2.
func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// inDoubtError marks a stop that needs an operator's decision.
type inDoubtError struct{ err error }

func (e inDoubtError) Error() string { return e.err.Error() }
func (e inDoubtError) Unwrap() error { return e.err }

// markInDoubt turns a twopc in-doubt stop into an inDoubtError (exit 3).
func markInDoubt(err error) error {
	if errors.Is(err, twopc.ErrInDoubt) {
		return inDoubtError{err}
	}
	return err
}

// exitCode maps an error to the process exit code, printing it to w. It is
// the one place errors become exit codes.
func exitCode(err error, w io.Writer) int {
	if err == nil || errors.Is(err, context.Canceled) {
		return exitOK
	}
	fmt.Fprintln(w, "shardsync:", errText(err))
	var u usageError
	var d inDoubtError
	switch {
	case errors.As(err, &u):
		return exitUsage
	case errors.As(err, &d):
		return exitInDoubt
	}
	return exitFailure
}
