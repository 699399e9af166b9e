package merge

import (
	"strings"
	"unicode"

	"github.com/shardsync/shardsync/change"
)

// ddlKind is what a DDL statement does to tables.
type ddlKind uint8

const (
	ddlOther ddlKind = iota
	ddlCreate
	ddlAlter
	ddlDrop
	ddlTruncate
	ddlRename
	ddlDropDatabase
)

type ddlStmt struct {
	kind   ddlKind
	tables []change.TableID // for ddlRename: from, to, from, to…
	db     string           // for ddlDropDatabase
}

// tokenizeSQL splits a statement into identifiers/words (backquotes
// removed) and single punctuation characters, skipping comments and string
// literals' contents.
func tokenizeSQL(q string) []string {
	var out []string
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			if i+2 < len(q) && q[i+2] == '!' { // executable comment: keep its body
				j := i + 3
				for j < len(q) && q[j] >= '0' && q[j] <= '9' {
					j++
				}
				end := strings.Index(q[j:], "*/")
				if end < 0 {
					end = len(q) - j
				}
				out = append(out, tokenizeSQL(q[j:j+end])...)
				i = j + end + 2
				continue
			}
			end := strings.Index(q[i+2:], "*/")
			if end < 0 {
				return out
			}
			i += end + 4
		case c == '#' || (c == '-' && i+2 < len(q) && q[i+1] == '-' && (q[i+2] == ' ' || q[i+2] == '\t')):
			end := strings.IndexByte(q[i:], '\n')
			if end < 0 {
				return out
			}
			i += end + 1
		case c == '`':
			var b strings.Builder
			j := i + 1
			for j < len(q) {
				if q[j] == '`' {
					if j+1 < len(q) && q[j+1] == '`' {
						b.WriteByte('`')
						j += 2
						continue
					}
					break
				}
				b.WriteByte(q[j])
				j++
			}
			out = append(out, "`"+b.String())
			i = j + 1
		case c == '\'' || c == '"':
			j := i + 1
			for j < len(q) && q[j] != c {
				if q[j] == '\\' {
					j++
				}
				j++
			}
			out = append(out, "'")
			i = j + 1
		case unicode.IsSpace(rune(c)):
			i++
		case isWordByte(c):
			j := i
			for j < len(q) && isWordByte(q[j]) {
				j++
			}
			out = append(out, q[i:j])
			i = j
		default:
			out = append(out, string(c))
			i++
		}
	}
	return out
}

func isWordByte(c byte) bool {
	return c == '_' || c == '$' || c >= 0x80 || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

// parseDDL recognises the statements that change which tables exist or
// their columns. defaultDB is the statement's current database.
func parseDDL(defaultDB, q string) ddlStmt {
	toks := tokenizeSQL(q)
	p := &ddlParser{toks: toks, db: defaultDB}
	kw := func(words ...string) bool { return p.accept(words...) }
	switch {
	case kw("CREATE"):
		kw("OR", "REPLACE")
		if kw("DATABASE") || kw("SCHEMA") {
			return ddlStmt{}
		}
		if kw("TEMPORARY") {
			return ddlStmt{}
		}
		if kw("TABLE") {
			kw("IF", "NOT", "EXISTS")
			return ddlStmt{kind: ddlCreate, tables: p.tableList()}
		}
		// CREATE [UNIQUE|FULLTEXT|SPATIAL] INDEX … ON t
		if p.skipTo("INDEX") && p.skipTo("ON") {
			return ddlStmt{kind: ddlAlter, tables: p.tableList()}
		}
	case kw("ALTER"):
		kw("ONLINE")
		kw("IGNORE")
		if kw("TABLE") {
			kw("IF", "EXISTS")
			t := p.table()
			for i := p.i; i < len(toks); i++ {
				if strings.EqualFold(toks[i], "RENAME") {
					p.i = i + 1
					if kw("COLUMN") || kw("INDEX") || kw("KEY") {
						continue
					}
					kw("TO")
					kw("AS")
					return ddlStmt{kind: ddlRename, tables: []change.TableID{t, p.table()}}
				}
			}
			return ddlStmt{kind: ddlAlter, tables: []change.TableID{t}}
		}
	case kw("DROP"):
		if kw("DATABASE") || kw("SCHEMA") {
			kw("IF", "EXISTS")
			return ddlStmt{kind: ddlDropDatabase, db: p.ident()}
		}
		kw("TEMPORARY")
		if kw("TABLE") || kw("TABLES") {
			kw("IF", "EXISTS")
			return ddlStmt{kind: ddlDrop, tables: p.tableList()}
		}
		if kw("INDEX") && p.skipTo("ON") {
			return ddlStmt{kind: ddlAlter, tables: p.tableList()}
		}
	case kw("TRUNCATE"):
		kw("TABLE")
		return ddlStmt{kind: ddlTruncate, tables: p.tableList()}
	case kw("RENAME"):
		if kw("TABLE") || kw("TABLES") {
			var ts []change.TableID
			for {
				from := p.table()
				kw("TO")
				ts = append(ts, from, p.table())
				if !kw(",") {
					break
				}
			}
			return ddlStmt{kind: ddlRename, tables: ts}
		}
	}
	return ddlStmt{}
}

type ddlParser struct {
	toks []string
	i    int
	db   string
}

// accept consumes the keyword sequence if it is next.
func (p *ddlParser) accept(words ...string) bool {
	if p.i+len(words) > len(p.toks) {
		return false
	}
	for k, w := range words {
		if !strings.EqualFold(p.toks[p.i+k], w) {
			return false
		}
	}
	p.i += len(words)
	return true
}

func (p *ddlParser) skipTo(word string) bool {
	for ; p.i < len(p.toks); p.i++ {
		if strings.EqualFold(p.toks[p.i], word) {
			p.i++
			return true
		}
	}
	return false
}

func (p *ddlParser) ident() string {
	if p.i >= len(p.toks) {
		return ""
	}
	t := p.toks[p.i]
	p.i++
	return strings.TrimPrefix(t, "`")
}

func (p *ddlParser) table() change.TableID {
	a := p.ident()
	if p.accept(".") {
		return change.TableID{Database: a, Table: p.ident()}
	}
	return change.TableID{Database: p.db, Table: a}
}

func (p *ddlParser) tableList() []change.TableID {
	ts := []change.TableID{p.table()}
	for p.accept(",") {
		ts = append(ts, p.table())
	}
	return ts
}
