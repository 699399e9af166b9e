package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/spf13/pflag"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/doris"
	"github.com/shardsync/shardsync/ledger"
	"github.com/shardsync/shardsync/maxcompute"
	"github.com/shardsync/shardsync/merge"
	"github.com/shardsync/shardsync/source/kafka"
	"github.com/shardsync/shardsync/source/postgres"
	"github.com/shardsync/shardsync/twopc"
)

// Environment variables that carry secrets. Secrets are never taken from
// argv (where `ps` shows them) and never printed.
const (
	envMySQLPassword = "SHARDSYNC_MYSQL_PASSWORD"
	envDorisPassword = "SHARDSYNC_DORIS_PASSWORD"
)

// jobOptions is everything a job run needs, as the user gave it: flags,
// or a pipeline file (pipeline.go) with flags overriding it.
type jobOptions struct {
	sources, tables, target string
	sinks                   string
	name                    string

	mysqlAddr, mysqlUser, mysqlPasswordFile string
	serverID                                uint32
	chunkSize, readers                      int
	snapshotMode                            string

	dorisFE, dorisBE, dorisUser, dorisPasswordFile, dorisQuery string
	buckets, replication                                       int
	dorisRetries                                               int
	localTimeZone                                              string
	dorisHeaders, dorisTableProps                              map[string]string

	mcEndpoint, mcProject, mcTunnel, mcQuota, mcAccessID, mcKeyFile string
	mcBuckets                                                       int
	mcOptions                                                       map[string]string

	routes       []routeSpec
	routeSymbol  string
	dbColumn     string
	tableColumn  string
	schemaChange string
	droppedRows  string

	ledgerPath, labelPrefix string
	recreateTarget          bool   // claim.go
	sequenceColumn          string // Doris sequence column of created targets
	checkpointInterval      time.Duration
	maxEpochRows            int

	// outages (outage.go)
	maxOutage                                time.Duration
	restartInitialBackoff, restartMaxBackoff time.Duration

	httpAddr, progress string
	pprof              bool
	memoryLimit        string

	logFormat, logLevel string

	// fileLines: flag name → line of the pipeline-file key that set it.
	fileLines map[string]int
	kafka     kafkaOptions // the Kafka source (kafka.go); --kafka selects it

	// Secrets given in a pipeline file (after ${ENV} substitution). They
	// have no flag: argv is visible to every local user.
	mysqlPassword, dorisPassword, mcAccessKey, mcStsToken string

	// The PostgreSQL source (postgres.go); pgAddr set selects it.
	pg postgresOptions
}

func (o *jobOptions) addFlags(fs *pflag.FlagSet) {
	o.addSourceFlags(fs)
	o.addSinkFlags(fs)
	fs.StringVar(&o.name, "name", "", "job name shown in status and metrics (pipeline.name in a pipeline file)")
	fs.Var(&routeFlag{&o.routes}, "route", "route rule SOURCE=SINK (repeatable): shards matching the Flink CDC 'db.table' regex SOURCE go to SINK (db.table); first matching rule wins")
	fs.StringVar(&o.routeSymbol, "route-replace-symbol", "", "text in a --route SINK replaced by each source table's name (Flink CDC replace-symbol), e.g. '<>'")
	fs.StringVar(&o.dbColumn, "database-column", "database_name", "name of the metadata column holding each row's source database")
	fs.StringVar(&o.tableColumn, "table-column", "table_name", "name of the metadata column holding each row's source table")
	fs.StringVar(&o.schemaChange, "schema-change-behavior", "lenient", "Flink CDC schema.change.behavior: exception (stop on every schema change and shard TRUNCATE/DROP/RENAME), evolve, try_evolve, lenient or ignore; see docs/shard-merging.md")
	fs.StringVar(&o.droppedRows, "dropped-shard-rows", "", "what a DROP (or RENAME out of the routes) of a shard does to its rows in the target: keep or delete (default: delete under evolve and try_evolve, keep otherwise)")
	fs.StringVar(&o.ledgerPath, "ledger", "", "ledger file (default: <label-prefix>.ledger in the current directory)")
	fs.BoolVar(&o.recreateTarget, "recreate-target", false, "when a target holds rows written under another ledger (a lost or replaced ledger), empty it (Doris: TRUNCATE TABLE; MaxCompute: drop and create the table again with the same definition) and snapshot it again; needs a ledger that has committed nothing; a target this ledger already wrote is never emptied")
	fs.DurationVar(&o.checkpointInterval, "checkpoint-interval", 10*time.Second, "how often an epoch is committed")
	fs.IntVar(&o.maxEpochRows, "max-epoch-rows", 500_000, "close an epoch early once it holds this many rows")
	fs.DurationVar(&o.maxOutage, "max-outage", 0, "exit when the source or a sink stays unreachable this long (e.g. 30m); 0: wait out outages however long they last")
	fs.DurationVar(&o.restartInitialBackoff, "restart-initial-backoff", time.Second, "wait before the first retry of an unreachable source or sink; doubles per attempt up to --restart-max-backoff")
	fs.DurationVar(&o.restartMaxBackoff, "restart-max-backoff", 30*time.Second, "longest wait between retries of an unreachable source or sink")
	fs.StringVar(&o.httpAddr, "http-addr", "", "serve /metrics (Prometheus), /healthz, /readyz and /status on this host:port")
	fs.BoolVar(&o.pprof, "pprof", false, "also serve Go's /debug/pprof/ on --http-addr")
	fs.StringVar(&o.memoryLimit, "memory-limit", "128MiB", "soft limit of the process's Go memory (runtime/debug.SetMemoryLimit), e.g. 128MiB or 1GiB: the garbage collector works harder near it instead of letting the heap grow with bursts of rows; 0: no limit; ignored when $GOMEMLIMIT is set")
	fs.StringVar(&o.progress, "progress", "auto", "snapshot progress display: auto (on a terminal), always or never")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
}

// addSourceFlags adds the flags that choose and reach the shards.
func (o *jobOptions) addSourceFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.sources, "sources", "", "database regex of the shards (RE2, whole name), e.g. 'emp_[0-9]+'; or Flink CDC's 'db.table' form, comma-separated")
	fs.StringVar(&o.tables, "tables", "", "table regex of the shards (RE2, whole name), e.g. 'employees_[0-9]+'; default: every table")
	fs.StringVar(&o.target, "target", "", "merged target table db.table; default: one target per table name with its shard number stripped, in a database named after the --sources prefix")
	fs.StringVar(&o.mysqlAddr, "mysql", "127.0.0.1:3306", "source MySQL/MariaDB host:port")
	fs.StringVar(&o.mysqlUser, "mysql-user", "root", "source user (needs SELECT, REPLICATION SLAVE, REPLICATION CLIENT); password from $"+envMySQLPassword+" or --mysql-password-file")
	fs.StringVar(&o.mysqlPasswordFile, "mysql-password-file", "", "file holding the source password")
	fs.Uint32Var(&o.serverID, "server-id", 5400, "replica server id for reading the binlog; unique among the source's replicas")
	fs.IntVar(&o.chunkSize, "chunk-size", 8096, "rows per snapshot chunk")
	fs.IntVar(&o.readers, "readers", 0, "tables snapshotted in parallel (default: one per CPU)")
	o.pg.addFlags(fs)
	o.addKafkaFlags(fs)
	fs.StringVar(&o.snapshotMode, "snapshot-mode", "auto", "how snapshot chunks are made consistent with the binlog: consistent (MariaDB's consistent-snapshot position), watermark (Flink CDC's low/high watermarks and binlog merge; replays as replica ids server-id+1…server-id+readers) or auto (consistent on MariaDB, watermark on MySQL)")
}

// addSinkFlags adds the flags that choose and reach the sinks (also used by
// `txn resolve`, which must reach the same sinks).
func (o *jobOptions) addSinkFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.labelPrefix, "label-prefix", "", "Stream Load label prefix, unique per job (default: derived from the source, patterns and target)")
	fs.StringVar(&o.sinks, "sink", "doris", "where the merged rows go: doris, maxcompute, or both (doris,maxcompute) in the same epochs")
	fs.StringVar(&o.dorisFE, "doris-fe", "127.0.0.1:8030", "Doris FE HTTP host:port[,host:port]")
	fs.StringVar(&o.dorisBE, "doris-be", "", "Doris BE HTTP host:port[,host:port] to load into directly (default: ask the FE)")
	fs.StringVar(&o.dorisUser, "doris-user", "root", "Doris user; password from $"+envDorisPassword+" or --doris-password-file")
	fs.StringVar(&o.dorisPasswordFile, "doris-password-file", "", "file holding the Doris password")
	fs.StringVar(&o.dorisQuery, "doris-query", "", "Doris FE MySQL-protocol host:port (9030) for creating and altering targets; without it the targets must exist")
	fs.IntVar(&o.buckets, "doris-buckets", 10, "buckets of created Doris tables (0: BUCKETS AUTO)")
	fs.IntVar(&o.replication, "doris-replication", 0, "replication_num of created Doris tables (0: cluster default)")
	fs.StringVar(&o.localTimeZone, "local-time-zone", "", "zone in which source TIMESTAMP values are written into Doris DATETIME columns, as Flink CDC's pipeline local-time-zone (e.g. Asia/Shanghai, +08:00, UTC); default: UTC. MaxCompute TIMESTAMP stays an instant")
	fs.IntVar(&o.dorisRetries, "doris-retries", 5, "retries of one Doris request (commit, abort, label state, BE lookup) after a network error or a 5xx; longer outages are waited out by the job (--max-outage)")
	fs.StringToStringVar(&o.dorisHeaders, "doris-load-header", nil, "extra Stream Load header key=value (Flink CDC sink.properties.*), e.g. timeout=600")
	fs.StringVar(&o.sequenceColumn, "sequence-column", "", "give Doris targets that shardsync creates this BIGINT sequence column (function_column.sequence_col), filled with a value that grows with every change, so a replayed or late load never moves a row back to an older version; a target's own sequence column is always discovered and used")
	fs.StringToStringVar(&o.dorisTableProps, "doris-table-property", nil, "extra PROPERTIES key=value of created Doris tables (Flink CDC table.create.properties.*)")
	fs.StringVar(&o.mcEndpoint, "maxcompute-endpoint", "", "MaxCompute service endpoint, e.g. http://service.cn-hangzhou.maxcompute.aliyun.com/api")
	fs.StringVar(&o.mcProject, "maxcompute-project", "", "MaxCompute project holding the targets (a target's database part is not used)")
	fs.StringVar(&o.mcTunnel, "maxcompute-tunnel-endpoint", "", "MaxCompute tunnel endpoint (default: the one the project announces)")
	fs.StringVar(&o.mcQuota, "maxcompute-quota", "", "exclusive tunnel quota (resource group) name")
	fs.StringVar(&o.mcAccessID, "maxcompute-access-id", "", "AccessKey id (default $"+maxcompute.EnvAccessID+"); the secret comes from $"+maxcompute.EnvAccessKey+" or --maxcompute-access-key-file")
	fs.StringVar(&o.mcKeyFile, "maxcompute-access-key-file", "", "file holding the AccessKey secret")
	fs.IntVar(&o.mcBuckets, "maxcompute-buckets", 16, "write.bucket.num of created Delta tables")
	fs.StringToStringVar(&o.mcOptions, "maxcompute-option", nil, "further Flink CDC MaxCompute sink options, key=value (e.g. compress.algorithm=snappy)")
}

// newLogger builds the job's logger on w.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: oneLineErrors}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("--log-format %q: use text or json", format)
}

// secret reads a password from a file flag, else takes the one a pipeline
// file gave (given), else the environment variable.
func secret(file, given, env, what string) (string, error) {
	if given != "" && file == "" {
		return given, nil
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", usagef("reading the %s password file: %v", what, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return os.Getenv(env), nil
}

// job is a validated, wired job.
type job struct {
	opts     jobOptions
	log      *slog.Logger
	out      io.Writer
	pats     []pattern
	rules    []routeRule
	target   *change.TableID
	mysqlPW  string
	pgPW     string
	dorisCfg *doris.Config
	mcCfg    *maxcompute.Config
	coordCfg twopc.Config
	prefix   string
	ledger   string
	memLimit int64 // --memory-limit in bytes, 0: none
	kafkaCfg kafka.Config

	// progressOut receives the snapshot progress display (a terminal);
	// nil: progress goes to the log.
	progressOut io.Writer
	// mon collects metrics and status; created by prepare.
	mon *monitor
}

// displayName is the job's name in status and metrics.
func (j *job) displayName() string {
	if j.opts.name != "" {
		return j.opts.name
	}
	return j.prefix
}

// defaultPrefix derives a stable label prefix from what identifies the job.
func defaultPrefix(o jobOptions) string {
	if o.isKafka() {
		return kafkaDefaultPrefix(o)
	}
	parts := []string{o.mysqlAddr, o.sources, o.tables, o.target}
	if o.pg.addr != "" { // a PostgreSQL job: its server and database instead
		parts[0] = "postgres://" + o.pg.addr + "/" + o.pg.database
	}
	for _, r := range o.routes { // only when routes are given: older defaults stay
		parts = append(parts, r.Source, r.Sink, r.ReplaceSymbol)
	}
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return "shardsync_" + hex.EncodeToString(h[:])[:10]
}

// prepare validates everything that can be checked without a network.
// The error lists every problem found (a usage error).
func prepare(o jobOptions, log *slog.Logger, out io.Writer) (*job, error) {
	j, problems := prepareAll(o, log, out)
	if len(problems) > 0 {
		return nil, usageError{errors.Join(problems...)}
	}
	return j, nil
}

// prepareAll checks everything, one check not stopping the next, and
// returns the job as far as it could be built with every problem found
// (`validate` lists them all).
func prepareAll(o jobOptions, log *slog.Logger, out io.Writer) (*job, []error) {
	j := &job{opts: o, log: log, out: out}
	var problems []error
	var err error
	if j.pats, err = parsePatterns(o.sources, o.tables); err != nil {
		problems = append(problems, err)
	}
	if j.target, err = parseTarget(o.target); err != nil {
		problems = append(problems, err)
	}
	if j.rules, err = parseRouteRules(o.routes, o.routeSymbol); err != nil {
		problems = append(problems, err)
	}
	if err := checkSchemaChangeBehavior(o.schemaChange); err != nil {
		problems = append(problems, err)
	}
	switch o.droppedRows {
	case "", merge.DroppedKeep, merge.DroppedDelete:
	default:
		problems = append(problems, usagef("--dropped-shard-rows %q: use keep or delete", o.droppedRows))
	}
	if o.dbColumn == "" || o.tableColumn == "" || o.dbColumn == o.tableColumn {
		problems = append(problems, usagef("--database-column %q and --table-column %q must be set and differ", o.dbColumn, o.tableColumn))
	}
	switch o.progress {
	case "", "auto", "always", "never":
	default:
		problems = append(problems, usagef("--progress %q: use auto, always or never", o.progress))
	}
	if o.httpAddr != "" {
		if _, _, err := net.SplitHostPort(o.httpAddr); err != nil {
			problems = append(problems, usagef("--http-addr %q must be host:port, e.g. 127.0.0.1:9464", o.httpAddr))
		}
	}
	if o.pg.addr != "" {
		if err := o.pg.validate(); err != nil {
			problems = append(problems, err)
		}
		var err error
		if j.pgPW, err = secret(o.pg.passwordFile, o.pg.password, envPostgresPassword, "PostgreSQL"); err != nil {
			problems = append(problems, err)
		}
	} else if _, _, err := net.SplitHostPort(o.mysqlAddr); err != nil {
		problems = append(problems, usagef("--mysql %q must be host:port, e.g. 127.0.0.1:3306", o.mysqlAddr))
	}
	if j.memLimit, err = parseMemoryLimit(o.memoryLimit); err != nil {
		problems = append(problems, err)
	}
	switch o.snapshotMode {
	case merge.SnapshotAuto, merge.SnapshotConsistent, merge.SnapshotWatermark:
	default:
		problems = append(problems, usagef("--snapshot-mode %q: use auto, consistent or watermark", o.snapshotMode))
	}
	if o.maxOutage < 0 || o.restartInitialBackoff <= 0 || o.restartMaxBackoff < o.restartInitialBackoff {
		problems = append(problems, usagef("--max-outage %s, --restart-initial-backoff %s, --restart-max-backoff %s: the backoffs must be positive with the maximum at least the initial one, and --max-outage 0 (no limit) or positive",
			o.maxOutage, o.restartInitialBackoff, o.restartMaxBackoff))
	}
	if _, err := parseZone(o.localTimeZone); err != nil {
		problems = append(problems, err)
	}
	if o.serverID == 0 {
		problems = append(problems, usagef("--server-id must not be 0: pick a replica id unique among the source's replicas"))
	}
	if o.isKafka() {
		if j.kafkaCfg, err = o.kafkaConfig(); err != nil {
			problems = append(problems, err)
		}
	}
	if j.mysqlPW, err = secret(o.mysqlPasswordFile, o.mysqlPassword, envMySQLPassword, "MySQL"); err != nil {
		problems = append(problems, err)
	}
	j.prefix = o.labelPrefix
	if j.prefix == "" {
		j.prefix = defaultPrefix(o)
	}
	j.ledger = o.ledgerPath
	if j.ledger == "" {
		j.ledger = j.prefix + ".ledger"
	}
	if j.dorisCfg, j.mcCfg, err = o.sinkConfigs(j.prefix); err != nil {
		problems = append(problems, err)
	}
	cc := twopc.DefaultConfig()
	cc.CheckpointInterval = o.checkpointInterval
	cc.MaxEpochRows = o.maxEpochRows
	// A commit that keeps failing ends the run; recovery commits the
	// epoch, and an unreachable sink is waited out by the restart loop.
	cc.Commit = commitRetry
	if err := cc.Validate(); err != nil {
		problems = append(problems, usageError{fmt.Errorf("%w (flags --checkpoint-interval, --max-epoch-rows)", err)})
	}
	j.mon = newMonitor(j.displayName(), log)
	// While a component is down the job logs once per backoff step; the
	// retry warnings of the parts it restarts would repeat every attempt.
	j.log = slog.New(&outageQuiet{Handler: log.Handler(), down: &j.mon.anyDown})
	cc.Observer = j.mon
	j.coordCfg = cc
	return j, problems
}

// sinkConfigs validates the --sink list and builds each named sink's
// configuration; nil for a sink not named.
func (o jobOptions) sinkConfigs(prefix string) (*doris.Config, *maxcompute.Config, error) {
	useDoris, useMC := false, false
	for _, s := range strings.Split(o.sinks, ",") {
		switch strings.TrimSpace(s) {
		case "doris":
			useDoris = true
		case "maxcompute":
			useMC = true
		default:
			return nil, nil, usagef("--sink %q: use doris, maxcompute or doris,maxcompute", o.sinks)
		}
	}
	var dc *doris.Config
	var mc *maxcompute.Config
	if useDoris {
		c, err := dorisConfig(o, prefix)
		if err != nil {
			return nil, nil, err
		}
		dc = &c
	}
	if useMC {
		c, err := maxcomputeConfig(o)
		if err != nil {
			return nil, nil, err
		}
		mc = &c
	}
	return dc, mc, nil
}

func dorisConfig(o jobOptions, prefix string) (doris.Config, error) {
	var err error
	dc := doris.DefaultConfig()
	dc.FENodes = splitList(o.dorisFE)
	dc.BENodes = splitList(o.dorisBE)
	dc.User = o.dorisUser
	if dc.Password, err = secret(o.dorisPasswordFile, o.dorisPassword, envDorisPassword, "Doris"); err != nil {
		return dc, err
	}
	dc.QueryAddr = o.dorisQuery
	dc.LabelPrefix = prefix
	dc.Buckets, dc.Replication = o.buckets, o.replication
	dc.Retries = o.dorisRetries
	dc.TimeZone, _ = parseZone(o.localTimeZone) // checked by prepareAll
	dc.Headers, dc.TableProperties = o.dorisHeaders, o.dorisTableProps
	dc.SequenceColumn = o.sequenceColumn
	if o.dbColumn != "" {
		dc.DatabaseColumn = o.dbColumn
	}
	if o.tableColumn != "" {
		dc.TableColumn = o.tableColumn
	}
	if err := dc.Validate(); err != nil {
		return dc, usageError{fmt.Errorf("%w (flags --doris-*, --label-prefix)", err)}
	}
	return dc, nil
}

func maxcomputeConfig(o jobOptions) (maxcompute.Config, error) {
	mc, err := resolveMaxCompute(o)
	if err != nil {
		return mc, err
	}
	if err := mc.Validate(); err != nil {
		return mc, usageError{fmt.Errorf("%w (flags --maxcompute-*, $%s)", err, maxcompute.EnvAccessKey)}
	}
	return mc, nil
}

// resolveMaxCompute builds the MaxCompute configuration from the options
// and the environment, without validating it.
func resolveMaxCompute(o jobOptions) (maxcompute.Config, error) {
	mc, err := maxcompute.FromOptions(o.mcOptions)
	if err != nil {
		return mc, usageError{fmt.Errorf("%w (flag --maxcompute-option)", err)}
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&mc.Endpoint, o.mcEndpoint)
	set(&mc.Project, o.mcProject)
	set(&mc.TunnelEndpoint, o.mcTunnel)
	set(&mc.QuotaName, o.mcQuota)
	set(&mc.AccessID, o.mcAccessID)
	set(&mc.AccessKeyFile, o.mcKeyFile)
	if o.mcBuckets > 0 {
		mc.BucketsNum = o.mcBuckets
	}
	if o.mcKeyFile == "" {
		set(&mc.AccessKey, o.mcAccessKey)
	}
	set(&mc.StsToken, o.mcStsToken)
	if err := mc.LoadSecrets(os.Getenv); err != nil {
		return mc, usageError{err}
	}
	return mc, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// discover lists the source's tables and plans the routes.
func (j *job) discover(ctx context.Context) ([]targetRoute, error) {
	if j.opts.pg.addr != "" {
		return j.discoverPostgres(ctx)
	}
	if j.opts.isKafka() {
		return j.kafkaRoutes() // the tables are named by the messages
	}
	c, err := dialSource(ctx, j.opts.mysqlAddr, j.opts.mysqlUser, j.mysqlPW)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	r, err := c.Execute("SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' " +
		"AND TABLE_SCHEMA NOT IN ('mysql','information_schema','performance_schema','sys') ORDER BY 1, 2")
	if err != nil {
		return nil, fmt.Errorf("listing the source's tables: %w", err)
	}
	defer r.Close()
	var all []change.TableID
	for i := range r.Values {
		db, _ := r.GetString(i, 0)
		t, _ := r.GetString(i, 1)
		all = append(all, change.TableID{Database: db, Table: t})
	}
	routes, err := planJobRoutes(j.pats, j.rules, j.target, all)
	if err != nil {
		return nil, err
	}
	n := 0
	for _, rt := range routes {
		n += len(rt.shards)
	}
	if n == 0 {
		dbs := map[string]bool{}
		for _, t := range all {
			dbs[t.Database] = true
		}
		names := make([]string, 0, len(dbs))
		for d := range dbs {
			names = append(names, d)
		}
		slices.Sort(names)
		return nil, usagef("no table on %s matches --sources %q --tables %q (patterns match whole names, RE2 syntax; databases there: %s)",
			j.opts.mysqlAddr, j.opts.sources, j.opts.tables, strings.Join(names, ", "))
	}
	return routes, nil
}

// dialSource connects to the source with a bounded wait and an error that
// says which flag to fix. The password never appears in it.
func dialSource(ctx context.Context, addr, user, password string) (*client.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d := &net.Dialer{}
	c, err := client.ConnectWithDialer(dctx, "tcp", addr, user, password, "", d.DialContext)
	if err != nil {
		return nil, usageError{fmt.Errorf("connecting to the source %s as %q: %w (check --mysql, --mysql-user and $%s)", addr, user, err, envMySQLPassword)}
	}
	return c, nil
}

// run runs the job until ctx is cancelled: recover, open the source at the
// resume position, stream epochs; on a restartable error (a rewind, a lost
// source connection after retries) it starts over from recovery.
func (j *job) run(ctx context.Context) error {
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set && j.memLimit > 0 {
		prev := debug.SetMemoryLimit(j.memLimit)
		defer debug.SetMemoryLimit(prev)
	}
	if j.opts.httpAddr != "" {
		stop, addr, err := serveHTTP(ctx, j.opts.httpAddr, j.mon, j.opts.pprof, j.log)
		if err != nil {
			return err
		}
		defer stop()
		j.log.Info("serving metrics and status", "addr", addr, "pprof", j.opts.pprof)
	}
	j.mon.setComponents(j.componentAddrs())
	routes, err := j.discover(ctx)
	for err != nil && unreachable(err) {
		// A source that is down when the job starts is an outage too.
		j.mon.setPhase(phaseWaiting)
		wait, werr := j.waitOutOutage(componentSource, err)
		if werr != nil {
			j.mon.setFailed(werr)
			return errors.New(errText(werr)) // not a usage error: the address may be right
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		routes, err = j.discover(ctx)
	}
	if err != nil {
		return err
	}
	j.mon.reachable(componentSource)
	banner := describeRoutes
	if j.opts.isKafka() {
		banner = describeKafkaRoutes
	}
	fmt.Fprintf(j.out, "shardsync: label prefix %s, ledger %s\nshardsync: shards → targets:\n%s", j.prefix, j.ledger, indent(banner(routes)))

	led, err := ledger.Open(j.ledger, ledger.Options{})
	if err != nil {
		return err
	}
	defer led.Close()
	j.mon.setLedger(led)
	j.withLedgerID(led)

	sinks, err := openSinks(j.dorisCfg, j.mcCfg, j.log)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range sinks {
			_ = s.Close()
		}
	}()
	if err := j.claimTargets(ctx, led, sinks, routes); err != nil {
		return err
	}
	sinks = j.mon.instrumentSinks(sinks)
	stopProgress := startProgress(ctx, j.progressOut, j.progressOut != nil, j.mon, j.log.With("part", "progress"), progressInterval)
	defer stopProgress()

	mcfg := merge.DefaultConfig()
	mcfg.Addr, mcfg.User, mcfg.Password, mcfg.ServerID = j.opts.mysqlAddr, j.opts.mysqlUser, j.mysqlPW, j.opts.serverID
	mcfg.ChunkSize = j.opts.chunkSize
	// Reconnects inside a run ride out blips; longer outages are the
	// restart loop's (waitOutOutage), with its backoff and its log lines.
	mcfg.ConnectRetries = sourceConnectRetries
	mcfg.SnapshotMode = j.opts.snapshotMode
	mcfg.DatabaseColumn, mcfg.TableColumn = j.opts.dbColumn, j.opts.tableColumn
	mcfg.SchemaChange, mcfg.DroppedShardRows = strings.ToLower(j.opts.schemaChange), j.opts.droppedRows
	if j.opts.readers > 0 {
		mcfg.Readers = j.opts.readers
	}
	for _, rt := range routes {
		mcfg.Routes = append(mcfg.Routes, merge.Route{Databases: rt.db, Tables: rt.table, Target: rt.target})
	}
	if err := mcfg.Validate(); err != nil {
		return usageError{err}
	}
	open := func(ctx context.Context, token change.Token) (jobSource, error) {
		return merge.Open(ctx, mcfg, token, j.log.With("part", "source"))
	}
	if j.opts.pg.addr != "" {
		if open, err = j.postgresOpener(routes); err != nil {
			return err
		}
	}
	if j.opts.isKafka() {
		open = j.kafkaOpener(&mcfg)
	}

	restarts, lastResume := 0, []byte(nil)
	for {
		j.mon.setPhase(phaseRecovering)
		rep, err := twopc.Resolve(ctx, led, sinks, twopc.ResolveOptions{Retry: recoverRetry}, j.log)
		recovering := err != nil
		if err == nil {
			if !bytes.Equal(rep.Resume, lastResume) {
				restarts, lastResume = 0, rep.Resume // progress since the last failure
			}
			if mcfg.Decisions, err = decisions(led); err != nil {
				return err
			}
			err = j.runOnce(ctx, led, sinks, open, rep.Resume)
			err = withWayForward(err, j.ledger)
		} else {
			err = fmt.Errorf("recovering from ledger %s: %w", j.ledger, err)
		}
		if err == nil || ctx.Err() != nil {
			return nil
		}
		wait, err := j.afterFailure(err, recovering, &restarts)
		if err != nil {
			j.mon.setFailed(err)
			return markInDoubt(err)
		}
		j.mon.setPhase(phaseWaiting)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// afterFailure decides what follows a failed attempt: the wait before the
// next one, or the error to exit with. Terminal errors exit at once; an
// outage (outage.go) is waited out; any other error restarts the stream at
// most maxRestarts times in a row without progress, and stops the job when
// it came from recovery.
func (j *job) afterFailure(err error, recovering bool, restarts *int) (time.Duration, error) {
	if terminal(err) {
		return 0, err
	}
	if component, ok := outageOf(err); ok {
		j.mon.noteRestart(err)
		return j.waitOutOutage(component, err)
	}
	if recovering || *restarts >= maxRestarts {
		return 0, err
	}
	j.mon.noteRestart(err)
	*restarts++
	wait := restartBackoff(*restarts)
	j.log.Warn("the stream stopped; restarting from the last committed position",
		"err", err, "attempt", *restarts, "of", maxRestarts, "after", wait)
	return wait, nil
}

// maxRestarts is how many times in a row the job restarts after a failure
// that made no progress, and is not an outage, before it gives up and
// exits with the error.
const maxRestarts = 6

// sourceConnectRetries is how often the source reconnects inside a run
// before the run ends and the restart loop takes over.
const sourceConnectRetries = 2

// recoverRetry bounds each sink call of recovery at start and restart; the
// restart loop retries an unreachable sink beyond it.
var recoverRetry = twopc.RetryPolicy{Min: 250 * time.Millisecond, Max: 2 * time.Second, Attempts: 3}

// commitRetry bounds the commit retries of a running stream (about 8s).
var commitRetry = twopc.RetryPolicy{Min: 250 * time.Millisecond, Max: 4 * time.Second, Attempts: 5}

func restartBackoff(n int) time.Duration {
	return min(time.Duration(1<<min(n-1, 6))*500*time.Millisecond, 30*time.Second)
}

// componentAddrs names the job's components and where they are.
func (j *job) componentAddrs() map[string]string {
	src := j.opts.mysqlAddr
	switch {
	case j.opts.isKafka():
		src = j.opts.kafka.brokers
	case j.opts.pg.addr != "":
		src = j.opts.pg.addr
	}
	m := map[string]string{componentSource: src}
	if j.dorisCfg != nil {
		m["doris"] = strings.Join(j.dorisCfg.FENodes, ",")
	}
	if j.mcCfg != nil {
		m["maxcompute"] = j.mcCfg.Endpoint
	}
	return m
}

// runOnce opens the source at token and streams until an error or ctx ends.
func (j *job) runOnce(ctx context.Context, led *ledger.Ledger, sinks []twopc.Sink, open func(context.Context, change.Token) (jobSource, error), token change.Token) error {
	j.mon.setPhase(phaseConnecting)
	src, err := open(ctx, token)
	if err != nil {
		return fromComponent(componentSource, err)
	}
	j.mon.reachable(componentSource)
	defer src.Close()
	coord, err := twopc.New(j.coordCfg, led, sinks, j.log.With("part", "twopc"))
	if err != nil {
		return err
	}
	j.mon.setSource(src)
	defer j.mon.setSource(nil)
	return coord.Run(ctx, j.mon.wrapSource(src))
}

// terminal reports errors a restart cannot cure: the operator must act.
func terminal(err error) bool {
	for _, e := range []error{
		twopc.ErrInDoubt, twopc.ErrProtocol, twopc.ErrShardDelete,
		merge.ErrPrerequisite, merge.ErrBinlogPurged, merge.ErrDuplicateServerID,
		merge.ErrIncompatibleSchema, merge.ErrNoShards, merge.ErrBadToken, merge.ErrAccessDenied,
		ledger.ErrLocked, ledger.ErrDamaged,
		postgres.ErrSlot, postgres.ErrToast, postgres.ErrAuth,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	if kafkaTerminal(err) {
		return true
	}
	var u usageError
	return errors.As(err, &u)
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if l != "" {
			b.WriteString("  " + l)
		}
	}
	return b.String()
}

// openSinks constructs the configured sinks, in a fixed order.
func openSinks(dc *doris.Config, mc *maxcompute.Config, log *slog.Logger) ([]twopc.Sink, error) {
	var sinks []twopc.Sink
	if dc != nil {
		s, err := doris.New(*dc, log)
		if err != nil {
			return nil, usageError{err}
		}
		sinks = append(sinks, s)
	}
	if mc != nil {
		s, err := maxcompute.New(*mc, log)
		if err != nil {
			for _, o := range sinks {
				_ = o.Close()
			}
			return nil, usageError{err}
		}
		sinks = append(sinks, s)
	}
	return sinks, nil
}

// parseMemoryLimit parses --memory-limit: a byte count with an optional
// unit B, KiB, MiB, GiB or TiB (as $GOMEMLIMIT takes it); 0 (or empty)
// is no limit.
func parseMemoryLimit(v string) (int64, error) {
	if strings.TrimSpace(v) == "" {
		return 0, nil
	}
	units := []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}
	num, shift := strings.TrimSpace(v), uint(0)
	for _, u := range units {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, shift = strings.TrimSpace(n), u.shift
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64>>shift {
		return 0, usagef("--memory-limit %q: give a size such as 128MiB or 1GiB, or 0 for no limit", v)
	}
	return n << shift, nil
}

// parseZone reads --local-time-zone: an IANA zone name (Asia/Shanghai,
// UTC) or a fixed offset (+08:00, GMT+08:00, UTC-5); "" is nil (UTC).
func parseZone(v string) (*time.Location, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, nil
	}
	off := v
	for _, p := range []string{"GMT", "UTC"} {
		if rest, ok := strings.CutPrefix(strings.ToUpper(off), p); ok && rest != "" {
			off = rest
		}
	}
	if off != "" && (off[0] == '+' || off[0] == '-') {
		h, m, _ := strings.Cut(off[1:], ":")
		hh, err1 := strconv.Atoi(h)
		mm := 0
		var err2 error
		if m != "" {
			mm, err2 = strconv.Atoi(m)
		}
		if err1 == nil && err2 == nil && hh <= 14 && mm < 60 {
			secs := hh*3600 + mm*60
			if off[0] == '-' {
				secs = -secs
			}
			return time.FixedZone(v, secs), nil
		}
	}
	loc, err := time.LoadLocation(v)
	if err != nil || strings.EqualFold(v, "local") {
		return nil, usagef("--local-time-zone %q: give a zone name such as Asia/Shanghai or UTC, or an offset such as +08:00", v)
	}
	return loc, nil
}
