package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/shardsync/shardsync/merge"
)

// progressInterval is how often the snapshot progress is redrawn on a
// terminal (and logged, every logEvery-th time, when not on a terminal).
const (
	progressInterval = time.Second
	logEvery         = 10
)

// progressSummary is the snapshot's progress over every table.
type progressSummary struct {
	tables, done   int
	rows, estimate int64
	chunks         int
}

func summarize(p merge.SnapshotProgress) progressSummary {
	var s progressSummary
	for _, t := range p.Tables {
		s.tables++
		s.rows += t.Rows
		s.chunks += t.Chunks
		if t.Done {
			s.done++
			s.estimate += t.Rows // a finished table's true size
		} else {
			s.estimate += max(t.EstimatedRows, t.Rows)
		}
	}
	return s
}

// eta estimates the time left at rate rows/s; 0 when unknown.
func (s progressSummary) eta(rate float64) time.Duration {
	left := s.estimate - s.rows
	if rate <= 0 || left <= 0 {
		return 0
	}
	return time.Duration(float64(left) / rate * float64(time.Second)).Round(time.Second)
}

// renderProgress draws the snapshot progress as lines for a terminal.
func renderProgress(p merge.SnapshotProgress, rate float64) string {
	s := summarize(p)
	var b strings.Builder
	pct := 100.0
	if s.estimate > 0 {
		pct = min(100, 100*float64(s.rows)/float64(s.estimate))
	}
	fmt.Fprintf(&b, "snapshot: %d/%d tables done, %d/~%d rows (%.0f%%), %d chunks, %.0f rows/s", s.done, s.tables, s.rows, s.estimate, pct, s.chunks, rate)
	if eta := s.eta(rate); eta > 0 && !p.Done {
		fmt.Fprintf(&b, ", ETA %s", eta)
	}
	b.WriteByte('\n')
	for _, t := range p.Tables {
		state := "done"
		if !t.Done {
			state = fmt.Sprintf("%d/~%d rows", t.Rows, max(t.EstimatedRows, t.Rows))
		} else {
			state = fmt.Sprintf("%d rows, done", t.Rows)
		}
		fmt.Fprintf(&b, "  %-32s → %-28s %4d chunks  %s\n", t.Table, t.Target, t.Chunks, state)
	}
	return b.String()
}

// startProgress shows the snapshot's progress until it is done or ctx
// ends: redrawn on w when tty, else as one structured log line every
// logEvery intervals. It returns a function that stops it.
func startProgress(ctx context.Context, w io.Writer, tty bool, m *monitor, log *slog.Logger, every time.Duration) func() {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		var lastRows int64
		lastAt := time.Now()
		rate, drawn, ticks := 0.0, 0, 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			_, src := m.currentPhase()
			if src == nil {
				continue
			}
			p := src.Progress()
			s := summarize(p)
			now := time.Now()
			if dt := now.Sub(lastAt).Seconds(); dt > 0 && s.rows >= lastRows {
				inst := float64(s.rows-lastRows) / dt
				if rate == 0 {
					rate = inst
				} else {
					rate = 0.7*rate + 0.3*inst
				}
			}
			lastRows, lastAt = s.rows, now
			ticks++
			if tty {
				text := renderProgress(p, rate)
				if drawn > 0 {
					fmt.Fprintf(w, "\x1b[%dA\x1b[J", drawn)
				}
				fmt.Fprint(w, text)
				drawn = strings.Count(text, "\n")
			} else if ticks%logEvery == 0 || p.Done {
				log.Info("snapshot progress", "tables", s.tables, "tables_done", s.done, "rows", s.rows,
					"estimated_rows", s.estimate, "chunks", s.chunks, "rows_per_sec", int64(rate), "eta", s.eta(rate).String())
			}
			if p.Done {
				if !tty {
					log.Info("snapshot finished; following the binlog", "tables", s.tables, "rows", s.rows)
				}
				return
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}
