package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/merge"
	"github.com/shardsync/shardsync/source/postgres"
	"github.com/shardsync/shardsync/testenv"
)

// envPostgresPassword carries the PostgreSQL source password.
const envPostgresPassword = "SHARDSYNC_POSTGRES_PASSWORD"

// jobSource is what the job needs of a source of any kind.
type jobSource interface {
	Next(ctx context.Context) (change.Event, error)
	Close() error
	Progress() merge.SnapshotProgress
	Flavor() string
}

// postgresOptions are the PostgreSQL source's options.
type postgresOptions struct {
	addr, user, database, passwordFile string
	slot, publication                  string
	password                           string // from a pipeline file
}

func (o *postgresOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.addr, "postgres", "", "source PostgreSQL host:port; selects the PostgreSQL source (logical replication, pgoutput) instead of MySQL: --sources then matches schemas and --tables tables of --postgres-database")
	fs.StringVar(&o.user, "postgres-user", "postgres", "PostgreSQL role (needs LOGIN REPLICATION, SELECT on the shards, and ownership of them to publish them); password from $"+envPostgresPassword+" or --postgres-password-file")
	fs.StringVar(&o.database, "postgres-database", "postgres", "PostgreSQL database holding the shards (one slot reads one database)")
	fs.StringVar(&o.passwordFile, "postgres-password-file", "", "file holding the PostgreSQL password")
	fs.StringVar(&o.slot, "slot", "", "logical replication slot of the job (default: derived from the label prefix)")
	fs.StringVar(&o.publication, "publication", "", "publication of the job's tables, created or extended by shardsync (default: <slot>_pub)")
}

func (o *postgresOptions) validate() error {
	if h, _, err := net.SplitHostPort(o.addr); err != nil || h == "" {
		return usagef("--postgres %q must be host:port, e.g. 127.0.0.1:5432", o.addr)
	}
	if o.database == "" {
		return usagef("--postgres-database must name the database holding the shards")
	}
	return nil
}

// postgresConfig builds the source configuration (routes apart).
func (j *job) postgresConfig() (postgres.Config, error) {
	o := j.opts.pg
	c := postgres.DefaultConfig()
	c.Addr, c.User, c.Password, c.Database = o.addr, o.user, j.pgPW, o.database
	c.Slot = o.slot
	if c.Slot == "" {
		c.Slot = postgres.SlotName(j.prefix)
	}
	c.Publication = o.publication
	if c.Publication == "" {
		c.Publication = c.Slot + "_pub"
	}
	c.DatabaseColumn, c.TableColumn = j.opts.dbColumn, j.opts.tableColumn
	if j.opts.chunkSize > 0 {
		c.ChunkSize = j.opts.chunkSize
	}
	return c, nil
}

// discoverPostgres lists the database's tables and plans the routes.
func (j *job) discoverPostgres(ctx context.Context) ([]targetRoute, error) {
	c, err := j.postgresConfig()
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	all, err := postgres.ListTables(dctx, c)
	if err != nil {
		return nil, usageError{fmt.Errorf("%w (check --postgres, --postgres-user, --postgres-database and $%s)", err, envPostgresPassword)}
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
		schemas := map[string]bool{}
		for _, t := range all {
			schemas[t.Database] = true
		}
		names := make([]string, 0, len(schemas))
		for s := range schemas {
			names = append(names, s)
		}
		slices.Sort(names)
		return nil, usagef("no table of database %s on %s matches --sources %q --tables %q (--sources matches schema names; patterns match whole names, RE2 syntax; schemas with tables there: %s)",
			c.Database, c.Addr, j.opts.sources, j.opts.tables, strings.Join(names, ", "))
	}
	return routes, nil
}

// postgresOpener returns the function that opens the PostgreSQL source at
// a token, and registers the slot's metrics.
func (j *job) postgresOpener(routes []targetRoute) (func(context.Context, change.Token) (jobSource, error), error) {
	c, err := j.postgresConfig()
	if err != nil {
		return nil, err
	}
	for _, rt := range routes {
		c.Routes = append(c.Routes, merge.Route{Databases: rt.db, Tables: rt.table, Target: rt.target})
	}
	if err := c.Validate(); err != nil {
		return nil, usageError{err}
	}
	j.mon.watchSlot(c)
	return func(ctx context.Context, token change.Token) (jobSource, error) {
		return postgres.Open(ctx, c, token, j.log.With("part", "source"))
	}, nil
}

// slotCollector exports the job's replication slot at scrape time.
type slotCollector struct{ cfg postgres.Config }

var (
	descSlotRetained = prometheus.NewDesc("shardsync_postgres_slot_retained_wal_bytes",
		"WAL the PostgreSQL server keeps for the job's replication slot (pg_current_wal_lsn() - restart_lsn). It grows while the job is stopped or behind and fills the server's disk unless max_slot_wal_keep_size is set.", []string{"slot"}, nil)
	descSlotLag = prometheus.NewDesc("shardsync_postgres_slot_lag_bytes",
		"WAL written since the job's last committed position (pg_current_wal_lsn() - confirmed_flush_lsn).", []string{"slot"}, nil)
	descSlotActive = prometheus.NewDesc("shardsync_postgres_slot_active", "1 while a process streams from the slot.", []string{"slot"}, nil)
)

func (c slotCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSlotRetained
	ch <- descSlotLag
	ch <- descSlotActive
}

func (c slotCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st, err := postgres.QuerySlot(ctx, c.cfg)
	if err != nil {
		return
	}
	active := 0.0
	if st.Active {
		active = 1
	}
	ch <- prometheus.MustNewConstMetric(descSlotRetained, prometheus.GaugeValue, float64(st.RetainedWALBytes), st.Slot)
	ch <- prometheus.MustNewConstMetric(descSlotLag, prometheus.GaugeValue, float64(st.LagBytes), st.Slot)
	ch <- prometheus.MustNewConstMetric(descSlotActive, prometheus.GaugeValue, active, st.Slot)
}

// watchSlot adds the slot's metrics and status fields.
func (m *monitor) watchSlot(c postgres.Config) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.slotCfg != nil {
		return
	}
	m.slotCfg = &c
	m.reg.MustRegister(slotCollector{cfg: c})
}

// slotStatus is the replication slot in `shardsync status`.
type slotStatus struct {
	Name             string `json:"name"`
	RetainedWALBytes int64  `json:"retained_wal_bytes"`
	LagBytes         int64  `json:"lag_bytes"`
	Active           bool   `json:"active"`
	WALStatus        string `json:"wal_status,omitempty"`
	Error            string `json:"error,omitempty"`
}

// slotStatusOf queries the slot for a status report.
func slotStatusOf(c *postgres.Config) *slotStatus {
	if c == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st, err := postgres.QuerySlot(ctx, *c)
	if err != nil {
		return &slotStatus{Name: c.Slot, Error: err.Error()}
	}
	return &slotStatus{Name: st.Slot, RetainedWALBytes: st.RetainedWALBytes, LagBytes: st.LagBytes, Active: st.Active, WALStatus: st.WALStatus}
}

// newPostgresCommand is `shardsync postgres …`: PostgreSQL source upkeep.
func newPostgresCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "postgres",
		Short: "PostgreSQL source upkeep (drop a retired job's replication slot and publication)",
	}
	var o jobOptions
	var file string
	drop := &cobra.Command{
		Use:   "drop-slot",
		Short: "Drop a retired job's replication slot and publication, so the server stops keeping WAL for it",
		Long: `Drops the job's logical replication slot and its publication. Run it when a
job is retired: a slot that nobody reads keeps every WAL segment since its
position, and fills the server's disk. The slot must not be in use (stop the
job first). The names are the job's --slot and --publication, or the ones
derived from its label prefix; give the same flags (or -f pipeline.yaml) as
the job. Starting the job again afterwards needs a new ledger (a fresh
snapshot): its ledger's position pointed into the dropped slot.`,
		Example: `  shardsync postgres drop-slot --postgres 127.0.0.1:5432 --postgres-database shop --label-prefix orders_job
  shardsync postgres drop-slot -f pipeline.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := o
			if file != "" {
				fo, _, err := loadPipelineFile(file, osLookupEnv, nil)
				if err != nil {
					return err
				}
				opts = fo
			}
			if opts.pg.addr == "" {
				return usagef("give --postgres host:port (or -f with a postgres source)")
			}
			j := &job{opts: opts, prefix: opts.labelPrefix}
			if j.prefix == "" {
				j.prefix = defaultPrefix(opts)
			}
			var err error
			if j.pgPW, err = secret(opts.pg.passwordFile, opts.pg.password, envPostgresPassword, "PostgreSQL"); err != nil {
				return err
			}
			c, err := j.postgresConfig()
			if err != nil {
				return err
			}
			done, err := postgres.DropSlot(cmd.Context(), c)
			for _, d := range done {
				fmt.Fprintln(cmd.OutOrStdout(), d)
			}
			return err
		},
	}
	f := drop.Flags()
	o.pg.addFlags(f)
	f.StringVar(&o.labelPrefix, "label-prefix", "", "the job's label prefix (the slot name is derived from it)")
	f.StringVar(&o.sources, "sources", "", "the job's --sources (for the derived label prefix)")
	f.StringVar(&o.tables, "tables", "", "the job's --tables (for the derived label prefix)")
	f.StringVar(&o.target, "target", "", "the job's --target (for the derived label prefix)")
	f.StringVarP(&file, "file", "f", "", "the job's pipeline file")
	cmd.AddCommand(drop)
	return cmd
}

// describeToken reads a resume token of any source kind.
func describeToken(tok change.Token) (merge.TokenInfo, error) {
	if postgres.IsToken(tok) {
		return postgres.DescribeToken(tok)
	}
	return merge.DescribeToken(tok)
}

// bytesText renders a byte count for people.
func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for x := n / unit; x >= unit; x /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// secPGSource is the pipeline section of a `source:` with type postgres.
const secPGSource = "source postgres"

// isPostgresSource reports whether a source: section has type: postgres.
func isPostgresSource(n *yaml.Node) bool {
	if n.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "type" {
			return n.Content[i+1].Value == "postgres"
		}
	}
	return false
}

func init() {
	pipelineKeys = append(pipelineKeys, postgresPipelineKeys()...)
	sectionTitles = append(sectionTitles[:1:1], append([]struct{ section, title, intro string }{
		{secPGSource, "`source:` (type `postgres`)", "Reads one PostgreSQL database through a logical replication slot (pgoutput), with Flink CDC postgres-cdc's option names; see [postgres.md](postgres.md)."},
	}, sectionTitles[1:]...)...)
}

// postgresPipelineKeys are the keys of a postgres source: Flink CDC's
// postgres-cdc option names.
func postgresPipelineKeys() []pipelineKey {
	sec := secPGSource
	return []pipelineKey{
		ignoredKeyQuiet(sec, "type", "postgres"),
		ignoredKeyQuiet(sec, "name", whyNameIgnored),
		customKey(sec, "hostname", "postgres", "source host; with port it makes --postgres host:port", func(st *fileState, _, v string) error {
			st.host = v
			return nil
		}),
		customKey(sec, "port", "postgres", "source port (default 5432)", func(st *fileState, _, v string) error {
			if _, err := strconv.ParseUint(v, 10, 16); err != nil {
				return fmt.Errorf("port %q is not a port number", v)
			}
			st.port = v
			return nil
		}),
		flagKey(sec, "username", "postgres-user", "role (needs LOGIN REPLICATION and SELECT; owning the shards lets shardsync publish them)"),
		{Section: sec, Key: "password", Kind: keyCustom, Secret: true, Flag: "postgres-password-file",
			Doc: "password; write ${ENV_VAR}, or leave it out and set $" + envPostgresPassword,
			set: func(st *fileState, _, v string) error { st.o.pg.password = v; return nil }},
		flagKey(sec, "database-name", "postgres-database", "database holding the shards"),
		flagKey(sec, "schema-name", "sources", "regex of the shards' schema names (whole name)"),
		flagKey(sec, "table-name", "tables", "regex of the shards' table names (whole name)"),
		flagKey(sec, "tables", "sources", "Flink CDC table selector over schema.table: comma-separated regexes, an unescaped dot separates schema and table"),
		flagKey(sec, "slot.name", "slot", "logical replication slot of the job (default: derived from the label prefix)"),
		flagKey(sec, "publication.name", "publication", "publication shardsync creates or extends with the shards (default: <slot>_pub)"),
		customKey(sec, "decoding.plugin.name", "", "must be pgoutput", func(_ *fileState, _, v string) error {
			if v != "pgoutput" {
				return fmt.Errorf("decoding.plugin.name %q is not supported: shardsync reads pgoutput (built into PostgreSQL 10+)", v)
			}
			return nil
		}),
		flagKey(sec, "scan.incremental.snapshot.chunk.size", "chunk-size", "rows per snapshot chunk"),
		customKey(sec, "scan.startup.mode", "", "only initial (snapshot, then the slot) is supported", func(_ *fileState, _, v string) error {
			if v != "initial" {
				return fmt.Errorf("scan.startup.mode %q is not supported: shardsync always starts with a snapshot and then follows the slot (initial); remove the key", v)
			}
			return nil
		}),
		ignoredKey(sec, "scan.incremental.snapshot.enabled", "shardsync always snapshots in chunks without locks; ignored"),
		ignoredKey(sec, "scan.incremental.snapshot.backfill.skip", "shardsync reconciles each chunk with the slot exactly (no backfill); ignored"),
		ignoredKey(sec, "scan.incremental.snapshot.chunk.key-column", "shardsync chunks by a one-column integer primary key; ignored"),
		ignoredKey(sec, "scan.newly-added-table.enabled", "shardsync picks up new shards that match while it runs; ignored"),
		ignoredKey(sec, "scan.snapshot.fetch.size", whyFlinkTuning),
		ignoredKey(sec, "heartbeat.interval", "shardsync acknowledges the server's keepalives itself; ignored"),
		ignoredKey(sec, "heartbeat.interval.ms", "shardsync acknowledges the server's keepalives itself; ignored"),
		ignoredKey(sec, "changelog-mode", "shardsync writes upserts and deletes by key; ignored"),
		ignoredKey(sec, "connect.timeout", whyFlinkTuning),
		ignoredKey(sec, "connect.max-retries", whyFlinkTuning),
		ignoredKey(sec, "connection.pool.size", whyFlinkTuning),
		ignoredKey(sec, "metadata.list", "shardsync always writes the database (schema) and table metadata columns; ignored"),
		ignoredKey(sec, "debezium.*", "Debezium properties; shardsync does not use Debezium; ignored"),
		ignoredKey(sec, "jdbc.properties.*", "JDBC driver properties; shardsync does not use JDBC; ignored"),
	}
}

// demoSource is the shards' server of a demo run.
type demoSource struct {
	args   []string              // the job's source flags
	exec   func(...string) error // runs statements on the shards
	prompt string
	stop   func()
}

// demoSourceStarter starts a demo's source server with the tutorial's shards.
type demoSourceStarter func(ctx context.Context, out io.Writer, dir string) (demoSource, error)

// startDemoPostgres starts a throwaway PostgreSQL 15 cluster holding the
// tutorial's shards as schemas emp_1, emp_2.
func startDemoPostgres(ctx context.Context, out io.Writer, _ string) (demoSource, error) {
	demoStep(out, "Starting PostgreSQL 15 with wal_level = logical")
	// Its own directory: the cluster runs as an unprivileged user, who
	// cannot enter the demo's private directory.
	pg, err := testenv.LaunchPostgres(ctx, testenv.PostgresOptions{})
	if err != nil {
		return demoSource{}, err
	}
	stop := func() { _ = pg.Stop(); pg.Remove() }
	fmt.Fprintf(out, "    PostgreSQL listens on %s\n", pg.Addr())
	demoStep(out, "Creating the tutorial's shards: schemas emp_1, emp_2 × tables employees_1, employees_2")
	if err := pg.Exec("postgres", testenv.TutorialPostgresSQL()); err != nil {
		stop()
		return demoSource{}, err
	}
	for _, s := range []string{"emp_1", "emp_2"} {
		for _, t := range []string{"employees_1", "employees_2"} {
			rows, err := pg.Query("postgres", "SELECT count(*) FROM "+s+"."+t)
			if err != nil {
				stop()
				return demoSource{}, err
			}
			fmt.Fprintf(out, "    %s.%s: %s rows\n", s, t, rows[0][0])
		}
	}
	return demoSource{
		args:   []string{"--postgres", pg.Addr(), "--postgres-user", "postgres", "--postgres-database", "postgres"},
		exec:   func(stmts ...string) error { return pg.Exec("postgres", stmts...) },
		prompt: "postgres",
		stop:   stop,
	}, nil
}
