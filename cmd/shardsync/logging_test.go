package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	perrors "github.com/pingcap/errors"
	"github.com/stretchr/testify/require"
)

// TestErrorsLogAsOneLine: an error made by github.com/pingcap/errors (what
// go-mysql returns), traced and wrapped, logs as one line of cause text in
// both log formats, with no stack frame and no build path; so do joined
// errors and the exit message.
func TestErrorsLogAsOneLine(t *testing.T) {
	traced := perrors.Trace(perrors.Annotate(perrors.New("connection refused"), "dial tcp 127.0.0.1:3306"))
	errs := map[string]error{
		"traced":  traced,
		"wrapped": fmt.Errorf("cannot connect to source: %w", traced),
		"joined":  errors.Join(errors.New("first problem"), traced),
	}
	for _, format := range []string{"text", "json"} {
		for name, err := range errs {
			var buf bytes.Buffer
			log, lerr := newLogger(&buf, format, "info")
			require.NoError(t, lerr)
			log.Warn("the stream stopped", "err", err)
			out := buf.String()
			require.Equal(t, 1, strings.Count(out, "\n"), "%s/%s: %q", format, name, out)
			require.NotContains(t, out, ".go:", "%s/%s: %q", format, name, out)
			require.NotContains(t, out, `\n`, "%s/%s: %q", format, name, out)
			require.NotContains(t, out, "runtime.goexit", "%s/%s: %q", format, name, out)
			require.Contains(t, out, "dial tcp 127.0.0.1:3306: connection refused", "%s/%s", format, name)
		}
	}
	var buf bytes.Buffer
	require.Equal(t, exitFailure, exitCode(errs["joined"], &buf))
	require.Equal(t, "shardsync: first problem; dial tcp 127.0.0.1:3306: connection refused\n", buf.String())
}

// TestOneLineDropsPrintedFrames: a message that already holds a printed
// stack (a library that put %+v into its text) keeps its words only.
func TestOneLineDropsPrintedFrames(t *testing.T) {
	s := fmt.Sprintf("%+v", perrors.Trace(perrors.New("boom")))
	require.Contains(t, s, ".go:", "pingcap/errors prints frames with %%+v")
	require.Equal(t, "boom", oneLine(s))
	require.Equal(t, "a; b", oneLine("a\n\nb\n"))
	require.Equal(t, "plain", oneLine("plain"))
}

// During an outage the retry warnings of the job's parts drop to DEBUG (the
// job logs its own line per backoff step); other warnings stay.
func TestOutageQuietsRetryWarnings(t *testing.T) {
	var buf strings.Builder
	var down atomic.Bool
	log := slog.New(&outageQuiet{Handler: slog.NewTextHandler(&buf, nil), down: &down}).With("part", "source")
	log.Warn("connecting to source failed; retrying", "attempt", 1)
	down.Store(true)
	log.Warn("connecting to source failed; retrying", "attempt", 2)
	log.Warn("retrying", "op", "commit")
	log.Warn("recovery step failed")
	log.Warn("source is unreachable; waiting it out with backoff")
	down.Store(false)
	log.Warn("retrying", "op", "commit", "attempt", 9)
	out := buf.String()
	require.Equal(t, 3, strings.Count(out, "level=WARN"), out)
	require.Contains(t, out, "attempt=1")
	require.Contains(t, out, "waiting it out")
	require.Contains(t, out, "attempt=9")
	require.NotContains(t, out, "attempt=2")
}
