package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/merge"
	"github.com/shardsync/shardsync/source/kafka"
)

// The Kafka canal-json source: flags, pipeline keys (Flink SQL Kafka
// connector names) and wiring. --kafka selects it instead of MySQL.

const envKafkaPassword = "SHARDSYNC_KAFKA_PASSWORD"

// kafkaOptions are the Kafka source's options.
type kafkaOptions struct {
	brokers, topics, topicPattern, format, partitions, startup string
	timeZone, deadLetter                                       string
	securityProtocol, saslMechanism, saslUser, passwordFile    string
	caFile                                                     string
	password                                                   string // from a pipeline file's sasl.jaas.config
}

func (o *jobOptions) addKafkaFlags(fs *pflag.FlagSet) {
	k := &o.kafka
	fs.StringVar(&k.brokers, "kafka", "", "read canal-json from these Kafka brokers host:port[,host:port] instead of MySQL (Flink properties.bootstrap.servers)")
	fs.StringVar(&k.topics, "kafka-topic", "", "Kafka topics, comma-separated (Flink topic)")
	fs.StringVar(&k.topicPattern, "kafka-topic-pattern", "", "RE2 regex of Kafka topics, whole name, resolved at start (Flink topic-pattern)")
	fs.StringVar(&k.format, "kafka-format", "canal-json", "message format: canal-json (TiCDC with or without the TiDB extension, or Alibaba Canal; told apart by the messages)")
	fs.StringVar(&k.partitions, "kafka-partitions", "", "static partition assignment, e.g. 0-3 or 0,2,4 (every topic); default all. Run one process per range, each with its own ledger and label prefix")
	fs.StringVar(&k.startup, "kafka-startup-mode", "earliest-offset", "where a job without a ledger position starts: earliest-offset or latest-offset (Flink scan.startup.mode)")
	fs.StringVar(&k.timeZone, "kafka-time-zone", "UTC", "zone the producer rendered TIMESTAMP values in (TiCDC --tz, Canal's JVM zone); they are stored as UTC instants")
	fs.StringVar(&k.deadLetter, "kafka-dead-letter-file", "", "append records that are not usable canal-json to this file (JSON lines) and go on, counted in shardsync_kafka_dead_letter_records_total; default: stop the job")
	fs.StringVar(&k.securityProtocol, "kafka-security-protocol", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (Flink properties.security.protocol)")
	fs.StringVar(&k.saslMechanism, "kafka-sasl-mechanism", "PLAIN", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (Flink properties.sasl.mechanism)")
	fs.StringVar(&k.saslUser, "kafka-sasl-user", "", "SASL user; the password comes from $"+envKafkaPassword+" or --kafka-sasl-password-file")
	fs.StringVar(&k.passwordFile, "kafka-sasl-password-file", "", "file holding the SASL password")
	fs.StringVar(&k.caFile, "kafka-ca-file", "", "PEM file of the CA certificates that sign the brokers' TLS certificates (default: the system's)")
}

func (o jobOptions) isKafka() bool { return o.kafka.brokers != "" }

// kafkaDefaultPrefix derives the label prefix of a Kafka job: the
// partition assignment is part of it, so processes sharing a topic by
// static assignment get distinct labels and ledgers by default.
func kafkaDefaultPrefix(o jobOptions) string {
	parts := []string{"kafka", o.kafka.brokers, o.kafka.topics, o.kafka.topicPattern, o.kafka.partitions, o.sources, o.tables, o.target}
	for _, r := range o.routes {
		parts = append(parts, r.Source, r.Sink, r.ReplaceSymbol)
	}
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return "shardsync_" + hex.EncodeToString(h[:])[:10]
}

// parsePartitions reads "0-3" or "0,2,4" (or both, comma-separated).
func parsePartitions(s string) ([]int32, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int32
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		lo, hi, isRange := strings.Cut(p, "-")
		a, err1 := strconv.ParseInt(strings.TrimSpace(lo), 10, 32)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.ParseInt(strings.TrimSpace(hi), 10, 32)
		}
		if err1 != nil || err2 != nil || a < 0 || b < a {
			return nil, usagef("--kafka-partitions %q: give partition numbers and ranges such as 0-3 or 0,2,4", s)
		}
		for n := a; n <= b; n++ {
			if !slices.Contains(out, int32(n)) {
				out = append(out, int32(n))
			}
		}
	}
	return out, nil
}

// kafkaConfig validates the Kafka options and builds the source config
// (without routes).
func (o jobOptions) kafkaConfig() (kafka.Config, error) {
	k := o.kafka
	var c kafka.Config
	c.Brokers = splitList(k.brokers)
	c.Topics = splitList(k.topics)
	c.TopicPattern = k.topicPattern
	if k.format != "canal-json" {
		return c, usagef("--kafka-format %q: only canal-json is supported", k.format)
	}
	if (len(c.Topics) == 0) == (c.TopicPattern == "") {
		return c, usagef("give --kafka-topic (a comma list) or --kafka-topic-pattern (a regex), one of them")
	}
	if c.TopicPattern != "" {
		if _, err := regexp.Compile(c.TopicPattern); err != nil {
			return c, usagef("--kafka-topic-pattern %q: %v", c.TopicPattern, err)
		}
	}
	var err error
	if c.Partitions, err = parsePartitions(k.partitions); err != nil {
		return c, err
	}
	switch k.startup {
	case "", "earliest-offset":
	case "latest-offset":
		c.StartFromLatest = true
	default:
		return c, usagef("--kafka-startup-mode %q: use earliest-offset or latest-offset (a job with a ledger position always resumes from it)", k.startup)
	}
	if c.TimeZone, err = time.LoadLocation(k.timeZone); err != nil {
		return c, usagef("--kafka-time-zone %q: %v (use an IANA name such as Asia/Shanghai, or UTC)", k.timeZone, err)
	}
	c.DeadLetterFile = k.deadLetter
	proto := strings.ToUpper(k.securityProtocol)
	switch proto {
	case "", "PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL":
	default:
		return c, usagef("--kafka-security-protocol %q: use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL", k.securityProtocol)
	}
	if strings.HasPrefix(proto, "SASL") {
		c.SASLMechanism = strings.ToUpper(k.saslMechanism)
		c.SASLUser = k.saslUser
		if c.SASLPassword, err = secret(k.passwordFile, k.password, envKafkaPassword, "Kafka SASL"); err != nil {
			return c, err
		}
		if c.SASLUser == "" {
			return c, usagef("--kafka-security-protocol %s needs --kafka-sasl-user (or sasl.jaas.config username=...)", proto)
		}
	}
	if strings.HasSuffix(proto, "SSL") {
		c.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		if k.caFile != "" {
			pem, err := os.ReadFile(k.caFile)
			if err != nil {
				return c, usagef("--kafka-ca-file: %v", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return c, usagef("--kafka-ca-file %s holds no PEM certificate (a Java truststore must be exported to PEM first)", k.caFile)
			}
			c.TLS.RootCAs = pool
		}
	}
	if err := c.Validate(); err != nil {
		return c, usageError{err}
	}
	return c, nil
}

// kafkaRoutes builds the routes without listing tables (the shards are
// learnt from the messages): route rules first, then the --sources/--tables
// patterns to --target.
func (j *job) kafkaRoutes() ([]targetRoute, error) {
	var out []targetRoute
	for _, r := range j.rules {
		if r.spec.ReplaceSymbol != "" {
			return nil, usagef("route rule %d: replace-symbol needs the table list, which a Kafka source does not have; name each target", r.n)
		}
		out = append(out, targetRoute{target: r.sinkFor(change.TableID{}), db: r.db, table: r.table})
	}
	if len(j.pats) > 0 && j.opts.sources != "" {
		if j.target == nil {
			return nil, usagef("a Kafka source needs --target db.table (or route rules): the tables are only known from the messages")
		}
		for _, p := range j.pats {
			out = append(out, targetRoute{target: *j.target, db: p.db, table: p.table})
		}
	}
	if len(out) == 0 {
		return nil, usagef("give --sources/--tables with --target, or route rules, to select the tables in the messages")
	}
	return out, nil
}

// runKafkaOnce opens the Kafka source at token and streams until an error
// or ctx ends.
// kafkaOpener opens the Kafka source with the job's routes and metadata
// column names (read from mcfg when called).
func (j *job) kafkaOpener(mcfg *merge.Config) func(context.Context, change.Token) (jobSource, error) {
	return func(ctx context.Context, token change.Token) (jobSource, error) {
		kc := j.kafkaCfg
		kc.Routes, kc.DatabaseColumn, kc.TableColumn = mcfg.Routes, mcfg.DatabaseColumn, mcfg.TableColumn
		kc.OnDeadLetter = j.mon.kafkaDeadLetter.Inc
		src, err := kafka.Open(ctx, kc, token, j.log.With("part", "source"))
		if err != nil {
			return nil, err
		}
		return kafkaJobSource{src}, nil
	}
}

// kafkaJobSource is a Kafka source as the job sees it: no snapshot phase.
type kafkaJobSource struct{ *kafka.Source }

func (kafkaJobSource) Progress() merge.SnapshotProgress { return merge.SnapshotProgress{Done: true} }
func (kafkaJobSource) Flavor() string                   { return "kafka" }

// kafkaMetrics registers the Kafka source's metrics.
func (m *monitor) kafkaMetrics() {
	m.kafkaDeadLetter = prometheus.NewCounter(prometheus.CounterOpts{Name: "shardsync_kafka_dead_letter_records_total",
		Help: "Kafka records that were not usable canal-json and were written to the dead-letter file (--kafka-dead-letter-file)."})
	m.reg.MustRegister(m.kafkaDeadLetter)
}

// kafkaTerminal reports Kafka source errors a restart cannot cure.
func kafkaTerminal(err error) bool {
	for _, e := range []error{kafka.ErrOffsetOutOfRange, kafka.ErrTopic, kafka.ErrBadRecord, kafka.ErrBadToken, kafka.ErrConfig} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// describeKafkaRoutes renders the routes of a Kafka job for the start banner.
func describeKafkaRoutes(routes []targetRoute) string {
	var b strings.Builder
	for _, r := range routes {
		plain := func(s string) string { return strings.TrimSuffix(strings.TrimPrefix(s, "^(?:"), ")$") }
		fmt.Fprintf(&b, "%s.%s (database.table named in the messages) → %s\n", plain(r.db.String()), plain(r.table.String()), r.target)
	}
	return b.String()
}

// secKafka is the pipeline section of a Kafka source (source: type kafka),
// with the Flink SQL Kafka connector's option names.
const secKafka = "source kafka"

func init() {
	pipelineKeys = append(pipelineKeys, kafkaPipelineKeys...)
}

var kafkaPipelineKeys = []pipelineKey{
	customKey(secKafka, "type", "", "kafka: read canal-json from Kafka", func(_ *fileState, _, v string) error { return nil }),
	ignoredKeyQuiet(secKafka, "name", whyNameIgnored),
	flagKey(secKafka, "properties.bootstrap.servers", "kafka", "brokers host:port[,host:port]"),
	customKey(secKafka, "topic", "kafka-topic", "topics, separated by ; (Flink) or ,", func(st *fileState, _, v string) error {
		return st.fs.Set("kafka-topic", strings.ReplaceAll(v, ";", ","))
	}),
	flagKey(secKafka, "topic-pattern", "kafka-topic-pattern", "regex of topic names (resolved at start)"),
	customKey(secKafka, "value.format", "kafka-format", "must be canal-json (also format)", func(st *fileState, _, v string) error {
		return st.fs.Set("kafka-format", v)
	}),
	customKey(secKafka, "format", "kafka-format", "must be canal-json (also value.format)", func(st *fileState, _, v string) error {
		return st.fs.Set("kafka-format", v)
	}),
	flagKey(secKafka, "canal-json.database.include", "sources", "regex of the database names in the messages (whole name)"),
	flagKey(secKafka, "canal-json.table.include", "tables", "regex of the table names in the messages (whole name)"),
	customKey(secKafka, "scan.startup.mode", "kafka-startup-mode", "earliest-offset or latest-offset, for a job without a ledger position", func(st *fileState, _, v string) error {
		if v != "earliest-offset" && v != "latest-offset" {
			return fmt.Errorf("only earliest-offset and latest-offset are supported (the ledger holds the offsets a job resumes from; group-offsets, timestamp and specific-offsets have no counterpart)")
		}
		return st.fs.Set("kafka-startup-mode", v)
	}),
	customKey(secKafka, "canal-json.ignore-parse-errors", "kafka-dead-letter-file", "false only: shardsync never skips a record silently; set dead-letter-file to set bad records aside", func(_ *fileState, _, v string) error {
		if v != "false" {
			return fmt.Errorf("shardsync never drops records silently: set dead-letter-file: <path> to write bad records to a file and count them instead")
		}
		return nil
	}),
	flagKey(secKafka, "dead-letter-file", "kafka-dead-letter-file", "file receiving records that are not usable canal-json (shardsync key)"),
	flagKey(secKafka, "partitions", "kafka-partitions", "static partition assignment, e.g. 0-3 (shardsync key)"),
	flagKey(secKafka, "timestamp-time-zone", "kafka-time-zone", "zone of TIMESTAMP values in the messages (shardsync key)"),
	flagKey(secKafka, "properties.security.protocol", "kafka-security-protocol", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
	flagKey(secKafka, "properties.sasl.mechanism", "kafka-sasl-mechanism", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
	{Section: secKafka, Key: "properties.sasl.jaas.config", Kind: keyCustom, Secret: true, Flag: "kafka-sasl-user",
		Doc: "the JAAS line's username=\"…\" and password=\"…\"; write the password as ${ENV_VAR}",
		set: func(st *fileState, _, v string) error {
			user, pass := jaasValue(v, "username"), jaasValue(v, "password")
			if user == "" {
				return fmt.Errorf(`no username="..." in the JAAS line`)
			}
			st.o.kafka.saslUser, st.o.kafka.password = user, pass
			return nil
		}},
	flagKey(secKafka, "properties.ssl.truststore.location", "kafka-ca-file", "CA certificates as a PEM file (export a JKS truststore to PEM)"),
	ignoredKey(secKafka, "properties.group.id", "offsets live in the ledger with each epoch, not in a consumer group; ignored"),
	ignoredKey(secKafka, "properties.*", "Kafka client tuning; ignored"),
	ignoredKey(secKafka, "canal-json.timestamp-format.standard", "values are read from canal-json's text by mysqlType; ignored"),
	ignoredKey(secKafka, "scan.topic-partition-discovery.interval", "topics and partitions are resolved at start; restart to pick up new ones; ignored"),
	ignoredKey(secKafka, "value.fields-include", whyFlinkTuning),
	ignoredKey(secKafka, "key.format", "canal-json producers write no key; ignored"),
}

// jaasValue reads key="value" from a JAAS configuration line.
func jaasValue(line, key string) string {
	re := regexp.MustCompile(`(?:^|\s)` + regexp.QuoteMeta(key) + `\s*=\s*"([^"]*)"`)
	if m := re.FindStringSubmatch(line); m != nil {
		return m[1]
	}
	return ""
}

// kafkaPosition renders a Kafka source token for status: the offsets each
// partition resumes at, and the released watermark with the TiDB extension.
func kafkaPosition(tok change.Token) (string, bool) {
	info, err := kafka.DescribeToken(tok)
	if err != nil {
		return "", false
	}
	keys := make([]string, 0, len(info.Offsets))
	for k := range info.Offsets {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s@%d", k, info.Offsets[k])
	}
	s := "kafka " + strings.Join(parts, " ")
	if info.Released > 0 {
		s += fmt.Sprintf(" (TiCDC commitTs below %d applied)", info.Released)
	}
	return s, true
}
