package maxcompute

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aliyun/aliyun-odps-go-sdk/odps/common"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/restclient"
)

// upsertClient speaks the tunnel upsert-session protocol (specs §2.10),
// which the Go SDK lacks, on top of the SDK's signing REST client. Every
// call carries the caller's context.
type upsertClient struct {
	rc      restclient.RestClient
	project string
	quota   string
	cfg     Config
	log     *slog.Logger
}

// upsertSession is the server's session document.
type upsertSession struct {
	ID      string       `json:"id"`
	Status  string       `json:"status"`
	HashKey []string     `json:"hash_key"`
	Hasher  string       `json:"hasher"`
	Slots   []upsertSlot `json:"slots"`
}

type upsertSlot struct {
	ID      flexString `json:"slot_id"`
	Buckets []int      `json:"buckets"`
	Worker  string     `json:"worker_addr"`
}

// flexString accepts a JSON string or number (servers differ).
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*f = flexString(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("slot_id %s is neither string nor number", b)
	}
	*f = flexString(n.String())
	return nil
}

// bucketCount validates the slot map: buckets must be exactly 0..N-1.
func (s *upsertSession) bucketCount() (int, error) {
	seen := map[int]bool{}
	for _, sl := range s.Slots {
		for _, b := range sl.Buckets {
			if seen[b] {
				return 0, fmt.Errorf("upsert session %s lists bucket %d twice", s.ID, b)
			}
			seen[b] = true
		}
	}
	for b := range len(seen) {
		if !seen[b] {
			return 0, fmt.Errorf("upsert session %s: buckets are not 0..%d", s.ID, len(seen)-1)
		}
	}
	if len(seen) == 0 {
		return 0, fmt.Errorf("upsert session %s has no buckets", s.ID)
	}
	return len(seen), nil
}

func (s *upsertSession) slotOf(bucket int) (upsertSlot, bool) {
	for _, sl := range s.Slots {
		for _, b := range sl.Buckets {
			if b == bucket {
				return sl, true
			}
		}
	}
	return upsertSlot{}, false
}

// tableRef names a table partition: the session resources are
// /projects/p[/schemas/s]/tables/t/upserts, and every session request
// carries partition=k1=v1,k2=v2 for a partitioned table (as the Java SDK's
// getCommonParams does).
type tableRef struct {
	Schema    string
	Table     string
	Partition string
}

func (r tableRef) String() string {
	n := r.Table
	if r.Schema != "" {
		n = r.Schema + "." + n
	}
	if r.Partition != "" {
		n += " partition (" + r.Partition + ")"
	}
	return n
}

func (c *upsertClient) resource(ref tableRef) string {
	rb := common.NewResourceBuilder(c.project)
	return rb.Table(ref.Schema, ref.Table) + "/upserts"
}

func (c *upsertClient) headers(extra map[string]string) map[string]string {
	h := map[string]string{
		common.HttpHeaderOdpsDateTransFrom:             "v1",
		common.HttpHeaderOdpsTunnelVersion:             "6",
		common.HttpHeaderOdpsSdkSupportSchemaEvolution: "true",
	}
	for k, v := range extra {
		h[k] = v
	}
	return h
}

func (c *upsertClient) params(ref tableRef, kv ...string) url.Values {
	q := url.Values{}
	if ref.Partition != "" {
		q.Set("partition", ref.Partition)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	if c.quota != "" {
		q.Set("quotaName", c.quota)
	}
	return q
}

// do sends one request bounded by ctx and RequestTimeout and decodes a
// JSON reply into out (when not nil).
func (c *upsertClient) do(ctx context.Context, method string, ref tableRef, q url.Values, hdr map[string]string, body []byte, out any) (http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := c.rc.NewRequestWithParamsAndHeaders(method, c.resource(ref), rd, q, c.headers(hdr))
	if err != nil {
		return nil, err
	}
	req = req.WithContext(ctx)
	req.ContentLength = int64(len(body))
	res, err := c.rc.Do(req)
	if err != nil {
		var he restclient.HttpError
		if errors.As(err, &he) {
			return he.Response.Header, he
		}
		return nil, err
	}
	defer res.Body.Close()
	if out != nil {
		if err := json.NewDecoder(res.Body).Decode(out); err != nil {
			return res.Header, fmt.Errorf("decoding upsert session reply: %w", err)
		}
	} else {
		_, _ = io.Copy(io.Discard, res.Body)
	}
	return res.Header, nil
}

func (c *upsertClient) create(ctx context.Context, ref tableRef) (*upsertSession, error) {
	var s upsertSession
	table := ref.String()
	q := c.params(ref, "slotnum", strconv.Itoa(c.cfg.SlotNum), "lifecycle", strconv.Itoa(c.cfg.SessionLifecycleHours))
	err := c.retry(ctx, "creating upsert session for "+table, func(ctx context.Context) error {
		_, err := c.do(ctx, http.MethodPost, ref, q, nil, nil, &s)
		return err
	}, nil)
	if err != nil {
		return nil, err
	}
	if s.ID == "" || s.Status == "" || len(s.Slots) == 0 || s.HashKey == nil {
		return nil, fmt.Errorf("creating upsert session for %s: incomplete session info from server", table)
	}
	if s.Hasher != "" && s.Hasher != "default" {
		return nil, fmt.Errorf("creating upsert session for %s: server asks for hasher %q; only \"default\" is implemented", table, s.Hasher)
	}
	return &s, nil
}

func (c *upsertClient) get(ctx context.Context, ref tableRef, id string) (*upsertSession, error) {
	var s upsertSession
	err := c.retry(ctx, "loading upsert session "+id, func(ctx context.Context) error {
		_, err := c.do(ctx, http.MethodGet, ref, c.params(ref, "upsertid", id), nil, nil, &s)
		return err
	}, nil)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// put sends one bucket's record stream. On 308 it follows the new routed
// server; on 502/504 it reloads the session first (Java TunnelRetryHandler).
func (c *upsertClient) put(ctx context.Context, ref tableRef, s *upsertSession, bucket int, body []byte, encoding string, count int64) error {
	what := fmt.Sprintf("writing bucket %d of upsert session %s (table %s)", bucket, s.ID, ref)
	slot, ok := s.slotOf(bucket)
	if !ok {
		return fmt.Errorf("%s: no slot serves the bucket", what)
	}
	worker := slot.Worker
	onRetry := func(ctx context.Context, err error, act retryAction) error {
		var he restclient.HttpError
		if errors.As(err, &he) && he.StatusCode == http.StatusPermanentRedirect {
			if rs := he.Response.Header.Get(common.HttpHeaderRoutedServer); rs != "" {
				worker = rs
				return nil
			}
		}
		if act == retryReload || (errors.As(err, &he) && he.StatusCode == http.StatusPermanentRedirect) {
			ns, gerr := c.get(ctx, ref, s.ID)
			if gerr != nil {
				return gerr
			}
			sl, ok := ns.slotOf(bucket)
			if !ok {
				return fmt.Errorf("%s: reloaded session no longer serves the bucket", what)
			}
			slot, worker = sl, sl.Worker
		}
		return nil
	}
	return c.retry(ctx, what, func(ctx context.Context) error {
		hdr := map[string]string{
			common.HttpHeaderRoutedServer: worker,
			common.HttpHeaderContentType:  "application/octet-stream",
		}
		if encoding != "" {
			hdr["Content-Encoding"] = encoding
		}
		q := c.params(ref, "upsertid", s.ID, "bucketid", strconv.Itoa(bucket), "slotid", string(slot.ID),
			"record_count", strconv.FormatInt(count, 10))
		_, err := c.do(ctx, http.MethodPut, ref, q, hdr, body, nil)
		return err
	}, onRetry)
}

// commitOnce POSTs the commit and returns the status the server reports.
func (c *upsertClient) commitOnce(ctx context.Context, ref tableRef, s *upsertSession) (string, error) {
	var out upsertSession
	hdr := map[string]string{}
	if sl, ok := s.slotOf(0); ok {
		hdr[common.HttpHeaderRoutedServer] = sl.Worker
	}
	_, err := c.do(ctx, http.MethodPost, ref, c.params(ref, "upsertid", s.ID), hdr, nil, &out)
	if err != nil {
		return "", err
	}
	return strings.ToLower(out.Status), nil
}

func (c *upsertClient) abort(ctx context.Context, ref tableRef, s *upsertSession) error {
	hdr := map[string]string{}
	if sl, ok := s.slotOf(0); ok {
		hdr[common.HttpHeaderRoutedServer] = sl.Worker
	}
	return c.retry(ctx, "aborting upsert session "+s.ID, func(ctx context.Context) error {
		_, err := c.do(ctx, http.MethodDelete, ref, c.params(ref, "upsertid", s.ID), hdr, nil, nil)
		return err
	}, nil)
}

// ---- retry classification (Java tunnel/io/TunnelRetryHandler) ----

type retryAction int

const (
	retryNever   retryAction = iota // other 4xx: terminal
	retryBackoff                    // 5xx, network errors: exponential, bounded by Retries
	retryForever                    // 429 flow control, 308 slot reassignment: until the deadline
	retryReload                     // 502/504: reload the session, then retry (bounded)
)

// classify decides how a failed request is retried.
func classify(err error) retryAction {
	var he restclient.HttpError
	if errors.As(err, &he) {
		switch code := he.StatusCode; {
		case code == http.StatusTooManyRequests, code == http.StatusPermanentRedirect:
			return retryForever
		case code == http.StatusBadGateway, code == http.StatusGatewayTimeout:
			return retryReload
		case code >= 500:
			return retryBackoff
		}
		return retryNever
	}
	if errors.Is(err, context.Canceled) {
		return retryNever
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "connection reset") {
		return retryBackoff
	}
	return retryNever
}

// describe renders an error with the server's code and message.
func describe(err error) string {
	var he restclient.HttpError
	if errors.As(err, &he) {
		if he.ErrorMessage != nil && he.ErrorMessage.ErrorCode != "" {
			return fmt.Sprintf("%s %s: %s (request id %s)", he.Status, he.ErrorMessage.ErrorCode, he.ErrorMessage.Message, he.RequestId)
		}
		return fmt.Sprintf("%s: %s", he.Status, strings.TrimSpace(string(he.Body)))
	}
	return err.Error()
}

// errorCode returns the server's error code, or "".
func errorCode(err error) string {
	var he restclient.HttpError
	if errors.As(err, &he) && he.ErrorMessage != nil {
		return he.ErrorMessage.ErrorCode
	}
	return ""
}

func httpStatus(err error) int {
	var he restclient.HttpError
	if errors.As(err, &he) {
		return he.StatusCode
	}
	return 0
}

// retry runs f until it succeeds, fails terminally, runs out of bounded
// retries, or ctx ends. before, when set, runs ahead of each retry and may
// adjust the request (new routed server, reloaded session).
func (c *upsertClient) retry(ctx context.Context, what string, f func(context.Context) error,
	before func(context.Context, error, retryAction) error) error {
	return retryLoop(ctx, c.cfg, c.log, what, f, before)
}

func retryLoop(ctx context.Context, cfg Config, log *slog.Logger, what string, f func(context.Context) error,
	before func(context.Context, error, retryAction) error) error {
	bounded, forever := 0, 0
	for {
		err := f(ctx)
		if err == nil {
			return nil
		}
		act := classify(err)
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %s (gave up: %w)", what, describe(err), ctx.Err())
		}
		var n int
		switch act {
		case retryNever:
			return fmt.Errorf("%s: %s: %w", what, describe(err), err)
		case retryForever:
			forever++
			n = forever
		default:
			bounded++
			if bounded > cfg.Retries {
				return fmt.Errorf("%s: %s (after %d retries): %w", what, describe(err), cfg.Retries, err)
			}
			n = bounded
		}
		delay := cfg.RetryBaseDelay << min(n-1, 16)
		if delay > cfg.RetryMaxDelay || delay <= 0 {
			delay = cfg.RetryMaxDelay
		}
		log.Warn("maxcompute: retrying", "what", what, "error", describe(err), "attempt", n, "delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %s (gave up: %w)", what, describe(err), ctx.Err())
		case <-t.C:
		}
		if before != nil {
			if berr := before(ctx, err, act); berr != nil {
				return fmt.Errorf("%s: preparing retry after %s: %w", what, describe(err), berr)
			}
		}
	}
}
