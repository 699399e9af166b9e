package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/merge"
)

// runtimeParams pin the session settings that decide the text output of
// values (PostgreSQL's own subscriber pins the first three).
var runtimeParams = map[string]string{
	"DateStyle":          "ISO",
	"IntervalStyle":      "postgres",
	"extra_float_digits": "3",
	"TimeZone":           "UTC",
	"bytea_output":       "hex",
	"application_name":   "shardsync",
}

func (c *Config) connString() string {
	h, p, _ := net.SplitHostPort(c.Addr)
	q := func(s string) string { return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'" }
	return fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=%s connect_timeout=%d", q(h), p, q(c.User), q(c.Database), c.SSLMode, max(int(c.ConnectTimeout.Seconds()), 1))
}

// connect opens a SQL connection with the pinned settings.
func (c *Config) connect(ctx context.Context) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig(c.connString())
	if err != nil {
		return nil, fmt.Errorf("postgres connection settings: %w", err)
	}
	cc.Password = c.Password
	for k, v := range runtimeParams {
		cc.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, c.connectError(err)
	}
	return conn, nil
}

// replConn opens a logical replication connection (replication=database).
func (c *Config) replConn(ctx context.Context) (*pgconn.PgConn, error) {
	cc, err := pgconn.ParseConfig(c.connString())
	if err != nil {
		return nil, fmt.Errorf("postgres connection settings: %w", err)
	}
	cc.Password = c.Password
	for k, v := range runtimeParams {
		cc.RuntimeParams[k] = v
	}
	cc.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, c.connectError(err)
	}
	return conn, nil
}

// connectError names what to fix for the usual login failures.
func (c *Config) connectError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "28P01", "28000":
			return fmt.Errorf("%w: %s as %q to database %s: %s: check the user and its password ($SHARDSYNC_POSTGRES_PASSWORD) and pg_hba.conf", ErrAuth, c.Addr, c.User, c.Database, pe.Message)
		case "3D000":
			return fmt.Errorf("%w: database %q does not exist on %s", merge.ErrPrerequisite, c.Database, c.Addr)
		case "42501":
			return fmt.Errorf("%w: role %q may not open a replication connection (%s): run ALTER ROLE %s WITH REPLICATION (or use a superuser)", merge.ErrPrerequisite, c.User, pe.Message, quoteIdent(c.User))
		case "53300":
			return fmt.Errorf("%w: %s: too many connections or wal senders: raise max_connections / max_wal_senders", merge.ErrPrerequisite, pe.Message)
		}
	}
	return fmt.Errorf("%w: %s as %q: %v", merge.ErrConnect, c.Addr, c.User, err)
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func quoteTable(id change.TableID) string {
	return quoteIdent(id.Database) + "." + quoteIdent(id.Table)
}

// checkServer verifies wal_level, the role's REPLICATION attribute and
// free replication slots; every failure names the setting and the fix.
func checkServer(ctx context.Context, conn *pgx.Conn, cfg *Config) error {
	var walLevel string
	var repl, super bool
	var version int
	err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'), r.rolreplication, r.rolsuper, current_setting('server_version_num')::int
		FROM pg_roles r WHERE r.rolname = current_user`).Scan(&walLevel, &repl, &super, &version)
	if err != nil {
		return fmt.Errorf("reading the server settings: %w", err)
	}
	var errs []error
	if version < 100000 {
		errs = append(errs, fmt.Errorf("%w: PostgreSQL %d is too old: pgoutput logical replication needs 10 or later (tested on 15)", merge.ErrPrerequisite, version))
	}
	if walLevel != "logical" {
		errs = append(errs, fmt.Errorf("%w: wal_level is %s, logical decoding needs wal_level = logical: run ALTER SYSTEM SET wal_level = logical (or set it in postgresql.conf) and restart PostgreSQL (a reload is not enough)", merge.ErrPrerequisite, walLevel))
	}
	if !repl && !super {
		errs = append(errs, fmt.Errorf("%w: role %q lacks the REPLICATION attribute needed for a logical replication slot: run ALTER ROLE %s WITH REPLICATION", merge.ErrPrerequisite, cfg.User, quoteIdent(cfg.User)))
	}
	return errors.Join(errs...)
}

// foundTable is a table matched by a route.
type foundTable struct {
	id      change.TableID
	route   int
	oid     uint32
	replid  string // pg_class.relreplident: d, n, f, i
	est     int64
	inPub   bool
	hasPKey bool
}

// listTables returns the ordinary tables matched by a route, sorted by
// schema and name, with their publication membership.
func listTables(ctx context.Context, conn *pgx.Conn, m *merge.TableMerger, pub string) ([]foundTable, error) {
	rows, err := conn.Query(ctx, `SELECT n.nspname, c.relname, c.oid, c.relreplident::text, greatest(c.reltuples, 0)::bigint,
			EXISTS (SELECT 1 FROM pg_publication_tables p WHERE p.pubname = $1 AND p.schemaname = n.nspname AND p.tablename = c.relname),
			EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND NOT c.relispartition
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
		ORDER BY 1, 2`, pub)
	if err != nil {
		return nil, fmt.Errorf("listing tables: %w", err)
	}
	defer rows.Close()
	var out []foundTable
	for rows.Next() {
		var f foundTable
		if err := rows.Scan(&f.id.Database, &f.id.Table, &f.oid, &f.replid, &f.est, &f.inPub, &f.hasPKey); err != nil {
			return nil, fmt.Errorf("listing tables: %w", err)
		}
		if f.route = m.RouteOf(f.id); f.route >= 0 {
			out = append(out, f)
		}
	}
	return out, rows.Err()
}

// noMatchError explains a route that matched nothing.
func noMatchError(ctx context.Context, conn *pgx.Conn, cfg *Config, i int) error {
	r := cfg.Routes[i]
	var schemas []string
	rows, err := conn.Query(ctx, `SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('pg_catalog','information_schema') AND nspname NOT LIKE 'pg\_%' ORDER BY 1`)
	if err == nil {
		for rows.Next() {
			var s string
			if rows.Scan(&s) == nil {
				schemas = append(schemas, s)
			}
		}
		rows.Close()
	}
	var matched []string
	for _, s := range schemas {
		if r.Databases.MatchString(s) {
			matched = append(matched, s)
		}
	}
	hint := fmt.Sprintf("schemas in database %s: [%s]", cfg.Database, strings.Join(schemas, ", "))
	if len(matched) > 0 {
		hint = fmt.Sprintf("schemas matching %s: [%s], but none has a table matching %s", r.Databases, strings.Join(matched, ", "), r.Tables)
	}
	return fmt.Errorf("%w: route %d (%s) matches no table in database %s; %s. Expressions are anchored RE2 regular expressions over schema and table names, not globs (write emp_[0-9]+, not emp_*)",
		merge.ErrNoShards, i+1, r, cfg.Database, hint)
}

// loadColumns reads a table's published columns (generated columns are
// not published) and primary key.
func loadColumns(ctx context.Context, conn *pgx.Conn, oid uint32) ([]colInfo, []string, error) {
	rows, err := conn.Query(ctx, `SELECT a.attname, a.atttypid, a.atttypmod, NOT a.attnotnull, t.typcategory::text, format_type(a.atttypid, a.atttypmod), t.typtype::text, t.typbasetype, t.typtypmod
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		ORDER BY a.attnum`, oid)
	if err != nil {
		return nil, nil, fmt.Errorf("reading columns: %w", err)
	}
	var cols []colInfo
	for rows.Next() {
		var c colInfo
		var typtype string
		var base uint32
		var baseMod int32
		if err := rows.Scan(&c.Name, &c.Type.OID, &c.Type.Mod, &c.Nullable, &c.Type.Category, &c.Type.Name, &typtype, &base, &baseMod); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("reading columns: %w", err)
		}
		if typtype == "d" { // a domain: its base type's mapping
			c.Type.OID, c.Type.Mod = base, baseMod
		}
		cols = append(cols, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("reading columns: %w", err)
	}
	krows, err := conn.Query(ctx, `SELECT a.attname FROM pg_index i
		JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord`, oid)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the primary key: %w", err)
	}
	defer krows.Close()
	var key []string
	for krows.Next() {
		var k string
		if err := krows.Scan(&k); err != nil {
			return nil, nil, err
		}
		key = append(key, k)
	}
	return cols, key, krows.Err()
}

// typeInfo completes a Relation column's type from the catalog (enums,
// arrays and domains are known only by OID there).
func typeInfo(ctx context.Context, conn *pgx.Conn, oid uint32, mod int32) (pgType, error) {
	t := pgType{OID: oid, Mod: mod}
	var typtype string
	var base uint32
	var baseMod int32
	err := conn.QueryRow(ctx, `SELECT typcategory::text, format_type(oid, $2), typtype::text, typbasetype, typtypmod FROM pg_type WHERE oid = $1`, oid, mod).
		Scan(&t.Category, &t.Name, &typtype, &base, &baseMod)
	if err != nil {
		return t, fmt.Errorf("reading type %d: %w", oid, err)
	}
	if typtype == "d" {
		t.OID, t.Mod = base, baseMod
	}
	return t, nil
}

// checkIdentity says what to change when a table's deletes and updates
// cannot be captured with the merged key.
func checkIdentity(f foundTable, key []string) error {
	switch {
	case f.replid == "n":
		return fmt.Errorf("%w: table %s has REPLICA IDENTITY NOTHING: PostgreSQL refuses its UPDATEs and DELETEs once it is published and shardsync could not find the old key: run ALTER TABLE %s REPLICA IDENTITY DEFAULT (with a primary key) or FULL",
			merge.ErrPrerequisite, f.id, quoteTable(f.id))
	case f.replid == "d" && len(key) == 0:
		return fmt.Errorf("%w: table %s has no primary key and REPLICA IDENTITY DEFAULT: PostgreSQL refuses its UPDATEs and DELETEs once it is published: add a primary key, or run ALTER TABLE %s REPLICA IDENTITY FULL",
			merge.ErrPrerequisite, f.id, quoteTable(f.id))
	case f.replid == "i":
		return fmt.Errorf("%w: table %s has REPLICA IDENTITY USING INDEX: deletes would carry that index's columns, not the primary key the target is keyed by: run ALTER TABLE %s REPLICA IDENTITY DEFAULT (or FULL)",
			merge.ErrPrerequisite, f.id, quoteTable(f.id))
	}
	return nil
}

// ensurePublication creates the publication for tables, or adds the ones
// it lacks. Changes of a table are published from the commit of its
// addition on.
func ensurePublication(ctx context.Context, conn *pgx.Conn, cfg *Config, tables []change.TableID) error {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, cfg.Publication).Scan(&exists); err != nil {
		return fmt.Errorf("reading publication %s: %w", cfg.Publication, err)
	}
	if len(tables) == 0 && exists {
		return nil
	}
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = quoteTable(t)
	}
	var stmt string
	switch {
	case !exists && len(tables) == 0:
		stmt = fmt.Sprintf(`CREATE PUBLICATION %s WITH (publish = 'insert, update, delete')`, quoteIdent(cfg.Publication))
	case !exists:
		stmt = fmt.Sprintf(`CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert, update, delete')`, quoteIdent(cfg.Publication), strings.Join(names, ", "))
	default:
		stmt = fmt.Sprintf(`ALTER PUBLICATION %s ADD TABLE %s`, quoteIdent(cfg.Publication), strings.Join(names, ", "))
	}
	if _, err := conn.Exec(ctx, stmt); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42501" {
			return fmt.Errorf("%w: %s: role %q may not publish these tables (it must own them): run as a table owner or superuser: %s", merge.ErrPrerequisite, pe.Message, cfg.User, stmt)
		}
		return fmt.Errorf("publishing the shards: %s: %w", stmt, err)
	}
	return nil
}

// slotInfo is a replication slot as pg_replication_slots shows it.
type slotInfo struct {
	exists         bool
	plugin, db     string
	active         bool
	pid            int32
	walStatus      string
	confirmedFlush uint64
	retained, lag  int64
}

func readSlot(ctx context.Context, conn *pgx.Conn, slot string) (slotInfo, error) {
	var s slotInfo
	var plugin, db, walStatus *string
	var pid *int32
	var flush *string
	var retained, lag *int64
	err := conn.QueryRow(ctx, `SELECT plugin, database, active, active_pid, wal_status, confirmed_flush_lsn::text,
			(pg_current_wal_lsn() - restart_lsn)::bigint, (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, slot).
		Scan(&plugin, &db, &s.active, &pid, &walStatus, &flush, &retained, &lag)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("reading replication slot %s: %w", slot, err)
	}
	s.exists = true
	deref := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	s.plugin, s.db, s.walStatus = deref(plugin), deref(db), deref(walStatus)
	if pid != nil {
		s.pid = *pid
	}
	if flush != nil {
		l, err := parseLSN(*flush)
		if err != nil {
			return s, err
		}
		s.confirmedFlush = l
	}
	if retained != nil {
		s.retained = *retained
	}
	if lag != nil {
		s.lag = *lag
	}
	return s, nil
}

func publicationExists(ctx context.Context, conn *pgx.Conn, pub string) (bool, error) {
	var ok bool
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, pub).Scan(&ok)
	return ok, err
}

// ListTables lists the ordinary tables of cfg's database as schema.table
// (for planning routes before a Source is opened).
func ListTables(ctx context.Context, cfg Config) ([]change.TableID, error) {
	cfg.setDefaults()
	conn, err := cfg.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND NOT c.relispartition
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
		ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("listing tables: %w", err)
	}
	defer rows.Close()
	var out []change.TableID
	for rows.Next() {
		var id change.TableID
		if err := rows.Scan(&id.Database, &id.Table); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}
