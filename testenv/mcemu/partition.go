package mcemu

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Partitions and schemas.
//
// A partitioned table keeps its rows per partition; a partition exists once
// created by `alter table … add [if not exists] partition (…)` or by an
// upload session opened with create_partition=true. Partition columns are
// not data columns: records sent through the tunnel carry the data columns
// only, and the session names its partition in the `partition` query
// parameter as "k1=v1,k2=v2" (the Go SDK strips quotes). Upsert and upload
// sessions belong to one partition each.
//
// With Options.SchemaModel the project has schemas (odps.schema.model.enabled
// = true): table paths may be /projects/p/schemas/s/tables/t (tunnel, and
// the REST API) or /projects/p/tables/t?curr_schema=s (the Go SDK's
// Table.Load), SQL names are p.s.t (with the hint odps.namespace.schema =
// true), and a table named without a schema is in schema "default".

// partData is one partition's committed rows.
type partData struct {
	values  []string // per partition column, in order
	rows    [][]any
	created time.Time
}

func (t *table) partSpecs() []string {
	specs := make([]string, 0, len(t.parts))
	for k := range t.parts {
		specs = append(specs, k)
	}
	sort.Strings(specs)
	return specs
}

func (e *Emulator) defaultSchema() string {
	if e.opts.SchemaModel {
		return "default"
	}
	return ""
}

func tableKey(schema, name string) string {
	return strings.ToLower(schema) + "." + strings.ToLower(name)
}

// tableLocked finds a table; schema "" means the default schema.
func (e *Emulator) tableLocked(schema, name string) (*table, bool) {
	if schema == "" {
		schema = e.defaultSchema()
	}
	t, ok := e.tables[tableKey(schema, name)]
	return t, ok
}

// namedTableLocked finds "table" or "schema.table".
func (e *Emulator) namedTableLocked(name string) (*table, bool) {
	if s, t, ok := strings.Cut(name, "."); ok {
		return e.tableLocked(s, t)
	}
	return e.tableLocked("", name)
}

// checkSchemaLocked validates a schema named in a request.
func (e *Emulator) checkSchemaLocked(schema string) *httpError {
	if schema == "" {
		return nil
	}
	if !e.opts.SchemaModel {
		return errf(http.StatusBadRequest, "InvalidParameter",
			"ODPS-0110061: project %s does not have the schema model enabled (odps.schema.model.enabled=false); schema %s cannot be used", e.opts.Project, schema)
	}
	if !e.schemas[strings.ToLower(schema)] {
		return errf(http.StatusNotFound, "NoSuchObject", "ODPS-0110061: schema %s.%s does not exist", e.opts.Project, schema)
	}
	return nil
}

// partitionTypes are the types a partition column may have.
var partitionTypes = map[string]bool{"STRING": true, "VARCHAR": true, "CHAR": true,
	"TINYINT": true, "SMALLINT": true, "INT": true, "BIGINT": true}

// checkPartValue validates one partition value for its column, as
// MaxCompute documents it: not empty, at most 255 bytes, no '/', '=', ',',
// quotes or control characters, and an integer for an integer column.
func checkPartValue(c columnDef, v string) error {
	if v == "" || len(v) > 255 {
		return fmt.Errorf("partition value %q of %s must be 1..255 bytes", v, c.Name)
	}
	for _, r := range v {
		if r < 0x20 || strings.ContainsRune(`/=,'"\`, r) {
			return fmt.Errorf("partition value %q of %s contains %q, which partition values cannot hold", v, c.Name, r)
		}
	}
	switch baseType(c.Type) {
	case "TINYINT", "SMALLINT", "INT", "BIGINT":
		if _, err := strconv.ParseInt(v, 10, 64); err != nil {
			return fmt.Errorf("partition value %q of %s is not a %s", v, c.Name, c.Type)
		}
	}
	return nil
}

// canonicalSpec validates kv (column name → value, names in any case) as a
// full partition of t and returns its canonical spec and values.
func (t *table) canonicalSpec(kv map[string]string, raw string) (string, []string, error) {
	if len(t.partCols) == 0 {
		return "", nil, fmt.Errorf("table %s is not partitioned, but partition %q was given", t.name, raw)
	}
	if len(kv) != len(t.partCols) {
		return "", nil, fmt.Errorf("partition %q of table %s must name every partition column (%s)", raw, t.name, t.partColNames())
	}
	var b strings.Builder
	vals := make([]string, len(t.partCols))
	for i, c := range t.partCols {
		v, ok := kv[strings.ToLower(c.Name)]
		if !ok {
			return "", nil, fmt.Errorf("partition %q of table %s lacks partition column %s", raw, t.name, c.Name)
		}
		if err := checkPartValue(c, v); err != nil {
			return "", nil, err
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strings.ToLower(c.Name) + "=" + v)
		vals[i] = v
	}
	return b.String(), vals, nil
}

func (t *table) partColNames() string {
	names := make([]string, len(t.partCols))
	for i, c := range t.partCols {
		names[i] = c.Name
	}
	return strings.Join(names, ", ")
}

// parsePartitionParam reads the tunnel's partition parameter,
// "k1=v1,k2=v2" (quotes, if any, are stripped as the SDKs do).
func (t *table) parsePartitionParam(raw string) (string, []string, error) {
	if raw == "" {
		if len(t.partCols) > 0 {
			return "", nil, fmt.Errorf("table %s is partitioned by (%s): the request must name a partition", t.name, t.partColNames())
		}
		return "", nil, nil
	}
	kv := map[string]string{}
	for _, part := range strings.Split(strings.NewReplacer("'", "", `"`, "").Replace(raw), ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return "", nil, fmt.Errorf("partition %q is not k1=v1,k2=v2", raw)
		}
		kv[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	return t.canonicalSpec(kv, raw)
}

// addPartition creates a partition; it reports whether it was new.
func (t *table) addPartition(spec string, values []string) bool {
	if _, ok := t.parts[spec]; ok {
		return false
	}
	t.parts[spec] = &partData{values: values, created: time.Now()}
	return true
}

// tunnelPartition resolves a tunnel request's partition of t: the partition
// must exist unless create is set (upload sessions' create_partition).
func (t *table) tunnelPartition(raw string, create bool) (string, *httpError) {
	spec, vals, err := t.parsePartitionParam(raw)
	if err != nil {
		return "", errf(http.StatusBadRequest, "InvalidPartitionSpec", "%v", err)
	}
	if _, ok := t.parts[spec]; !ok {
		if !create {
			return "", errf(http.StatusNotFound, "NoSuchPartition", "partition %s of table %s does not exist", raw, t.name)
		}
		t.addPartition(spec, vals)
	}
	return spec, nil
}
