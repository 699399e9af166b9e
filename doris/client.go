package doris

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

const (
	maxReply     = 1 << 20 // bytes of a reply body read
	maxRedirects = 4
)

// errTransient marks a reply the retry loop should repeat.
var errTransient = errors.New("transient answer")

// client talks HTTP to Doris: small requests (2PC, label state, BE
// resolution, schema) through go-retryablehttp, loads through a plain
// client because a streamed body cannot be replayed. Neither follows
// redirects by itself: Go would drop the body of a streamed PUT and the
// Authorization header on a redirect to another host, so client follows the
// FE's 307 itself, without the credentials the FE puts into the Location.
type client struct {
	cfg    Config
	log    *slog.Logger
	fe, be []string
	small  *retryablehttp.Client
	stream *http.Client
	rr     atomic.Uint64
}

func newClient(cfg Config, log *slog.Logger) (*client, error) {
	c := &client{cfg: cfg, log: log}
	for _, n := range cfg.FENodes {
		b, err := nodeBase(n)
		if err != nil {
			return nil, err
		}
		c.fe = append(c.fe, b)
	}
	for _, n := range cfg.BENodes {
		b, err := nodeBase(n)
		if err != nil {
			return nil, err
		}
		c.be = append(c.be, b)
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: cfg.ExpectContinueTimeout,
		WriteBufferSize:       64 << 10,
	}
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.stream = &http.Client{Transport: tr, CheckRedirect: noRedirect}
	c.small = &retryablehttp.Client{
		HTTPClient:   &http.Client{Transport: tr, CheckRedirect: noRedirect, Timeout: cfg.RequestTimeout},
		Logger:       leveled{log},
		RetryWaitMin: cfg.RetryWaitMin,
		RetryWaitMax: cfg.RetryWaitMax,
		RetryMax:     cfg.Retries,
		Backoff:      retryablehttp.DefaultBackoff,
		CheckRetry: func(ctx context.Context, _ *http.Response, err error) (bool, error) {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			// Transport errors and transient answers (5xx, lock timeouts...)
			// are retried; everything else is final.
			return err != nil, nil
		},
		ErrorHandler: func(resp *http.Response, err error, n int) (*http.Response, error) {
			if errors.Is(err, errTransient) && resp != nil {
				return resp, nil // the caller classifies the last transient answer
			}
			if resp != nil {
				resp.Body.Close()
			}
			return nil, fmt.Errorf("giving up after %d attempt(s): %w", n, err)
		},
	}
	return c, nil
}

// transportError is a request that got no usable answer from a node.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// answer is one HTTP answer.
type answer struct {
	status   int
	body     []byte
	location string // redacted-free target of a 307, credentials stripped
	node     string // base URL that answered
}

// retryFunc says whether an answer is transient and worth repeating.
type retryFunc func(status int, body []byte) bool

func retry5xx(status int, _ []byte) bool { return status >= 500 }

// do sends a small request to the FEs, trying the next FE when one is
// unreachable. With follow it follows 307s itself (with its own
// credentials, same method, path and headers); otherwise a 307 is returned.
func (c *client) do(ctx context.Context, method, path string, hdr http.Header, follow bool, retry retryFunc) (answer, error) {
	var lastErr error
	start := int(c.rr.Add(1))
	for i := range c.fe {
		base := c.fe[(start+i)%len(c.fe)]
		a, err := c.doOn(ctx, method, base+path, hdr, follow, retry)
		if err == nil {
			return a, nil
		}
		if ctx.Err() != nil {
			return answer{}, err
		}
		if _, ok := errors.AsType[*transportError](err); !ok {
			return answer{}, err
		}
		c.log.Warn("doris FE unreachable, trying the next", "node", base, "err", err)
		lastErr = err
	}
	return answer{}, lastErr
}

func (c *client) doOn(ctx context.Context, method, target string, hdr http.Header, follow bool, retry retryFunc) (answer, error) {
	for hop := 0; ; hop++ {
		var a answer
		req, err := retryablehttp.NewRequestWithContext(ctx, method, target, nil)
		if err != nil {
			return answer{}, fmt.Errorf("building %s request: %w", method, err)
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		req.SetBasicAuth(c.cfg.User, c.cfg.Password)
		req.SetResponseHandler(func(resp *http.Response) error {
			b, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
			if err != nil {
				return fmt.Errorf("reading reply: %w", err)
			}
			a = answer{status: resp.StatusCode, body: b, location: resp.Header.Get("Location")}
			if !isRedirect(resp.StatusCode) && retry != nil && retry(resp.StatusCode, b) {
				return errTransient
			}
			return nil
		})
		resp, err := c.small.Do(req)
		if err != nil {
			return answer{}, &transportError{fmt.Errorf("%s %s: %w", method, hostOf(target), err)}
		}
		resp.Body.Close()
		a.node = baseOf(target)
		if !isRedirect(a.status) {
			return a, nil
		}
		next, err := redirectTarget(target, a.location)
		if err != nil {
			return answer{}, err
		}
		a.location = next
		if !follow {
			return a, nil
		}
		if hop >= maxRedirects {
			return answer{}, fmt.Errorf("%s %s: more than %d redirects", method, hostOf(target), maxRedirects)
		}
		target = next
	}
}

func isRedirect(status int) bool {
	return status == http.StatusTemporaryRedirect || status == http.StatusPermanentRedirect ||
		status == http.StatusFound || status == http.StatusMovedPermanently || status == http.StatusSeeOther
}

// redirectTarget resolves loc against from and strips the credentials the
// FE puts into it; the caller authenticates with its own.
func redirectTarget(from, loc string) (string, error) {
	if loc == "" {
		return "", fmt.Errorf("redirect from %s without a Location", hostOf(from))
	}
	base, err := url.Parse(from)
	if err != nil {
		return "", fmt.Errorf("parsing request URL: %w", err)
	}
	u, err := base.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("parsing redirect Location %q: %w", Redact(loc), err)
	}
	u.User = nil
	if u.RawQuery == "" {
		u.ForceQuery = false // the FE appends "?" even without a query
	}
	return u.String(), nil
}

// Redact hides the password in a URL's userinfo ("http://u:xxxxx@h/"), as
// found in the FE's 307 Location. Unparseable input is replaced wholesale.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if strings.Contains(raw, "@") {
			return "<unparseable URL with credentials>"
		}
		return raw
	}
	return u.Redacted()
}

func hostOf(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Host
	}
	return "?"
}

func baseOf(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Scheme + "://" + u.Host
	}
	return raw
}

func loadPath(db, table string) string {
	return "/api/" + url.PathEscape(db) + "/" + url.PathEscape(table) + "/_stream_load"
}

// leveled adapts slog to retryablehttp's LeveledLogger. URLs it gets carry
// no credentials (requests are built without userinfo).
type leveled struct{ l *slog.Logger }

func (l leveled) Error(msg string, kv ...any) { l.l.Warn("doris http: "+msg, kv...) }
func (l leveled) Warn(msg string, kv ...any)  { l.l.Warn("doris http: "+msg, kv...) }
func (l leveled) Info(msg string, kv ...any)  { l.l.Debug("doris http: "+msg, kv...) }
func (l leveled) Debug(msg string, kv ...any) { l.l.Debug("doris http: "+msg, kv...) }
