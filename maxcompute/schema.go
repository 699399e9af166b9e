package maxcompute

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/aliyun/aliyun-odps-go-sdk/odps"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/datatype"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/restclient"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/tableschema"

	"github.com/shardsync/shardsync/change"
)

// target is what the sink knows about one target table.
type target struct {
	id      change.TableID
	table   string // MaxCompute table name
	delta   bool   // transactional table with a primary key: upsert sessions
	buckets int
	pk      []string
	cols    []tableschema.Column // the table's columns
	types   []datatype.DataType
	srcIdx  []int // per table column: index in the source schema, or -1
	keyPos  []int // per key column: index in cols
	source  change.Schema
}

// ddlHints are sent with every statement: the 2.0 type system (TINYINT,
// DATE, TIMESTAMP_NTZ, DECIMAL(p,s) need it) and schema evolution of
// transactional tables, as the Flink connector does.
func ddlHints() map[string]string {
	return map[string]string{
		"odps.sql.type.system.odps2":      "true",
		"odps.sql.decimal.odps2":          "true",
		"odps.sql.allow.schema.evolution": "true",
		"odps.namespace.schema":           "false",
	}
}

func quoteIdent(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "`\n") {
		return "", fmt.Errorf("maxcompute: identifier %q cannot be quoted safely", name)
	}
	return "`" + name + "`", nil
}

// tableName maps a target to its MaxCompute table: the project comes from
// the configuration and the target's database part is not used (projects
// without the schema model have one namespace).
func tableName(id change.TableID) string { return id.Table }

func (s *Sink) loadTable(ctx context.Context, name string) (*odps.Table, bool, error) {
	t, err := call(ctx, s.cfg.RequestTimeout, func() (*odps.Table, error) {
		t := s.odps.Table(name)
		return t, t.Load()
	})
	if err != nil {
		var he restclient.HttpError
		if errors.As(err, &he) && he.StatusCode == http.StatusNotFound {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("maxcompute: loading table %s.%s: %s", s.cfg.Project, name, describe(err))
	}
	return t, true, nil
}

func (s *Sink) execSQL(ctx context.Context, sql string) error {
	_, err := call(ctx, s.cfg.CommitTimeout, func() (struct{}, error) {
		ins, err := s.odps.ExecSQlWithHints(sql, ddlHints())
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

func (s *Sink) fullName(name string) string {
	return s.cfg.Project + ".`" + name + "`"
}

// ApplySchema implements twopc.Sink. A missing target is created: a Delta
// table (transactional, write.bucket.num = buckets-num, primary key =
// Schema.Key with NOT NULL key columns) when the schema has a key, a plain
// table otherwise. An existing table gets missing columns added at the end
// and integer/FLOAT/DECIMAL columns widened; anything else (a narrowing, a
// different type family, a different primary key) stops with an error that
// names the table, the column and both types.
func (s *Sink) ApplySchema(ctx context.Context, ts change.TableSchema) error {
	name := tableName(ts.Target)
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
	tbl, exists, err := s.loadTable(ctx, name)
	if err != nil {
		return err
	}
	if !exists {
		if err := s.createTable(ctx, name, ts.Schema, mapped); err != nil {
			return err
		}
	} else if err := s.evolveTable(ctx, tbl, ts, mapped); err != nil {
		return err
	}
	tbl, exists, err = s.loadTable(ctx, name)
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("maxcompute: table %s.%s is missing right after creating it", s.cfg.Project, name)
	}
	tg, err := s.buildTarget(ts, tbl)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.targets[ts.Target] = tg
	s.mu.Unlock()
	mode := "plain (append)"
	if tg.delta {
		mode = "delta (upsert)"
	}
	s.log.Info("maxcompute: target ready", "target", ts.Target.String(), "table", name, "mode", mode, "buckets", tg.buckets)
	return nil
}

func (s *Sink) createTable(ctx context.Context, name string, sc change.Schema, mapped []datatype.DataType) error {
	isKey := map[string]bool{}
	for _, k := range sc.Key {
		isKey[strings.ToLower(k)] = true
	}
	cols := make([]tableschema.Column, len(sc.Columns))
	for i, c := range sc.Columns {
		cols[i] = tableschema.Column{Name: c.Name, Type: mapped[i], NotNull: isKey[strings.ToLower(c.Name)]}
		if isKey[strings.ToLower(c.Name)] {
			switch mapped[i].ID() {
			case datatype.FLOAT, datatype.DOUBLE, datatype.BINARY:
				return fmt.Errorf("%w: key column %s of %s maps to %s, which MaxCompute does not allow in a primary key", errSchema, c.Name, name, mapped[i].Name())
			}
		}
	}
	b := tableschema.NewSchemaBuilder().Name(name).Columns(cols...)
	if len(sc.Key) > 0 {
		b = b.PrimaryKeys(sc.Key).TblProperties(map[string]string{
			"transactional": "true", "write.bucket.num": strconv.Itoa(s.cfg.BucketsNum)})
	}
	schema := b.Build()
	sql, err := schema.ToSQLString(s.cfg.Project, "", true)
	if err != nil {
		return fmt.Errorf("maxcompute: building CREATE TABLE for %s: %w", name, err)
	}
	return s.execSQL(ctx, sql)
}

func (s *Sink) evolveTable(ctx context.Context, tbl *odps.Table, ts change.TableSchema, mapped []datatype.DataType) error {
	name := tableName(ts.Target)
	have := tbl.Schema().Columns
	byName := map[string]int{}
	for i, c := range have {
		byName[strings.ToLower(c.Name)] = i
	}
	if pk := tbl.PrimaryKeys(); len(pk) > 0 || len(ts.Schema.Key) > 0 {
		switch {
		case len(pk) > 0 && len(ts.Schema.Key) == 0:
			return fmt.Errorf("%w: table %s.%s has primary key (%s) but the source has none; drop or rename the table, or route to another target", errSchema, s.cfg.Project, name, strings.Join(pk, ", "))
		case len(pk) > 0 && !strings.EqualFold(strings.Join(pk, ","), strings.Join(ts.Schema.Key, ",")):
			return fmt.Errorf("%w: table %s.%s has primary key (%s) but the target key is (%s); drop or rename the table", errSchema, s.cfg.Project, name, strings.Join(pk, ", "), strings.Join(ts.Schema.Key, ", "))
		case len(pk) == 0:
			s.log.Warn("maxcompute: existing table has no primary key: rows are appended, deletes are ignored and updates are appended as inserts",
				"table", name, "source_key", strings.Join(ts.Schema.Key, ","))
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
			return fmt.Errorf("%w: column %s of %s.%s is %s but the source now needs %s (cause: %s); MaxCompute cannot change it in place: stop, migrate the table, and restart",
				errSchema, c.Name, s.cfg.Project, name, have[j].Type.Name(), mapped[i].Name(), ts.Cause)
		}
		q, _ := quoteIdent(have[j].Name)
		if err := s.execSQL(ctx, fmt.Sprintf("alter table %s change column %s %s %s;", s.fullName(name), q, q, mapped[i].Name())); err != nil {
			return err
		}
	}
	if len(adds) > 0 {
		if err := s.execSQL(ctx, fmt.Sprintf("alter table %s add columns if not exists (%s);", s.fullName(name), strings.Join(adds, ", "))); err != nil {
			return err
		}
	}
	return nil
}

func (s *Sink) buildTarget(ts change.TableSchema, tbl *odps.Table) (*target, error) {
	name := tableName(ts.Target)
	cols := tbl.Schema().Columns
	tg := &target{id: ts.Target, table: name, cols: cols, source: ts.Schema}
	srcByName := map[string]int{}
	for i, c := range ts.Schema.Columns {
		srcByName[strings.ToLower(c.Name)] = i
	}
	for _, c := range cols {
		i, ok := srcByName[strings.ToLower(c.Name)]
		if !ok {
			i = -1
			if c.NotNull {
				return nil, fmt.Errorf("%w: column %s of %s.%s is NOT NULL but the source has no such column", errSchema, c.Name, s.cfg.Project, name)
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
				return nil, fmt.Errorf("%w: key column %s of %s.%s has no source column", errSchema, k, s.cfg.Project, name)
			}
			tg.keyPos = append(tg.keyPos, found)
		}
	}
	return tg, nil
}
