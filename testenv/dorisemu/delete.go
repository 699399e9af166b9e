package dorisemu

import (
	"slices"

	"github.com/go-mysql-org/go-mysql/mysql"
)

// deleteStmt runs DELETE FROM [db.]t WHERE col op literal [AND …], Doris's
// delete by condition. Doris runs it as a load transaction of its own whose
// version follows every transaction committed before it, so the rows of a
// load committed (even if not yet published) before the DELETE are
// deleted, and rows of a later load are kept: the emulator publishes the
// table's committed transactions first, then deletes. On a Unique Key table
// any column may be in the condition (merge-on-write deletes by row); on
// a Duplicate Key table only key columns, as Doris requires. A WHERE is
// required. It returns the number of rows deleted as affected rows.
func (e *Emulator) deleteStmt(p *parser, s *session) (*mysql.Result, error) {
	dbName, name, err := p.qname(s)
	if err != nil {
		return nil, parseErr(err)
	}
	tbl, err := e.tableOf(dbName, name)
	if err != nil {
		return nil, err
	}
	if !p.acceptKw("WHERE") {
		return nil, userErr(mysql.ER_PARSE_ERROR, "Syntax error: DELETE FROM %s needs a WHERE condition (use TRUNCATE TABLE to empty a table)", name)
	}
	var preds []predicate
	for {
		cn, err := p.ident()
		if err != nil {
			return nil, unsupported("DELETE conditions other than `column op literal` joined by AND")
		}
		ci := tbl.colIndex(cn)
		if ci < 0 {
			return nil, userErr(mysql.ER_BAD_FIELD_ERROR, "Unknown column '%s' in '%s'", cn, name)
		}
		if tbl.KeysType != KeysUnique && !tbl.Columns[ci].IsKey {
			return nil, userErr(mysql.ER_UNKNOWN_ERROR, "Column[%s] is not key column or storage model is not duplicate or column type is float or double.", cn)
		}
		op := p.next()
		if op.kind != tkSym || !slices.Contains([]string{"=", "!=", "<>", "<", "<=", ">", ">="}, op.s) {
			return nil, unsupported("operator " + op.s + " in a DELETE condition")
		}
		lit := p.next()
		if lit.kind != tkString && lit.kind != tkNumber {
			return nil, unsupported("DELETE conditions with anything but a literal")
		}
		v, err := convertValue(tbl.Columns[ci].Type, lit.s)
		if err != nil {
			return nil, userErr(mysql.ER_UNKNOWN_ERROR, "invalid literal %q for column %s: %v", lit.s, cn, err)
		}
		preds = append(preds, predicate{col: ci, op: op.s, val: v})
		if !p.acceptKw("AND") {
			break
		}
	}
	if err := p.end(); err != nil {
		return nil, parseErr(err)
	}
	// Versions: every transaction of this table committed before the
	// DELETE is published before it.
	for _, t := range e.publishQ {
		if t.State == StateCommitted && t.db.Name == dbName && t.TableID == tbl.ID {
			e.publishTxn(t)
		}
	}
	match := func(r []any) bool {
		for _, pr := range preds {
			v := r[pr.col]
			if v == nil {
				return false
			}
			c := compareValues(tbl.Columns[pr.col].Type, v, pr.val)
			ok := false
			switch pr.op {
			case "=":
				ok = c == 0
			case "!=", "<>":
				ok = c != 0
			case "<":
				ok = c < 0
			case "<=":
				ok = c <= 0
			case ">":
				ok = c > 0
			case ">=":
				ok = c >= 0
			}
			if !ok {
				return false
			}
		}
		return true
	}
	var n uint64
	if tbl.KeysType == KeysUnique {
		for k, r := range tbl.uniq {
			if match(r) {
				delete(tbl.uniq, k)
				n++
			}
		}
	} else {
		before := len(tbl.dup)
		tbl.dup = slices.DeleteFunc(tbl.dup, match)
		n = uint64(before - len(tbl.dup))
	}
	return &mysql.Result{AffectedRows: n}, nil
}
