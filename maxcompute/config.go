package maxcompute

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config configures the MaxCompute sink. Option names follow the Flink CDC
// MaxCompute pipeline connector (see FromOptions); the sink has a few more
// knobs for deadlines and retries.
type Config struct {
	// AccessID and AccessKey are the AccessKey pair. StsToken is set for
	// temporary (STS) credentials. Prefer LoadSecrets to fill them from the
	// environment or files; they are never logged.
	AccessID  string
	AccessKey string
	StsToken  string
	// AccessKeyFile and StsTokenFile name files holding the secret (trailing
	// whitespace is ignored). LoadSecrets reads them.
	AccessKeyFile string
	StsTokenFile  string

	// Endpoint is the service endpoint, e.g.
	// http://service.cn-hangzhou.maxcompute.aliyun.com/api.
	Endpoint string
	// Project is the MaxCompute project all targets live in.
	Project string
	// TunnelEndpoint overrides the tunnel endpoint the project announces.
	TunnelEndpoint string
	// QuotaName selects an exclusive tunnel resource group.
	QuotaName string

	// BucketsNum is write.bucket.num for Delta tables the sink creates.
	BucketsNum int
	// CompressAlgorithm compresses tunnel bodies: "zlib" (default),
	// "snappy" or "raw".
	CompressAlgorithm string
	// TotalBufferSize bounds the bytes buffered per target per epoch before
	// every bucket is flushed.
	TotalBufferSize int64
	// BucketBufferSize is the bytes buffered per bucket (Delta) or per block
	// (plain) before that bucket or block is sent.
	BucketBufferSize int64
	// FlushConcurrentNum is how many buckets are sent at once.
	FlushConcurrentNum int
	// Retries is how many times a request failing with a 5xx or a network
	// error is retried (429 and 308 are retried until the deadline).
	Retries int
	// RetryBaseDelay and RetryMaxDelay shape the exponential backoff.
	RetryBaseDelay time.Duration
	RetryMaxDelay  time.Duration
	// RequestTimeout bounds every single SDK or tunnel call.
	RequestTimeout time.Duration
	// CommitTimeout bounds committing one session and polling it to
	// committed.
	CommitTimeout time.Duration
	// SlotNum is the slot count asked for when creating an upsert session.
	SlotNum int
	// SessionLifecycleHours is the upsert session lifetime (1..24).
	SessionLifecycleHours int

	// Partition is the partition every target is written to (option
	// `partition`): comma-separated levels in the order of the table's
	// partition columns, "k=v" for a fixed value and "k" for the value of
	// the row's column k; fixed levels first. Empty: unpartitioned targets.
	Partition string
	// KeepAliveInterval is how often an open upsert session is reloaded so
	// that the service does not expire it as idle (the Java SDK reloads
	// every 30 s).
	KeepAliveInterval time.Duration
	// SessionMaxAge is how long a session may stay open. An epoch whose
	// upsert session reaches it re-opens the session: a new session gets
	// every record the old one got, is recorded in the ledger under the same
	// label, and the old one is aborted. A plain table's epoch fails instead
	// (see docs/maxcompute.md). Must be below the session lifetime.
	SessionMaxAge time.Duration
	// SpoolDir holds, per open upsert session, a copy of what was sent to
	// it, so that a re-opened session can be given the same records.
	// Default: the system temporary directory.
	SpoolDir string
}

// DefaultConfig returns the defaults (the Flink connector's where it has
// one).
func DefaultConfig() Config {
	return Config{
		BucketsNum:            16,
		CompressAlgorithm:     "zlib",
		TotalBufferSize:       64 << 20,
		BucketBufferSize:      4 << 20,
		FlushConcurrentNum:    4,
		Retries:               3,
		RetryBaseDelay:        time.Second,
		RetryMaxDelay:         64 * time.Second,
		RequestTimeout:        60 * time.Second,
		CommitTimeout:         120 * time.Second,
		SlotNum:               1,
		SessionLifecycleHours: 24,
		KeepAliveInterval:     30 * time.Second,
		SessionMaxAge:         23*time.Hour + 30*time.Minute,
	}
}

// Validate reports the first problem with c, phrased so an operator can fix
// it.
func (c Config) Validate() error {
	var errs []error
	if c.AccessID == "" || c.AccessKey == "" {
		errs = append(errs, errors.New("maxcompute: accessId and accessKey are required (set them through the environment or a file, see LoadSecrets)"))
	}
	if c.Endpoint == "" {
		errs = append(errs, errors.New("maxcompute: endpoint is required, e.g. http://service.cn-hangzhou.maxcompute.aliyun.com/api"))
	} else if u, err := url.Parse(c.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("maxcompute: endpoint %q is not an http(s) URL", c.Endpoint))
	}
	if c.TunnelEndpoint != "" {
		if u, err := url.Parse(c.TunnelEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("maxcompute: tunnelEndpoint %q is not an http(s) URL", c.TunnelEndpoint))
		}
	}
	if c.Project == "" {
		errs = append(errs, errors.New("maxcompute: project is required"))
	}
	if c.BucketsNum < 1 || c.BucketsNum > 4096 {
		errs = append(errs, fmt.Errorf("maxcompute: buckets-num %d must be 1..4096", c.BucketsNum))
	}
	switch c.CompressAlgorithm {
	case "zlib", "snappy", "raw":
	default:
		errs = append(errs, fmt.Errorf("maxcompute: compress.algorithm %q must be zlib, snappy or raw", c.CompressAlgorithm))
	}
	if c.BucketBufferSize < 1024 || c.TotalBufferSize < c.BucketBufferSize {
		errs = append(errs, fmt.Errorf("maxcompute: bucket.buffer-size (%d) must be at least 1KiB and at most total.buffer-size (%d)", c.BucketBufferSize, c.TotalBufferSize))
	}
	if c.FlushConcurrentNum < 1 {
		errs = append(errs, fmt.Errorf("maxcompute: flush.concurrent-num %d must be at least 1", c.FlushConcurrentNum))
	}
	if c.Retries < 0 {
		errs = append(errs, fmt.Errorf("maxcompute: retries %d must not be negative", c.Retries))
	}
	if c.RetryBaseDelay <= 0 || c.RetryMaxDelay < c.RetryBaseDelay {
		errs = append(errs, errors.New("maxcompute: retry delays must be positive and max ≥ base"))
	}
	if c.RequestTimeout <= 0 || c.CommitTimeout <= 0 {
		errs = append(errs, errors.New("maxcompute: request and commit timeouts must be positive"))
	}
	if c.SlotNum < 1 {
		errs = append(errs, fmt.Errorf("maxcompute: slot count %d must be at least 1", c.SlotNum))
	}
	if c.SessionLifecycleHours < 1 || c.SessionLifecycleHours > 24 {
		errs = append(errs, fmt.Errorf("maxcompute: session lifecycle %dh must be 1..24", c.SessionLifecycleHours))
	}
	if _, err := parsePartitionOption(c.Partition); err != nil {
		errs = append(errs, fmt.Errorf("maxcompute: %w", err))
	}
	if c.KeepAliveInterval <= 0 {
		errs = append(errs, fmt.Errorf("maxcompute: session.keep-alive-interval %s must be positive", c.KeepAliveInterval))
	}
	if life := time.Duration(c.SessionLifecycleHours) * time.Hour; c.SessionMaxAge <= 0 || c.SessionMaxAge >= life {
		errs = append(errs, fmt.Errorf("maxcompute: session.max-age %s must be positive and below the session lifetime (%s)", c.SessionMaxAge, life))
	}
	return errors.Join(errs...)
}

// LogValue renders c for logs without its secrets.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("endpoint", c.Endpoint), slog.String("project", c.Project),
		slog.String("tunnel_endpoint", c.TunnelEndpoint), slog.String("quota", c.QuotaName),
		slog.Bool("access_id_set", c.AccessID != ""), slog.Bool("sts", c.StsToken != ""),
		slog.Int("buckets", c.BucketsNum), slog.String("compress", c.CompressAlgorithm),
		slog.String("partition", c.Partition),
	)
}

// String is LogValue as text, so that printing a Config never shows secrets.
func (c Config) String() string { return c.LogValue().String() }

// Environment variables LoadSecrets reads when a secret is not already set.
const (
	EnvAccessID  = "MAXCOMPUTE_ACCESS_ID"
	EnvAccessKey = "MAXCOMPUTE_ACCESS_KEY"
	EnvStsToken  = "MAXCOMPUTE_STS_TOKEN"
)

// LoadSecrets fills the credentials that are not set: the key and token
// from AccessKeyFile / StsTokenFile when given, otherwise from
// MAXCOMPUTE_ACCESS_ID / MAXCOMPUTE_ACCESS_KEY / MAXCOMPUTE_STS_TOKEN, then
// from the Alibaba Cloud SDK variables ALIBABA_CLOUD_ACCESS_KEY_ID /
// ALIBABA_CLOUD_ACCESS_KEY_SECRET / ALIBABA_CLOUD_SECURITY_TOKEN. getenv is
// os.Getenv in production.
func (c *Config) LoadSecrets(getenv func(string) string) error {
	first := func(keys ...string) string {
		for _, k := range keys {
			if v := getenv(k); v != "" {
				return v
			}
		}
		return ""
	}
	readFile := func(path, what string) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("maxcompute: reading %s file: %w", what, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if c.AccessID == "" {
		c.AccessID = first(EnvAccessID, "ALIBABA_CLOUD_ACCESS_KEY_ID")
	}
	if c.AccessKey == "" {
		if c.AccessKeyFile != "" {
			v, err := readFile(c.AccessKeyFile, "access key")
			if err != nil {
				return err
			}
			c.AccessKey = v
		} else {
			c.AccessKey = first(EnvAccessKey, "ALIBABA_CLOUD_ACCESS_KEY_SECRET")
		}
	}
	if c.StsToken == "" {
		if c.StsTokenFile != "" {
			v, err := readFile(c.StsTokenFile, "STS token")
			if err != nil {
				return err
			}
			c.StsToken = v
		} else {
			c.StsToken = first(EnvStsToken, "ALIBABA_CLOUD_SECURITY_TOKEN")
		}
	}
	return nil
}

// FromOptions builds a Config from DefaultConfig and Flink CDC MaxCompute
// sink options. Both the current names (access-id, tunnel.endpoint, …) and
// the first release's camelCase names (accessId, tunnelEndpoint, …) are
// accepted. Unknown keys are an error, so typos do not pass silently.
func FromOptions(opts map[string]string) (Config, error) {
	c := DefaultConfig()
	for k, v := range opts {
		var err error
		switch k {
		case "accessId", "access-id":
			c.AccessID = v
		case "accessKey", "access-key":
			c.AccessKey = v
		case "accessKeyFile", "access-key-file":
			c.AccessKeyFile = v
		case "endpoint":
			c.Endpoint = v
		case "project":
			c.Project = v
		case "tunnelEndpoint", "tunnel.endpoint":
			c.TunnelEndpoint = v
		case "quotaName", "quota.name":
			c.QuotaName = v
		case "stsToken", "sts-token":
			c.StsToken = v
		case "stsTokenFile", "sts-token-file":
			c.StsTokenFile = v
		case "bucketsNum", "buckets-num":
			c.BucketsNum, err = strconv.Atoi(v)
		case "compressAlgorithm", "compress.algorithm":
			c.CompressAlgorithm = v
		case "totalBatchSize", "total.buffer-size":
			c.TotalBufferSize, err = parseSize(v)
		case "bucketBatchSize", "bucket.buffer-size":
			c.BucketBufferSize, err = parseSize(v)
		case "numFlushConcurrent", "flush.concurrent-num":
			c.FlushConcurrentNum, err = strconv.Atoi(v)
		case "retries":
			c.Retries, err = strconv.Atoi(v)
		case "partition":
			c.Partition = v
		case "session.keep-alive-interval":
			c.KeepAliveInterval, err = time.ParseDuration(v)
		case "session.max-age":
			c.SessionMaxAge, err = time.ParseDuration(v)
		case "session.spool-dir":
			c.SpoolDir = v
		case "numCommitThreads", "commit.thread-num", "type", "name":
			// accepted for compatibility; the sink commits in epoch order
		default:
			return Config{}, fmt.Errorf("maxcompute: unknown sink option %q", k)
		}
		if err != nil {
			return Config{}, fmt.Errorf("maxcompute: option %s=%q: %w", k, v, err)
		}
	}
	return c, nil
}

// parseSize reads "64mb", "4MB", "1024", "512kb".
func parseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"gb", 1 << 30}, {"mb", 1 << 20}, {"kb", 1 << 10}, {"g", 1 << 30}, {"m", 1 << 20}, {"k", 1 << 10}, {"b", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q is not a number with an optional kb/mb/gb unit", s)
	}
	return n * mult, nil
}
