package mcemu

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// The emulator understands exactly the SQL the shardsync MaxCompute sink and
// the Go SDK helpers it calls emit. Anything else fails the task, so drift in
// the sink's DDL shows up as a test failure instead of silently passing.
//
//	create table [if not exists] p.`t` ( `c` TYPE [not null] [comment '…'], …
//	    [,primary key( `c`, …)] ) [comment '…'] [partitioned by (`k` TYPE, …)]
//	    [TBLPROPERTIES ('k'='v', …)] [lifecycle n];
//	alter table p.`t` add columns [if not exists] (`c` TYPE [comment '…'], …);
//	alter table p.`t` change column `c` `c` TYPE;     -- compatible widening only
//	alter table p.`t` add [if not exists] partition (`k`='v', …) [partition (…)…];
//	alter table p.`t` rename to `n`;
//	drop table [if exists] p.`t`;
//	select count(*) from p.`t`;                        -- a partitioned table needs odps.sql.allow.fullscan=true
//
// Table names are p.`t`, `t`, or with the schema model p.`s`.`t` (which
// needs the hint odps.namespace.schema=true, as the Go SDK sends it).

type tokKind int

const (
	tokWord tokKind = iota + 1
	tokIdent
	tokString
	tokNumber
	tokPunct
)

type token struct {
	kind tokKind
	text string
}

func tokenize(sql string) ([]token, error) {
	var toks []token
	r := []rune(sql)
	for i := 0; i < len(r); {
		c := r[i]
		switch {
		case unicode.IsSpace(c):
			i++
		case c == '`':
			j := i + 1
			for j < len(r) && r[j] != '`' {
				j++
			}
			if j >= len(r) {
				return nil, fmt.Errorf("unterminated quoted identifier at offset %d", i)
			}
			toks = append(toks, token{tokIdent, string(r[i+1 : j])})
			i = j + 1
		case c == '\'' || c == '"':
			var sb strings.Builder
			j := i + 1
			for ; j < len(r) && r[j] != c; j++ {
				if r[j] == '\\' && j+1 < len(r) {
					j++
				}
				sb.WriteRune(r[j])
			}
			if j >= len(r) {
				return nil, fmt.Errorf("unterminated string literal at offset %d", i)
			}
			toks = append(toks, token{tokString, sb.String()})
			i = j + 1
		case unicode.IsDigit(c):
			j := i
			for j < len(r) && unicode.IsDigit(r[j]) {
				j++
			}
			toks = append(toks, token{tokNumber, string(r[i:j])})
			i = j
		case unicode.IsLetter(c) || c == '_':
			j := i
			for j < len(r) && (unicode.IsLetter(r[j]) || unicode.IsDigit(r[j]) || r[j] == '_') {
				j++
			}
			toks = append(toks, token{tokWord, string(r[i:j])})
			i = j
		case strings.ContainsRune("(),;.=<>*", c):
			toks = append(toks, token{tokPunct, string(c)})
			i++
		default:
			return nil, fmt.Errorf("unexpected character %q at offset %d", c, i)
		}
	}
	return toks, nil
}

type parser struct {
	toks []token
	pos  int
}

func (p *parser) peek() (token, bool) {
	if p.pos >= len(p.toks) {
		return token{}, false
	}
	return p.toks[p.pos], true
}

func (p *parser) isWord(w string) bool {
	t, ok := p.peek()
	return ok && t.kind == tokWord && strings.EqualFold(t.text, w)
}

func (p *parser) isPunct(s string) bool {
	t, ok := p.peek()
	return ok && t.kind == tokPunct && t.text == s
}

func (p *parser) acceptWords(ws ...string) bool {
	save := p.pos
	for _, w := range ws {
		if !p.isWord(w) {
			p.pos = save
			return false
		}
		p.pos++
	}
	return true
}

func (p *parser) expectPunct(s string) error {
	if !p.isPunct(s) {
		return p.errorf("expected %q", s)
	}
	p.pos++
	return nil
}

func (p *parser) errorf(format string, args ...any) error {
	near := "end of statement"
	if t, ok := p.peek(); ok {
		near = fmt.Sprintf("%q", t.text)
	}
	return fmt.Errorf("ODPS-0130161:[1,1] Parse exception - %s near %s", fmt.Sprintf(format, args...), near)
}

func (p *parser) ident() (string, error) {
	t, ok := p.peek()
	if !ok || (t.kind != tokIdent && t.kind != tokWord) {
		return "", p.errorf("expected identifier")
	}
	p.pos++
	return t.text, nil
}

// tableName parses p.s.t, p.`t`, `p`.`t` or `t`; it returns project and
// schema ("" if absent) and table.
func (p *parser) tableName() (string, string, string, error) {
	var parts []string
	for {
		a, err := p.ident()
		if err != nil {
			return "", "", "", err
		}
		parts = append(parts, a)
		if !p.isPunct(".") || len(parts) == 3 {
			break
		}
		p.pos++
	}
	switch len(parts) {
	case 1:
		return "", "", parts[0], nil
	case 2:
		return parts[0], "", parts[1], nil
	}
	return parts[0], parts[1], parts[2], nil
}

// typeName parses a type such as BIGINT, DECIMAL(10,2), VARCHAR(20). Complex
// types are not part of the subset.
func (p *parser) typeName() (string, error) {
	t, ok := p.peek()
	if !ok || t.kind != tokWord {
		return "", p.errorf("expected a type")
	}
	p.pos++
	name := strings.ToUpper(t.text)
	if _, ok := baseTypes[name]; !ok {
		return "", fmt.Errorf("ODPS-0130141:[1,1] Illegal type - unsupported type %s", name)
	}
	if !p.isPunct("(") {
		if name == "CHAR" || name == "VARCHAR" {
			return "", p.errorf("%s needs a length", name)
		}
		if name == "DECIMAL" {
			return "DECIMAL(38,18)", nil
		}
		return name, nil
	}
	p.pos++
	var args []string
	for {
		n, ok := p.peek()
		if !ok || n.kind != tokNumber {
			return "", p.errorf("expected a number in %s(…)", name)
		}
		p.pos++
		args = append(args, n.text)
		if p.isPunct(",") {
			p.pos++
			continue
		}
		break
	}
	if err := p.expectPunct(")"); err != nil {
		return "", err
	}
	switch name {
	case "DECIMAL":
		prec, _ := strconv.Atoi(args[0])
		scale := 0
		if len(args) > 1 {
			scale, _ = strconv.Atoi(args[1])
		}
		if len(args) > 2 || prec < 1 || prec > 38 || scale < 0 || scale > 18 || scale > prec {
			return "", fmt.Errorf("ODPS-0130141:[1,1] Illegal type - invalid decimal(%s)", strings.Join(args, ","))
		}
		return fmt.Sprintf("DECIMAL(%d,%d)", prec, scale), nil
	case "CHAR", "VARCHAR":
		if len(args) != 1 {
			return "", p.errorf("%s takes one length", name)
		}
		return fmt.Sprintf("%s(%s)", name, args[0]), nil
	}
	return "", p.errorf("type %s takes no arguments", name)
}

// baseTypes are the primitive types the emulator stores; the value says
// whether the type needs the MaxCompute 2.0 type system hint.
var baseTypes = map[string]bool{
	"BIGINT": false, "DOUBLE": false, "BOOLEAN": false, "DATETIME": false, "STRING": false,
	"DECIMAL": true, // DECIMAL(p,s) with the 2.0 decimal semantics
	"TINYINT": true, "SMALLINT": true, "INT": true, "FLOAT": true, "DATE": true,
	"TIMESTAMP": true, "TIMESTAMP_NTZ": true, "BINARY": true, "CHAR": true, "VARCHAR": true,
}

func needsOdps2(typ string) bool {
	return baseTypes[baseType(typ)]
}

func baseType(typ string) string {
	if i := strings.IndexByte(typ, '('); i >= 0 {
		return typ[:i]
	}
	return typ
}

// columnDef is one parsed column.
type columnDef struct {
	Name    string
	Type    string
	NotNull bool
	Comment string
}

type stmtKind int

const (
	stmtCreate stmtKind = iota + 1
	stmtAddColumns
	stmtChangeType
	stmtDrop
	stmtAddPartition
	stmtDelete
	stmtRename
	stmtSelectCount
)

type statement struct {
	kind        stmtKind
	project     string
	schema      string // three-part names only
	table       string
	partCols    []columnDef         // create … partitioned by
	partitions  []map[string]string // add partition: lower-case column → value
	ifNotExists bool                // create / add columns
	ifExists    bool                // drop
	columns     []columnDef
	primaryKey  []string
	props       map[string]string
	lifecycle   int
	comment     string      // create … comment
	newName     string      // stmtRename
	where       [][2]string // stmtDelete: column = 'literal' conditions, all must hold
}

func parseStatement(sql string) (*statement, error) {
	toks, err := tokenize(sql)
	if err != nil {
		return nil, fmt.Errorf("ODPS-0130161:[1,1] Parse exception - %w", err)
	}
	p := &parser{toks: toks}
	var st *statement
	switch {
	case p.acceptWords("create", "table"):
		st, err = p.create()
	case p.acceptWords("alter", "table"):
		st, err = p.alter()
	case p.acceptWords("drop", "table"):
		st, err = p.drop()
	case p.acceptWords("delete", "from"):
		st, err = p.deleteFrom()
	case p.acceptWords("select", "count"):
		st, err = p.selectCount()
	default:
		return nil, p.errorf("statement not supported by the emulator's SQL subset")
	}
	if err != nil {
		return nil, err
	}
	if p.isPunct(";") {
		p.pos++
	}
	if _, ok := p.peek(); ok {
		return nil, p.errorf("unexpected trailing input")
	}
	return st, nil
}

func (p *parser) columnDefs(allowPK bool) ([]columnDef, []string, error) {
	var cols []columnDef
	var pk []string
	for {
		if allowPK && p.acceptWords("primary", "key") {
			if err := p.expectPunct("("); err != nil {
				return nil, nil, err
			}
			for {
				name, err := p.ident()
				if err != nil {
					return nil, nil, err
				}
				pk = append(pk, name)
				if p.isPunct(",") {
					p.pos++
					continue
				}
				break
			}
			if err := p.expectPunct(")"); err != nil {
				return nil, nil, err
			}
		} else {
			t, ok := p.peek()
			if !ok || t.kind != tokIdent {
				return nil, nil, p.errorf("expected a back-quoted column name")
			}
			p.pos++
			typ, err := p.typeName()
			if err != nil {
				return nil, nil, err
			}
			c := columnDef{Name: t.text, Type: typ}
			if p.acceptWords("not", "null") {
				c.NotNull = true
			}
			if p.acceptWords("comment") {
				s, ok := p.peek()
				if !ok || s.kind != tokString {
					return nil, nil, p.errorf("expected a comment string")
				}
				p.pos++
				c.Comment = s.text
			}
			cols = append(cols, c)
		}
		if p.isPunct(",") {
			p.pos++
			continue
		}
		break
	}
	return cols, pk, nil
}

func (p *parser) create() (*statement, error) {
	st := &statement{kind: stmtCreate, props: map[string]string{}}
	if p.acceptWords("if", "not", "exists") {
		st.ifNotExists = true
	}
	var err error
	if st.project, st.schema, st.table, err = p.tableName(); err != nil {
		return nil, err
	}
	if err := p.expectPunct("("); err != nil {
		return nil, err
	}
	if st.columns, st.primaryKey, err = p.columnDefs(true); err != nil {
		return nil, err
	}
	if err := p.expectPunct(")"); err != nil {
		return nil, err
	}
	if p.acceptWords("comment") {
		if t, ok := p.peek(); ok && t.kind == tokString {
			p.pos++
			st.comment = t.text
		} else {
			return nil, p.errorf("expected a table comment string")
		}
	}
	if p.acceptWords("partitioned", "by") {
		if err := p.expectPunct("("); err != nil {
			return nil, err
		}
		if st.partCols, _, err = p.columnDefs(false); err != nil {
			return nil, err
		}
		if err := p.expectPunct(")"); err != nil {
			return nil, err
		}
	}
	if p.acceptWords("tblproperties") {
		if err := p.expectPunct("("); err != nil {
			return nil, err
		}
		for {
			k, ok := p.peek()
			if !ok || k.kind != tokString {
				return nil, p.errorf("expected a property name string")
			}
			p.pos++
			if err := p.expectPunct("="); err != nil {
				return nil, err
			}
			v, ok := p.peek()
			if !ok || v.kind != tokString {
				return nil, p.errorf("expected a property value string")
			}
			p.pos++
			st.props[strings.ToLower(k.text)] = v.text
			if p.isPunct(",") {
				p.pos++
				continue
			}
			break
		}
		if err := p.expectPunct(")"); err != nil {
			return nil, err
		}
	}
	if p.acceptWords("lifecycle") {
		n, ok := p.peek()
		if !ok || n.kind != tokNumber {
			return nil, p.errorf("expected a lifecycle number")
		}
		p.pos++
		st.lifecycle, _ = strconv.Atoi(n.text)
	}
	return st, nil
}

func (p *parser) alter() (*statement, error) {
	st := &statement{}
	var err error
	if st.project, st.schema, st.table, err = p.tableName(); err != nil {
		return nil, err
	}
	switch {
	case p.acceptWords("add", "if", "not", "exists", "partition"), p.acceptWords("add", "partition"):
		st.kind = stmtAddPartition
		st.ifNotExists = !strings.EqualFold(p.toks[p.pos-2].text, "add") // "… exists partition"
		for {
			kv, err := p.partitionSpec()
			if err != nil {
				return nil, err
			}
			st.partitions = append(st.partitions, kv)
			if !p.acceptWords("partition") {
				break
			}
		}
	case p.acceptWords("add", "columns"):
		st.kind = stmtAddColumns
		if p.acceptWords("if", "not", "exists") {
			st.ifNotExists = true
		}
		if err := p.expectPunct("("); err != nil {
			return nil, err
		}
		if st.columns, _, err = p.columnDefs(false); err != nil {
			return nil, err
		}
		for _, c := range st.columns {
			if c.NotNull {
				return nil, fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - added column %s cannot be NOT NULL", c.Name)
			}
		}
		if err := p.expectPunct(")"); err != nil {
			return nil, err
		}
	case p.acceptWords("rename", "to"):
		st.kind = stmtRename
		if st.newName, err = p.ident(); err != nil {
			return nil, err
		}
	case p.acceptWords("change", "column"):
		st.kind = stmtChangeType
		a, err := p.ident()
		if err != nil {
			return nil, err
		}
		b, err := p.ident()
		if err != nil {
			return nil, err
		}
		if !strings.EqualFold(a, b) {
			return nil, p.errorf("renaming through change column is not in the emulator's subset")
		}
		typ, err := p.typeName()
		if err != nil {
			return nil, err
		}
		st.columns = []columnDef{{Name: a, Type: typ}}
	default:
		return nil, p.errorf("alter table form not supported by the emulator's SQL subset")
	}
	return st, nil
}

func (p *parser) drop() (*statement, error) {
	st := &statement{kind: stmtDrop}
	if p.acceptWords("if", "exists") {
		st.ifExists = true
	}
	var err error
	st.project, st.schema, st.table, err = p.tableName()
	return st, err
}

// selectCount parses the rest of select count(*) from <table>.
func (p *parser) selectCount() (*statement, error) {
	for _, s := range []string{"(", "*", ")"} {
		if err := p.expectPunct(s); err != nil {
			return nil, err
		}
	}
	if !p.acceptWords("from") {
		return nil, p.errorf("expected from")
	}
	st := &statement{kind: stmtSelectCount}
	var err error
	st.project, st.schema, st.table, err = p.tableName()
	return st, err
}

// partitionSpec parses (`k`='v', k2=3, …) after the word partition.
func (p *parser) partitionSpec() (map[string]string, error) {
	if err := p.expectPunct("("); err != nil {
		return nil, err
	}
	kv := map[string]string{}
	for {
		k, err := p.ident()
		if err != nil {
			return nil, err
		}
		if err := p.expectPunct("="); err != nil {
			return nil, err
		}
		v, ok := p.peek()
		if !ok || (v.kind != tokString && v.kind != tokNumber) {
			return nil, p.errorf("expected a partition value")
		}
		p.pos++
		kv[strings.ToLower(k)] = v.text
		if p.isPunct(",") {
			p.pos++
			continue
		}
		break
	}
	return kv, p.expectPunct(")")
}

// widens reports whether changing a column from old to new type is a
// compatible widening MaxCompute accepts.
func widens(oldT, newT string) bool {
	if oldT == newT {
		return true
	}
	rank := map[string]int{"TINYINT": 1, "SMALLINT": 2, "INT": 3, "BIGINT": 4}
	ob, nb := baseType(oldT), baseType(newT)
	if rank[ob] > 0 && rank[nb] > 0 {
		return rank[nb] >= rank[ob]
	}
	if ob == "FLOAT" && nb == "DOUBLE" {
		return true
	}
	if ob == "DECIMAL" && nb == "DECIMAL" {
		var op, os, np, ns int
		_, _ = fmt.Sscanf(oldT, "DECIMAL(%d,%d)", &op, &os)
		_, _ = fmt.Sscanf(newT, "DECIMAL(%d,%d)", &np, &ns)
		return ns >= os && np-ns >= op-os
	}
	if (ob == "VARCHAR" || ob == "CHAR") && nb == "STRING" {
		return true
	}
	if ob == "VARCHAR" && nb == "VARCHAR" {
		var ol, nl int
		_, _ = fmt.Sscanf(oldT, "VARCHAR(%d)", &ol)
		_, _ = fmt.Sscanf(newT, "VARCHAR(%d)", &nl)
		return nl >= ol
	}
	return false
}

// deleteFrom parses the subset of DELETE FROM <table> [WHERE <condition>]
// that shardsync emits: equality of columns with string literals, joined by
// AND.
func (p *parser) deleteFrom() (*statement, error) {
	st := &statement{kind: stmtDelete}
	var err error
	if st.project, st.schema, st.table, err = p.tableName(); err != nil {
		return nil, err
	}
	if !p.acceptWords("where") {
		return st, nil
	}
	for {
		col, err := p.ident()
		if err != nil {
			return nil, err
		}
		if err := p.expectPunct("="); err != nil {
			return nil, err
		}
		t, ok := p.peek()
		if !ok || t.kind != tokString {
			return nil, p.errorf("the emulator's DELETE takes only column = 'string' conditions")
		}
		p.pos++
		st.where = append(st.where, [2]string{col, t.text})
		if !p.acceptWords("and") {
			return st, nil
		}
	}
}
