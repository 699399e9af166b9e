package dorisemu

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/server"
)

// SQL subset served on the MySQL port and by Exec:
//
//	CREATE DATABASE [IF NOT EXISTS] db
//	DROP DATABASE [IF EXISTS] db
//	CREATE TABLE [IF NOT EXISTS] [db.]t (col TYPE [NULL|NOT NULL] [DEFAULT lit] [COMMENT 'c'], ...)
//	    [ENGINE=OLAP] [UNIQUE KEY(...)|DUPLICATE KEY(...)] [COMMENT 'c'] [PARTITION BY ... (kept verbatim)]
//	    [DISTRIBUTED BY HASH(...)|RANDOM [BUCKETS n|AUTO]] [PROPERTIES ("k"="v", ...)]
//	    (PROPERTIES "function_column.sequence_col" / "function_column.sequence_type" give a
//	    Unique Key table its sequence column; other properties are kept verbatim)
//	DROP TABLE [IF EXISTS] [db.]t
//	TRUNCATE TABLE [db.]t
//	ALTER TABLE [db.]t ADD COLUMN coldef [FIRST|AFTER c] | ADD COLUMN (coldef, ...)
//	ALTER TABLE [db.]t MODIFY COLUMN coldef (widening only)
//	SHOW DATABASES | SHOW TABLES [FROM db] | SHOW CREATE TABLE [db.]t | DESC [db.]t
//	SELECT COUNT(*) FROM [db.]t [WHERE ...]
//	SELECT *|col,... FROM [db.]t [WHERE col op literal [AND ...]] [ORDER BY col [ASC|DESC], ...] [LIMIT n [OFFSET m]]
//	USE db; SET ... (accepted, ignored); SELECT @@var / DATABASE() / VERSION()
//
// Anything else fails with a MySQL error naming what is unsupported.

type tokKind int

const (
	tkIdent tokKind = iota
	tkQuoted
	tkString
	tkNumber
	tkSym
	tkEOF
)

type token struct {
	kind tokKind
	s    string
}

func lex(sql string) ([]token, error) {
	var out []token
	i := 0
	for i < len(sql) {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '-' && strings.HasPrefix(sql[i:], "--"):
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
		case c == '`':
			j := strings.IndexByte(sql[i+1:], '`')
			if j < 0 {
				return nil, fmt.Errorf("unterminated quoted identifier")
			}
			out = append(out, token{tkQuoted, sql[i+1 : i+1+j]})
			i += j + 2
		case c == '\'' || c == '"':
			var sb strings.Builder
			j := i + 1
			for ; j < len(sql); j++ {
				if sql[j] == '\\' && j+1 < len(sql) {
					j++
					sb.WriteByte(sql[j])
					continue
				}
				if sql[j] == c {
					if j+1 < len(sql) && sql[j+1] == c {
						sb.WriteByte(c)
						j++
						continue
					}
					break
				}
				sb.WriteByte(sql[j])
			}
			if j >= len(sql) {
				return nil, fmt.Errorf("unterminated string literal")
			}
			out = append(out, token{tkString, sb.String()})
			i = j + 1
		case c >= '0' && c <= '9' || (c == '-' && i+1 < len(sql) && sql[i+1] >= '0' && sql[i+1] <= '9' && prevAllowsSign(out)):
			j := i + 1
			for j < len(sql) && (sql[j] >= '0' && sql[j] <= '9' || sql[j] == '.' || sql[j] == 'e' || sql[j] == 'E') {
				j++
			}
			out = append(out, token{tkNumber, sql[i:j]})
			i = j
		case c == '_' || c == '@' || c == '$' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80:
			j := i + 1
			for j < len(sql) && (sql[j] == '_' || sql[j] == '@' || sql[j] == '$' || sql[j] >= 'a' && sql[j] <= 'z' ||
				sql[j] >= 'A' && sql[j] <= 'Z' || sql[j] >= '0' && sql[j] <= '9' || sql[j] >= 0x80) {
				j++
			}
			out = append(out, token{tkIdent, sql[i:j]})
			i = j
		default:
			for _, op := range []string{"<=", ">=", "!=", "<>"} {
				if strings.HasPrefix(sql[i:], op) {
					out = append(out, token{tkSym, op})
					i += 2
					goto next
				}
			}
			if !strings.ContainsRune("(),;=.*<>+-", rune(c)) {
				return nil, fmt.Errorf("unexpected character %q", c)
			}
			out = append(out, token{tkSym, string(c)})
			i++
		next:
		}
	}
	return append(out, token{kind: tkEOF}), nil
}

func prevAllowsSign(out []token) bool {
	if len(out) == 0 {
		return true
	}
	p := out[len(out)-1]
	return p.kind == tkSym && p.s != ")" || p.kind == tkIdent && isKeyword(p.s)
}

func isKeyword(s string) bool {
	switch strings.ToUpper(s) {
	case "DEFAULT", "AND", "WHERE", "LIMIT", "OFFSET":
		return true
	}
	return false
}

type parser struct {
	toks []token
	i    int
}

func (p *parser) peek() token { return p.toks[p.i] }
func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tkEOF {
		p.i++
	}
	return t
}

func (p *parser) isKw(words ...string) bool {
	for k, w := range words {
		if p.i+k >= len(p.toks) {
			return false
		}
		t := p.toks[p.i+k]
		if t.kind != tkIdent || !strings.EqualFold(t.s, w) {
			return false
		}
	}
	return true
}

func (p *parser) acceptKw(words ...string) bool {
	if p.isKw(words...) {
		p.i += len(words)
		return true
	}
	return false
}

func (p *parser) expectKw(words ...string) error {
	if !p.acceptKw(words...) {
		return fmt.Errorf("expected %s near %q", strings.Join(words, " "), p.peek().s)
	}
	return nil
}

func (p *parser) isSym(s string) bool { t := p.peek(); return t.kind == tkSym && t.s == s }

func (p *parser) acceptSym(s string) bool {
	if p.isSym(s) {
		p.i++
		return true
	}
	return false
}

func (p *parser) expectSym(s string) error {
	if !p.acceptSym(s) {
		return fmt.Errorf("expected %q near %q", s, p.peek().s)
	}
	return nil
}

func (p *parser) ident() (string, error) {
	t := p.peek()
	if t.kind != tkIdent && t.kind != tkQuoted {
		return "", fmt.Errorf("expected an identifier near %q", t.s)
	}
	p.i++
	return t.s, nil
}

// qname parses [db.]name, defaulting db to the session database.
func (p *parser) qname(s *session) (db, name string, err error) {
	a, err := p.ident()
	if err != nil {
		return "", "", err
	}
	if p.acceptSym(".") {
		b, err := p.ident()
		if err != nil {
			return "", "", err
		}
		return a, b, nil
	}
	if s.db == "" {
		return "", "", mysql.NewError(mysql.ER_NO_DB_ERROR, "errCode = 2, detailMessage = No database selected")
	}
	return s.db, a, nil
}

func (p *parser) identList() ([]string, error) {
	if err := p.expectSym("("); err != nil {
		return nil, err
	}
	var out []string
	for {
		n, err := p.ident()
		if err != nil {
			return nil, err
		}
		out = append(out, n)
		if p.acceptSym(")") {
			return out, nil
		}
		if err := p.expectSym(","); err != nil {
			return nil, err
		}
	}
}

func (p *parser) end() error {
	p.acceptSym(";")
	if p.peek().kind != tkEOF {
		return fmt.Errorf("unexpected %q", p.peek().s)
	}
	return nil
}

// session is per-connection SQL state.
type session struct{ db string }

func unsupported(what string) error {
	return mysql.NewError(mysql.ER_NOT_SUPPORTED_YET, "errCode = 2, detailMessage = the Doris emulator does not support "+what)
}

func parseErr(err error) error {
	if _, ok := err.(*mysql.MyError); ok {
		return err
	}
	return mysql.NewError(mysql.ER_PARSE_ERROR, "errCode = 2, detailMessage = Syntax error: "+err.Error())
}

func userErr(code uint16, format string, args ...any) error {
	return mysql.NewError(code, "errCode = 2, detailMessage = "+fmt.Sprintf(format, args...))
}

// Exec runs one statement of the SQL subset (see the MySQL port) without a
// current database: qualify table names as db.table. Result sets are
// discarded; use Rows to read data.
func (e *Emulator) Exec(sql string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, err := e.execLocked(&session{}, sql)
	return err
}

// Query runs a SELECT/SHOW/DESC of the SQL subset and returns the column
// names and rows as the MySQL port would send them.
func (e *Emulator) Query(sql string) ([]string, [][]any, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, err := e.execLocked(&session{}, sql)
	if err != nil {
		return nil, nil, err
	}
	if r == nil || r.Resultset == nil {
		return nil, nil, nil
	}
	var names []string
	for _, f := range r.Fields {
		names = append(names, string(f.Name))
	}
	var rows [][]any
	for i := range r.RowDatas {
		row := make([]any, len(names))
		for j := range names {
			v, _ := r.GetValue(i, j)
			if b, ok := v.([]byte); ok {
				v = string(b)
			}
			row[j] = v
		}
		rows = append(rows, row)
	}
	return names, rows, nil
}

// execLocked parses and runs one statement; e.mu must be held.
func (e *Emulator) execLocked(s *session, sql string) (*mysql.Result, error) {
	toks, err := lex(sql)
	if err != nil {
		return nil, parseErr(err)
	}
	p := &parser{toks: toks}
	ddl := true
	var res *mysql.Result
	switch {
	case p.acceptKw("CREATE", "DATABASE"):
		err = e.createDatabase(p)
	case p.acceptKw("CREATE", "TABLE"):
		err = e.createTable(p, s)
	case p.acceptKw("DROP", "DATABASE"):
		err = e.dropDatabase(p)
	case p.acceptKw("DROP", "TABLE"):
		err = e.dropTable(p, s)
	case p.acceptKw("ALTER", "TABLE"):
		err = e.alterTable(p, s)
	case p.acceptKw("TRUNCATE", "TABLE"):
		err = e.truncateTable(p, s)
	case p.acceptKw("DELETE", "FROM"): // journaled like DDL: replay runs it again in its place
		e.tickLocked()
		res, err = e.deleteStmt(p, s)
	default:
		ddl = false
		e.tickLocked()
		res, err = e.queryLocked(p, s)
	}
	if err != nil {
		return nil, err
	}
	if ddl {
		e.appendJournal(jrec{K: "ddl", DB: s.db, SQL: sql})
	}
	return res, nil
}

func (e *Emulator) queryLocked(p *parser, s *session) (*mysql.Result, error) {
	switch {
	case p.acceptKw("USE"):
		name, err := p.ident()
		if err != nil {
			return nil, parseErr(err)
		}
		if err := p.end(); err != nil {
			return nil, parseErr(err)
		}
		if e.dbs[name] == nil {
			return nil, userErr(mysql.ER_BAD_DB_ERROR, "Unknown database '%s'", name)
		}
		s.db = name
		return nil, nil
	case p.acceptKw("SET"):
		return nil, nil
	case p.acceptKw("SHOW", "DATABASES"), p.acceptKw("SHOW", "SCHEMAS"):
		names := []string{"information_schema"}
		for n := range e.dbs {
			names = append(names, n)
		}
		slices.Sort(names[1:])
		rows := make([][]any, len(names))
		for i, n := range names {
			rows[i] = []any{n}
		}
		return resultset([]string{"Database"}, rows)
	case p.acceptKw("SHOW", "FULL", "TABLES"), p.acceptKw("SHOW", "TABLES"):
		db := s.db
		if p.acceptKw("FROM") || p.acceptKw("IN") {
			n, err := p.ident()
			if err != nil {
				return nil, parseErr(err)
			}
			db = n
		}
		if db == "" {
			return nil, userErr(mysql.ER_NO_DB_ERROR, "No database selected")
		}
		d := e.dbs[db]
		if d == nil {
			return nil, userErr(mysql.ER_BAD_DB_ERROR, "Unknown database '%s'", db)
		}
		var rows [][]any
		for _, n := range slices.Sorted(mapsKeys(d.tables)) {
			rows = append(rows, []any{n})
		}
		return resultset([]string{"Tables_in_" + db}, rows)
	case p.acceptKw("SHOW", "CREATE", "TABLE"):
		tbl, err := e.lookupTable(p, s)
		if err != nil {
			return nil, err
		}
		return resultset([]string{"Table", "Create Table"}, [][]any{{tbl.Name, showCreate(tbl)}})
	case p.acceptKw("DESC"), p.acceptKw("DESCRIBE"):
		tbl, err := e.lookupTable(p, s)
		if err != nil {
			return nil, err
		}
		var rows [][]any
		for _, c := range tbl.Columns {
			var def any
			if c.Default != nil {
				def = *c.Default
			}
			rows = append(rows, []any{c.Name, c.Type.SQL(), yesNo(c.Nullable), strconv.FormatBool(c.IsKey), def, aggregationType(tbl, c)})
		}
		return resultset([]string{"Field", "Type", "Null", "Key", "Default", "Extra"}, rows)
	case p.acceptKw("SELECT"):
		return e.selectStmt(p, s)
	}
	t := p.peek()
	if t.kind == tkEOF {
		return nil, userErr(mysql.ER_PARSE_ERROR, "empty statement")
	}
	return nil, unsupported("statements starting with " + strings.ToUpper(t.s))
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

func (e *Emulator) lookupTable(p *parser, s *session) (*table, error) {
	db, name, err := p.qname(s)
	if err != nil {
		return nil, parseErr(err)
	}
	if err := p.end(); err != nil {
		return nil, parseErr(err)
	}
	return e.tableOf(db, name)
}

func (e *Emulator) tableOf(db, name string) (*table, error) {
	d := e.dbs[db]
	if d == nil {
		return nil, userErr(mysql.ER_BAD_DB_ERROR, "Unknown database '%s'", db)
	}
	t := d.tables[name]
	if t == nil {
		return nil, userErr(mysql.ER_NO_SUCH_TABLE, "Unknown table '%s'", name)
	}
	return t, nil
}

// resultset builds a text result set. It does not use
// mysql.BuildSimpleTextResultset: that takes a pooled Resultset whose Fields
// go-mysql v1.16.0 does not clear, so in a process that is also a go-mysql
// client (tests, the demo) a stale field type from an earlier result makes
// it fail with "row types aren't consistent". A column whose values mix
// types is typed as a string.
func resultset(names []string, rows [][]any) (*mysql.Result, error) {
	rs := &mysql.Resultset{Fields: make([]*mysql.Field, len(names)), FieldNames: make(map[string]int, len(names))}
	for j, name := range names {
		f := &mysql.Field{Name: []byte(name), Type: mysql.MYSQL_TYPE_NULL, Charset: 33}
		for _, r := range rows {
			t, charset, flag, err := textFieldType(r[j])
			if err != nil {
				return nil, userErr(mysql.ER_UNKNOWN_ERROR, "building result set: column %s: %v", name, err)
			}
			switch {
			case t == mysql.MYSQL_TYPE_NULL:
			case f.Type == mysql.MYSQL_TYPE_NULL:
				f.Type, f.Charset, f.Flag = t, charset, flag
			case f.Type != t:
				f.Type, f.Charset, f.Flag = mysql.MYSQL_TYPE_VAR_STRING, 33, 0
			}
		}
		rs.Fields[j] = f
		rs.FieldNames[name] = j
	}
	for _, r := range rows {
		var data []byte
		for _, v := range r {
			b, err := mysql.FormatTextValue(v)
			if err != nil {
				return nil, userErr(mysql.ER_UNKNOWN_ERROR, "building result set: %v", err)
			}
			if b == nil {
				data = append(data, 0xfb) // NULL
				continue
			}
			data = append(data, mysql.PutLengthEncodedString(b)...)
		}
		rs.RowDatas = append(rs.RowDatas, data)
	}
	return &mysql.Result{Status: 0, Resultset: rs}, nil
}

// textFieldType is the column type, charset and flags a value is sent with.
func textFieldType(v any) (typ uint8, charset uint16, flag uint16, err error) {
	switch v.(type) {
	case nil:
		return mysql.MYSQL_TYPE_NULL, 33, 0, nil
	case int8, int16, int32, int64, int:
		return mysql.MYSQL_TYPE_LONGLONG, 63, mysql.BINARY_FLAG, nil
	case uint8, uint16, uint32, uint64, uint:
		return mysql.MYSQL_TYPE_LONGLONG, 63, mysql.BINARY_FLAG | mysql.UNSIGNED_FLAG, nil
	case float32, float64:
		return mysql.MYSQL_TYPE_DOUBLE, 63, mysql.BINARY_FLAG, nil
	case string, []byte:
		return mysql.MYSQL_TYPE_VAR_STRING, 33, 0, nil
	case time.Time:
		return mysql.MYSQL_TYPE_DATETIME, 33, 0, nil
	}
	return 0, 0, 0, fmt.Errorf("unsupported value type %T", v)
}

func (e *Emulator) createDatabase(p *parser) error {
	ifNot := p.acceptKw("IF", "NOT", "EXISTS")
	name, err := p.ident()
	if err != nil {
		return parseErr(err)
	}
	if p.acceptKw("PROPERTIES") {
		if _, err := parseProperties(p); err != nil {
			return parseErr(err)
		}
	}
	if err := p.end(); err != nil {
		return parseErr(err)
	}
	if e.dbs[name] != nil {
		if ifNot {
			return nil
		}
		return userErr(mysql.ER_DB_CREATE_EXISTS, "Can't create database '%s'; database exists", name)
	}
	e.dbs[name] = &database{ID: e.nextID(), Name: name, tables: map[string]*table{}, labels: map[string][]*txn{}}
	return nil
}

func (e *Emulator) dropDatabase(p *parser) error {
	ifExists := p.acceptKw("IF", "EXISTS")
	name, err := p.ident()
	if err != nil {
		return parseErr(err)
	}
	p.acceptKw("FORCE")
	if err := p.end(); err != nil {
		return parseErr(err)
	}
	d := e.dbs[name]
	if d == nil {
		if ifExists {
			return nil
		}
		return userErr(mysql.ER_BAD_DB_ERROR, "Can't drop database '%s'; database doesn't exist", name)
	}
	if d.running > 0 {
		return userErr(mysql.ER_UNKNOWN_ERROR, "There are still some transactions in the COMMITTED state waiting to be completed. The database [%s] cannot be dropped.", name)
	}
	delete(e.dbs, name)
	return nil
}

func (e *Emulator) dropTable(p *parser, s *session) error {
	ifExists := p.acceptKw("IF", "EXISTS")
	db, name, err := p.qname(s)
	if err != nil {
		return parseErr(err)
	}
	p.acceptKw("FORCE")
	if err := p.end(); err != nil {
		return parseErr(err)
	}
	d := e.dbs[db]
	if d == nil {
		return userErr(mysql.ER_BAD_DB_ERROR, "Unknown database '%s'", db)
	}
	if d.tables[name] == nil {
		if ifExists {
			return nil
		}
		return userErr(mysql.ER_BAD_TABLE_ERROR, "Unknown table '%s'", name)
	}
	delete(d.tables, name)
	return nil
}

// truncateTable empties a table and keeps its definition (Doris replaces
// its partitions with empty ones). Loads still open against the table are
// not failed, unlike real Doris, where their commit no longer finds the
// old partitions.
func (e *Emulator) truncateTable(p *parser, s *session) error {
	db, name, err := p.qname(s)
	if err != nil {
		return parseErr(err)
	}
	if p.isKw("PARTITION") {
		return unsupported("TRUNCATE TABLE ... PARTITION")
	}
	if err := p.end(); err != nil {
		return parseErr(err)
	}
	t, err := e.tableOf(db, name)
	if err != nil {
		return err
	}
	t.truncate()
	return nil
}

func parseProperties(p *parser) ([][2]string, error) {
	if err := p.expectSym("("); err != nil {
		return nil, err
	}
	var out [][2]string
	for !p.acceptSym(")") {
		k := p.next()
		if k.kind != tkString {
			return nil, fmt.Errorf("expected a quoted property name near %q", k.s)
		}
		if err := p.expectSym("="); err != nil {
			return nil, err
		}
		v := p.next()
		if v.kind != tkString {
			return nil, fmt.Errorf("expected a quoted property value near %q", v.s)
		}
		out = append(out, [2]string{k.s, v.s})
		if !p.isSym(")") {
			if err := p.expectSym(","); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// colDef parses `name TYPE [(args)] [NULL|NOT NULL] [DEFAULT x] [COMMENT 'c']`.
// nullSpec is 0 (unspecified), 1 (NULL) or 2 (NOT NULL).
func parseColDef(p *parser) (column, int, error) {
	name, err := p.ident()
	if err != nil {
		return column{}, 0, err
	}
	tname, err := p.ident()
	if err != nil {
		return column{}, 0, err
	}
	var args []int
	if p.acceptSym("(") {
		for {
			t := p.next()
			n, err := strconv.Atoi(t.s)
			if t.kind != tkNumber || err != nil {
				return column{}, 0, fmt.Errorf("expected a number in the type of %s near %q", name, t.s)
			}
			args = append(args, n)
			if p.acceptSym(")") {
				break
			}
			if err := p.expectSym(","); err != nil {
				return column{}, 0, err
			}
		}
	}
	if p.isSym("<") {
		return column{}, 0, unsupported("complex type " + strings.ToUpper(tname))
	}
	ct, err := newColType(tname, args)
	if err != nil {
		return column{}, 0, userErr(mysql.ER_NOT_SUPPORTED_YET, "%v", err)
	}
	c := column{Name: name, Type: ct}
	nullSpec := 0
	for {
		switch {
		case p.acceptKw("NOT", "NULL"):
			nullSpec = 2
		case p.acceptKw("NULL"):
			nullSpec = 1
		case p.acceptKw("KEY"):
		case p.acceptKw("DEFAULT"):
			t := p.next()
			switch {
			case t.kind == tkIdent && strings.EqualFold(t.s, "NULL"):
				c.Default = nil
			case t.kind == tkIdent && strings.EqualFold(t.s, "CURRENT_TIMESTAMP"):
				d := "CURRENT_TIMESTAMP"
				c.Default = &d
				if p.acceptSym("(") {
					p.next()
					if err := p.expectSym(")"); err != nil {
						return c, 0, err
					}
				}
			case t.kind == tkString || t.kind == tkNumber:
				d := t.s
				if _, err := convertValue(ct, d); err != nil {
					return c, 0, userErr(mysql.ER_INVALID_DEFAULT, "Invalid default value for '%s': %v", name, err)
				}
				c.Default = &d
			default:
				return c, 0, fmt.Errorf("unexpected default value %q for %s", t.s, name)
			}
		case p.acceptKw("COMMENT"):
			t := p.next()
			if t.kind != tkString {
				return c, 0, fmt.Errorf("expected a comment string near %q", t.s)
			}
			c.Comment = t.s
		case p.isKw("AUTO_INCREMENT"), p.isKw("REPLACE"), p.isKw("SUM"), p.isKw("MAX"), p.isKw("MIN"),
			p.isKw("REPLACE_IF_NOT_NULL"), p.isKw("ON"), p.isKw("GENERATED"), p.isKw("AS"):
			return c, 0, unsupported(strings.ToUpper(p.peek().s) + " in column definitions")
		default:
			return c, nullSpec, nil
		}
	}
}

func (e *Emulator) createTable(p *parser, s *session) error {
	ifNot := p.acceptKw("IF", "NOT", "EXISTS")
	dbName, name, err := p.qname(s)
	if err != nil {
		return parseErr(err)
	}
	d := e.dbs[dbName]
	if d == nil {
		return userErr(mysql.ER_BAD_DB_ERROR, "Unknown database '%s'", dbName)
	}
	if p.isKw("LIKE") || p.isKw("AS") {
		return unsupported("CREATE TABLE ... " + strings.ToUpper(p.peek().s))
	}
	if err := p.expectSym("("); err != nil {
		return parseErr(err)
	}
	t := &table{DB: dbName, Name: name, uniq: map[string][]any{}}
	var nullSpecs []int
	for {
		if p.isKw("INDEX") || p.isKw("KEY") || p.isKw("PRIMARY") {
			return unsupported("indexes in CREATE TABLE")
		}
		c, ns, err := parseColDef(p)
		if err != nil {
			return parseErr(err)
		}
		if t.colIndex(c.Name) >= 0 {
			return userErr(mysql.ER_DUP_FIELDNAME, "Duplicate column name '%s'", c.Name)
		}
		t.Columns = append(t.Columns, c)
		nullSpecs = append(nullSpecs, ns)
		if p.acceptSym(")") {
			break
		}
		if err := p.expectSym(","); err != nil {
			return parseErr(err)
		}
	}
	if p.acceptKw("ENGINE") {
		p.acceptSym("=")
		eng, err := p.ident()
		if err != nil {
			return parseErr(err)
		}
		if !strings.EqualFold(eng, "OLAP") {
			return unsupported("ENGINE=" + eng)
		}
	}
	switch {
	case p.acceptKw("UNIQUE", "KEY"):
		t.KeysType = KeysUnique
	case p.acceptKw("DUPLICATE", "KEY"):
		t.KeysType = KeysDuplicate
	case p.isKw("AGGREGATE", "KEY"):
		return unsupported("AGGREGATE KEY tables")
	case p.isKw("PRIMARY", "KEY"):
		return unsupported("PRIMARY KEY tables")
	}
	if t.KeysType != "" {
		t.KeyCols, err = p.identList()
		if err != nil {
			return parseErr(err)
		}
	} else {
		t.KeysType = KeysDuplicate
		t.KeyCols = []string{t.Columns[0].Name}
	}
	if p.acceptKw("COMMENT") {
		c := p.next()
		if c.kind != tkString {
			return parseErr(fmt.Errorf("expected a table comment string near %q", c.s))
		}
		t.Comment = c.s
	}
	if p.isKw("PARTITION", "BY") || p.isKw("AUTO", "PARTITION") {
		start := p.i
		depth := 0
		for p.peek().kind != tkEOF && !(depth == 0 && p.isKw("DISTRIBUTED")) && !(depth == 0 && p.isKw("PROPERTIES")) {
			tk := p.next()
			if tk.kind == tkSym && tk.s == "(" {
				depth++
			} else if tk.kind == tkSym && tk.s == ")" {
				depth--
			}
		}
		t.Partition = renderTokens(p.toks[start:p.i])
	}
	if p.acceptKw("DISTRIBUTED", "BY") {
		switch {
		case p.acceptKw("HASH"):
			if t.DistCols, err = p.identList(); err != nil {
				return parseErr(err)
			}
		case p.acceptKw("RANDOM"):
		default:
			return parseErr(fmt.Errorf("expected HASH or RANDOM near %q", p.peek().s))
		}
		if p.acceptKw("BUCKETS") {
			if !p.acceptKw("AUTO") {
				tk := p.next()
				n, err := strconv.Atoi(tk.s)
				if tk.kind != tkNumber || err != nil || n < 1 {
					return parseErr(fmt.Errorf("expected a bucket number near %q", tk.s))
				}
				t.Buckets = n
			}
		}
	} else if t.KeysType == KeysUnique {
		return userErr(mysql.ER_UNKNOWN_ERROR, "Create unique keys table should not contain random distribution desc")
	}
	if p.acceptKw("PROPERTIES") {
		if t.Properties, err = parseProperties(p); err != nil {
			return parseErr(err)
		}
	}
	if err := p.end(); err != nil {
		return parseErr(err)
	}
	if err := t.sequenceProperties(); err != nil {
		return err
	}
	// Key columns: an ordered prefix of the schema, of key-able types.
	for i, k := range t.KeyCols {
		if i >= len(t.Columns) || !strings.EqualFold(t.Columns[i].Name, k) {
			if t.colIndex(k) < 0 {
				return userErr(mysql.ER_BAD_FIELD_ERROR, "Key column[%s] doesn't exist.", k)
			}
			return userErr(mysql.ER_UNKNOWN_ERROR, "Key columns should be a ordered prefix of the schema. KeyColumns[%d] (starts from zero) is %s, but corresponding column is %s in the previous columns declaration.", i, k, t.Columns[i].Name)
		}
		t.KeyCols[i] = t.Columns[i].Name
		c := &t.Columns[i]
		c.IsKey = true
		switch c.Type.Kind {
		case "FLOAT", "DOUBLE":
			return userErr(mysql.ER_UNKNOWN_ERROR, "Float or double can not used as a key, use decimal instead.")
		case "STRING", "JSON":
			return userErr(mysql.ER_UNKNOWN_ERROR, "%s Type should not be used in key column[%s].", c.Type.Kind, c.Name)
		}
	}
	for i := range t.Columns {
		c := &t.Columns[i]
		c.Nullable = nullSpecs[i] == 1 || (nullSpecs[i] == 0 && !c.IsKey)
	}
	for _, dc := range t.DistCols {
		i := t.colIndex(dc)
		if i < 0 {
			return userErr(mysql.ER_BAD_FIELD_ERROR, "Distribution column[%s] is not found", dc)
		}
		if t.KeysType == KeysUnique && !t.Columns[i].IsKey {
			return userErr(mysql.ER_UNKNOWN_ERROR, "Distribution column[%s] is not key column", dc)
		}
	}
	if d.tables[name] != nil {
		if ifNot {
			return nil
		}
		return userErr(mysql.ER_TABLE_EXISTS_ERROR, "Table '%s' already exists", name)
	}
	t.ID = e.nextID()
	d.tables[name] = t
	return nil
}

// sequenceProperties reads function_column.sequence_col (a column holds the
// sequence value) and function_column.sequence_type (a hidden column does;
// loads name its source with the function_column.sequence_col header).
func (t *table) sequenceProperties() error {
	for _, kv := range t.Properties {
		switch strings.ToLower(kv[0]) {
		case "function_column.sequence_col":
			i := t.colIndex(kv[1])
			if i < 0 {
				return userErr(mysql.ER_UNKNOWN_ERROR, "The specified sequence column[%s] not exists", kv[1])
			}
			if !slices.Contains(seqKinds, t.Columns[i].Type.Kind) {
				return userErr(mysql.ER_UNKNOWN_ERROR, "Sequence type only support integer types and date types")
			}
			t.SeqCol = t.Columns[i].Name
		case "function_column.sequence_type":
			ct, err := newColType(kv[1], nil)
			if err != nil || !slices.Contains(seqKinds, ct.Kind) {
				return userErr(mysql.ER_UNKNOWN_ERROR, "Sequence type only support integer types and date types")
			}
			t.SeqType = &ct
		default:
			continue
		}
		if t.KeysType != KeysUnique {
			return userErr(mysql.ER_UNKNOWN_ERROR, "sequence column only support UNIQUE_KEYS")
		}
	}
	if t.SeqCol != "" && t.SeqType != nil {
		t.SeqType = nil // the mapped column decides the type
	}
	return nil
}

func renderTokens(ts []token) string {
	var sb strings.Builder
	for i, t := range ts {
		if i > 0 && !(t.kind == tkSym && (t.s == ")" || t.s == "," || t.s == ".")) && !(ts[i-1].kind == tkSym && (ts[i-1].s == "(" || ts[i-1].s == ".")) {
			sb.WriteByte(' ')
		}
		switch t.kind {
		case tkQuoted:
			sb.WriteString("`" + t.s + "`")
		case tkString:
			sb.WriteString(strconv.Quote(t.s))
		default:
			sb.WriteString(t.s)
		}
	}
	return sb.String()
}

func (e *Emulator) alterTable(p *parser, s *session) error {
	dbName, name, err := p.qname(s)
	if err != nil {
		return parseErr(err)
	}
	tbl, err := e.tableOf(dbName, name)
	if err != nil {
		return err
	}
	if p.acceptKw("MODIFY", "COLUMN") {
		return modifyColumn(p, tbl)
	}
	if !p.acceptKw("ADD", "COLUMN") {
		return unsupported("ALTER TABLE clauses other than ADD COLUMN and MODIFY COLUMN")
	}
	type added struct {
		c   column
		pos int // insert index
	}
	var adds []added
	cols := slices.Clone(tbl.Columns)
	addOne := func(allowPos bool) error {
		c, ns, err := parseColDef(p)
		if err != nil {
			return err
		}
		c.Nullable = ns != 2
		if c.IsKey || p.isKw("KEY") {
			return unsupported("adding key columns")
		}
		if slices.ContainsFunc(cols, func(x column) bool { return strings.EqualFold(x.Name, c.Name) }) {
			return userErr(mysql.ER_DUP_FIELDNAME, "Can not add column which already exists in base table: %s", c.Name)
		}
		if !c.Nullable && c.Default == nil {
			return userErr(mysql.ER_UNKNOWN_ERROR, "Can not add column which is NOT NULL and has no default value: %s", c.Name)
		}
		pos := len(cols)
		if allowPos {
			switch {
			case p.acceptKw("FIRST"):
				return unsupported("ADD COLUMN ... FIRST (value columns must follow the key columns)")
			case p.acceptKw("AFTER"):
				after, err := p.ident()
				if err != nil {
					return err
				}
				i := slices.IndexFunc(cols, func(x column) bool { return strings.EqualFold(x.Name, after) })
				if i < 0 {
					return userErr(mysql.ER_BAD_FIELD_ERROR, "Column[%s] does not exists", after)
				}
				if i+1 < len(cols) && cols[i].IsKey && cols[i+1].IsKey {
					return userErr(mysql.ER_UNKNOWN_ERROR, "Can not add value column %s between key columns", c.Name)
				}
				pos = i + 1
			}
		}
		cols = slices.Insert(cols, pos, c)
		adds = append(adds, added{c, pos})
		return nil
	}
	if p.acceptSym("(") {
		for {
			if err := addOne(false); err != nil {
				return parseErr(err)
			}
			if p.acceptSym(")") {
				break
			}
			if err := p.expectSym(","); err != nil {
				return parseErr(err)
			}
		}
	} else if err := addOne(true); err != nil {
		return parseErr(err)
	}
	if err := p.end(); err != nil {
		return parseErr(err)
	}
	// Existing rows take each new column's default.
	now := e.now()
	rewrite := func(row []any) []any {
		for _, a := range adds {
			v, _ := a.c.defaultValue(now)
			row = slices.Insert(row, a.pos, v)
		}
		return row
	}
	for k, r := range tbl.uniq {
		tbl.uniq[k] = rewrite(r)
	}
	for i, r := range tbl.dup {
		tbl.dup[i] = rewrite(r)
	}
	tbl.Columns = cols
	return nil
}

// modifyColumn is `ALTER TABLE t MODIFY COLUMN coldef`: Doris's schema
// change of one column's type, allowed only where every old value fits the
// new type (wider integers, FLOAT to DOUBLE, a DECIMAL with no fewer
// integral and fractional digits, a longer VARCHAR, CHAR to a VARCHAR as
// long, a number to VARCHAR/STRING, VARCHAR to STRING, more DATETIME
// fraction digits), and never from nullable to NOT NULL ("Can not change
// from nullable to non-nullable"). Existing rows keep their values,
// converted to the new type.
func modifyColumn(p *parser, tbl *table) error {
	c, ns, err := parseColDef(p)
	if err != nil {
		return parseErr(err)
	}
	if err := p.end(); err != nil {
		return parseErr(err)
	}
	i := tbl.colIndex(c.Name)
	if i < 0 {
		return userErr(mysql.ER_BAD_FIELD_ERROR, "Column[%s] does not exists", c.Name)
	}
	old := tbl.Columns[i]
	c.Name = old.Name
	c.IsKey = old.IsKey
	c.Nullable = ns == 1 || (ns == 0 && old.Nullable)
	if old.Nullable && !c.Nullable {
		return userErr(mysql.ER_UNKNOWN_ERROR, "Can not change from nullable to non-nullable: %s", c.Name)
	}
	if !canWiden(old.Type, c.Type) {
		return userErr(mysql.ER_UNKNOWN_ERROR, "Can not change %s to %s", old.Type.SQL(), c.Type.SQL())
	}
	convert := func(v any) (any, error) {
		if v == nil || old.Type.Kind == c.Type.Kind || (old.Type.isInt() && c.Type.isInt()) {
			return v, nil
		}
		return convertValue(c.Type, fmt.Sprint(v))
	}
	for k, r := range tbl.uniq {
		v, err := convert(r[i])
		if err != nil {
			return userErr(mysql.ER_UNKNOWN_ERROR, "schema change of %s failed: %v", c.Name, err)
		}
		r[i] = v
		tbl.uniq[k] = r
	}
	for _, r := range tbl.dup {
		v, err := convert(r[i])
		if err != nil {
			return userErr(mysql.ER_UNKNOWN_ERROR, "schema change of %s failed: %v", c.Name, err)
		}
		r[i] = v
	}
	tbl.Columns[i] = c
	return nil
}

func canWiden(from, to colType) bool {
	rank := map[string]int{"TINYINT": 1, "SMALLINT": 2, "INT": 3, "BIGINT": 4, "LARGEINT": 5}
	numeric := from.isInt() || from.Kind == "LARGEINT" || from.Kind == "FLOAT" || from.Kind == "DOUBLE" || from.Kind == "DECIMAL"
	switch {
	case rank[from.Kind] > 0 && rank[to.Kind] > 0:
		return rank[to.Kind] >= rank[from.Kind]
	case from.Kind == "FLOAT" && to.Kind == "DOUBLE":
		return true
	case from.Kind == "DECIMAL" && to.Kind == "DECIMAL":
		return to.Scale >= from.Scale && to.Precision-to.Scale >= from.Precision-from.Scale
	case from.Kind == "VARCHAR" && to.Kind == "VARCHAR", from.Kind == "CHAR" && to.Kind == "VARCHAR":
		return to.Len >= from.Len
	case from.Kind == "CHAR" && to.Kind == "CHAR":
		return to.Len == from.Len
	case to.Kind == "STRING" && (from.Kind == "VARCHAR" || from.Kind == "CHAR" || numeric):
		return true
	case to.Kind == "VARCHAR" && numeric:
		return to.Len >= 40
	case from.Kind == "DATETIME" && to.Kind == "DATETIME":
		return to.Scale >= from.Scale
	}
	return from.SQL() == to.SQL()
}

func showCreate(t *table) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "CREATE TABLE `%s` (\n", t.Name)
	for i, c := range t.Columns {
		fmt.Fprintf(&sb, "  `%s` %s", c.Name, c.Type.SQL())
		if c.Nullable {
			sb.WriteString(" NULL")
		} else {
			sb.WriteString(" NOT NULL")
		}
		if c.Default != nil {
			if strings.EqualFold(*c.Default, "CURRENT_TIMESTAMP") {
				sb.WriteString(" DEFAULT CURRENT_TIMESTAMP")
			} else {
				fmt.Fprintf(&sb, " DEFAULT %s", strconv.Quote(*c.Default))
			}
		}
		if c.Comment != "" {
			fmt.Fprintf(&sb, " COMMENT %s", strconv.Quote(c.Comment))
		}
		if i < len(t.Columns)-1 {
			sb.WriteByte(',')
		}
		sb.WriteByte('\n')
	}
	sb.WriteString(") ENGINE=OLAP\n")
	model := "DUPLICATE"
	if t.KeysType == KeysUnique {
		model = "UNIQUE"
	}
	fmt.Fprintf(&sb, "%s KEY(%s)\n", model, backquoteList(t.KeyCols))
	comment := t.Comment
	if comment == "" {
		comment = "OLAP"
	}
	fmt.Fprintf(&sb, "COMMENT '%s'\n", strings.ReplaceAll(comment, "'", "\\'"))
	if t.Partition != "" {
		sb.WriteString(t.Partition + "\n")
	}
	if len(t.DistCols) > 0 {
		fmt.Fprintf(&sb, "DISTRIBUTED BY HASH(%s)", backquoteList(t.DistCols))
	} else {
		sb.WriteString("DISTRIBUTED BY RANDOM")
	}
	if t.Buckets > 0 {
		fmt.Fprintf(&sb, " BUCKETS %d\n", t.Buckets)
	} else {
		sb.WriteString(" BUCKETS AUTO\n")
	}
	props := t.Properties
	if len(props) == 0 {
		props = [][2]string{{"replication_allocation", "tag.location.default: 1"}}
	}
	sb.WriteString("PROPERTIES (\n")
	for i, kv := range props {
		fmt.Fprintf(&sb, "%s = %s", strconv.Quote(kv[0]), strconv.Quote(kv[1]))
		if i < len(props)-1 {
			sb.WriteByte(',')
		}
		sb.WriteByte('\n')
	}
	sb.WriteString(");")
	return sb.String()
}

func backquoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = "`" + n + "`"
	}
	return strings.Join(q, ", ")
}

// predicate is `col op literal` or `col IS [NOT] NULL`.
type predicate struct {
	col int
	op  string
	val any
}

type orderKey struct {
	col  int
	desc bool
}

func (e *Emulator) selectStmt(p *parser, s *session) (*mysql.Result, error) {
	// SELECT without FROM: client probes such as @@version_comment.
	if !slices.ContainsFunc(p.toks, func(t token) bool { return t.kind == tkIdent && strings.EqualFold(t.s, "FROM") }) {
		return e.selectNoFrom(p, s)
	}
	countStar := false
	star := false
	var names []string
	switch {
	case p.acceptSym("*"):
		star = true
	case p.isKw("COUNT") && p.toks[p.i+1].s == "(":
		p.i += 2
		if !p.acceptSym("*") {
			if t := p.next(); t.kind != tkNumber {
				return nil, unsupported("COUNT of an expression other than * or a constant")
			}
		}
		if err := p.expectSym(")"); err != nil {
			return nil, parseErr(err)
		}
		countStar = true
	default:
		for {
			n, err := p.ident()
			if err != nil {
				return nil, unsupported("select expressions other than column names, * and COUNT(*)")
			}
			if p.isSym("(") {
				return nil, unsupported("function " + strings.ToUpper(n) + " in SELECT")
			}
			names = append(names, n)
			if !p.acceptSym(",") {
				break
			}
		}
	}
	if err := p.expectKw("FROM"); err != nil {
		return nil, parseErr(err)
	}
	dbName, name, err := p.qname(s)
	if err != nil {
		return nil, parseErr(err)
	}
	tbl, err := e.tableOf(dbName, name)
	if err != nil {
		return nil, err
	}
	colOf := func(n string) (int, error) {
		if i := tbl.colIndex(n); i >= 0 {
			return i, nil
		}
		if tbl.KeysType == KeysUnique && strings.EqualFold(n, DeleteSignColumn) {
			return -1, nil
		}
		return 0, userErr(mysql.ER_BAD_FIELD_ERROR, "Unknown column '%s' in 'table list'", n)
	}
	var preds []predicate
	if p.acceptKw("WHERE") {
		for {
			cn, err := p.ident()
			if err != nil {
				return nil, unsupported("WHERE conditions other than `column op literal` joined by AND")
			}
			ci, err := colOf(cn)
			if err != nil {
				return nil, err
			}
			pr := predicate{col: ci}
			switch {
			case p.acceptKw("IS", "NOT", "NULL"):
				pr.op = "notnull"
			case p.acceptKw("IS", "NULL"):
				pr.op = "null"
			default:
				op := p.next()
				if op.kind != tkSym || !slices.Contains([]string{"=", "!=", "<>", "<", "<=", ">", ">="}, op.s) {
					return nil, unsupported("operator " + op.s + " in WHERE")
				}
				pr.op = op.s
				lit := p.next()
				if lit.kind != tkString && lit.kind != tkNumber {
					return nil, unsupported("WHERE comparisons with anything but a literal")
				}
				ct := colType{Kind: "TINYINT"}
				if ci >= 0 {
					ct = tbl.Columns[ci].Type
				}
				v, err := convertValue(ct, lit.s)
				if err != nil {
					return nil, userErr(mysql.ER_UNKNOWN_ERROR, "invalid literal %q for column %s: %v", lit.s, cn, err)
				}
				pr.val = v
			}
			preds = append(preds, pr)
			if !p.acceptKw("AND") {
				break
			}
		}
	}
	var order []orderKey
	if p.acceptKw("ORDER", "BY") {
		for {
			cn, err := p.ident()
			if err != nil {
				return nil, unsupported("ORDER BY expressions other than column names")
			}
			ci, err := colOf(cn)
			if err != nil {
				return nil, err
			}
			k := orderKey{col: ci}
			if p.acceptKw("DESC") {
				k.desc = true
			} else {
				p.acceptKw("ASC")
			}
			order = append(order, k)
			if !p.acceptSym(",") {
				break
			}
		}
	}
	limit, offset := -1, 0
	if p.acceptKw("LIMIT") {
		a := p.next()
		n, err := strconv.Atoi(a.s)
		if a.kind != tkNumber || err != nil {
			return nil, parseErr(fmt.Errorf("expected a number after LIMIT near %q", a.s))
		}
		limit = n
		if p.acceptSym(",") {
			b := p.next()
			m, err := strconv.Atoi(b.s)
			if b.kind != tkNumber || err != nil {
				return nil, parseErr(fmt.Errorf("expected a number after LIMIT n, near %q", b.s))
			}
			offset, limit = n, m
		} else if p.acceptKw("OFFSET") {
			b := p.next()
			m, err := strconv.Atoi(b.s)
			if b.kind != tkNumber || err != nil {
				return nil, parseErr(fmt.Errorf("expected a number after OFFSET near %q", b.s))
			}
			offset = m
		}
	}
	if err := p.end(); err != nil {
		return nil, unsupported(fmt.Sprintf("this SELECT (%v)", err))
	}

	get := func(row []any, ci int) any {
		if ci < 0 {
			return int64(0) // visible rows never carry a delete sign
		}
		return row[ci]
	}
	typeOf := func(ci int) colType {
		if ci < 0 {
			return colType{Kind: "TINYINT"}
		}
		return tbl.Columns[ci].Type
	}
	var rows [][]any
	for _, r := range tbl.sortedRows() {
		ok := true
		for _, pr := range preds {
			v := get(r, pr.col)
			switch pr.op {
			case "null":
				ok = v == nil
			case "notnull":
				ok = v != nil
			default:
				if v == nil {
					ok = false
					break
				}
				c := compareValues(typeOf(pr.col), v, pr.val)
				switch pr.op {
				case "=":
					ok = c == 0
				case "!=", "<>":
					ok = c != 0
				case "<":
					ok = c < 0
				case "<=":
					ok = c <= 0
				case ">":
					ok = c > 0
				case ">=":
					ok = c >= 0
				}
			}
			if !ok {
				break
			}
		}
		if ok {
			rows = append(rows, r)
		}
	}
	if countStar {
		return resultset([]string{"count(*)"}, [][]any{{int64(len(rows))}})
	}
	if len(order) > 0 {
		slices.SortStableFunc(rows, func(a, b []any) int {
			for _, k := range order {
				c := compareValues(typeOf(k.col), get(a, k.col), get(b, k.col))
				if k.desc {
					c = -c
				}
				if c != 0 {
					return c
				}
			}
			return 0
		})
	}
	if offset > len(rows) {
		offset = len(rows)
	}
	rows = rows[offset:]
	if limit >= 0 && limit < len(rows) {
		rows = rows[:limit]
	}
	var cols []int
	if star {
		for i, c := range tbl.Columns {
			cols = append(cols, i)
			names = append(names, c.Name)
		}
	} else {
		for _, n := range names {
			ci, err := colOf(n)
			if err != nil {
				return nil, err
			}
			cols = append(cols, ci)
		}
	}
	out := make([][]any, len(rows))
	for i, r := range rows {
		o := make([]any, len(cols))
		for j, ci := range cols {
			o[j] = wireValue(get(r, ci))
		}
		out[i] = o
	}
	return resultset(names, out)
}

// wireValue is the Go value the MySQL result set carries for a stored value.
func wireValue(v any) any {
	switch x := v.(type) {
	case bool:
		return boolInt(x)
	case nil, int64, float64, string:
		return x
	}
	return fmt.Sprint(v)
}

func (e *Emulator) selectNoFrom(p *parser, s *session) (*mysql.Result, error) {
	var names []string
	var vals []any
	for {
		t := p.next()
		switch {
		case t.kind == tkIdent && strings.HasPrefix(t.s, "@@"):
			v := strings.ToLower(strings.TrimPrefix(strings.TrimPrefix(t.s, "@@"), "session."))
			names = append(names, t.s)
			switch v {
			case "version_comment":
				vals = append(vals, "Doris version doris-"+e.opts.Version+"-emulator")
			case "version":
				vals = append(vals, "5.7.99")
			case "autocommit":
				vals = append(vals, int64(1))
			case "max_allowed_packet":
				vals = append(vals, int64(16777216))
			default:
				vals = append(vals, "")
			}
		case t.kind == tkIdent && (strings.EqualFold(t.s, "DATABASE") || strings.EqualFold(t.s, "VERSION")) && p.isSym("("):
			p.next()
			if err := p.expectSym(")"); err != nil {
				return nil, parseErr(err)
			}
			names = append(names, strings.ToUpper(t.s)+"()")
			if strings.EqualFold(t.s, "DATABASE") {
				if s.db == "" {
					vals = append(vals, nil)
				} else {
					vals = append(vals, s.db)
				}
			} else {
				vals = append(vals, "5.7.99")
			}
		case t.kind == tkNumber:
			names = append(names, t.s)
			n, err := strconv.ParseInt(t.s, 10, 64)
			if err != nil {
				vals = append(vals, t.s)
			} else {
				vals = append(vals, n)
			}
		case t.kind == tkString:
			names = append(names, t.s)
			vals = append(vals, t.s)
		default:
			return nil, unsupported("SELECT " + t.s + " without FROM")
		}
		if p.acceptKw("LIMIT") {
			p.next()
		}
		if !p.acceptSym(",") {
			break
		}
	}
	if err := p.end(); err != nil {
		return nil, unsupported(fmt.Sprintf("this SELECT (%v)", err))
	}
	return resultset(names, [][]any{vals})
}

// Rows returns the visible rows of db.table (rows removed by the delete
// sign are not returned), sorted by the key columns. Values are int64 for
// integer types, bool, float64, and strings for LARGEINT, DECIMAL (fixed
// scale), DATE (2006-01-02), DATETIME, CHAR/VARCHAR/STRING and JSON; NULL is
// nil. In CountOnly mode tables stay empty.
func (e *Emulator) Rows(db, tableName string) ([]map[string]any, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tickLocked()
	tbl, err := e.tableOf(db, tableName)
	if err != nil {
		return nil, fmt.Errorf("reading rows of %s.%s: %w", db, tableName, err)
	}
	rows := tbl.sortedRows()
	out := make([]map[string]any, len(rows))
	for i, r := range rows {
		m := make(map[string]any, len(r))
		for j, c := range tbl.Columns {
			m[c.Name] = r[j]
		}
		out[i] = m
	}
	return out, nil
}

// mysqlHandler serves one MySQL connection.
type mysqlHandler struct {
	e *Emulator
	s session
}

func (h *mysqlHandler) UseDB(db string) error {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	if h.e.dbs[db] == nil {
		return userErr(mysql.ER_BAD_DB_ERROR, "Unknown database '%s'", db)
	}
	h.s.db = db
	return nil
}

func (h *mysqlHandler) HandleQuery(q string) (*mysql.Result, error) {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	h.e.log.Debug("mysql query", "db", h.s.db, "sql", q)
	return h.e.execLocked(&h.s, q)
}

func (h *mysqlHandler) HandleFieldList(string, string) ([]*mysql.Field, error) {
	return nil, unsupported("COM_FIELD_LIST")
}

func (h *mysqlHandler) HandleStmtPrepare(string) (int, int, any, error) {
	return 0, 0, nil, unsupported("prepared statements (use the text protocol)")
}

func (h *mysqlHandler) HandleStmtExecute(any, string, []any) (*mysql.Result, error) {
	return nil, unsupported("prepared statements (use the text protocol)")
}

func (h *mysqlHandler) HandleStmtClose(any) error { return nil }

func (h *mysqlHandler) HandleOtherCommand(cmd byte, _ []byte) error {
	return unsupported(fmt.Sprintf("MySQL command 0x%02x", cmd))
}

func (e *Emulator) startMySQL() {
	e.mysqlSrv = server.NewServer("5.7.99", mysql.DEFAULT_COLLATION_ID, mysql.AUTH_NATIVE_PASSWORD, nil, nil)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := e.queryLn.Accept()
			if err != nil {
				return
			}
			e.connMu.Lock()
			e.mysqlConns[c] = struct{}{}
			e.connMu.Unlock()
			e.wg.Add(1)
			go e.serveMySQL(c)
		}
	}()
}

func (e *Emulator) serveMySQL(c net.Conn) {
	defer e.wg.Done()
	defer func() {
		_ = c.Close()
		e.connMu.Lock()
		delete(e.mysqlConns, c)
		e.connMu.Unlock()
	}()
	auth := server.NewInMemoryAuthenticationHandler(mysql.AUTH_NATIVE_PASSWORD)
	if err := auth.AddUser(e.opts.User, e.opts.Password); err != nil {
		e.log.Error("configuring MySQL auth", "err", err)
		return
	}
	conn, err := e.mysqlSrv.NewCustomizedConn(c, auth, &mysqlHandler{e: e})
	if err != nil {
		e.log.Debug("mysql handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	for {
		if err := conn.HandleCommand(); err != nil {
			return
		}
	}
}
