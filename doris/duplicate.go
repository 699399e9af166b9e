package doris

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/shardsync/shardsync/change"
)

// CreateDuplicateTableSQL returns the CREATE TABLE statement of a Duplicate
// Key target, the target of a source table without a primary key: an append
// log (inserted rows, and updated rows as their after image, are appended;
// deletes are not applied). key (see TableKey: the metadata columns) is the
// sort key; rows are spread over the buckets at random (Doris 2.0 and
// later), so one shard does not fill one bucket. Stream Load labels make
// every epoch's append happen exactly once.
func CreateDuplicateTableSQL(target change.TableID, s change.Schema, key []string, buckets, replication int, props map[string]string) (string, error) {
	if len(key) == 0 {
		return "", fmt.Errorf("creating %s: a Duplicate Key target needs the metadata columns as its sort key", target)
	}
	var cols []string
	for _, k := range key {
		i := s.Index(k)
		if i < 0 {
			return "", fmt.Errorf("creating %s: key column %q is not in the schema", target, k)
		}
		typ, err := DorisType(s.Columns[i], true)
		if err != nil {
			return "", fmt.Errorf("creating %s: %w", target, err)
		}
		cols = append(cols, "  "+quoteIdent(k)+" "+typ+" NOT NULL")
	}
	for _, c := range s.Columns {
		if slices.Contains(key, c.Name) {
			continue
		}
		def, err := columnDef(c)
		if err != nil {
			return "", fmt.Errorf("creating %s: %w", target, err)
		}
		cols = append(cols, "  "+def)
	}
	qk := make([]string, len(key))
	for i, k := range key {
		qk[i] = quoteIdent(k)
	}
	b := "AUTO"
	if buckets > 0 {
		b = strconv.Itoa(buckets)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "CREATE TABLE IF NOT EXISTS %s.%s (\n%s\n)\nDUPLICATE KEY(%s)\nDISTRIBUTED BY RANDOM BUCKETS %s",
		quoteIdent(target.Database), quoteIdent(target.Table), strings.Join(cols, ",\n"), strings.Join(qk, ", "), b)
	p := maps.Clone(props)
	if p == nil {
		p = map[string]string{}
	}
	if replication > 0 {
		if _, set := p["replication_num"]; !set {
			p["replication_num"] = strconv.Itoa(replication)
		}
	}
	if len(p) > 0 {
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(p)) {
			kv = append(kv, quoteString(k)+" = "+quoteString(p[k]))
		}
		sb.WriteString("\nPROPERTIES (" + strings.Join(kv, ", ") + ")")
	}
	return sb.String(), nil
}
