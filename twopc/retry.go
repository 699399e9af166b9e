package twopc

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// RetryPolicy bounds the retries of sink calls that must eventually succeed
// (Commit, and Abort during recovery). Waits grow from Min doubling to Max.
type RetryPolicy struct {
	Min      time.Duration
	Max      time.Duration
	Attempts int // total tries, at least 1
}

// DefaultRetry is the policy used when a config leaves it zero: ten tries
// over roughly a minute.
func DefaultRetry() RetryPolicy {
	return RetryPolicy{Min: 250 * time.Millisecond, Max: 15 * time.Second, Attempts: 10}
}

func (p RetryPolicy) orDefault() RetryPolicy {
	if p.Attempts <= 0 {
		return DefaultRetry()
	}
	if p.Min <= 0 {
		p.Min = time.Millisecond
	}
	if p.Max < p.Min {
		p.Max = p.Min
	}
	return p
}

// settle calls fn until it returns no error, the attempts run out or ctx
// ends. Outcomes are answers, not failures: they are never retried.
func settle(ctx context.Context, p RetryPolicy, log *slog.Logger, what string, fn func(context.Context) (Outcome, error)) (Outcome, error) {
	p = p.orDefault()
	wait := p.Min
	var err error
	for attempt := 1; ; attempt++ {
		var o Outcome
		o, err = fn(ctx)
		if err == nil {
			return o, nil
		}
		if attempt >= p.Attempts || ctx.Err() != nil {
			break
		}
		lv := slog.LevelWarn
		if attempt > 1 {
			lv = slog.LevelDebug // one warning per call; the job logs its own backoff steps
		}
		log.Log(ctx, lv, "retrying", "op", what, "attempt", attempt, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Unknown, fmt.Errorf("%s: giving up after %d attempt(s): %w (last error: %w)", what, attempt, ctx.Err(), err)
		case <-t.C:
		}
		wait = min(wait*2, p.Max)
	}
	return Unknown, fmt.Errorf("%s: giving up after %d attempt(s): %w", what, p.Attempts, err)
}
