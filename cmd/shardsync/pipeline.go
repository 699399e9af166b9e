package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/shardsync/shardsync/merge"
)

// A pipeline file is the Flink CDC pipeline YAML (source:, sink:, route:,
// pipeline:) with Flink CDC's option names, plus a few keys of our own. Each
// key the file may hold is in pipelineKeys; most of them set a flag, so a
// file and the flags describe the same job and flags given next to -f
// override the file. The configuration reference (docs/configuration.md) is
// generated from this table and the flags.

// keyKind says what a pipeline key does.
type keyKind uint8

const (
	keySetsFlag    keyKind = iota + 1 // sets Flag to the value
	keyCustom                         // handled by set
	keyIgnored                        // a Flink-only option shardsync does not need: one warning
	keyUnsupported                    // changes results in a way shardsync cannot honour: an error
)

// pipelineKey is one key a pipeline file may hold.
type pipelineKey struct {
	Section string // "source", "sink doris", "sink maxcompute", "route", "pipeline"
	Key     string // the key; a prefix key ends in ".*"
	Kind    keyKind
	Flag    string // the flag it sets (keySetsFlag), or the flag it relates to
	Doc     string // what it does in shardsync
	Secret  bool   // holds a secret: prefer ${ENV_VAR}
	set     func(st *fileState, key, val string) error
}

func (k pipelineKey) prefix() (string, bool) {
	p, ok := strings.CutSuffix(k.Key, ".*")
	return p + ".", ok
}

func (k pipelineKey) matches(key string) bool {
	if p, ok := k.prefix(); ok {
		return strings.HasPrefix(key, p) && len(key) > len(p)
	}
	return k.Key == key
}

// fileState is the state of one pipeline file being applied.
type fileState struct {
	o        *jobOptions
	fs       *pflag.FlagSet // bound to o
	path     string
	host     string
	port     string
	warnings []string
	// problems are every error found; the file is read to its end so that
	// `validate` lists them all.
	problems []error
	// lines: flag name → line of the key that set it (for messages)
	lines map[string]int
}

// problem records an error of the file and goes on.
func (st *fileState) problem(err error) {
	if err != nil {
		st.problems = append(st.problems, err)
	}
}

func (st *fileState) warn(line int, format string, args ...any) {
	st.warnings = append(st.warnings, fmt.Sprintf("%s:%d: ", st.path, line)+fmt.Sprintf(format, args...))
}

// Sections of a pipeline file.
const (
	secSource = "source"
	secDoris  = "sink doris"
	secMC     = "sink maxcompute"
	secRoute  = "route"
	secPipe   = "pipeline"
)

func flagKey(section, key, flag, doc string) pipelineKey {
	return pipelineKey{Section: section, Key: key, Kind: keySetsFlag, Flag: flag, Doc: doc}
}

func ignoredKey(section, key, why string) pipelineKey {
	return pipelineKey{Section: section, Key: key, Kind: keyIgnored, Doc: why}
}

func customKey(section, key, flag, doc string, set func(st *fileState, key, val string) error) pipelineKey {
	return pipelineKey{Section: section, Key: key, Kind: keyCustom, Flag: flag, Doc: doc, set: set}
}

func unsupportedKey(section, key, why string) pipelineKey {
	return pipelineKey{Section: section, Key: key, Kind: keyUnsupported, Doc: why}
}

func mcOption(key, doc string) pipelineKey {
	return customKey(secMC, key, "maxcompute-option", doc, func(st *fileState, k, v string) error {
		if st.o.mcOptions == nil {
			st.o.mcOptions = map[string]string{}
		}
		st.o.mcOptions[k] = v
		return nil
	})
}

const (
	whyNameIgnored = "a display name; ignored (use pipeline.name for the job's name)"
	whyFlinkTuning = "Flink connector tuning with no counterpart in shardsync; ignored"
)

// dorisOwnHeaders are Stream Load headers the Doris sink sets itself. Flink
// users often set them in sink.properties.*; they are dropped with a
// warning instead of failing the job.
var dorisOwnHeaders = []string{"format", "read_json_by_line", "strip_outer_array", "two_phase_commit", "label",
	"hidden_columns", "columns", "jsonpaths", "merge_type", "group_commit", "expect"}

// pipelineKeys is every key a pipeline file may hold.
var pipelineKeys = []pipelineKey{
	// source: (type mysql)
	customKey(secSource, "type", "", "must be mysql (MySQL and MariaDB)", func(_ *fileState, _, v string) error {
		if v != "mysql" {
			return fmt.Errorf("source type %q is not supported: use mysql (it reads MySQL and MariaDB) or postgres", v)
		}
		return nil
	}),
	ignoredKeyQuiet(secSource, "name", whyNameIgnored),
	customKey(secSource, "hostname", "mysql", "source host; with port it makes --mysql host:port", func(st *fileState, _, v string) error {
		st.host = v
		return nil
	}),
	customKey(secSource, "port", "mysql", "source port (default 3306)", func(st *fileState, _, v string) error {
		if _, err := strconv.ParseUint(v, 10, 16); err != nil {
			return fmt.Errorf("port %q is not a port number", v)
		}
		st.port = v
		return nil
	}),
	flagKey(secSource, "username", "mysql-user", "source user (needs SELECT, REPLICATION SLAVE, REPLICATION CLIENT)"),
	{Section: secSource, Key: "password", Kind: keyCustom, Secret: true, Flag: "mysql-password-file",
		Doc: "source password; write ${ENV_VAR}, or leave it out and set $" + envMySQLPassword,
		set: func(st *fileState, _, v string) error { st.o.mysqlPassword = v; return nil }},
	flagKey(secSource, "tables", "sources", "Flink CDC table selector: comma-separated db.table regexes, an unescaped dot separates database and table, \\. is a regex dot"),
	customKey(secSource, "server-id", "server-id", "replica server id, or a Flink range such as 5400-5408 (shardsync reads the binlog once and uses the first id)", func(st *fileState, _, v string) error {
		first, _, _ := strings.Cut(v, "-")
		id, err := strconv.ParseUint(strings.TrimSpace(first), 10, 32)
		if err != nil {
			return fmt.Errorf("server-id %q must be a number or a range such as 5400-5408", v)
		}
		return st.fs.Set("server-id", strconv.FormatUint(id, 10))
	}),
	customKey(secSource, "server-time-zone", "", "checked to be a valid zone; shardsync reads TIMESTAMP columns as UTC instants and DATETIME as wall-clock text, so the zone does not change any value", func(_ *fileState, _, v string) error {
		if _, err := time.LoadLocation(v); err != nil {
			return fmt.Errorf("server-time-zone %q is not a time zone name: %w", v, err)
		}
		return nil
	}),
	flagKey(secSource, "scan.incremental.snapshot.chunk.size", "chunk-size", "rows per snapshot chunk"),
	flagKey(secSource, "snapshot-mode", "snapshot-mode", "auto, consistent or watermark (shardsync key; see --snapshot-mode)"),
	customKey(secSource, "scan.startup.mode", "", "only initial (snapshot, then binlog) is supported", func(_ *fileState, _, v string) error {
		if v != "initial" {
			return fmt.Errorf("scan.startup.mode %q is not supported: shardsync always starts with a snapshot and then follows the binlog (initial); remove the key", v)
		}
		return nil
	}),
	customKey(secSource, "schema-change.enabled", "", "must be true: shardsync applies compatible schema changes", func(_ *fileState, _, v string) error {
		if b, err := strconv.ParseBool(v); err != nil || !b {
			return fmt.Errorf("schema-change.enabled %q is not supported: shardsync always follows compatible schema changes (added columns, widened types); remove the key", v)
		}
		return nil
	}),
	unsupportedKey(secSource, "tables.exclude", "not supported: narrow the tables patterns instead"),
	ignoredKey(secSource, "scan.snapshot.fetch.size", whyFlinkTuning),
	ignoredKey(secSource, "scan.incremental.snapshot.enabled", "shardsync always snapshots incrementally, in chunks, without locks; ignored"),
	ignoredKey(secSource, "scan.incremental.snapshot.chunk.key-column", "shardsync chunks by the primary key; ignored"),
	ignoredKey(secSource, "scan.incremental.snapshot.backfill.skip", "shardsync never needs a backfill (each chunk is read at its own binlog position); ignored"),
	ignoredKey(secSource, "scan.incremental.snapshot.unbounded-chunk-first.enabled", whyFlinkTuning),
	ignoredKey(secSource, "scan.incremental.close-idle-reader.enabled", whyFlinkTuning),
	ignoredKey(secSource, "scan.newly-added-table.enabled", "shardsync picks up new shards that match while it runs; ignored"),
	ignoredKey(secSource, "scan.binlog.newly-added-table.enabled", "shardsync picks up new shards that match while it runs; ignored"),
	ignoredKey(secSource, "scan.parse.online.schema.changes.enabled", whyFlinkTuning),
	ignoredKey(secSource, "heartbeat.interval", "shardsync asks the server for binlog heartbeats itself; ignored"),
	ignoredKey(secSource, "connect.timeout", whyFlinkTuning),
	ignoredKey(secSource, "connect.max-retries", whyFlinkTuning),
	ignoredKey(secSource, "connection.pool.size", whyFlinkTuning),
	ignoredKey(secSource, "chunk-meta.group.size", whyFlinkTuning),
	ignoredKey(secSource, "chunk-key.even-distribution.factor.upper-bound", whyFlinkTuning),
	ignoredKey(secSource, "chunk-key.even-distribution.factor.lower-bound", whyFlinkTuning),
	ignoredKey(secSource, "metadata.list", "shardsync always writes the database and table metadata columns (pipeline.database-column, pipeline.table-column); ignored"),
	ignoredKey(secSource, "include-comments.enabled", whyFlinkTuning),
	ignoredKey(secSource, "treat-tinyint1-as-boolean.enabled", "shardsync keeps TINYINT(1) as TINYINT; ignored"),
	ignoredKey(secSource, "jdbc.properties.*", "JDBC driver properties; shardsync does not use JDBC; ignored"),
	ignoredKey(secSource, "debezium.*", "Debezium properties; shardsync does not use Debezium; ignored"),

	// sink: (type doris)
	ignoredKeyQuiet(secDoris, "type", "doris or maxcompute"),
	ignoredKeyQuiet(secDoris, "name", whyNameIgnored),
	flagKey(secDoris, "fenodes", "doris-fe", "Doris FE HTTP host:port[,host:port]"),
	flagKey(secDoris, "benodes", "doris-be", "Doris BE HTTP host:port[,host:port] to load into directly"),
	flagKey(secDoris, "username", "doris-user", "Doris user"),
	{Section: secDoris, Key: "password", Kind: keyCustom, Secret: true, Flag: "doris-password-file",
		Doc: "Doris password; write ${ENV_VAR}, or leave it out and set $" + envDorisPassword,
		set: func(st *fileState, _, v string) error { st.o.dorisPassword = v; return nil }},
	customKey(secDoris, "jdbc-url", "doris-query", "jdbc:mysql://host:9030[/db]: the FE MySQL-protocol address used to create and alter targets", func(st *fileState, _, v string) error {
		addr, err := jdbcHostPort(v)
		if err != nil {
			return err
		}
		return st.fs.Set("doris-query", addr)
	}),
	flagKey(secDoris, "sink.label-prefix", "label-prefix", "Stream Load label prefix, unique per job"),
	customKey(secDoris, "sink.properties.*", "doris-load-header", "Stream Load headers, e.g. sink.properties.timeout: 600; the ones the sink sets itself (format, read_json_by_line, two_phase_commit, …) are ignored with a warning", func(st *fileState, k, v string) error {
		h := strings.TrimPrefix(k, "sink.properties.")
		if slices.ContainsFunc(dorisOwnHeaders, func(s string) bool { return strings.EqualFold(s, h) }) {
			st.warnings = append(st.warnings, fmt.Sprintf("%s: sink.%s: shardsync sets the %s header itself (JSON lines, two-phase commit); ignored", st.path, k, h))
			return nil
		}
		if st.o.dorisHeaders == nil {
			st.o.dorisHeaders = map[string]string{}
		}
		st.o.dorisHeaders[h] = v
		return nil
	}),
	customKey(secDoris, "table.create.properties.*", "doris-table-property", "PROPERTIES of the tables shardsync creates, e.g. table.create.properties.replication_num: 1", func(st *fileState, k, v string) error {
		p := strings.TrimPrefix(k, "table.create.properties.")
		if p == "replication_num" {
			return st.fs.Set("doris-replication", v)
		}
		if st.o.dorisTableProps == nil {
			st.o.dorisTableProps = map[string]string{}
		}
		st.o.dorisTableProps[p] = v
		return nil
	}),
	flagKey(secDoris, "table.create.num-buckets", "doris-buckets", "buckets of the tables shardsync creates (0: BUCKETS AUTO)"),
	flagKey(secDoris, "sequence-column", "sequence-column", "BIGINT sequence column of the tables shardsync creates, filled per change (shardsync key; see --sequence-column)"),
	ignoredKey(secDoris, "auto-redirect", "shardsync follows the FE's redirect unless benodes is set; ignored"),
	ignoredKey(secDoris, "charset-encoding", "shardsync always sends UTF-8; ignored"),
	ignoredKey(secDoris, "sink.enable-2pc", "shardsync always uses two-phase commit; ignored"),
	ignoredKey(secDoris, "sink.enable-delete", "shardsync always applies deletes; ignored"),
	ignoredKey(secDoris, "sink.enable.batch-mode", "shardsync writes one two-phase-commit load per target and epoch; ignored"),
	ignoredKey(secDoris, "sink.flush.queue-size", whyFlinkTuning),
	ignoredKey(secDoris, "sink.buffer-flush.max-rows", "epochs are cut by pipeline.max-epoch-rows and pipeline.checkpoint-interval; ignored"),
	ignoredKey(secDoris, "sink.buffer-flush.max-bytes", "epochs are cut by pipeline.max-epoch-rows and pipeline.checkpoint-interval; ignored"),
	ignoredKey(secDoris, "sink.buffer-flush.interval", "epochs are cut by pipeline.checkpoint-interval; ignored"),
	ignoredKey(secDoris, "sink.buffer-size", whyFlinkTuning),
	ignoredKey(secDoris, "sink.buffer-count", whyFlinkTuning),
	flagKey(secDoris, "sink.max-retries", "doris-retries", "retries of one Doris request after a network error or a 5xx; longer outages are waited out (pipeline.max-outage)"),
	ignoredKey(secDoris, "sink.check-interval", whyFlinkTuning),
	ignoredKey(secDoris, "sink.use-cache", whyFlinkTuning),
	ignoredKey(secDoris, "sink.ignore.update-before", "shardsync writes update after-images as upserts; ignored"),
	ignoredKey(secDoris, "sink.ignore.commit-error", "shardsync never skips a commit; an epoch it cannot settle stops the job for `shardsync txn resolve`; ignored"),
	ignoredKey(secDoris, "table.create.auto-partition.properties.*", "shardsync creates unpartitioned tables; create partitioned targets yourself; ignored"),

	// sink: (type maxcompute)
	ignoredKeyQuiet(secMC, "type", "doris or maxcompute"),
	ignoredKeyQuiet(secMC, "name", whyNameIgnored),
	flagKey(secMC, "endpoint", "maxcompute-endpoint", "MaxCompute service endpoint"),
	flagKey(secMC, "project", "maxcompute-project", "MaxCompute project holding the targets"),
	flagKey(secMC, "access-id", "maxcompute-access-id", "AccessKey id (also accessId)"),
	flagKey(secMC, "accessId", "maxcompute-access-id", "AccessKey id (first-release name of access-id)"),
	{Section: secMC, Key: "access-key", Kind: keyCustom, Secret: true, Flag: "maxcompute-access-key-file",
		Doc: "AccessKey secret (also accessKey); write ${ENV_VAR}, or leave it out and set $MAXCOMPUTE_ACCESS_KEY", set: setMCSecret},
	{Section: secMC, Key: "accessKey", Kind: keyCustom, Secret: true, Flag: "maxcompute-access-key-file",
		Doc: "AccessKey secret (first-release name of access-key)", set: setMCSecret},
	{Section: secMC, Key: "sts-token", Kind: keyCustom, Secret: true, Flag: "maxcompute-option",
		Doc: "STS token for temporary credentials (also stsToken); or $MAXCOMPUTE_STS_TOKEN", set: setMCSecret},
	{Section: secMC, Key: "stsToken", Kind: keyCustom, Secret: true, Flag: "maxcompute-option",
		Doc: "STS token (first-release name of sts-token)", set: setMCSecret},
	flagKey(secMC, "access-key-file", "maxcompute-access-key-file", "file holding the AccessKey secret"),
	mcOption("sts-token-file", "file holding the STS token"),
	flagKey(secMC, "tunnel.endpoint", "maxcompute-tunnel-endpoint", "tunnel endpoint (default: the one the project announces; also tunnelEndpoint)"),
	flagKey(secMC, "tunnelEndpoint", "maxcompute-tunnel-endpoint", "first-release name of tunnel.endpoint"),
	flagKey(secMC, "quota.name", "maxcompute-quota", "exclusive tunnel resource group (also quotaName)"),
	flagKey(secMC, "quotaName", "maxcompute-quota", "first-release name of quota.name"),
	flagKey(secMC, "buckets-num", "maxcompute-buckets", "write.bucket.num of created Delta tables (also bucketsNum)"),
	flagKey(secMC, "bucketsNum", "maxcompute-buckets", "first-release name of buckets-num"),
	mcOption("compress.algorithm", "zlib, snappy or raw (also compressAlgorithm)"),
	mcOption("compressAlgorithm", "first-release name of compress.algorithm"),
	mcOption("total.buffer-size", "bytes buffered per table before every bucket is sent, e.g. 64MB (also totalBatchSize)"),
	mcOption("totalBatchSize", "first-release name of total.buffer-size"),
	mcOption("bucket.buffer-size", "bytes buffered per bucket or block, e.g. 4MB (also bucketBatchSize)"),
	mcOption("bucketBatchSize", "first-release name of bucket.buffer-size"),
	mcOption("flush.concurrent-num", "buckets sent at once (also numFlushConcurrent)"),
	mcOption("numFlushConcurrent", "first-release name of flush.concurrent-num"),
	mcOption("retries", "retries for 5xx and network errors"),
	mcOption("partition", "partition of every target: k=v (fixed) or k (the value of column k), comma-separated levels, fixed first"),
	mcOption("session.keep-alive-interval", "how often open upsert sessions are reloaded so they do not expire as idle (default 30s)"),
	mcOption("session.max-age", "age at which an epoch's upsert session is re-opened (rows re-sent); a plain table's epoch fails (default 23h30m)"),
	mcOption("session.spool-dir", "directory for the copy of what each upsert session received (default: the system temp dir)"),
	ignoredKey(secMC, "commit.thread-num", "shardsync commits sessions in epoch order; ignored"),
	ignoredKey(secMC, "numCommitThreads", "shardsync commits sessions in epoch order; ignored"),

	// route: (a list)
	{Section: secRoute, Key: "source-table", Kind: keyCustom, Flag: "route", Doc: "Flink CDC db.table regex of the shards this rule takes"},
	{Section: secRoute, Key: "sink-table", Kind: keyCustom, Flag: "route", Doc: "target db.table; may hold the replace-symbol"},
	{Section: secRoute, Key: "replace-symbol", Kind: keyCustom, Flag: "route-replace-symbol", Doc: "text in sink-table replaced by each source table's name, e.g. <>"},
	{Section: secRoute, Key: "description", Kind: keyCustom, Doc: "free text, printed with the routes"},

	// pipeline:
	flagKey(secPipe, "name", "name", "job name shown in status and metrics"),
	flagKey(secPipe, "parallelism", "readers", "tables snapshotted in parallel (the binlog is always read once)"),
	flagKey(secPipe, "schema.change.behavior", "schema-change-behavior", "exception, evolve, try_evolve, lenient (default) or ignore: what schema changes and shard TRUNCATE/DROP/RENAME do (docs/shard-merging.md)"),
	flagKey(secPipe, "dropped-shard-rows", "dropped-shard-rows", "keep or delete: what a DROP (or RENAME out of the routes) of a shard does to its rows in the target (shardsync key)"),
	flagKey(secPipe, "local-time-zone", "local-time-zone", "zone in which TIMESTAMP values are written into Doris DATETIME columns, as Flink CDC does (e.g. Asia/Shanghai); without it UTC. DATETIME stays wall-clock text; MaxCompute TIMESTAMP stays an instant"),
	ignoredKey(secPipe, "execution.runtime-mode", "shardsync always streams; ignored"),
	ignoredKey(secPipe, "schema-operator.rpc-timeout", whyFlinkTuning),
	ignoredKey(secPipe, "operator.uid.prefix", whyFlinkTuning),
	flagKey(secPipe, "checkpoint-interval", "checkpoint-interval", "how often an epoch is committed (shardsync key), e.g. 30s"),
	flagKey(secPipe, "max-epoch-rows", "max-epoch-rows", "close an epoch early once it holds this many rows (shardsync key)"),
	flagKey(secPipe, "max-outage", "max-outage", "exit when the source or a sink stays unreachable this long, e.g. 30m; 0 (default): wait out outages however long (shardsync key)"),
	customKey(secPipe, "restart-strategy.type", "", "exponential-delay (Flink's name for what shardsync does): unreachable sources and sinks are retried with a doubling, capped wait", func(_ *fileState, _, v string) error {
		if v != "exponential-delay" && v != "exponential" {
			return fmt.Errorf("restart-strategy.type %q is not supported: shardsync retries with exponential delay (restart-strategy.exponential-delay.*); bound outages with pipeline.max-outage", v)
		}
		return nil
	}),
	flagKey(secPipe, "restart-strategy.exponential-delay.initial-backoff", "restart-initial-backoff", "first wait before retrying an unreachable source or sink (Flink's option; Go duration, e.g. 1s)"),
	flagKey(secPipe, "restart-strategy.exponential-delay.max-backoff", "restart-max-backoff", "longest wait between retries (Flink's option; Go duration, e.g. 30s)"),
	flagKey(secPipe, "memory-limit", "memory-limit", "soft limit of the Go memory, e.g. 128MiB; 0: none (shardsync key)"),
	flagKey(secPipe, "ledger", "ledger", "ledger file (shardsync key)"),
	flagKey(secPipe, "database-column", "database-column", "name of the source-database metadata column (shardsync key)"),
	flagKey(secPipe, "table-column", "table-column", "name of the source-table metadata column (shardsync key)"),
	flagKey(secPipe, "http-addr", "http-addr", "metrics, health and status address (shardsync key)"),
	flagKey(secPipe, "log-format", "log-format", "text or json (shardsync key)"),
	flagKey(secPipe, "log-level", "log-level", "debug, info, warn or error (shardsync key)"),
}

// ignoredKeyQuiet is accepted without a warning (names, and the type that
// chose the section).
func ignoredKeyQuiet(section, key, doc string) pipelineKey {
	return pipelineKey{Section: section, Key: key, Kind: keyCustom, Doc: doc, set: func(*fileState, string, string) error { return nil }}
}

func setMCSecret(st *fileState, k, v string) error {
	if strings.HasPrefix(strings.ToLower(k), "sts") {
		st.o.mcStsToken = v
	} else {
		st.o.mcAccessKey = v
	}
	return nil
}

// checkSchemaChangeBehavior accepts Flink CDC's schema.change.behavior
// values (case-insensitive, as Flink CDC reads them).
func checkSchemaChangeBehavior(v string) error {
	if v == "" || slices.Contains(merge.Behaviors, strings.ToLower(v)) {
		return nil
	}
	return usagef("schema.change.behavior (--schema-change-behavior) %q: use %s", v, strings.Join(merge.Behaviors, ", "))
}

// jdbcHostPort reads host:port from jdbc:mysql://host:port/db.
func jdbcHostPort(s string) (string, error) {
	u, err := url.Parse(strings.TrimPrefix(s, "jdbc:"))
	if err != nil || u.Host == "" || !strings.HasPrefix(s, "jdbc:mysql://") {
		return "", fmt.Errorf("jdbc-url %q must look like jdbc:mysql://fe-host:9030", s)
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "9030"), nil
	}
	return u.Host, nil
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv replaces ${NAME} with the variable's value; an unset variable
// is an error naming it (never the value).
func expandEnv(s string, getenv func(string) (string, bool)) (string, error) {
	var missing []string
	out := envRef.ReplaceAllStringFunc(s, func(m string) string {
		name := m[2 : len(m)-1]
		v, ok := getenv(name)
		if !ok {
			missing = append(missing, name)
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("${%s} is not set in the environment", missing[0])
	}
	return out, nil
}

// pipelineSections are the top-level keys of a pipeline file.
var pipelineSections = []string{"source", "sink", "route", "pipeline", "transform"}

// loadPipelineFile reads a pipeline file into job options: the flags'
// defaults, then the file, then every flag set in cli (flags override the
// file). It returns warnings for Flink-only keys it ignores.
func loadPipelineFile(path string, getenv func(string) (string, bool), cli *pflag.FlagSet) (jobOptions, []string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return jobOptions{}, nil, usagef("reading the pipeline file: %v", err)
	}
	o, warns, perr := parsePipeline(path, b, getenv)
	if cli != nil {
		if err := overlayFlags(&o, cli); err != nil {
			return o, warns, errors.Join(perr, err)
		}
	}
	return o, warns, perr
}

// parsePipeline applies a pipeline file's text to the flags' defaults. It
// reads the whole file: the error lists every problem (each with its line),
// and the options hold every key that was good.
func parsePipeline(path string, text []byte, getenv func(string) (string, bool)) (jobOptions, []string, error) {
	var o jobOptions
	fs := pflag.NewFlagSet("pipeline", pflag.ContinueOnError)
	o.addFlags(fs)
	st := &fileState{o: &o, fs: fs, path: path, lines: map[string]int{}}
	fail := func(line int, format string, args ...any) {
		st.problem(usageError{fmt.Errorf("%s:%d: %s", path, line, fmt.Sprintf(format, args...))})
	}
	done := func() (jobOptions, []string, error) {
		o.fileLines = st.lines
		if len(st.problems) > 0 {
			return o, st.warnings, usageError{errors.Join(st.problems...)}
		}
		return o, st.warnings, nil
	}

	var doc yaml.Node
	if err := yaml.Unmarshal(text, &doc); err != nil {
		return o, nil, usagef("%s: not valid YAML: %v", path, err)
	}
	if len(doc.Content) == 0 {
		return o, nil, usagef("%s is empty: it needs at least source: and sink:", path)
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return o, nil, usagef("%s:%d: the file must be a mapping with source:, sink:, route: and pipeline:", path, root.Line)
	}
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch k.Value {
		case "source", "sink", "pipeline", "route":
			if seen[k.Value] != nil {
				fail(k.Line, "%s: appears twice", k.Value)
				continue
			}
			seen[k.Value] = v
		case "transform":
			fail(k.Line, "transform: is not supported: shardsync writes each row as it is, plus the database and table metadata columns; remove the transform rules")
		default:
			fail(k.Line, "unknown key %q at the top level; did you mean %q? (known: source, sink, route, pipeline)", k.Value, closest(k.Value, pipelineSections))
		}
	}
	src, sink := seen["source"], seen["sink"]
	srcSection := secSource
	if src == nil {
		fail(root.Line, "source: is missing (type: mysql, hostname, port, username, tables, ...)")
	} else {
		if isPostgresSource(src) {
			srcSection = secPGSource
		} else if t, _ := sectionType(src, path); t == "kafka" {
			srcSection = secKafka
		}
		applySection(st, srcSection, src, getenv)
	}
	if sink == nil {
		fail(root.Line, "sink: is missing (type: doris or maxcompute, ...)")
	} else if sinkType, err := sectionType(sink, path); err != nil {
		st.problem(err)
	} else {
		switch sinkType {
		case "doris":
			_ = fs.Set("sink", "doris")
			applySection(st, secDoris, sink, getenv)
		case "maxcompute":
			_ = fs.Set("sink", "maxcompute")
			applySection(st, secMC, sink, getenv)
		default:
			fail(sink.Line, "sink type %q is not supported: use doris or maxcompute", sinkType)
		}
	}
	if p := seen["pipeline"]; p != nil {
		applySection(st, secPipe, p, getenv)
	}
	if r := seen["route"]; r != nil {
		applyRoutes(st, r, getenv)
	}
	if st.host != "" || st.port != "" {
		host, port := st.host, st.port
		if host == "" {
			fail(src.Line, "source: port is set but hostname is not")
			return done()
		}
		flag := "mysql"
		if srcSection == secPGSource {
			flag = "postgres"
			if port == "" {
				port = "5432"
			}
		}
		if port == "" {
			port = "3306"
		}
		_ = fs.Set(flag, net.JoinHostPort(host, port))
	}
	return done()
}

// sectionType reads a section's type: key.
func sectionType(n *yaml.Node, path string) (string, error) {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "type" {
				return n.Content[i+1].Value, nil
			}
		}
	}
	return "", usagef("%s:%d: sink: needs type: doris or type: maxcompute", path, n.Line)
}

// flatEntry is one key: value of a section, nested maps flattened with dots.
type flatEntry struct {
	key, val string
	line     int
}

func flatten(prefix string, n *yaml.Node, path string, out *[]flatEntry) error {
	if n.Kind != yaml.MappingNode {
		return usagef("%s:%d: %s must be a mapping of key: value", path, n.Line, strings.TrimSuffix(prefix, "."))
	}
	var errs []error
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := prefix + k.Value
		switch v.Kind {
		case yaml.MappingNode:
			errs = append(errs, flatten(key+".", v, path, out))
		case yaml.ScalarNode:
			val := v.Value
			if v.Tag == "!!null" {
				val = ""
			}
			*out = append(*out, flatEntry{key: key, val: val, line: k.Line})
		default:
			errs = append(errs, usagef("%s:%d: %s must be a single value", path, k.Line, key))
		}
	}
	return errors.Join(errs...)
}

func sectionKeys(section string) []pipelineKey {
	var out []pipelineKey
	for _, k := range pipelineKeys {
		if k.Section == section {
			out = append(out, k)
		}
	}
	return out
}

func lookupKey(section, key string) (pipelineKey, bool) {
	for _, k := range sectionKeys(section) {
		if k.matches(key) {
			return k, true
		}
	}
	return pipelineKey{}, false
}

// unknownKeyError names the key and the closest known one.
func unknownKeyError(path string, line int, section, key string) error {
	var names []string
	for _, k := range sectionKeys(section) {
		names = append(names, k.Key)
	}
	where := strings.Replace(section, " ", ": (", 1)
	if strings.Contains(where, "(") {
		where += ")"
	} else {
		where += ":"
	}
	return usageError{fmt.Errorf("%s:%d: unknown key %q in %s; did you mean %q? (see docs/configuration.md)", path, line, key, where, closest(key, names))}
}

// applySection applies every entry of a section, recording each problem.
func applySection(st *fileState, section string, n *yaml.Node, getenv func(string) (string, bool)) {
	var entries []flatEntry
	top := strings.Fields(section)[0]
	st.problem(flatten("", n, st.path, &entries))
	for _, e := range entries {
		k, ok := lookupKey(section, e.key)
		if !ok {
			st.problem(unknownKeyError(st.path, e.line, section, e.key))
			continue
		}
		if k.Flag != "" {
			st.lines[k.Flag] = e.line
		}
		raw := e.val
		val, err := expandEnv(raw, getenv)
		if err != nil {
			st.problem(usagef("%s:%d: %s.%s: %v", st.path, e.line, top, e.key, err))
			continue
		}
		if k.Secret && raw != "" && !envRef.MatchString(raw) {
			st.warn(e.line, "%s.%s is written in the file in plain text; prefer ${ENV_VAR} (the value is not shown)", top, e.key)
		}
		if err := applyKey(st, k, e.key, val); err != nil {
			what := fmt.Sprintf("%q", val)
			if k.Secret {
				what = "(secret not shown)"
			}
			st.problem(usagef("%s:%d: %s.%s %s: %v", st.path, e.line, top, e.key, what, unwrapUsage(err)))
			if f := st.fs.Lookup(k.Flag); f != nil && k.Kind == keySetsFlag {
				_ = f.Value.Set(f.DefValue) // the problem is named once, not again by the job's checks
			}
			continue
		}
		if k.Kind == keyIgnored {
			st.warn(e.line, "%s.%s: %s", top, e.key, k.Doc)
		}
	}
}

func applyKey(st *fileState, k pipelineKey, key, val string) error {
	switch k.Kind {
	case keySetsFlag:
		return st.fs.Set(k.Flag, val)
	case keyCustom:
		if k.set == nil {
			return fmt.Errorf("only valid inside a route: entry")
		}
		return k.set(st, key, val)
	case keyUnsupported:
		return errors.New(k.Doc)
	}
	return nil
}

func unwrapUsage(err error) error {
	var u usageError
	if errors.As(err, &u) {
		return u.err
	}
	return err
}

func applyRoutes(st *fileState, n *yaml.Node, getenv func(string) (string, bool)) {
	if n.Kind != yaml.SequenceNode {
		st.problem(usagef("%s:%d: route: must be a list of rules (- source-table: ..., sink-table: ...)", st.path, n.Line))
		return
	}
	for _, item := range n.Content {
		var entries []flatEntry
		if err := flatten("route.", item, st.path, &entries); err != nil {
			st.problem(err)
			continue
		}
		var r routeSpec
		for _, e := range entries {
			key := strings.TrimPrefix(e.key, "route.")
			if _, ok := lookupKey(secRoute, key); !ok {
				st.problem(unknownKeyError(st.path, e.line, secRoute, key))
				continue
			}
			val, err := expandEnv(e.val, getenv)
			if err != nil {
				st.problem(usagef("%s:%d: route.%s: %v", st.path, e.line, key, err))
				continue
			}
			switch key {
			case "source-table":
				r.Source = val
			case "sink-table":
				r.Sink = val
			case "replace-symbol":
				r.ReplaceSymbol = val
			case "description":
				r.Description = val
			}
		}
		if r.Source == "" || r.Sink == "" {
			st.problem(usagef("%s:%d: a route needs source-table and sink-table", st.path, item.Line))
			continue
		}
		st.lines["route"] = item.Line
		st.o.routes = append(st.o.routes, r)
	}
}

// mapFlag returns the map a map-valued flag is bound to.
func (o *jobOptions) mapFlag(name string) *map[string]string {
	switch name {
	case "maxcompute-option":
		return &o.mcOptions
	case "doris-load-header":
		return &o.dorisHeaders
	case "doris-table-property":
		return &o.dorisTableProps
	}
	return nil
}

// overlayFlags sets on o every job flag the user gave in cli: flags
// override the pipeline file. Map flags add to the file's entries; --route
// replaces the file's routes.
func overlayFlags(o *jobOptions, cli *pflag.FlagSet) error {
	// A flag set bound to o's fields: addFlags resets them to the
	// defaults, so restore what the file set; fs then writes into o.
	fs := pflag.NewFlagSet("overlay", pflag.ContinueOnError)
	saved := *o
	o.addFlags(fs)
	*o = saved
	var err error
	cli.Visit(func(f *pflag.Flag) {
		if err != nil || fs.Lookup(f.Name) == nil {
			return
		}
		if rf, ok := f.Value.(*routeFlag); ok {
			o.routes = append([]routeSpec(nil), *rf.dst...)
			return
		}
		if dst := o.mapFlag(f.Name); dst != nil {
			m, gerr := cli.GetStringToString(f.Name)
			if gerr != nil {
				err = gerr
				return
			}
			if *dst == nil {
				*dst = map[string]string{}
			}
			for k, v := range m {
				(*dst)[k] = v
			}
			return
		}
		if serr := fs.Set(f.Name, f.Value.String()); serr != nil {
			err = usagef("--%s: %v", f.Name, serr)
		}
	})
	return err
}

// closest returns the candidate nearest to s by edit distance.
func closest(s string, candidates []string) string {
	best, bestD := "", -1
	for _, c := range candidates {
		d := editDistance(strings.ToLower(s), strings.ToLower(c))
		if bestD < 0 || d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// osLookupEnv is os.LookupEnv, the getenv of production.
func osLookupEnv(name string) (string, bool) { return os.LookupEnv(name) }
