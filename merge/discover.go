package merge

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/shardsync/shardsync/change"
)

// query runs a statement and returns its rows as strings; NULL becomes "".
func query(c *client.Conn, q string, args ...any) ([][]string, error) {
	r, err := c.Execute(q, args...)
	if err != nil {
		return nil, fmt.Errorf("running %q: %w", q, err)
	}
	defer r.Close()
	if r.Resultset == nil {
		return nil, nil
	}
	out := make([][]string, len(r.Values))
	for i, row := range r.Values {
		out[i] = make([]string, len(row))
		for j, v := range row {
			switch v.Type {
			case mysql.FieldValueTypeNull:
			case mysql.FieldValueTypeString:
				out[i][j] = string(v.AsString())
			default:
				out[i][j] = fmt.Sprint(v.Value())
			}
		}
	}
	return out, nil
}

func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

func quoteTable(t change.TableID) string { return quoteIdent(t.Database) + "." + quoteIdent(t.Table) }

var systemSchemas = []string{"mysql", "information_schema", "performance_schema", "sys"}

// routeOf returns the index of the first route matching the table, or -1.
func routeOf(routes []Route, t change.TableID) int {
	if slices.Contains(systemSchemas, strings.ToLower(t.Database)) {
		return -1
	}
	for i, r := range routes {
		if r.Databases.MatchString(t.Database) && r.Tables.MatchString(t.Table) {
			return i
		}
	}
	return -1
}

type foundTable struct {
	id     change.TableID
	route  int
	rows   int64
	engine string
}

// listTables returns every base table matched by a route, sorted.
func listTables(c *client.Conn, routes []Route) ([]foundTable, error) {
	rows, err := query(c, "SELECT TABLE_SCHEMA, TABLE_NAME, IFNULL(TABLE_ROWS,0), IFNULL(ENGINE,'') FROM information_schema.TABLES WHERE TABLE_TYPE='BASE TABLE'")
	if err != nil {
		return nil, fmt.Errorf("listing tables: %w", err)
	}
	var out []foundTable
	for _, r := range rows {
		id := change.TableID{Database: r[0], Table: r[1]}
		ri := routeOf(routes, id)
		if ri < 0 {
			continue
		}
		n, _ := strconv.ParseInt(r[2], 10, 64)
		out = append(out, foundTable{id: id, route: ri, rows: n, engine: r[3]})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].id.Database != out[j].id.Database {
			return out[i].id.Database < out[j].id.Database
		}
		return out[i].id.Table < out[j].id.Table
	})
	return out, nil
}

// noMatchError explains a route that matched nothing.
func noMatchError(c *client.Conn, i int, r Route) error {
	rows, err := query(c, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
	var dbs, matched []string
	if err == nil {
		for _, row := range rows {
			if slices.Contains(systemSchemas, strings.ToLower(row[0])) {
				continue
			}
			dbs = append(dbs, row[0])
			if r.Databases.MatchString(row[0]) {
				matched = append(matched, row[0])
			}
		}
	}
	hint := fmt.Sprintf("databases on the server: [%s]", strings.Join(dbs, ", "))
	if len(matched) > 0 {
		hint = fmt.Sprintf("databases matching %s: [%s], but none has a table matching %s", r.Databases, strings.Join(matched, ", "), r.Tables)
	}
	return fmt.Errorf("%w: route %d (%s) matches no table; %s. Expressions are anchored RE2 regular expressions, not globs (write emp_[0-9]+ or emp_.*, not emp_*); set AllowEmptyRoutes to wait for tables created later", ErrNoShards, i+1, r, hint)
}

// loadSchema reads a table's columns and primary key from
// information_schema.
func loadSchema(c *client.Conn, id change.TableID) ([]shardCol, []string, error) {
	rows, err := query(c, `SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, IFNULL(CHARACTER_SET_NAME,''),
		IFNULL(CHARACTER_MAXIMUM_LENGTH,0), IFNULL(NUMERIC_PRECISION,0), IFNULL(NUMERIC_SCALE,0), IFNULL(DATETIME_PRECISION,0),
		COLUMN_DEFAULT IS NULL, IFNULL(COLUMN_DEFAULT,''), EXTRA
		FROM information_schema.COLUMNS WHERE TABLE_SCHEMA=? AND TABLE_NAME=? ORDER BY ORDINAL_POSITION`, id.Database, id.Table)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the columns of %s: %w", id, err)
	}
	if len(rows) == 0 {
		return nil, nil, fmt.Errorf("table %s has no columns or does not exist", id)
	}
	cols := make([]shardCol, len(rows))
	for i, r := range rows {
		num := func(s string) int64 { n, _ := strconv.ParseInt(s, 10, 64); return n }
		ic := infoColumn{name: r[0], dataType: r[1], columnType: r[2], nullable: r[3], charset: r[4],
			charLen: num(r[5]), numPrec: num(r[6]), numScale: num(r[7]), dtPrec: num(r[8])}
		t, err := colTypeFromInfo(ic)
		if err != nil {
			return nil, nil, fmt.Errorf("table %s: %w", id, err)
		}
		if !supportedCharset(t.charset) {
			return nil, nil, fmt.Errorf("table %s column %s uses character set %s; shardsync captures utf8mb4, utf8mb3, ascii, latin1 and binary columns: convert the column", id, ic.name, t.charset)
		}
		cols[i] = shardCol{name: ic.name, typ: t, nullable: r[3] == "YES"}
		cols[i].def, cols[i].defExpr = columnDefault(r[9] == "1", r[10], r[11], t)
	}
	krows, err := query(c, "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA=? AND TABLE_NAME=? AND INDEX_NAME='PRIMARY' ORDER BY SEQ_IN_INDEX", id.Database, id.Table)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the primary key of %s: %w", id, err)
	}
	var key []string
	for _, r := range krows {
		key = append(key, r[0])
	}
	return cols, key, nil
}

// loadCharsets reads the server's collations and charset widths.
func loadCharsets(c *client.Conn) (*charsets, error) {
	cs := &charsets{byCollation: map[uint64]string{}, maxLen: map[string]int{}}
	rows, err := query(c, "SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS")
	if err != nil {
		return nil, fmt.Errorf("reading collations: %w", err)
	}
	for _, r := range rows {
		id, _ := strconv.ParseUint(r[0], 10, 64)
		cs.byCollation[id] = r[1]
	}
	rows, err = query(c, "SELECT CHARACTER_SET_NAME, MAXLEN FROM information_schema.CHARACTER_SETS")
	if err != nil {
		return nil, fmt.Errorf("reading character sets: %w", err)
	}
	for _, r := range rows {
		n, _ := strconv.Atoi(r[1])
		cs.maxLen[r[0]] = n
	}
	return cs, nil
}

// masterPos reads the current binlog end as a transaction boundary.
func masterPos(c *client.Conn, flavor string) (binPos, error) {
	rows, err := query(c, "SHOW MASTER STATUS")
	if err != nil && flavor != mysql.MariaDBFlavor {
		// MySQL 8.4 removed SHOW MASTER STATUS (8.2 added the new name).
		var err2 error
		if rows, err2 = query(c, "SHOW BINARY LOG STATUS"); err2 == nil {
			err = nil
		}
	}
	if err != nil {
		return binPos{}, fmt.Errorf("reading the binlog position: %w", err)
	}
	if len(rows) == 0 {
		return binPos{}, fmt.Errorf("%w: SHOW MASTER STATUS is empty: binary logging is off; start the server with --log-bin", ErrPrerequisite)
	}
	n, _ := strconv.ParseUint(rows[0][1], 10, 32)
	p := binPos{File: rows[0][0], Pos: uint32(n)}
	if flavor == mysql.MariaDBFlavor {
		g, err := query(c, "SELECT BINLOG_GTID_POS(?, ?)", p.File, p.Pos)
		if err != nil {
			return binPos{}, fmt.Errorf("converting %s to a GTID position: %w", p, err)
		}
		if len(g) > 0 {
			p.GTID = g[0][0]
		}
	} else if len(rows[0]) >= 5 {
		p.GTID = strings.ReplaceAll(rows[0][4], "\n", "")
	}
	return p, nil
}

func detectFlavor(c *client.Conn) string {
	if strings.Contains(strings.ToLower(c.GetServerVersion()), "mariadb") {
		return mysql.MariaDBFlavor
	}
	return mysql.MySQLFlavor
}

// checkPrerequisites verifies the server settings and grants change capture
// needs; every failure names the variable or grant and the fix.
func checkPrerequisites(c *client.Conn, cfg *Config, flavor string) error {
	vars := map[string]string{}
	rows, err := query(c, "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin','binlog_format','binlog_row_image','binlog_row_metadata','server_id','gtid_mode')")
	if err != nil {
		return fmt.Errorf("reading server variables: %w", err)
	}
	for _, r := range rows {
		vars[strings.ToLower(r[0])] = strings.ToUpper(r[1])
	}
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrPrerequisite}, a...)...))
	}
	if v := vars["log_bin"]; v != "ON" && v != "1" {
		bad("binary logging is off (log_bin=%s): start the server with --log-bin=mysql-bin and a non-zero --server-id", v)
	} else {
		if v := vars["binlog_format"]; v != "ROW" {
			bad("binlog_format=%s: shardsync needs ROW; run SET GLOBAL binlog_format='ROW' and set binlog_format=ROW in the server configuration", v)
		}
		if v := vars["binlog_row_image"]; v != "" && v != "FULL" {
			bad("binlog_row_image=%s: shardsync needs FULL before and after images; run SET GLOBAL binlog_row_image='FULL' and set it in the server configuration", v)
		}
		if v, ok := vars["binlog_row_metadata"]; ok && v != "FULL" {
			bad("binlog_row_metadata=%s: shardsync needs FULL (column names, signedness and primary keys in the binlog); run SET GLOBAL binlog_row_metadata='FULL' and set it in the server configuration", v)
		} else if !ok {
			bad("the server has no binlog_row_metadata variable (MariaDB ≥ 10.5 or MySQL ≥ 8.0.1 needed): upgrade the server")
		}
	}
	if sid := vars["server_id"]; sid == strconv.FormatUint(uint64(cfg.ServerID), 10) {
		errs = append(errs, fmt.Errorf("%w: the configured replica server id %d is the source server's own server_id: choose another", ErrDuplicateServerID, cfg.ServerID))
	}
	switch mode := cfg.snapshotMode(flavor); {
	case mode == SnapshotConsistent && flavor != mysql.MariaDBFlavor:
		errs = append(errs, fmt.Errorf("%w: snapshot mode consistent needs MariaDB's consistent-snapshot binlog position (binlog_snapshot_file/position), which %s does not have: use snapshot mode watermark or auto", ErrPrerequisite, flavor))
	case mode == SnapshotWatermark:
		if sid, err := strconv.ParseUint(vars["server_id"], 10, 32); err == nil && sid > uint64(cfg.ServerID) && sid <= uint64(cfg.ServerID)+uint64(cfg.Readers) {
			errs = append(errs, fmt.Errorf("%w: the watermark snapshot's readers register as replica server ids %d-%d, which include the source server's own server_id %d: choose another server id", ErrDuplicateServerID, cfg.backfillServerID(0), cfg.backfillServerID(cfg.Readers-1), sid))
		}
	}
	if err := checkGrants(c, flavor); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func checkGrants(c *client.Conn, flavor string) error {
	rows, err := query(c, "SHOW GRANTS")
	if err != nil {
		return fmt.Errorf("reading the grants of the source user: %w", err)
	}
	var global []string
	for _, r := range rows {
		g := strings.ToUpper(r[0])
		if strings.Contains(g, " ON *.* TO ") {
			global = append(global, g)
		}
	}
	has := func(p string) bool {
		for _, g := range global {
			if strings.Contains(g, "GRANT ALL PRIVILEGES ON *.*") || strings.Contains(g, p) {
				return true
			}
		}
		return false
	}
	var missing []string
	if !has("REPLICATION SLAVE") && !has("REPLICATION REPLICA") {
		missing = append(missing, "REPLICATION SLAVE")
	}
	if flavor == mysql.MariaDBFlavor {
		if !has("BINLOG MONITOR") && !has("REPLICATION CLIENT") && !has("SUPER") {
			missing = append(missing, "BINLOG MONITOR")
		}
	} else if !has("REPLICATION CLIENT") && !has("SUPER") {
		missing = append(missing, "REPLICATION CLIENT")
	}
	if !has("SELECT") {
		missing = append(missing, "SELECT")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: the source user lacks %s on *.*: run GRANT %s ON *.* TO the user (SELECT may instead be granted on the shard databases)", ErrPrerequisite, strings.Join(missing, ", "), strings.Join(missing, ", "))
	}
	return nil
}

// registerTable adds a table to its target, merging its schema into the
// target's union. It returns the schema changes (empty for the first shard).
func (s *Source) registerTable(id change.TableID, ri int, cols []shardCol, key []string, cause string) (*shard, []change.SchemaChange, error) {
	r := s.sh.cfg.Routes[ri]
	tg := s.targets[r.Target]
	if tg == nil {
		tg = &target{id: r.Target, route: ri, shards: map[change.TableID]*shard{}}
		s.targets[r.Target] = tg
		s.targetOrder = append(s.targetOrder, r.Target)
	}
	newCols, changes, err := tg.merge(id, cols, key, cause, &s.sh.cfg, nil)
	if err != nil {
		return nil, nil, err
	}
	if len(tg.shards) == 0 {
		tg.key, tg.keyOf = key, id
	}
	tg.cols = newCols
	tg.setFillRow()
	s.enc.schemaDirty = true
	s.schemaGen++
	sh := &shard{id: id, target: tg, cols: cols, key: key, lastDDL: cause}
	tg.shards[id] = sh
	s.shards[id] = sh
	for _, o := range tg.shards {
		o.remap(&s.sh.cfg)
	}
	return sh, changes, nil
}

// updateShard applies a compatible schema change of a shard.
func (s *Source) updateShard(sh *shard, cols []shardCol, key []string, stmt string) ([]change.SchemaChange, error) {
	if err := checkEvolution(sh.id, sh.cols, cols, sh.key, key, stmt); err != nil {
		return nil, err
	}
	tg := sh.target
	newCols, changes, err := tg.merge(sh.id, cols, key, stmt, &s.sh.cfg, sh.cols)
	if err != nil {
		return nil, err
	}
	tg.cols = newCols
	tg.setFillRow()
	s.enc.schemaDirty = true
	s.schemaGen++
	sh.cols, sh.key, sh.lastDDL = cols, key, stmt
	for _, o := range tg.shards {
		o.remap(&s.sh.cfg)
	}
	return changes, nil
}

// checkBinlogKept fails fast when the binlog file a token resumes from has
// been purged (the stream would fail with ERROR 1236 anyway).
func checkBinlogKept(c *client.Conn, pos binPos) error {
	rows, err := query(c, "SHOW BINARY LOGS")
	if err != nil {
		return fmt.Errorf("listing binary logs: %w", err)
	}
	if len(rows) == 0 || pos.File == "" {
		return nil
	}
	first := rows[0][0]
	if compareFilePos(pos.File, 0, first, 0) < 0 {
		return fmt.Errorf("%w: the resume position %s is in %s, but the server's oldest binlog is now %s (purged, e.g. by binlog_expire_logs_seconds or PURGE BINARY LOGS). The changes since then cannot be read: start the job again without a resume token (a fresh snapshot) and keep binlogs longer than the job may be down", ErrBinlogPurged, pos, pos.File, first)
	}
	return nil
}

// columnDefault reads information_schema.COLUMNS.COLUMN_DEFAULT. MariaDB
// (≥ 10.2.7) prints it as SQL: a string literal quoted ('abc'), a number
// bare, NULL as the word NULL, an expression as its text
// (current_timestamp()). MySQL prints the literal bare, NULL as SQL NULL,
// and marks expressions with DEFAULT_GENERATED in EXTRA (or
// CURRENT_TIMESTAMP for the classic timestamp default).
func columnDefault(isNull bool, text, extra string, t colType) (def *string, expr bool) {
	if isNull || text == "NULL" {
		return nil, false
	}
	ex := strings.ToUpper(extra)
	if strings.Contains(ex, "DEFAULT_GENERATED") {
		return nil, true
	}
	if n := len(text); n >= 2 && text[0] == '\'' && text[n-1] == '\'' {
		v := strings.ReplaceAll(text[1:n-1], "''", "'")
		v = strings.ReplaceAll(v, "\\\\", "\\")
		return &v, false
	}
	if _, err := strconv.ParseFloat(text, 64); err == nil {
		return &text, false
	}
	up := strings.ToUpper(text)
	if strings.HasPrefix(up, "CURRENT_TIMESTAMP") || strings.HasPrefix(up, "NOW(") || strings.Contains(text, "(") {
		return nil, true
	}
	// MySQL prints string and temporal literals bare.
	switch t.kind() {
	case change.KindString, change.KindEnum, change.KindSet, change.KindDate, change.KindDateTime, change.KindBytes:
		return &text, false
	}
	return nil, true
}
