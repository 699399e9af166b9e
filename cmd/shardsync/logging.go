package main

import (
	"context"
	"log/slog"
	"regexp"
	"strings"
	"sync/atomic"
)

// Errors in logs and messages are one line of text: the cause chain as
// Error() gives it, with no stack frames and no build paths, whichever
// library made the error. slog's text handler formats an error with %+v,
// which makes github.com/pingcap/errors (go-mysql's errors) print every
// frame of its stack; oneLineErrors replaces error attributes with their
// text before any handler sees them.

// oneLineErrors is the loggers' slog.HandlerOptions.ReplaceAttr.
func oneLineErrors(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() != slog.KindAny {
		return a
	}
	if err, ok := a.Value.Any().(error); ok && err != nil {
		a.Value = slog.StringValue(errText(err))
	}
	return a
}

// frameLine matches the file line of a printed Go stack frame
// ("\t/path/to/file.go:123" or "  file.go:123 +0x1f").
var frameLine = regexp.MustCompile(`^\s+\S*\.(go|s):\d+( \+0x[0-9a-f]+)?$`)

// errText is err's text on one line: lines of a multi-line text (errors.Join,
// a library that put a stack into its message) are joined with "; ", and
// printed stack frames (a function line followed by its file line) are left
// out.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return oneLine(err.Error())
}

func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	lines := strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n")
	var keep []string
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if frameLine.MatchString(l) {
			continue
		}
		if i+1 < len(lines) && frameLine.MatchString(lines[i+1]) && !strings.ContainsRune(strings.TrimSpace(l), ' ') {
			i++ // a function line and its file line
			continue
		}
		if l = strings.TrimSpace(l); l != "" && l != "goroutine" {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "; ")
}

// retryWarnings are the warnings that parts of the job log on each retry
// they make; during an outage the job's own backoff line replaces them.
var retryWarnings = map[string]bool{
	"connecting to source failed; retrying": true,
	"retrying":                              true,
	"recovery step failed":                  true,
}

// outageQuiet lowers retryWarnings to DEBUG while down is set (a
// component is unreachable and the job waits it out, logging once per
// backoff step).
type outageQuiet struct {
	slog.Handler
	down *atomic.Bool
}

func (h *outageQuiet) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn && h.down.Load() && retryWarnings[r.Message] {
		if !h.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
	}
	return h.Handler.Handle(ctx, r)
}

func (h *outageQuiet) WithAttrs(as []slog.Attr) slog.Handler {
	return &outageQuiet{Handler: h.Handler.WithAttrs(as), down: h.down}
}

func (h *outageQuiet) WithGroup(name string) slog.Handler {
	return &outageQuiet{Handler: h.Handler.WithGroup(name), down: h.down}
}
