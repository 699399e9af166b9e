package main

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/shardsync/shardsync/change"
)

// pattern is one source selector: an anchored database regex and table
// regex.
type pattern struct {
	db, table *regexp.Regexp
	dbExpr    string // the database regex without anchors
	src       string // as the user wrote it, for messages
}

func (p pattern) matches(t change.TableID) bool {
	return p.db.MatchString(t.Database) && p.table.MatchString(t.Table)
}

// anchored compiles an RE2 regex that must match the whole name.
func anchored(expr, what string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, usagef("%s %q is not a valid regular expression (RE2 syntax, matched against the whole name): %v", what, expr, err)
	}
	return re, nil
}

// splitFlinkTables splits Flink CDC's `db.table` selector: an unescaped dot
// separates the database from the table, and `\.` stands for a regex dot
// (which also matches a literal dot in a name), exactly as the Flink CDC
// pipeline connector reads its `tables` option. ok is false when the text
// has no unescaped dot.
func splitFlinkTables(s string) (db, table string, ok bool) {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++ // skip the escaped character
		case '.':
			return unescapeDots(s[:i]), unescapeDots(s[i+1:]), true
		}
	}
	return "", "", false
}

func unescapeDots(s string) string { return strings.ReplaceAll(s, `\.`, `.`) }

// parsePatterns reads --sources and --tables. --sources is a comma-separated
// list of database regexes, or of Flink CDC `db.table` selectors; --tables
// (optional) is a table regex applied to plain database selectors.
func parsePatterns(sources, tables string) ([]pattern, error) {
	if strings.TrimSpace(sources) == "" {
		return nil, usagef("--sources is required: a database regex such as 'emp_[0-9]+' or Flink CDC's 'emp_[0-9]+.employees_[0-9]+'")
	}
	var out []pattern
	for _, part := range splitTopLevelCommas(sources) {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		dbExpr, tblExpr := part, tables
		if d, t, ok := splitFlinkTables(part); ok {
			if tables != "" {
				return nil, usagef("--sources %q already names tables (db.table form); drop --tables or write the database regex alone", part)
			}
			dbExpr, tblExpr = d, t
		} else {
			dbExpr = unescapeDots(part)
		}
		if tblExpr == "" {
			tblExpr = ".*"
		}
		db, err := anchored(dbExpr, "--sources database pattern")
		if err != nil {
			return nil, err
		}
		tbl, err := anchored(tblExpr, "--tables pattern")
		if err != nil {
			return nil, err
		}
		out = append(out, pattern{db: db, table: tbl, dbExpr: dbExpr, src: part})
	}
	if len(out) == 0 {
		return nil, usagef("--sources %q names no pattern", sources)
	}
	return out, nil
}

// splitTopLevelCommas splits on commas that are not inside (), [] or {}
// and not escaped, so `emp_{1,3}` stays whole.
func splitTopLevelCommas(s string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			if depth > 0 {
				depth--
			}
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// shardSuffix matches a trailing shard number, with or without a separator.
var shardSuffix = regexp.MustCompile(`[_-]?[0-9]+$`)

// stripShardNumber turns a shard's name into its merged name:
// employees_2 → employees. A name that is only digits is kept.
func stripShardNumber(name string) string {
	s := shardSuffix.ReplaceAllString(name, "")
	if s == "" {
		return name
	}
	return s
}

// literalPrefix returns the literal text a database regex starts with,
// trimmed of separators: 'emp_[0-9]+' → 'emp'.
func literalPrefix(expr string) string {
	re, err := regexp.Compile(expr)
	if err != nil {
		return ""
	}
	p, _ := re.LiteralPrefix()
	return strings.TrimRight(p, "_-.")
}

// targetRoute is one merged target and the shards that feed it.
type targetRoute struct {
	target change.TableID
	db     *regexp.Regexp
	table  *regexp.Regexp
	shards []change.TableID
}

// planRoutes maps the discovered shards to targets. With an explicit
// target every matching shard goes there; without one, each distinct table
// name with its shard number stripped becomes a target in a database named
// after the database pattern's literal prefix.
func planRoutes(pats []pattern, target *change.TableID, shards []change.TableID) ([]targetRoute, error) {
	if target != nil {
		r := targetRoute{target: *target}
		for _, s := range shards {
			for _, p := range pats {
				if p.matches(s) {
					r.shards = append(r.shards, s)
					break
				}
			}
		}
		if len(pats) > 1 {
			// A shard must match one pattern as a (database, table) pair,
			// so each pattern becomes its own route to the same target.
			return multiRoutes(pats, *target, r.shards), nil
		}
		r.db, r.table = pats[0].db, pats[0].table
		return []targetRoute{r}, nil
	}
	byTarget := map[change.TableID]*targetRoute{}
	for _, p := range pats {
		db := literalPrefix(p.dbExpr)
		if db == "" {
			return nil, usagef("cannot name a target database from --sources %q (it has no literal prefix): give --target db.table", p.src)
		}
		for _, s := range shards {
			if !p.matches(s) {
				continue
			}
			base := stripShardNumber(s.Table)
			t := change.TableID{Database: db, Table: base}
			r, ok := byTarget[t]
			if !ok {
				tableRe := regexp.MustCompile(`^(?:` + regexp.QuoteMeta(base) + `(?:[_-]?[0-9]+)?)$`)
				r = &targetRoute{target: t, db: p.db, table: tableRe}
				byTarget[t] = r
			}
			if !slices.Contains(r.shards, s) {
				r.shards = append(r.shards, s)
			}
		}
	}
	out := make([]targetRoute, 0, len(byTarget))
	for _, r := range byTarget {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].target.String() < out[j].target.String() })
	return out, nil
}

func multiRoutes(pats []pattern, target change.TableID, shards []change.TableID) []targetRoute {
	out := make([]targetRoute, 0, len(pats))
	for _, p := range pats {
		r := targetRoute{target: target, db: p.db, table: p.table}
		for _, s := range shards {
			if p.matches(s) {
				r.shards = append(r.shards, s)
			}
		}
		out = append(out, r)
	}
	return out
}

// parseTarget reads --target db.table.
func parseTarget(s string) (*change.TableID, error) {
	if s == "" {
		return nil, nil
	}
	db, tbl, ok := strings.Cut(s, ".")
	if !ok || db == "" || tbl == "" || strings.Contains(tbl, ".") {
		return nil, usagef("--target %q must be database.table, e.g. demo.all_employees_info", s)
	}
	return &change.TableID{Database: db, Table: tbl}, nil
}

// describeRoutes renders the shard → target mapping printed at start.
func describeRoutes(routes []targetRoute) string {
	var b strings.Builder
	for _, r := range routes {
		names := make([]string, len(r.shards))
		for i, s := range r.shards {
			names[i] = s.String()
		}
		fmt.Fprintf(&b, "%s ← %s\n", r.target, strings.Join(names, ", "))
	}
	return b.String()
}
