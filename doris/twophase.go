package doris

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

func twoPCPath(db string) string { return "/api/" + url.PathEscape(db) + "/_stream_load_2pc" }

// twoPC sends one _stream_load_2pc request (by txn id when txnID > 0, else
// by label) and classifies the answer. Transport errors, 5xx and transient
// answers are retried with backoff; an applied-but-unanswered request is
// harmless to repeat because the repeat classifies as ClassAlreadyDone.
func (c *client) twoPC(ctx context.Context, op Op, db string, txnID int64, label string) (Verdict, error) {
	h := http.Header{}
	h.Set("Expect", "100-continue")
	if txnID > 0 {
		h.Set("txn_id", strconv.FormatInt(txnID, 10))
	} else {
		h.Set("label", label)
	}
	h.Set("txn_operation", op.String())
	a, err := c.do(ctx, http.MethodPut, twoPCPath(db), h, true, func(status int, body []byte) bool {
		return Classify(op, status, body).Class == ClassRetryable
	})
	if err != nil {
		return Verdict{}, err
	}
	return Classify(op, a.status, a.body), nil
}

// loadState asks get_load_state for the state of label's newest txn:
// VISIBLE, COMMITTED, PRECOMMITTED, PREPARE, ABORTED or UNKNOWN.
func (c *client) loadState(ctx context.Context, db, label string) (string, error) {
	path := "/api/" + url.PathEscape(db) + "/get_load_state?label=" + url.QueryEscape(label)
	a, err := c.do(ctx, http.MethodGet, path, nil, true, func(status int, body []byte) bool {
		_, v := parseLoadState(status, body)
		return v.Class == ClassRetryable
	})
	if err != nil {
		return "", fmt.Errorf("asking doris for the state of label %s: %w", label, err)
	}
	st, v := parseLoadState(a.status, a.body)
	if v.Class != ClassSuccess {
		return "", fmt.Errorf("asking doris for the state of label %s: %s", label, v)
	}
	return st, nil
}

// probe sends an empty two-phase load under label, as the Flink connector
// does to learn a label's txn on FEs without abort-by-label. A label held
// by a running or pre-committed txn answers ClassLabelExists with its txn
// id; a committed one ClassAlreadyDone; a free label ClassSuccess with a
// new empty PRECOMMITTED txn, which the caller must abort.
func (c *client) probe(ctx context.Context, db, table, label string) (Verdict, error) {
	var last error
	for attempt := 0; attempt <= c.cfg.Retries; attempt++ {
		if attempt > 0 {
			if err := sleep(ctx, retryWait(c.cfg, attempt)); err != nil {
				return Verdict{}, err
			}
		}
		base, err := c.loadBase(ctx, db, table)
		if err != nil {
			return Verdict{}, err
		}
		v, err := c.probeOnce(ctx, base+loadPath(db, table), label)
		if err != nil {
			last = err
			continue
		}
		if v.Class == ClassRetryable {
			last = fmt.Errorf("probing label %s: %s", label, v)
			continue
		}
		return v, nil
	}
	return Verdict{}, fmt.Errorf("probing label %s: giving up after %d attempts: %w", label, c.cfg.Retries+1, last)
}

func (c *client) probeOnce(ctx context.Context, target, label string) (Verdict, error) {
	for hop := 0; hop <= maxRedirects; hop++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, target, http.NoBody)
		if err != nil {
			return Verdict{}, fmt.Errorf("building probe request: %w", err)
		}
		req.ContentLength = 0
		for k, v := range c.loadHeaders(label, false) {
			req.Header[k] = v
		}
		req.SetBasicAuth(c.cfg.User, c.cfg.Password)
		resp, err := c.small.HTTPClient.Do(req)
		if err != nil {
			return Verdict{}, fmt.Errorf("probing label %s at %s: %w", label, hostOf(target), err)
		}
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxReply))
		resp.Body.Close()
		if isRedirect(resp.StatusCode) {
			if target, err = redirectTarget(target, resp.Header.Get("Location")); err != nil {
				return Verdict{}, err
			}
			continue
		}
		if rerr != nil {
			return Verdict{}, fmt.Errorf("reading probe reply from %s: %w", hostOf(target), rerr)
		}
		return Classify(OpLoad, resp.StatusCode, body), nil
	}
	return Verdict{}, fmt.Errorf("probing label %s: more than %d redirects", label, maxRedirects)
}

// firstError fetches the first line of a load's ErrorURL (best effort).
func (c *client) firstError(ctx context.Context, errorURL string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, errorURL, nil)
	if err != nil {
		return ""
	}
	req.SetBasicAuth(c.cfg.User, c.cfg.Password)
	resp, err := c.small.HTTPClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return firstLine(strings.TrimSpace(string(b)))
}

func retryWait(cfg Config, attempt int) time.Duration {
	d := cfg.RetryWaitMin << min(attempt-1, 20)
	if d > cfg.RetryWaitMax || d <= 0 {
		d = cfg.RetryWaitMax
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
