package testenv

import (
	"context"
	"fmt"
	"hash/fnv"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shardsync/shardsync/change"
)

// Columns are the columns of the tutorial's employees table, in table
// order. Row maps in this package (ShardSpec.Row, Change.Before/After,
// MergedState) hold exactly these keys, rendered as text: emp_no in
// decimal, dates as "YYYY-MM-DD", strings and the gender ENUM label raw.
var Columns = []string{"emp_no", "birth_date", "first_name", "last_name", "gender", "hire_date"}

// EmployeesDDL is the CREATE TABLE body of the tutorial's employees table
// (without the table name): emp_no is the primary key and reused across
// shards.
const EmployeesDDL = `(
  emp_no INT NOT NULL,
  birth_date DATE NOT NULL,
  first_name VARCHAR(14) NOT NULL,
  last_name VARCHAR(16) NOT NULL,
  gender ENUM ('M','F') NOT NULL,
  hire_date DATE NOT NULL,
  PRIMARY KEY (emp_no))`

// ShardID names one shard: a table in a database.
type ShardID struct {
	DB    string
	Table string
}

func (s ShardID) String() string { return s.DB + "." + s.Table }

// TableID is the shard as the change vocabulary names tables.
func (s ShardID) TableID() change.TableID { return change.TableID{Database: s.DB, Table: s.Table} }

// quoted is the shard as a quoted SQL identifier, `db`.`table`.
func (s ShardID) quoted() string { return "`" + s.DB + "`.`" + s.Table + "`" }

// ShardSpec describes N databases × M tables in the tutorial's employees
// schema, each table holding Rows deterministic rows. Every shard uses the
// same primary keys, emp_no 1..Rows (as auto-increment per shard would),
// so the keys collide across shards on purpose: only (database, table,
// emp_no) is unique in the merged table.
type ShardSpec struct {
	// DBPrefix names the databases DBPrefix1..DBPrefixN (default "emp_").
	DBPrefix string
	// TablePrefix names the tables TablePrefix1..TablePrefixM (default
	// "employees_").
	TablePrefix string
	// Databases is N, the number of databases (at least 1).
	Databases int
	// Tables is M, the number of tables per database (at least 1).
	Tables int
	// Rows is the number of rows Create puts in each table, with emp_no
	// 1..Rows.
	Rows int
	// Seed selects the row values; the same seed always gives the same rows.
	Seed int64
}

// TutorialSpec is the shape of the Doris tutorial's shards (TutorialSQL):
// emp_1, emp_2 × employees_1, employees_2. Its Rows is 0 because the
// tutorial's rows are not generated: use TutorialState for them. A
// Workload can run on the tutorial data with this spec.
func TutorialSpec() ShardSpec {
	return ShardSpec{DBPrefix: "emp_", TablePrefix: "employees_", Databases: 2, Tables: 2}
}

func (s ShardSpec) withDefaults() ShardSpec {
	if s.DBPrefix == "" {
		s.DBPrefix = "emp_"
	}
	if s.TablePrefix == "" {
		s.TablePrefix = "employees_"
	}
	return s
}

// Validate reports a spec that cannot describe any shards.
func (s ShardSpec) Validate() error {
	s = s.withDefaults()
	if s.Databases < 1 || s.Tables < 1 {
		return fmt.Errorf("shard spec needs at least 1 database and 1 table, got %d×%d", s.Databases, s.Tables)
	}
	if s.Rows < 0 {
		return fmt.Errorf("shard spec has negative Rows %d", s.Rows)
	}
	if !identRE.MatchString(s.DBPrefix) || !identRE.MatchString(s.TablePrefix) {
		return fmt.Errorf("shard spec prefixes %q and %q must be letters, digits and underscores", s.DBPrefix, s.TablePrefix)
	}
	return nil
}

var identRE = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// DBs are the database names, DBPrefix1..DBPrefixN.
func (s ShardSpec) DBs() []string {
	s = s.withDefaults()
	out := make([]string, 0, s.Databases)
	for d := 1; d <= s.Databases; d++ {
		out = append(out, s.DBPrefix+strconv.Itoa(d))
	}
	return out
}

// TableNames are the table names within each database,
// TablePrefix1..TablePrefixM.
func (s ShardSpec) TableNames() []string {
	s = s.withDefaults()
	out := make([]string, 0, s.Tables)
	for t := 1; t <= s.Tables; t++ {
		out = append(out, s.TablePrefix+strconv.Itoa(t))
	}
	return out
}

// Shards lists every shard, database-major: emp_1.employees_1,
// emp_1.employees_2, …, emp_2.employees_1, ….
func (s ShardSpec) Shards() []ShardID {
	var out []ShardID
	for _, db := range s.DBs() {
		for _, t := range s.TableNames() {
			out = append(out, ShardID{DB: db, Table: t})
		}
	}
	return out
}

// Row is the generated row with primary key key in shard sh. It depends
// only on Seed, the shard's names and key, so it is the same on every call
// and every machine.
func (s ShardSpec) Row(sh ShardID, key int64) map[string]string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(sh.DB))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(sh.Table))
	r := splitMix(uint64(s.Seed) ^ 0x5eed5eed5eed5eed)
	r.mix(h.Sum64())
	r.mix(uint64(key))
	return randomRow(r.next, key)
}

// RowsFor is the rows Create puts in shard sh, in emp_no order.
func (s ShardSpec) RowsFor(sh ShardID) []map[string]string {
	out := make([]map[string]string, 0, s.Rows)
	for k := int64(1); k <= int64(s.Rows); k++ {
		out = append(out, s.Row(sh, k))
	}
	return out
}

// InitialState is the merged state Create makes: every shard's RowsFor.
func (s ShardSpec) InitialState() MergedState {
	st := make(MergedState, len(s.Shards())*s.Rows)
	for _, sh := range s.Shards() {
		for k := int64(1); k <= int64(s.Rows); k++ {
			st[MergedKey{DB: sh.DB, Table: sh.Table, Key: k}] = s.Row(sh, k)
		}
	}
	return st
}

// createBatch is the number of rows per INSERT statement in Create.
const createBatch = 1000

// Create makes the databases (if missing) and tables (which must not exist)
// and fills every table with RowsFor, using multi-row INSERTs on one
// connection. The writes go to the binlog like any others.
func (s ShardSpec) Create(ctx context.Context, m *MariaDB) error {
	if err := s.Validate(); err != nil {
		return err
	}
	c, err := m.Connect("")
	if err != nil {
		return err
	}
	defer c.Close()
	exec := func(q string) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("creating shards: %w", err)
		}
		if _, err := c.Execute(q); err != nil {
			return fmt.Errorf("creating shards: executing %q: %w", abbreviate(q, 120), err)
		}
		return nil
	}
	for _, db := range s.DBs() {
		if err := exec("CREATE DATABASE IF NOT EXISTS `" + db + "`"); err != nil {
			return err
		}
	}
	var b strings.Builder
	for _, sh := range s.Shards() {
		if err := exec("CREATE TABLE " + sh.quoted() + " " + EmployeesDDL); err != nil {
			return err
		}
		for lo := int64(1); lo <= int64(s.Rows); lo += createBatch {
			hi := min(lo+createBatch-1, int64(s.Rows))
			b.Reset()
			b.WriteString("INSERT INTO " + sh.quoted() + " (" + strings.Join(Columns, ",") + ") VALUES ")
			for k := lo; k <= hi; k++ {
				if k > lo {
					b.WriteByte(',')
				}
				writeTuple(&b, s.Row(sh, k))
			}
			if err := exec(b.String()); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeTuple writes a row as an SQL VALUES tuple in Columns order.
func writeTuple(b *strings.Builder, row map[string]string) {
	b.WriteByte('(')
	for i, col := range Columns {
		if i > 0 {
			b.WriteByte(',')
		}
		if col == "emp_no" {
			b.WriteString(row[col])
			continue
		}
		b.WriteString(sqlString(row[col]))
	}
	b.WriteByte(')')
}

// sqlString quotes s as an SQL string literal.
func sqlString(s string) string { return "'" + sqlEscaper.Replace(s) + "'" }

var sqlEscaper = strings.NewReplacer(`\`, `\\`, `'`, `''`, "\x00", `\0`)

// MergedKey identifies a row of the merged table: the source database and
// table (the merged table's database_name and table_name columns) and the
// source primary key.
type MergedKey struct {
	DB    string
	Table string
	Key   int64
}

func (k MergedKey) String() string { return k.DB + "." + k.Table + "#" + strconv.FormatInt(k.Key, 10) }

// Shard is the shard the row comes from.
func (k MergedKey) Shard() ShardID { return ShardID{DB: k.DB, Table: k.Table} }

// MergedState is the content of the merged table: one row (column → text,
// see Columns) per source row.
type MergedState map[MergedKey]map[string]string

// Clone is a deep copy.
func (st MergedState) Clone() MergedState {
	out := make(MergedState, len(st))
	for k, row := range st {
		out[k] = maps.Clone(row)
	}
	return out
}

// Diff describes how got differs from st (the expected state), at most
// limit lines (0 = all), in key order; empty when they are equal.
func (st MergedState) Diff(got MergedState, limit int) []string {
	keys := make([]MergedKey, 0, len(st)+len(got))
	for k := range st {
		keys = append(keys, k)
	}
	for k := range got {
		if _, ok := st[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, compareKeys)
	var out []string
	for _, k := range keys {
		want, inWant := st[k]
		have, inGot := got[k]
		var line string
		switch {
		case !inGot:
			line = fmt.Sprintf("%s missing, want %v", k, want)
		case !inWant:
			line = fmt.Sprintf("%s unexpected: %v", k, have)
		case !maps.Equal(want, have):
			line = fmt.Sprintf("%s differs: want %v, got %v", k, want, have)
		default:
			continue
		}
		if limit > 0 && len(out) == limit {
			out = append(out, "…")
			break
		}
		out = append(out, line)
	}
	return out
}

func compareKeys(a, b MergedKey) int {
	if c := strings.Compare(a.DB, b.DB); c != 0 {
		return c
	}
	if c := strings.Compare(a.Table, b.Table); c != 0 {
		return c
	}
	return cmpInt(a.Key, b.Key)
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ReadMergedState reads every row of every shard of spec from the server
// (what the merged table must hold once everything is delivered).
func ReadMergedState(ctx context.Context, m *MariaDB, spec ShardSpec) (MergedState, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	c, err := m.Connect("")
	if err != nil {
		return nil, err
	}
	defer c.Close()
	st := make(MergedState)
	for _, sh := range spec.Shards() {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("reading %s: %w", sh, err)
		}
		r, err := c.Execute("SELECT " + strings.Join(Columns, ",") + " FROM " + sh.quoted())
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", sh, err)
		}
		for _, vals := range ResultStrings(r) {
			row := make(map[string]string, len(Columns))
			for i, col := range Columns {
				row[col] = vals[i]
			}
			key, err := strconv.ParseInt(row["emp_no"], 10, 64)
			if err != nil {
				r.Close()
				return nil, fmt.Errorf("reading %s: emp_no %q is not an integer", sh, row["emp_no"])
			}
			st[MergedKey{DB: sh.DB, Table: sh.Table, Key: key}] = row
		}
		r.Close()
	}
	return st, nil
}

// tutorialRowRE matches one row tuple of TutorialSQL.
var tutorialRowRE = regexp.MustCompile(`\((\d+),'([^']*)','([^']*)','([^']*)','([MF])','([^']*)'\)`)

// TutorialState is the merged state TutorialSQL creates (TutorialRows rows
// in emp_1/emp_2 × employees_1/employees_2).
func TutorialState() MergedState {
	st := make(MergedState, TutorialRows)
	var sh ShardID
	for _, line := range strings.Split(TutorialSQL, "\n") {
		line = strings.TrimSpace(line)
		if db, ok := strings.CutPrefix(line, "USE "); ok {
			sh.DB = strings.TrimSuffix(db, ";")
		}
		if t, ok := strings.CutPrefix(line, "INSERT INTO `"); ok {
			sh.Table, _, _ = strings.Cut(t, "`")
		}
		if mm := tutorialRowRE.FindStringSubmatch(line); mm != nil {
			key, _ := strconv.ParseInt(mm[1], 10, 64)
			row := make(map[string]string, len(Columns))
			for i, col := range Columns {
				row[col] = mm[i+1]
			}
			st[MergedKey{DB: sh.DB, Table: sh.Table, Key: key}] = row
		}
	}
	return st
}

// Name pools for generated rows: first names fit VARCHAR(14), last names
// fit VARCHAR(16) and never start with a lower-case "w" (workload tokens
// do). One has a quote and one a backslash, to exercise escaping.
var (
	firstNames = []string{"Georgi", "Bezalel", "Parto", "Chirstian", "Kyoichi", "Anneke", "Tzvetan",
		"Saniya", "Sumant", "Duangkaew", "Mary", "Patricio", "Eberhardt", "Berni", "Guoxiang",
		"Kazuhito", "Cristinel", "Kazuhide", "Lillian", "Mayuko", "Ramzi", "Shahaf", "Bojan",
		"Suzette", "Prasadram", "Yongqiao", "Divier", "Domenick", "Otmar", "Elvis", "Adamantios"}
	lastNames = []string{"Facello", "Simmel", "Bamford", "Koblick", "Maliniak", "Preusig",
		"Zielinski", "Kalloufi", "Peac", "Piveteau", "Sluis", "Bridgland", "Terkki", "Genin",
		"Nooteboom", "Cappelletti", "Bouloucos", "Peha", "Haddadi", "Warwick", "Erde", "Famili",
		"Montemayor", "Pettey", "Heyers", "Berztiss", "Reistad", "Tempesti", "Herbst", "Demeyer",
		"O'Connell", `Back\slash`}
	birthEpoch = time.Date(1952, 1, 1, 0, 0, 0, 0, time.UTC)
	hireEpoch  = time.Date(1985, 1, 1, 0, 0, 0, 0, time.UTC)
)

// randomRow draws a row with primary key key from next.
func randomRow(next func() uint64, key int64) map[string]string {
	gender := "M"
	if next()%2 == 1 {
		gender = "F"
	}
	return map[string]string{
		"emp_no":     strconv.FormatInt(key, 10),
		"birth_date": birthEpoch.AddDate(0, 0, int(next()%(14*365))).Format(time.DateOnly),
		"first_name": firstNames[next()%uint64(len(firstNames))],
		"last_name":  lastNames[next()%uint64(len(lastNames))],
		"gender":     gender,
		"hire_date":  hireEpoch.AddDate(0, 0, int(next()%(15*365))).Format(time.DateOnly),
	}
}

// splitMix is SplitMix64: tiny, fixed forever, so generated rows never
// change with the Go version.
type splitMix uint64

func (s *splitMix) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (s *splitMix) mix(v uint64) { *s = splitMix(uint64(*s)*0x9e3779b97f4a7c15 ^ v); s.next() }
