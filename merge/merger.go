package merge

import (
	"fmt"
	"slices"
	"sync"

	"github.com/shardsync/shardsync/change"
)

// What every source kind shares.
//
// A TableMerger holds a job's routes and the merged targets: it decides which
// route a table belongs to, merges each shard's columns into its target's
// union (refusing incompatible shards with ErrIncompatibleSchema), checks a
// shard's schema changes (columns added at the end, types widened), keeps the
// merged key (metadata columns, then the source key) and turns a shard's
// values into target rows with the metadata columns filled in. It is the same
// code the MySQL source uses (target.merge, checkEvolution, shard.remap), so
// every source kind merges shards with the same rules.
//
// Column types are given in the MySQL type vocabulary the targets are
// described in (ColType.Base: "int", "decimal", "varchar", "datetime", …);
// a source kind maps its own types onto it and documents the mapping
// (docs/type-mappings.md).

// ColType is a column type in the merged-schema vocabulary.
type ColType struct {
	// Base is a MySQL type name: tinyint, smallint, mediumint, int, bigint,
	// float, double, decimal, char, varchar, tinytext, text, mediumtext,
	// longtext, binary, varbinary, tinyblob, blob, mediumblob, longblob,
	// date, datetime, timestamp, time, year, enum, set, json or bit.
	Base      string
	Unsigned  bool
	Length    int // characters (char, varchar), bytes (binary, varbinary), bits (bit)
	Precision int // decimal precision; fractional digits of datetime, timestamp, time
	Scale     int // decimal scale
	Elems     []string
}

func (t ColType) internal() (colType, error) {
	ct := colType{base: t.Base, unsigned: t.Unsigned, length: t.Length, prec: t.Precision, scale: t.Scale, elems: slices.Clone(t.Elems)}
	switch ct.kind() {
	case change.KindInvalid:
		return colType{}, fmt.Errorf("type %q is not in the merged-schema vocabulary", t.Base)
	case change.KindString, change.KindEnum, change.KindSet:
		ct.charset = "utf8mb4"
	case change.KindBytes:
		ct.charset = "binary"
	}
	return ct, nil
}

// Kind is the change.Kind of values of this type.
func (t ColType) Kind() change.Kind { ct, _ := t.internal(); return ct.kind() }

// SQL renders the type as MySQL prints it.
func (t ColType) SQL() string { ct, _ := t.internal(); return ct.sql() }

// ShardColumn is one column of a shard.
type ShardColumn struct {
	Name     string
	Type     ColType
	Nullable bool
}

// TableMerger routes shards to targets and merges their schemas. It is safe for
// concurrent use.
type TableMerger struct {
	cfg Config // Routes, DatabaseColumn, TableColumn

	mu     sync.Mutex
	tgts   map[change.TableID]*target
	order  []change.TableID
	shards map[change.TableID]*shard
}

// NewTableMerger returns a TableMerger over routes (anchored, see Anchor). Empty
// metadata column names mean "database_name" and "table_name".
func NewTableMerger(routes []Route, databaseColumn, tableColumn string) *TableMerger {
	cfg := Config{Routes: routes, DatabaseColumn: databaseColumn, TableColumn: tableColumn}
	cfg.setDefaults()
	return &TableMerger{cfg: cfg, tgts: map[change.TableID]*target{}, shards: map[change.TableID]*shard{}}
}

// Routes are the merger's routes.
func (m *TableMerger) Routes() []Route { return m.cfg.Routes }

// MetadataColumns are the names of the database and table columns.
func (m *TableMerger) MetadataColumns() (string, string) {
	return m.cfg.DatabaseColumn, m.cfg.TableColumn
}

// RouteOf returns the index of the first route whose expressions match the
// table's database (or schema) and name, or -1.
func (m *TableMerger) RouteOf(id change.TableID) int {
	for i, r := range m.cfg.Routes {
		if r.Databases.MatchString(id.Database) && r.Tables.MatchString(id.Table) {
			return i
		}
	}
	return -1
}

// RoutesFingerprint identifies the routes and metadata column names, for
// resume tokens: a token made under other routes must not be resumed.
func (m *TableMerger) RoutesFingerprint() string {
	return routesFingerprint(m.cfg.Routes, m.cfg.DatabaseColumn, m.cfg.TableColumn)
}

func toInternal(id change.TableID, cols []ShardColumn) ([]shardCol, error) {
	out := make([]shardCol, len(cols))
	for i, c := range cols {
		t, err := c.Type.internal()
		if err != nil {
			return nil, fmt.Errorf("shard %s column %s: %w", id, c.Name, err)
		}
		out[i] = shardCol{name: c.Name, typ: t, nullable: c.Nullable}
	}
	return out, nil
}

// AddShard merges a new shard of route ri into its target. It returns the
// target's schema changes (none for the target's first shard) and whether
// the target is new; either means the caller announces the target's Schema
// before the shard's first row. On error (ErrIncompatibleSchema) nothing
// changed.
func (m *TableMerger) AddShard(id change.TableID, ri int, cols []ShardColumn, key []string, cause string) (changes []change.SchemaChange, newTarget bool, err error) {
	if ri < 0 || ri >= len(m.cfg.Routes) {
		return nil, false, fmt.Errorf("shard %s: route %d does not exist", id, ri)
	}
	ic, err := toInternal(id, cols)
	if err != nil {
		return nil, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.shards[id] != nil {
		return nil, false, fmt.Errorf("shard %s is already merged", id)
	}
	r := m.cfg.Routes[ri]
	tg := m.tgts[r.Target]
	if tg == nil {
		tg = &target{id: r.Target, route: ri, shards: map[change.TableID]*shard{}}
		newTarget = true
	}
	newCols, changes, err := tg.merge(id, ic, key, cause, &m.cfg, nil)
	if err != nil {
		return nil, false, err
	}
	if newTarget {
		m.tgts[r.Target] = tg
		m.order = append(m.order, r.Target)
	}
	if len(tg.shards) == 0 {
		tg.key, tg.keyOf = key, id
	}
	tg.cols = newCols
	sh := &shard{id: id, target: tg, cols: ic, key: key, lastDDL: cause}
	tg.shards[id] = sh
	m.shards[id] = sh
	for _, o := range tg.shards {
		o.remap(&m.cfg)
	}
	return changes, newTarget, nil
}

// ChangeShard applies a shard's new columns (a compatible change: columns
// added at the end, types widened, same key) and returns the target's
// schema changes. On error (ErrIncompatibleSchema, naming the shard, column
// and cause) nothing changed.
func (m *TableMerger) ChangeShard(id change.TableID, cols []ShardColumn, key []string, cause string) ([]change.SchemaChange, error) {
	ic, err := toInternal(id, cols)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	sh := m.shards[id]
	if sh == nil {
		return nil, fmt.Errorf("shard %s is not merged", id)
	}
	if err := checkEvolution(sh.id, sh.cols, ic, sh.key, key, cause); err != nil {
		return nil, err
	}
	tg := sh.target
	newCols, changes, err := tg.merge(sh.id, ic, key, cause, &m.cfg, sh.cols)
	if err != nil {
		return nil, err
	}
	tg.cols = newCols
	sh.cols, sh.key, sh.lastDDL = ic, key, cause
	for _, o := range tg.shards {
		o.remap(&m.cfg)
	}
	return changes, nil
}

// Has reports whether the shard is merged.
func (m *TableMerger) Has(id change.TableID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.shards[id] != nil
}

// TargetOf returns the target a merged shard goes to.
func (m *TableMerger) TargetOf(id change.TableID) (change.TableID, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if sh := m.shards[id]; sh != nil {
		return sh.target.id, true
	}
	return change.TableID{}, false
}

// Schema returns a target's schema: the metadata columns, then the union
// of its shards' columns; the key is the metadata columns then the source
// key (empty for keyless shards).
func (m *TableMerger) Schema(target change.TableID) (change.Schema, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tg := m.tgts[target]
	if tg == nil {
		return change.Schema{}, false
	}
	return tg.schema(&m.cfg), true
}

// Targets lists the targets in the order they were created, with their
// shards and schemas.
func (m *TableMerger) Targets() []TargetInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]TargetInfo, 0, len(m.order))
	for _, id := range m.order {
		t := m.tgts[id]
		out = append(out, TargetInfo{Target: id, Shards: sortedIDs(t.shards), Schema: t.schema(&m.cfg)})
	}
	return out
}

// TargetRow aligns a shard's values (in the shard's column order, of the
// kinds of its ColumnTypes) with its target's current schema, filling in
// the metadata columns and converting widened values.
func (m *TableMerger) TargetRow(id change.TableID, vals []change.Value) ([]change.Value, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sh := m.shards[id]
	if sh == nil {
		return nil, fmt.Errorf("shard %s is not merged", id)
	}
	if len(vals) != len(sh.cols) {
		return nil, fmt.Errorf("shard %s: %d values for %d columns", id, len(vals), len(sh.cols))
	}
	out := sh.newTargetRow()
	for i, v := range vals {
		if j := sh.toTarget[i]; j >= 0 {
			out[j] = coerce(v, sh.kinds[i], sh.targetKinds[i])
		}
	}
	return out, nil
}
