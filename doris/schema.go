package doris

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	mysqlclient "github.com/go-mysql-org/go-mysql/client"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/twopc"
)

// tableInfo is what the FE's _schema action says about a table.
type tableInfo struct {
	exists   bool
	columns  []string
	keys     []string // key columns (aggregation_type "")
	keysType string   // UNIQUE_KEYS, DUPLICATE_KEYS, AGG_KEYS; "" when the FE does not say
	types    map[string]string
}

type schemaReply struct {
	Msg  string          `json:"msg"`
	Code int             `json:"code"`
	Data json.RawMessage `json:"data"`
}

type schemaData struct {
	KeysType   string `json:"keysType"`
	Properties []struct {
		Name            string `json:"name"`
		Type            string `json:"type"`
		AggregationType string `json:"aggregation_type"`
	} `json:"properties"`
}

// describe asks GET /api/{db}/{table}/_schema.
func (c *client) describe(ctx context.Context, id change.TableID) (tableInfo, error) {
	path := "/api/" + url.PathEscape(id.Database) + "/" + url.PathEscape(id.Table) + "/_schema"
	a, err := c.do(ctx, http.MethodGet, path, nil, true, retry5xx)
	if err != nil {
		return tableInfo{}, fmt.Errorf("reading the schema of doris table %s: %w", id, err)
	}
	if a.status != http.StatusOK {
		v := Classify(OpCommit, a.status, a.body)
		if v.Class == ClassRetryable {
			return tableInfo{}, fmt.Errorf("reading the schema of doris table %s: %s: %w", id, v, twopc.ErrUnavailable)
		}
		return tableInfo{}, fmt.Errorf("reading the schema of doris table %s: %s", id, v)
	}
	var r schemaReply
	if err := json.Unmarshal(a.body, &r); err != nil {
		return tableInfo{}, fmt.Errorf("reading the schema of doris table %s: reply is not JSON: %s", id, firstLine(string(a.body)))
	}
	if r.Code != 0 {
		var text string
		if json.Unmarshal(r.Data, &text) != nil {
			text = string(r.Data)
		}
		l := strings.ToLower(text + " " + r.Msg)
		for _, s := range []string{"unknown table", "unknown database", "not exist", "not found"} {
			if strings.Contains(l, s) {
				return tableInfo{}, nil
			}
		}
		return tableInfo{}, fmt.Errorf("reading the schema of doris table %s: %s %s", id, r.Msg, firstLine(text))
	}
	var d schemaData
	if err := json.Unmarshal(r.Data, &d); err != nil {
		return tableInfo{}, fmt.Errorf("reading the schema of doris table %s: unexpected data: %w", id, err)
	}
	info := tableInfo{exists: true, keysType: strings.ToUpper(d.KeysType), types: map[string]string{}}
	for _, p := range d.Properties {
		info.columns = append(info.columns, p.Name)
		info.types[p.Name] = strings.ToUpper(p.Type)
		if p.AggregationType == "" {
			info.keys = append(info.keys, p.Name)
		}
	}
	return info, nil
}

// ApplySchema makes the target fit ts. A missing target is created over the
// MySQL port (Unique Key on the metadata columns and the source key; see
// CreateTableSQL for the type mapping; a source without a primary key gets a
// Duplicate Key table, see CreateDuplicateTableSQL). An existing target is used as it
// is: source columns it lacks are not loaded (with a warning) unless ts
// announces them as added, in which case they get ADD COLUMN; widened types
// get MODIFY COLUMN. It warns when an existing target's key can make shards
// overwrite each other.
func (s *Sink) ApplySchema(ctx context.Context, ts change.TableSchema) error {
	id := ts.Target
	log := s.log.With("target", id.String())
	info, err := s.c.describe(ctx, id)
	if err != nil {
		return fmt.Errorf("applying schema to %s: %w", id, err)
	}
	if !info.exists {
		if s.cfg.QueryAddr == "" {
			return fmt.Errorf("doris target %s does not exist and no query address is configured to create it", id)
		}
		key := TableKey(ts.Schema, s.cfg.DatabaseColumn, s.cfg.TableColumn)
		schema, props := ts.Schema, s.cfg.TableProperties
		if seq := s.cfg.SequenceColumn; seq != "" {
			if ts.Schema.Index(seq) >= 0 {
				return fmt.Errorf("doris target %s: the sequence column %q (--sequence-column) is also a source column; choose another name", id, seq)
			}
			schema.Columns = append(slices.Clone(schema.Columns), change.Column{Name: seq, Type: change.Type{Kind: change.KindInt, SQL: "bigint"}, Nullable: true})
			props = maps.Clone(props)
			if props == nil {
				props = map[string]string{}
			}
			props[seqColProperty] = seq
		}
		create := CreateTableSQL
		if len(ts.Schema.Key) == 0 {
			// A keyless source: its rows have no identity to upsert by, and
			// a Duplicate Key table takes no sequence column.
			create = CreateDuplicateTableSQL
			schema, props = ts.Schema, s.cfg.TableProperties
		}
		ddl, err := create(id, schema, key, s.cfg.Buckets, s.cfg.Replication, props)
		if err != nil {
			return err
		}
		if err := s.exec(ctx, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(id.Database), ddl); err != nil {
			return fmt.Errorf("creating doris target %s: %w", id, err)
		}
		log.Info("doris target created", "key", strings.Join(key, ","))
		if info, err = s.awaitColumns(ctx, id, nil); err != nil {
			return err
		}
	} else {
		var ddl []string
		var want []string
		for _, ch := range ts.Changes {
			c := ch.Column
			switch ch.Kind {
			case change.AddColumn:
				if !slices.Contains(info.columns, c.Name) {
					q, err := AddColumnSQL(id, c)
					if err != nil {
						return err
					}
					ddl = append(ddl, q)
					want = append(want, c.Name)
				}
			case change.WidenColumn:
				if slices.Contains(info.columns, c.Name) {
					typ, err := DorisType(c, slices.Contains(info.keys, c.Name))
					if err != nil {
						return fmt.Errorf("widening %s.%s: %w", id, c.Name, err)
					}
					suffix := " NULL"
					if slices.Contains(info.keys, c.Name) {
						suffix = " KEY NOT NULL"
					}
					ddl = append(ddl, fmt.Sprintf("ALTER TABLE %s.%s MODIFY COLUMN %s %s%s",
						quoteIdent(id.Database), quoteIdent(id.Table), quoteIdent(c.Name), typ, suffix))
				}
			}
		}
		if len(ddl) > 0 {
			if s.cfg.QueryAddr == "" {
				return fmt.Errorf("doris target %s needs %q but no query address is configured", id, ddl)
			}
			if err := s.exec(ctx, ddl...); err != nil {
				return fmt.Errorf("changing doris target %s (%s): %w", id, ts.Cause, err)
			}
			log.Info("doris target altered", "ddl", strings.Join(ddl, "; "))
			if info, err = s.awaitColumns(ctx, id, want); err != nil {
				return err
			}
		}
	}
	seq, err := s.sequenceOf(ctx, id, info)
	if err != nil {
		return err
	}
	return s.useTarget(ts, info, seq, log)
}

// seqColProperty is the table property that maps a Unique Key table's
// sequence column onto one of its columns; seqTypeProperty gives a hidden
// sequence column its type instead.
const (
	seqColProperty  = "function_column.sequence_col"
	seqTypeProperty = "function_column.sequence_type"
)

var seqPropRE = regexp.MustCompile(`"function_column\.sequence_(col|type)"\s*=\s*"([^"]*)"`)

// sequenceOf discovers the target's sequence column from SHOW CREATE
// TABLE: the column it is mapped to, or "" when there is none. A hidden
// sequence column (function_column.sequence_type) is refused: the sink has
// no column to fill it from. Without a query address nothing is
// discovered.
func (s *Sink) sequenceOf(ctx context.Context, id change.TableID, info tableInfo) (string, error) {
	if s.cfg.QueryAddr == "" || (info.keysType != "" && info.keysType != "UNIQUE_KEYS") {
		return "", nil
	}
	rows, err := s.query(ctx, fmt.Sprintf("SHOW CREATE TABLE %s.%s", quoteIdent(id.Database), quoteIdent(id.Table)))
	if err != nil {
		return "", fmt.Errorf("reading the definition of doris target %s: %w", id, err)
	}
	if len(rows) == 0 || len(rows[0]) < 2 {
		return "", fmt.Errorf("reading the definition of doris target %s: SHOW CREATE TABLE returned nothing", id)
	}
	col := ""
	for _, m := range seqPropRE.FindAllStringSubmatch(rows[0][1], -1) {
		if m[1] == "col" {
			col = m[2]
		}
	}
	if col == "" && strings.Contains(rows[0][1], seqTypeProperty) {
		return "", fmt.Errorf("doris target %s has a hidden sequence column (%s) that shardsync has no column to fill from; "+
			"map it to a BIGINT column (ALTER TABLE ... ENABLE FEATURE \"SEQUENCE_LOAD\" WITH PROPERTIES (\"%s\" = \"col\")), "+
			"or let shardsync create the target with --sequence-column", id, seqTypeProperty, seqColProperty)
	}
	return col, nil
}

// useTarget builds the encoder for ts against the table as it exists.
func (s *Sink) useTarget(ts change.TableSchema, info tableInfo, seq string, log interface {
	Warn(string, ...any)
	Info(string, ...any)
}) error {
	unique := info.keysType == "" || info.keysType == "UNIQUE_KEYS"
	if !unique {
		log.Warn("doris target is not a Unique Key table: it is written as an append log; inserted and updated rows are appended (an update as a new row holding the after image) and deletes are ignored",
			"keys_type", info.keysType)
	}
	if unique && (!slices.Contains(info.keys, s.cfg.DatabaseColumn) || !slices.Contains(info.keys, s.cfg.TableColumn)) {
		log.Warn("doris target key does not include the metadata columns: rows of different shards with the same key overwrite each other",
			"key", strings.Join(info.keys, ","), "metadata", s.cfg.DatabaseColumn+","+s.cfg.TableColumn)
	}
	var missing []string
	keep := func(name string) bool {
		if slices.Contains(info.columns, name) {
			return true
		}
		missing = append(missing, name)
		return false
	}
	var keyCols []string
	for _, k := range info.keys {
		if ts.Schema.Index(k) >= 0 {
			keyCols = append(keyCols, k)
		}
	}
	enc, err := newEncoder(ts.Schema, keep, keyCols, unique)
	if err == nil {
		enc.loc = s.cfg.TimeZone
	}
	if err != nil {
		return fmt.Errorf("preparing rows for doris target %s: %w", ts.Target, err)
	}
	switch {
	case seq == "":
	case ts.Schema.Index(seq) >= 0:
		log.Info("doris target's sequence column is a source column: its source values order the versions of a row", "sequence_column", seq)
	default:
		if t := info.types[seq]; t != "BIGINT" && t != "LARGEINT" && t != "" {
			return fmt.Errorf("doris target %s: its sequence column %s is %s; shardsync fills it with a BIGINT value per change, so make it BIGINT", ts.Target, seq, t)
		}
		if enc.seqKey, err = appendString(nil, seq); err != nil {
			return fmt.Errorf("doris target %s: sequence column %q: %w", ts.Target, seq, err)
		}
		enc.seqKey = append(append([]byte{','}, enc.seqKey...), ':')
		log.Info("doris target has a sequence column; shardsync fills it with a value that grows with every change", "sequence_column", seq)
	}
	if len(missing) > 0 {
		log.Warn("doris target lacks source columns; their values are not loaded", "columns", strings.Join(missing, ","))
	}
	s.mu.Lock()
	s.targets[ts.Target] = &target{enc: enc}
	s.mu.Unlock()
	return nil
}

// awaitColumns waits until the table exists with the columns want (schema
// changes of Doris finish asynchronously).
func (s *Sink) awaitColumns(ctx context.Context, id change.TableID, want []string) (tableInfo, error) {
	deadline := time.Now().Add(s.cfg.RequestTimeout)
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		info, err := s.c.describe(ctx, id)
		if err != nil {
			return tableInfo{}, err
		}
		ok := info.exists
		for _, w := range want {
			ok = ok && slices.Contains(info.columns, w)
		}
		if ok {
			return info, nil
		}
		if time.Now().After(deadline) {
			return tableInfo{}, fmt.Errorf("doris target %s does not show columns %q %s after the DDL; check SHOW ALTER TABLE COLUMN", id, want, s.cfg.RequestTimeout)
		}
		if err := sleep(ctx, wait); err != nil {
			return tableInfo{}, err
		}
	}
}

// exec runs statements over the FE's MySQL port.
func (s *Sink) exec(ctx context.Context, stmts ...string) error {
	conn, err := mysqlclient.ConnectWithContext(ctx, s.cfg.QueryAddr, s.cfg.User, s.cfg.Password, "", s.cfg.RequestTimeout)
	if err != nil {
		return fmt.Errorf("connecting to doris query port %s as %s: %w", s.cfg.QueryAddr, s.cfg.User, scrub(err, s.cfg.Password))
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	for _, q := range stmts {
		if _, err := conn.Execute(q); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("running %q: %w", firstLine(q), err)
		}
	}
	return nil
}

// scrub hides secret in err's text.
func scrub(err error, secret string) error {
	if secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return fmt.Errorf("%s", strings.ReplaceAll(err.Error(), secret, "xxxxx"))
}
