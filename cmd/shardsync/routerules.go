package main

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/shardsync/shardsync/change"
)

// routeSpec is one Flink CDC route rule as the user wrote it (a pipeline
// file's route: entry, or --route SOURCE=SINK).
type routeSpec struct {
	Source        string // Flink CDC db.table regex
	Sink          string // db.table, possibly holding ReplaceSymbol
	ReplaceSymbol string
	Description   string
}

// routeFlag is the repeatable --route SOURCE=SINK flag.
type routeFlag struct{ dst *[]routeSpec }

func (f *routeFlag) String() string {
	if f.dst == nil {
		return ""
	}
	parts := make([]string, len(*f.dst))
	for i, r := range *f.dst {
		parts[i] = r.Source + "=" + r.Sink
	}
	return strings.Join(parts, " ")
}

func (f *routeFlag) Set(v string) error {
	i := strings.LastIndex(v, "=")
	if i <= 0 || i == len(v)-1 {
		return fmt.Errorf("route %q must be SOURCE=SINK, e.g. 'emp_[0-9]+.employees_[0-9]+=demo.all_employees_info'", v)
	}
	*f.dst = append(*f.dst, routeSpec{Source: strings.TrimSpace(v[:i]), Sink: strings.TrimSpace(v[i+1:])})
	return nil
}

func (f *routeFlag) Type() string { return "SOURCE=SINK" }

// routeRule is a compiled route rule.
type routeRule struct {
	spec      routeSpec
	db, table *regexp.Regexp
	n         int // 1-based position, for messages
}

func (r routeRule) matches(t change.TableID) bool {
	return r.db.MatchString(t.Database) && r.table.MatchString(t.Table)
}

// sinkFor is the target of shard t: the sink table with the replace symbol
// replaced by t's table name.
func (r routeRule) sinkFor(t change.TableID) change.TableID {
	s := r.spec.Sink
	if r.spec.ReplaceSymbol != "" {
		s = strings.ReplaceAll(s, r.spec.ReplaceSymbol, t.Table)
	}
	db, tbl, ok := strings.Cut(s, ".")
	if !ok { // a bare table name (Flink's "sink-table: <>"): keep the shard's database
		return change.TableID{Database: t.Database, Table: s}
	}
	return change.TableID{Database: db, Table: tbl}
}

// parseRouteRules compiles route rules. symbol is the --route-replace-symbol
// default for rules that have none.
func parseRouteRules(specs []routeSpec, symbol string) ([]routeRule, error) {
	out := make([]routeRule, 0, len(specs))
	for i, sp := range specs {
		if sp.ReplaceSymbol == "" {
			sp.ReplaceSymbol = symbol
		}
		where := fmt.Sprintf("route %d (source-table %q)", i+1, sp.Source)
		if strings.TrimSpace(sp.Source) == "" || strings.TrimSpace(sp.Sink) == "" {
			return nil, usagef("route %d needs both source-table and sink-table", i+1)
		}
		if strings.Contains(sp.Source, ",") {
			return nil, usagef("%s: one source-table per route; write one route per pattern", where)
		}
		dbExpr, tblExpr, ok := splitFlinkTables(sp.Source)
		if !ok {
			return nil, usagef("%s must be db.table (an unescaped dot separates them; write \\. for a regex dot)", where)
		}
		db, err := anchored(dbExpr, where+" database pattern")
		if err != nil {
			return nil, err
		}
		tbl, err := anchored(tblExpr, where+" table pattern")
		if err != nil {
			return nil, err
		}
		probe := sp.Sink
		if sp.ReplaceSymbol != "" {
			probe = strings.ReplaceAll(probe, sp.ReplaceSymbol, "t")
		}
		if d, t, ok := strings.Cut(probe, "."); ok && (d == "" || t == "" || strings.Contains(t, ".")) {
			return nil, usagef("route %d sink-table %q must be database.table", i+1, sp.Sink)
		}
		out = append(out, routeRule{spec: sp, db: db, table: tbl, n: i + 1})
	}
	return out, nil
}

// planJobRoutes plans the job's routes: shards selected by the patterns
// that match a route rule go to that rule's sink table (the first rule
// that matches; a rule with a replace symbol makes one target per source
// table name); the other shards are planned as without rules (--target,
// or the derived per-table targets).
func planJobRoutes(pats []pattern, rules []routeRule, target *change.TableID, shards []change.TableID) ([]targetRoute, error) {
	if len(rules) == 0 {
		return planRoutes(pats, target, shards)
	}
	type key struct {
		rule   int
		target change.TableID
	}
	grouped := map[key]*targetRoute{}
	var order []key
	var rest []change.TableID
	for _, s := range shards {
		selected := false
		for _, p := range pats {
			if p.matches(s) {
				selected = true
				break
			}
		}
		if !selected {
			continue
		}
		ri := -1
		for i, r := range rules {
			if r.matches(s) {
				ri = i
				break
			}
		}
		if ri < 0 {
			rest = append(rest, s)
			continue
		}
		r := rules[ri]
		k := key{ri, r.sinkFor(s)}
		tr, ok := grouped[k]
		if !ok {
			tr = &targetRoute{target: k.target, db: r.db, table: r.table}
			if r.spec.ReplaceSymbol != "" && strings.Contains(r.spec.Sink, r.spec.ReplaceSymbol) {
				// The target depends on the table name: this route takes
				// only tables of that name.
				tr.table = regexp.MustCompile(`^(?:` + regexp.QuoteMeta(s.Table) + `)$`)
			}
			grouped[k] = tr
			order = append(order, k)
		}
		tr.shards = append(tr.shards, s)
	}
	sort.SliceStable(order, func(i, j int) bool {
		if order[i].rule != order[j].rule {
			return order[i].rule < order[j].rule
		}
		return order[i].target.String() < order[j].target.String()
	})
	out := make([]targetRoute, 0, len(order))
	for _, k := range order {
		out = append(out, *grouped[k])
	}
	if len(rest) > 0 {
		more, err := planRoutes(pats, target, rest)
		if err != nil {
			return nil, err
		}
		for _, r := range more {
			if len(r.shards) > 0 {
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// describeRules renders route rules for messages and docs.
func describeRules(rules []routeRule) string {
	var b strings.Builder
	for _, r := range rules {
		fmt.Fprintf(&b, "route %d: %s → %s", r.n, r.spec.Source, r.spec.Sink)
		if r.spec.ReplaceSymbol != "" {
			fmt.Fprintf(&b, " (replace-symbol %q)", r.spec.ReplaceSymbol)
		}
		if r.spec.Description != "" {
			fmt.Fprintf(&b, " — %s", r.spec.Description)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
