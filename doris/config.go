package doris

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"
)

// Config configures a Doris sink. Secrets (Password) never appear in errors
// or logs.
type Config struct {
	// FENodes are the FE HTTP addresses ("host:8030" or "http://host:8030").
	// Loads, 2PC calls and label lookups go to the first reachable one.
	FENodes []string
	// BENodes, when set, are BE HTTP addresses ("host:8040") that loads are
	// sent to directly. When empty, each load asks an FE which BE to use (the
	// FE's 307 answer) and streams straight to that BE.
	BENodes []string
	// User and Password authenticate HTTP (Basic) and MySQL-protocol calls.
	User     string
	Password string
	// QueryAddr is the FE MySQL-protocol address ("host:9030") used to
	// create and alter target tables. Empty disables table management: the
	// targets must exist.
	QueryAddr string
	// LabelPrefix starts every Stream Load label; it must be unique per job
	// (two jobs with one prefix would collide on labels). Pattern
	// [-_A-Za-z0-9]{1,64}: no ':' (Label relies on that).
	LabelPrefix string
	// LedgerID is the id of the job's ledger (ledger.Ledger.ID). Labels of
	// new loads are "{LabelPrefix}_{LedgerID}_…", so a new or replaced
	// ledger never reuses a label of another; empty gives the labels of
	// shardsync from before ledger ids. Pattern [0-9A-Za-z]{0,32}.
	LedgerID string

	// SequenceColumn, when set, is a BIGINT column that tables the sink
	// creates get as their sequence column (PROPERTIES
	// "function_column.sequence_col"); see Sink for its values. Existing
	// targets are used as they are: their own sequence column, if any, is
	// discovered.
	SequenceColumn string

	// Buckets is the bucket count of created tables; 0 means BUCKETS AUTO
	// (Doris 2.0+).
	Buckets int
	// Replication is the replication_num of created tables; 0 leaves the
	// cluster default.
	Replication int
	// TableProperties are extra PROPERTIES of created tables.
	TableProperties map[string]string
	// DatabaseColumn and TableColumn name the metadata columns that lead the
	// key of created tables (after the source key they make rows of
	// different shards distinct).
	DatabaseColumn string
	TableColumn    string

	// TimeZone is the zone in which source TIMESTAMP values (instants) are
	// written into DATETIME columns, as Flink CDC's pipeline
	// local-time-zone does; nil writes them in UTC.
	TimeZone *time.Location

	// Headers are extra Stream Load headers (Flink's sink.properties.*), e.g.
	// "timeout" or "strict_mode". The headers this sink relies on (format,
	// read_json_by_line, two_phase_commit, label, hidden_columns, Expect,
	// Authorization) cannot be overridden.
	Headers map[string]string

	// Retries is how many times a transport error, a 5xx answer or a
	// transient Doris answer is retried per request (commit, abort, state
	// lookups, BE resolution). Loads themselves are never re-sent.
	Retries int
	// RetryWaitMin and RetryWaitMax bound the exponential backoff.
	RetryWaitMin time.Duration
	RetryWaitMax time.Duration
	// RequestTimeout bounds one non-streaming HTTP request.
	RequestTimeout time.Duration
	// ExpectContinueTimeout is how long a load waits for "100 Continue"
	// before sending body bytes anyway.
	ExpectContinueTimeout time.Duration
	// BufferSize is the bytes of encoded rows a stream holds before it
	// pushes them to the connection; with the transport's own buffer it
	// bounds the memory of one open stream. Writes block while Doris is
	// slower than the source (back-pressure).
	BufferSize int
}

// Defaults of Config.
const (
	DefaultBufferSize = 1 << 20
	defaultRetries    = 5
)

// DefaultConfig returns a Config with every optional field set to its
// default. FENodes, User and LabelPrefix must still be filled in.
func DefaultConfig() Config {
	return Config{
		User:                  "root",
		Buckets:               10,
		DatabaseColumn:        "database_name",
		TableColumn:           "table_name",
		Retries:               defaultRetries,
		RetryWaitMin:          200 * time.Millisecond,
		RetryWaitMax:          10 * time.Second,
		RequestTimeout:        60 * time.Second,
		ExpectContinueTimeout: 10 * time.Second,
		BufferSize:            DefaultBufferSize,
	}
}

var (
	prefixRE   = regexp.MustCompile(`^[-_A-Za-z0-9]{1,64}$`)
	ledgerIDRE = regexp.MustCompile(`^[0-9A-Za-z]{0,32}$`)
)

// reservedHeaders are the Stream Load headers the sink owns.
var reservedHeaders = []string{
	"format", "read_json_by_line", "strip_outer_array", "two_phase_commit", "label",
	"hidden_columns", "expect", "authorization", "transfer-encoding", "content-length",
	"group_commit", "columns", "jsonpaths", "merge_type",
}

// Validate reports the first problem of c.
func (c Config) Validate() error {
	if len(c.FENodes) == 0 {
		return errors.New("doris config: no FE node given: set at least one FE HTTP address (host:8030)")
	}
	for _, n := range append(append([]string(nil), c.FENodes...), c.BENodes...) {
		if _, err := nodeBase(n); err != nil {
			return fmt.Errorf("doris config: %w", err)
		}
	}
	if c.User == "" {
		return errors.New("doris config: user is empty")
	}
	if !prefixRE.MatchString(c.LabelPrefix) {
		return fmt.Errorf("doris config: label prefix %q must match [-_A-Za-z0-9]{1,64} and be unique per job", c.LabelPrefix)
	}
	if !ledgerIDRE.MatchString(c.LedgerID) {
		return fmt.Errorf("doris config: ledger id %q must match [0-9A-Za-z]{0,32}", c.LedgerID)
	}
	if c.QueryAddr != "" {
		if _, _, err := net.SplitHostPort(c.QueryAddr); err != nil {
			return fmt.Errorf("doris config: query address %q is not host:port: %w", c.QueryAddr, err)
		}
	}
	if c.SequenceColumn != "" && (c.SequenceColumn == c.DatabaseColumn || c.SequenceColumn == c.TableColumn ||
		strings.EqualFold(c.SequenceColumn, DeleteSign) || strings.ContainsAny(c.SequenceColumn, "`\x00")) {
		return fmt.Errorf("doris config: sequence column %q must be a plain column name other than the metadata columns", c.SequenceColumn)
	}
	if c.Buckets < 0 || c.Replication < 0 {
		return errors.New("doris config: buckets and replication must not be negative")
	}
	if c.DatabaseColumn == "" || c.TableColumn == "" || c.DatabaseColumn == c.TableColumn {
		return errors.New("doris config: database and table metadata column names must be set and differ")
	}
	for k := range c.Headers {
		for _, r := range reservedHeaders {
			if strings.EqualFold(k, r) {
				return fmt.Errorf("doris config: header %q is set by the sink itself and cannot be overridden", k)
			}
		}
	}
	if c.Retries < 0 {
		return errors.New("doris config: retries must not be negative")
	}
	if c.RetryWaitMin <= 0 || c.RetryWaitMax < c.RetryWaitMin {
		return errors.New("doris config: retry waits must be positive with min <= max")
	}
	if c.RequestTimeout <= 0 || c.ExpectContinueTimeout <= 0 {
		return errors.New("doris config: request and expect-continue timeouts must be positive")
	}
	if c.BufferSize < 4096 {
		return fmt.Errorf("doris config: buffer size %d is below 4096 bytes", c.BufferSize)
	}
	return nil
}

// nodeBase turns "host:port" or "http://host:port" into "http://host:port".
func nodeBase(n string) (string, error) {
	s := strings.TrimRight(n, "/")
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	if !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") {
		return "", fmt.Errorf("node %q: only http and https are supported", n)
	}
	host := s[strings.Index(s, "://")+3:]
	if strings.ContainsAny(host, "/@?#") || host == "" {
		return "", fmt.Errorf("node %q must be host:port without path or credentials", n)
	}
	return s, nil
}
