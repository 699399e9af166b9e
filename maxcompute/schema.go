package maxcompute

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/aliyun/aliyun-odps-go-sdk/odps"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/datatype"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/restclient"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/tableschema"

	"github.com/shardsync/shardsync/change"
)

// target is what the sink knows about one target table.
type target struct {
	id      change.TableID
	schema  string  // MaxCompute schema; "" without the schema model
	table   string  // MaxCompute table name
	levels  []level // partition levels; none for an unpartitioned table
	delta   bool    // transactional table with a primary key: upsert sessions
	buckets int
	pk      []string
	cols    []tableschema.Column // the table's columns
	types   []datatype.DataType
	srcIdx  []int // per table column: index in the source schema, or -1
	keyPos  []int // per key column: index in cols
	source  change.Schema

	mu    sync.Mutex
	parts map[string]bool // partitions known to exist
}

// ref names the target's table in partition spec.
func (tg *target) ref(spec string) tableRef {
	return tableRef{Schema: tg.schema, Table: tg.table, Partition: spec}
}

// ddlHints are sent with every statement: the 2.0 type system (TINYINT,
// DATE, TIMESTAMP_NTZ, DECIMAL(p,s) need it) and schema evolution of
// transactional tables, as the Flink connector does.
func ddlHints(schema string) map[string]string {
	return map[string]string{
		"odps.sql.type.system.odps2":      "true",
		"odps.sql.decimal.odps2":          "true",
		"odps.sql.allow.schema.evolution": "true",
		"odps.namespace.schema":           strconv.FormatBool(schema != ""),
	}
}

func quoteIdent(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "`\n") {
		return "", fmt.Errorf("maxcompute: identifier %q cannot be quoted safely", name)
	}
	return "`" + name + "`", nil
}

// tableName maps a target to its MaxCompute table: the project comes from
// the configuration; the target's database part names the schema when the
// project has the schema model (tableSchema), and is not used otherwise.
func tableName(id change.TableID) string { return id.Table }

// schemaModel reports, once per Sink, whether the project has the schema
// model (project property odps.schema.model.enabled, as Flink CDC reads it).
func (s *Sink) schemaModel(ctx context.Context) (bool, error) {
	s.mu.Lock()
	known, on := s.schemaKnown, s.schemaOn
	s.mu.Unlock()
	if known {
		return on, nil
	}
	props, err := call(ctx, s.cfg.RequestTimeout, func() (string, error) {
		p := s.odps.Project(s.cfg.Project)
		if err := p.Load(); err != nil {
			return "", err
		}
		return p.PropertiesHasBeSet().Get("odps.schema.model.enabled"), nil
	})
	if err != nil {
		return false, fmt.Errorf("maxcompute: loading project %s: %s", s.cfg.Project, describe(err))
	}
	on = strings.EqualFold(props, "true")
	s.mu.Lock()
	s.schemaKnown, s.schemaOn = true, on
	s.mu.Unlock()
	return on, nil
}

// tableSchema is the MaxCompute schema of a target: its database part
// ("default" when empty) with the schema model, "" without.
func (s *Sink) tableSchema(ctx context.Context, id change.TableID) (string, error) {
	on, err := s.schemaModel(ctx)
	if err != nil || !on {
		return "", err
	}
	if id.Database == "" {
		return "default", nil
	}
	if _, err := quoteIdent(id.Database); err != nil {
		return "", err
	}
	return id.Database, nil
}

// ensureSchema creates a schema once per Sink (create if not exists).
func (s *Sink) ensureSchema(ctx context.Context, schema string) error {
	if schema == "" || strings.EqualFold(schema, "default") {
		return nil
	}
	s.mu.Lock()
	done := s.schemas[strings.ToLower(schema)]
	s.mu.Unlock()
	if done {
		return nil
	}
	_, err := call(ctx, s.cfg.RequestTimeout, func() (struct{}, error) {
		return struct{}{}, s.odps.Project(s.cfg.Project).Schemas().Create(schema, true, "created by shardsync")
	})
	if err != nil {
		return fmt.Errorf("maxcompute: creating schema %s.%s: %s", s.cfg.Project, schema, describe(err))
	}
	s.mu.Lock()
	s.schemas[strings.ToLower(schema)] = true
	s.mu.Unlock()
	return nil
}

func (s *Sink) loadTable(ctx context.Context, schema, name string) (*odps.Table, bool, error) {
	t, err := call(ctx, s.cfg.RequestTimeout, func() (*odps.Table, error) {
		t := odps.NewTable(s.odps, s.cfg.Project, schema, name)
		return t, t.Load()
	})
	if err != nil {
		var he restclient.HttpError
		if errors.As(err, &he) && he.StatusCode == http.StatusNotFound {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("maxcompute: loading table %s: %s", s.displayName(schema, name), describe(err))
	}
	return t, true, nil
}

// displayName is project[.schema].table for messages.
func (s *Sink) displayName(schema, name string) string {
	if schema == "" {
		return s.cfg.Project + "." + name
	}
	return s.cfg.Project + "." + schema + "." + name
}

func (s *Sink) execSQL(ctx context.Context, schema, sql string) error {
	_, err := call(ctx, s.cfg.CommitTimeout, func() (struct{}, error) {
		ins, err := s.odps.ExecSQlWithHints(sql, ddlHints(schema))
		if err != nil {
			return struct{}{}, err
		}
		return struct{}{}, ins.WaitForSuccess()
	})
	if err != nil {
		return fmt.Errorf("maxcompute: running %q: %s", sql, firstLine(describe(err)))
	}
	s.log.Info("maxcompute: ran DDL", "sql", sql)
	return nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func (s *Sink) fullName(schema, name string) string {
	if schema == "" {
		return s.cfg.Project + ".`" + name + "`"
	}
	return s.cfg.Project + ".`" + schema + "`.`" + name + "`"
}

// ApplySchema implements twopc.Sink. A missing target is created: a Delta
// table (transactional, write.bucket.num = buckets-num, primary key =
// Schema.Key with NOT NULL key columns) when the schema has a key, a plain
// table otherwise; partitioned by the partition option's levels when it is
// set (a dynamic level's column becomes a partition column, not a data
// column); in the target's schema when the project has the schema model (the
// schema is created when missing). An existing table gets missing columns
// added at the end and integer/FLOAT/DECIMAL columns widened; anything else
// (a narrowing, a different type family, a different primary key, partition
// columns other than the option's) stops with an error that names the
// table, the column and the fix. On error nothing of the epoch stream has
// been written; DDL already run (a created schema, table or column) stays.
func (s *Sink) ApplySchema(ctx context.Context, ts change.TableSchema) error {
	name := tableName(ts.Target)
	opt, err := parsePartitionOption(s.cfg.Partition)
	if err != nil {
		return fmt.Errorf("maxcompute: %w", err)
	}
	levels, err := resolveLevels(opt, ts.Schema)
	if err != nil {
		return fmt.Errorf("maxcompute: target %s: %w", ts.Target, err)
	}
	mapped := make([]datatype.DataType, len(ts.Schema.Columns))
	for i, c := range ts.Schema.Columns {
		t, err := mcType(c)
		if err != nil {
			return fmt.Errorf("maxcompute: target %s: %w", ts.Target, err)
		}
		if _, err := quoteIdent(c.Name); err != nil {
			return err
		}
		mapped[i] = t
	}
	schema, err := s.tableSchema(ctx, ts.Target)
	if err != nil {
		return err
	}
	if err := s.ensureSchema(ctx, schema); err != nil {
		return err
	}
	tbl, exists, err := s.loadTable(ctx, schema, name)
	if err != nil {
		return err
	}
	if !exists {
		if err := s.createTable(ctx, schema, name, ts.Schema, mapped, levels); err != nil {
			return err
		}
	} else if err := s.evolveTable(ctx, schema, tbl, ts, mapped, levels); err != nil {
		return err
	}
	tbl, exists, err = s.loadTable(ctx, schema, name)
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("maxcompute: table %s is missing right after creating it", s.displayName(schema, name))
	}
	tg, err := s.buildTarget(ts, schema, tbl, levels)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if old, ok := s.targets[ts.Target]; ok && old.schema == tg.schema && old.table == tg.table {
		old.mu.Lock()
		for p := range old.parts {
			tg.parts[p] = true
		}
		old.mu.Unlock()
	}
	s.targets[ts.Target] = tg
	s.mu.Unlock()
	mode := "plain (append)"
	if tg.delta {
		mode = "delta (upsert)"
	}
	s.log.Info("maxcompute: target ready", "target", ts.Target.String(), "table", s.displayName(schema, name), "mode", mode,
		"buckets", tg.buckets, "partition", s.cfg.Partition)
	return nil
}

func (s *Sink) createTable(ctx context.Context, schema, name string, sc change.Schema, mapped []datatype.DataType, levels []level) error {
	isKey := map[string]bool{}
	for _, k := range sc.Key {
		isKey[strings.ToLower(k)] = true
	}
	isPart := map[int]bool{}
	for _, l := range levels {
		if l.src >= 0 {
			isPart[l.src] = true
		}
	}
	var cols []tableschema.Column
	for i, c := range sc.Columns {
		if isPart[i] {
			continue // a partition column, not a data column
		}
		cols = append(cols, tableschema.Column{Name: c.Name, Type: mapped[i], NotNull: isKey[strings.ToLower(c.Name)]})
		if isKey[strings.ToLower(c.Name)] {
			switch mapped[i].ID() {
			case datatype.FLOAT, datatype.DOUBLE, datatype.BINARY:
				return fmt.Errorf("%w: key column %s of %s maps to %s, which MaxCompute does not allow in a primary key", errSchema, c.Name, name, mapped[i].Name())
			}
		}
	}
	b := tableschema.NewSchemaBuilder().Name(name).Columns(cols...)
	if len(levels) > 0 {
		b = b.PartitionColumns(partitionColumns(levels)...)
	}
	if len(sc.Key) > 0 {
		b = b.PrimaryKeys(sc.Key).TblProperties(map[string]string{
			"transactional": "true", "write.bucket.num": strconv.Itoa(s.cfg.BucketsNum)})
	}
	ts := b.Build()
	sql, err := ts.ToSQLString(s.cfg.Project, schema, true)
	if err != nil {
		return fmt.Errorf("maxcompute: building CREATE TABLE for %s: %w", name, err)
	}
	return s.execSQL(ctx, schema, sql)
}

// checkPartitionColumns compares an existing table's partition columns with
// the partition option.
func (s *Sink) checkPartitionColumns(schema string, tbl *odps.Table, levels []level) error {
	have := tbl.Schema().PartitionColumns
	name := s.displayName(schema, tbl.Name())
	switch {
	case len(have) == 0 && len(levels) == 0:
		return nil
	case len(levels) == 0:
		var names []string
		for _, c := range have {
			names = append(names, c.Name)
		}
		return fmt.Errorf("%w: table %s is partitioned by (%s): set the sink option partition, e.g. partition: %s (the value of that source column) or partition: %s=<value> (one fixed partition)",
			errSchema, name, strings.Join(names, ", "), names[0], names[0])
	case len(have) != len(levels):
		return fmt.Errorf("%w: table %s has %d partition column(s) but the partition option %q names %d; they must match one by one",
			errSchema, name, len(have), s.cfg.Partition, len(levels))
	}
	for i, c := range have {
		if !strings.EqualFold(c.Name, levels[i].name) {
			return fmt.Errorf("%w: partition column %d of table %s is %s but the partition option %q names %s there",
				errSchema, i+1, name, c.Name, s.cfg.Partition, levels[i].name)
		}
	}
	return nil
}

func (s *Sink) evolveTable(ctx context.Context, schema string, tbl *odps.Table, ts change.TableSchema, mapped []datatype.DataType, levels []level) error {
	name := tableName(ts.Target)
	disp := s.displayName(schema, name)
	if err := s.checkPartitionColumns(schema, tbl, levels); err != nil {
		return err
	}
	isPart := map[int]bool{}
	for _, l := range levels {
		if l.src >= 0 {
			isPart[l.src] = true
		}
	}
	have := tbl.Schema().Columns
	byName := map[string]int{}
	for i, c := range have {
		byName[strings.ToLower(c.Name)] = i
	}
	if pk := tbl.PrimaryKeys(); len(pk) > 0 || len(ts.Schema.Key) > 0 {
		switch {
		case len(pk) > 0 && len(ts.Schema.Key) == 0:
			return fmt.Errorf("%w: table %s has primary key (%s) but the source has none; drop or rename the table, or route to another target", errSchema, disp, strings.Join(pk, ", "))
		case len(pk) > 0 && !strings.EqualFold(strings.Join(pk, ","), strings.Join(ts.Schema.Key, ",")):
			return fmt.Errorf("%w: table %s has primary key (%s) but the target key is (%s); drop or rename the table", errSchema, disp, strings.Join(pk, ", "), strings.Join(ts.Schema.Key, ", "))
		case len(pk) == 0:
			s.log.Warn("maxcompute: existing table has no primary key: rows are appended, deletes are ignored and updates are appended as inserts",
				"table", disp, "source_key", strings.Join(ts.Schema.Key, ","))
		}
	}
	// MaxCompute's ADD COLUMNS leaves the rows already in the table NULL
	// in the new column; it cannot give them the default the source's
	// ALTER gave its rows, so such a change is refused before anything is
	// altered.
	for _, ch := range ts.Changes {
		if _, ok := byName[strings.ToLower(ch.Column.Name)]; !ok && ch.Kind == change.AddColumn && ch.Column.Default != nil {
			return fmt.Errorf("%w: column %s was added to the source with default %q, which the source wrote into its existing rows, but MaxCompute's ADD COLUMNS leaves existing rows NULL, so %s.%s would differ from the source (cause: %s); add the column without a default (or with DEFAULT NULL), or stop the job, re-create the table and re-snapshot",
				errSchema, ch.Column.Name, *ch.Column.Default, s.cfg.Project, name, ts.Cause)
		}
	}
	var adds []string
	for i, c := range ts.Schema.Columns {
		if isPart[i] {
			continue
		}
		j, ok := byName[strings.ToLower(c.Name)]
		if !ok {
			q, _ := quoteIdent(c.Name)
			adds = append(adds, q+" "+mapped[i].Name())
			continue
		}
		if canHold(have[j].Type, mapped[i]) {
			continue
		}
		if !widenable(have[j].Type, mapped[i]) {
			return fmt.Errorf("%w: column %s of %s is %s but the source now needs %s (cause: %s); MaxCompute cannot change it in place: stop, migrate the table, and restart",
				errSchema, c.Name, disp, have[j].Type.Name(), mapped[i].Name(), ts.Cause)
		}
		q, _ := quoteIdent(have[j].Name)
		if err := s.execSQL(ctx, schema, fmt.Sprintf("alter table %s change column %s %s %s;", s.fullName(schema, name), q, q, mapped[i].Name())); err != nil {
			return err
		}
	}
	if len(adds) > 0 {
		if err := s.execSQL(ctx, schema, fmt.Sprintf("alter table %s add columns if not exists (%s);", s.fullName(schema, name), strings.Join(adds, ", "))); err != nil {
			return err
		}
	}
	return nil
}

func (s *Sink) buildTarget(ts change.TableSchema, schema string, tbl *odps.Table, levels []level) (*target, error) {
	name := tableName(ts.Target)
	disp := s.displayName(schema, name)
	if err := s.checkPartitionColumns(schema, tbl, levels); err != nil {
		return nil, err
	}
	cols := tbl.Schema().Columns
	tg := &target{id: ts.Target, schema: schema, table: name, levels: levels, cols: cols, source: ts.Schema, parts: map[string]bool{}}
	srcByName := map[string]int{}
	for i, c := range ts.Schema.Columns {
		srcByName[strings.ToLower(c.Name)] = i
	}
	for _, c := range cols {
		i, ok := srcByName[strings.ToLower(c.Name)]
		if !ok {
			i = -1
			if c.NotNull {
				return nil, fmt.Errorf("%w: column %s of %s is NOT NULL but the source has no such column", errSchema, c.Name, disp)
			}
		}
		tg.srcIdx = append(tg.srcIdx, i)
		tg.types = append(tg.types, c.Type)
	}
	pk := tbl.PrimaryKeys()
	if len(pk) > 0 && tbl.Transactional() {
		tg.delta = true
		tg.pk = pk
		tg.buckets = tbl.ClusterInfo().BucketNum
		for _, k := range pk {
			found := -1
			for j, c := range cols {
				if strings.EqualFold(c.Name, k) {
					found = j
				}
			}
			if found < 0 || tg.srcIdx[found] < 0 {
				return nil, fmt.Errorf("%w: key column %s of %s has no source column", errSchema, k, disp)
			}
			tg.keyPos = append(tg.keyPos, found)
		}
	}
	return tg, nil
}

// ensurePartition creates the partition spec of tg once per Sink (alter
// table … add if not exists partition): upsert sessions need the partition
// to exist, and the Flink CDC connector creates it the same way.
func (s *Sink) ensurePartition(ctx context.Context, tg *target, spec string) error {
	if spec == "" {
		return nil
	}
	tg.mu.Lock()
	done := tg.parts[spec]
	tg.mu.Unlock()
	if done {
		return nil
	}
	sql := fmt.Sprintf("alter table %s add if not exists partition (%s);", s.fullName(tg.schema, tg.table), partitionSQL(spec))
	if err := s.execSQL(ctx, tg.schema, sql); err != nil {
		return err
	}
	tg.mu.Lock()
	tg.parts[spec] = true
	tg.mu.Unlock()
	return nil
}
