package merge

// XA transactions.
//
// In the binlog an XA transaction is two transactions. The first, the XA
// PREPARE group, holds its row events: on MariaDB (10.5+) a GTID event
// flagged FL_PREPARED_XA, the rows, a query `XA END xid` and an
// XA_PREPARE_LOG_EVENT; on MySQL a GTID event, a query `XA START xid`, the
// rows, `XA END xid` and an XA_PREPARE_LOG_EVENT. The second, written when
// the decision is taken (possibly much later, in another binlog file, after
// a restart of the server or of shardsync), is one query `XA COMMIT xid` or
// `XA ROLLBACK xid` with its own GTID. `XA COMMIT … ONE PHASE` is written as
// an ordinary transaction (MariaDB) or as a prepare group whose
// XA_PREPARE_LOG_EVENT has its one-phase flag set (MySQL).
//
// shardsync makes an XA transaction's rows one source transaction at the
// point of its XA COMMIT, and drops them at XA ROLLBACK. Between the two,
// the rows of the prepared transaction are KEPT IN THE RESUME TOKEN
// (tokenState.XA): at the XA_PREPARE_LOG_EVENT the position moves past the
// prepare group as past any other transaction, and the token carries the
// prepared rows with it, so a restart from any later token still has them
// when it reads the XA COMMIT. The alternative, holding the resume position
// at the earliest undecided XA PREPARE and skipping already-emitted
// transactions on a re-read, was not chosen: a prepared transaction that
// nobody decides (a known operational hazard of XA) would pin the position
// for days, every restart would re-read that much binlog, and the server's
// binlog expiry would eventually purge the position and stop the job for
// good; it would also re-read DDL and snapshot watermarks already passed.
// The cost of keeping the rows is token size: a prepared transaction's row
// images travel in every token until it is decided (cached, so the cost is
// a copy per token), which is small for the short XA transactions
// applications use; a warning is logged when prepared rows pile up.
//
// The rows are kept as shard values (before the merge into the target
// shape), and the snapshot filter is applied to them at the XA COMMIT's
// position: an XA transaction is visible to a snapshot chunk exactly when it
// committed before the chunk's read, whatever the position of its prepare.
//
// A fresh start takes its binlog position only at an instant when no XA
// transaction is prepared (XA RECOVER is empty right after the position was
// read): the rows of an XA transaction prepared before the start position
// are not in the binlog read, and would be lost if it committed after a
// chunk was read.

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/shardsync/shardsync/change"
)

// MariaDB's GTID event flags2 bits for XA (sql/log_event.h); go-mysql
// decodes the flags byte but names only the older bits.
const (
	mariaFlPreparedXA  = 64
	mariaFlCompletedXA = 128
)

// xaStartWait is how long a fresh start waits for an instant without a
// prepared XA transaction.
const xaStartWait = 30 * time.Second

// xaWarnRows is the number of prepared, undecided XA row images above which
// a warning says that the token grows with them.
const xaWarnRows = 100_000

// xaPrepared is a prepared XA transaction whose decision has not been read
// yet, with its routed row images.
type xaPrepared struct {
	// XID is the transaction's xid as X'gtrid',X'bqual',formatID.
	XID string `json:"xid"`
	// At is the boundary after its prepare group (for messages).
	At   binPos  `json:"at"`
	Rows []xaRow `json:"rows"`
}

// xaRow is one row image of a prepared XA transaction in shard values.
type xaRow struct {
	Op     change.Op `json:"op"`
	DB     string    `json:"db"`
	Table  string    `json:"table"`
	Before []*string `json:"b,omitempty"`
	After  []*string `json:"a,omitempty"`
}

func (x *xaRow) shard() change.TableID { return change.TableID{Database: x.DB, Table: x.Table} }

// encodeVals encodes shard values losslessly for a token: nil is NULL,
// otherwise a one-letter type tag and the value as text.
func encodeVals(vals []change.Value) ([]*string, error) {
	if vals == nil {
		return nil, nil
	}
	out := make([]*string, len(vals))
	for i, v := range vals {
		var s string
		switch x := v.(type) {
		case nil:
			continue
		case int64:
			s = "i" + strconv.FormatInt(x, 10)
		case uint64:
			s = "u" + strconv.FormatUint(x, 10)
		case float32:
			s = "f" + strconv.FormatUint(uint64(math.Float32bits(x)), 16)
		case float64:
			s = "d" + strconv.FormatUint(math.Float64bits(x), 16)
		case change.Decimal:
			s = "D" + string(x)
		case string:
			s = textTag("s", "S", x)
		case []byte:
			s = "b" + base64.StdEncoding.EncodeToString(x)
		case change.Date:
			s = "a" + string(x)
		case change.DateTime:
			s = "t" + string(x)
		case change.Timestamp:
			s = "T" + string(x)
		case change.Time:
			s = "h" + string(x)
		case change.JSON:
			s = textTag("j", "J", string(x))
		default:
			return nil, fmt.Errorf("value of Go type %T cannot be kept in a token", v)
		}
		out[i] = &s
	}
	return out, nil
}

// textTag tags text, base64-encoded when it is not valid UTF-8 (JSON would
// replace the invalid bytes).
func textTag(plain, b64, s string) string {
	if utf8.ValidString(s) {
		return plain + s
	}
	return b64 + base64.StdEncoding.EncodeToString([]byte(s))
}

func decodeVals(enc []*string) ([]change.Value, error) {
	if enc == nil {
		return nil, nil
	}
	out := make([]change.Value, len(enc))
	for i, p := range enc {
		if p == nil {
			continue
		}
		s := *p
		if s == "" {
			return nil, fmt.Errorf("value %d is empty", i)
		}
		tag, body := s[0], s[1:]
		var err error
		switch tag {
		case 'i':
			out[i], err = strconv.ParseInt(body, 10, 64)
		case 'u':
			out[i], err = strconv.ParseUint(body, 10, 64)
		case 'f':
			var b uint64
			b, err = strconv.ParseUint(body, 16, 32)
			out[i] = math.Float32frombits(uint32(b))
		case 'd':
			var b uint64
			b, err = strconv.ParseUint(body, 16, 64)
			out[i] = math.Float64frombits(b)
		case 'D':
			out[i] = change.Decimal(body)
		case 's':
			out[i] = body
		case 'S':
			var b []byte
			b, err = base64.StdEncoding.DecodeString(body)
			out[i] = string(b)
		case 'b':
			var b []byte
			b, err = base64.StdEncoding.DecodeString(body)
			if b == nil {
				b = []byte{}
			}
			out[i] = b
		case 'a':
			out[i] = change.Date(body)
		case 't':
			out[i] = change.DateTime(body)
		case 'T':
			out[i] = change.Timestamp(body)
		case 'h':
			out[i] = change.Time(body)
		case 'j':
			out[i] = change.JSON(body)
		case 'J':
			var b []byte
			b, err = base64.StdEncoding.DecodeString(body)
			out[i] = change.JSON(b)
		default:
			return nil, fmt.Errorf("value %d has unknown type tag %q", i, tag)
		}
		if err != nil {
			return nil, fmt.Errorf("value %d: %w", i, err)
		}
	}
	return out, nil
}

// formatXID renders an xid the way both servers print it in the binlog's
// XA queries: X'gtrid',X'bqual',formatID.
func formatXID(formatID int64, gtrid, bqual []byte) string {
	return fmt.Sprintf("X'%s',X'%s',%d", hex.EncodeToString(gtrid), hex.EncodeToString(bqual), formatID)
}

// parseXAPrepare decodes the body of an XA_PREPARE_LOG_EVENT (MySQL and
// MariaDB 10.5+): one_phase (1 byte), formatID (4), gtrid length (4),
// bqual length (4), gtrid and bqual.
func parseXAPrepare(data []byte) (xid string, onePhase bool, err error) {
	if len(data) < 13 {
		return "", false, fmt.Errorf("XA_PREPARE_LOG_EVENT of %d bytes is too short", len(data))
	}
	formatID := int32(binary.LittleEndian.Uint32(data[1:]))
	gl := binary.LittleEndian.Uint32(data[5:])
	bl := binary.LittleEndian.Uint32(data[9:])
	if gl > 64 || bl > 64 || uint64(13)+uint64(gl)+uint64(bl) > uint64(len(data)) {
		return "", false, fmt.Errorf("XA_PREPARE_LOG_EVENT with gtrid length %d and bqual length %d does not fit its %d bytes", gl, bl, len(data))
	}
	return formatXID(int64(formatID), data[13:13+gl], data[13+gl:13+gl+bl]), data[0] != 0, nil
}

// xaStatement recognises the XA statements of the binlog: verb is START,
// END, PREPARE, COMMIT or ROLLBACK and xid its canonical xid ("" when the
// statement is not an XA statement). Both servers write xids as
// X'hex',X'hex',n; quoted strings and 0x literals are accepted too.
func xaStatement(q string) (verb, xid string, onePhase bool, err error) {
	if !hasPrefixFold(q, "XA") || len(q) < 3 || !isSpace(q[2]) {
		return "", "", false, nil
	}
	rest := strings.TrimSpace(q[2:])
	for _, v := range []string{"START", "BEGIN", "END", "PREPARE", "COMMIT", "ROLLBACK", "RECOVER"} {
		if hasPrefixFold(rest, v) && (len(rest) == len(v) || isSpace(rest[len(v)])) {
			verb = v
			rest = strings.TrimSpace(rest[len(v):])
			break
		}
	}
	if verb == "" {
		return "", "", false, nil
	}
	if verb == "BEGIN" {
		verb = "START"
	}
	if verb == "RECOVER" {
		return verb, "", false, nil
	}
	parts := make([][]byte, 0, 2)
	formatID := int64(1)
	for i := 0; ; i++ {
		var lit []byte
		switch {
		case i == 2:
			n := 0
			for n < len(rest) && (rest[n] >= '0' && rest[n] <= '9' || (n == 0 && rest[n] == '-')) {
				n++
			}
			if formatID, err = strconv.ParseInt(rest[:n], 10, 64); err != nil {
				return verb, "", false, fmt.Errorf("format id of %q: %w", q, err)
			}
			rest = strings.TrimSpace(rest[n:])
		case len(rest) > 1 && (rest[0] == 'X' || rest[0] == 'x') && rest[1] == '\'':
			end := strings.IndexByte(rest[2:], '\'')
			if end < 0 {
				return verb, "", false, fmt.Errorf("unterminated hex literal in %q", q)
			}
			if lit, err = hex.DecodeString(rest[2 : 2+end]); err != nil {
				return verb, "", false, fmt.Errorf("hex literal in %q: %w", q, err)
			}
			rest = strings.TrimSpace(rest[3+end:])
		case len(rest) > 1 && rest[0] == '0' && (rest[1] == 'x' || rest[1] == 'X'):
			n := 2
			for n < len(rest) && strings.IndexByte("0123456789abcdefABCDEF", rest[n]) >= 0 {
				n++
			}
			h := rest[2:n]
			if len(h)%2 == 1 {
				h = "0" + h
			}
			if lit, err = hex.DecodeString(h); err != nil {
				return verb, "", false, fmt.Errorf("hex literal in %q: %w", q, err)
			}
			rest = strings.TrimSpace(rest[n:])
		case len(rest) > 0 && (rest[0] == '\'' || rest[0] == '"'):
			quote := rest[0]
			var b []byte
			j := 1
			for ; j < len(rest); j++ {
				c := rest[j]
				if c == '\\' && j+1 < len(rest) {
					j++
					b = append(b, rest[j])
					continue
				}
				if c == quote {
					if j+1 < len(rest) && rest[j+1] == quote {
						b = append(b, quote)
						j++
						continue
					}
					break
				}
				b = append(b, c)
			}
			if j >= len(rest) {
				return verb, "", false, fmt.Errorf("unterminated string in %q", q)
			}
			lit = b
			rest = strings.TrimSpace(rest[j+1:])
		default:
			return verb, "", false, fmt.Errorf("cannot read the xid of %q", q)
		}
		if i < 2 {
			parts = append(parts, lit)
		}
		if i == 2 || !strings.HasPrefix(rest, ",") {
			break
		}
		rest = strings.TrimSpace(rest[1:])
	}
	for len(parts) < 2 {
		parts = append(parts, nil)
	}
	onePhase = hasPrefixFold(rest, "ONE PHASE")
	return verb, formatXID(formatID, parts[0], parts[1]), onePhase, nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// pendingXA returns the index of the prepared transaction xid in st.XA, or
// -1.
func pendingXA(st *tokenState, xid string) int {
	for i, p := range st.XA {
		if p.XID == xid {
			return i
		}
	}
	return -1
}

// keepXA keeps one row image of the XA PREPARE group being read.
func (r *binlogReader) keepXA(sh *shard, op change.Op, before, after []change.Value) error {
	b, err := encodeVals(before)
	if err == nil {
		var a []*string
		if a, err = encodeVals(after); err == nil {
			r.xa.Rows = append(r.xa.Rows, xaRow{Op: op, DB: sh.id.Database, Table: sh.id.Table, Before: b, After: a})
			return nil
		}
	}
	return fatal(fmt.Errorf("keeping a row of %s of a prepared XA transaction: %w", sh.id, err))
}

// xaQuery handles an XA statement of the binlog.
func (r *binlogReader) xaQuery(ctx context.Context, h *replication.EventHeader, verb, xid string, onePhase bool) error {
	switch verb {
	case "START": // MySQL: the XA PREPARE group's rows follow
		if !r.inTxn {
			r.begin("", 0, false, h)
		}
		r.xa = &xaPrepared{}
	case "PREPARE": // not written by MariaDB ≥ 10.5 or MySQL (they write an XA_PREPARE_LOG_EVENT)
		return r.xaPrepare(ctx, h, xid, onePhase)
	case "COMMIT":
		if r.xa != nil && onePhase {
			return r.xaPrepare(ctx, h, xid, true)
		}
		return r.xaDecide(ctx, h, xid, true)
	case "ROLLBACK":
		return r.xaDecide(ctx, h, xid, false)
	}
	return nil // XA END, XA RECOVER
}

// xaPrepare ends an XA PREPARE group: a one-phase commit is an ordinary
// transaction at this point; otherwise its rows are kept in the state (and
// so in every token from here on) until the decision, and the position
// moves past the group.
func (r *binlogReader) xaPrepare(ctx context.Context, h *replication.EventHeader, xid string, onePhase bool) error {
	p := r.xa
	if p == nil {
		if r.emitted > 0 || len(r.batch) > 0 {
			return fatal(fmt.Errorf("binlog %s:%d: XA PREPARE of %s ends a transaction that was not read as an XA transaction (no XA START and no XA flag on its GTID event); its rows were already passed on", r.file, h.LogPos, xid))
		}
		p = &xaPrepared{}
	}
	r.xa = nil
	if onePhase {
		if err := r.emitXA(ctx, h, p); err != nil {
			return err
		}
		return r.commit(ctx, h)
	}
	st := r.s.state
	if i := pendingXA(st, xid); i >= 0 {
		// The same xid prepared again without a decision in between
		// cannot happen on one server; keep the newer one.
		st.XA = slices.Delete(st.XA, i, i+1)
		r.s.enc.xaDirty = true
	}
	if len(p.Rows) > 0 {
		p.XID = xid
		p.At = binPos{File: r.file, Pos: h.LogPos}
		st.XA = append(st.XA, p)
		r.s.enc.xaDirty = true
		n := 0
		for _, q := range st.XA {
			n += len(q.Rows)
		}
		if n > xaWarnRows && n-len(p.Rows) <= xaWarnRows {
			r.s.sh.log.Warn("prepared XA transactions not yet committed or rolled back hold many rows; their rows travel in every resume token until they are decided", "xa_transactions", len(st.XA), "rows", n)
		}
		r.s.sh.log.Debug("XA transaction prepared; rows kept until XA COMMIT", "xid", xid, "rows", len(p.Rows), "at", p.At.String())
	}
	return r.commit(ctx, h)
}

// xaDecide applies XA COMMIT (the kept rows become one source transaction
// here) or XA ROLLBACK (they are dropped). An xid not kept is a prepared
// transaction without routed rows (or read-only): nothing to do but pass
// the boundary.
func (r *binlogReader) xaDecide(ctx context.Context, h *replication.EventHeader, xid string, commit bool) error {
	st := r.s.state
	i := pendingXA(st, xid)
	if i < 0 {
		return r.commit(ctx, h)
	}
	p := st.XA[i]
	st.XA = slices.Delete(slices.Clone(st.XA), i, i+1)
	r.s.enc.xaDirty = true
	if commit {
		if err := r.emitXA(ctx, h, p); err != nil {
			return err
		}
	}
	return r.commit(ctx, h)
}

// emitXA passes the kept rows of an XA transaction through the snapshot
// filter at the position of its commit and into the current transaction.
//
// Rows that cannot be applied at the commit — of a shard no longer known,
// or shaped otherwise than the shard now is (a DDL between PREPARE and
// COMMIT, which the server's metadata locks normally prevent) — stop the
// job on the XA COMMIT with a way forward: skipping it leaves out the
// rows of those shards, the others are applied.
func (r *binlogReader) emitXA(ctx context.Context, h *replication.EventHeader, p *xaPrepared) error {
	skip := r.decision(h) == DecisionSkip
	stmt := "XA COMMIT " + p.XID
	for _, row := range p.Rows {
		id := row.shard()
		sh := r.s.shards[id]
		if sh == nil {
			if skip {
				continue
			}
			return r.stop(h, stmt, fmt.Sprintf("XA transaction %s prepared at %s changed shard %s, which is no longer known at its XA COMMIT", p.XID, p.At, id),
				"", "the transaction's rows of "+id.String()+" are not loaded; its other rows are")
		}
		before, err := decodeVals(row.Before)
		if err != nil {
			return fatal(fmt.Errorf("%w: row of XA transaction %s: %w", ErrBadToken, p.XID, err))
		}
		after, err := decodeVals(row.After)
		if err != nil {
			return fatal(fmt.Errorf("%w: row of XA transaction %s: %w", ErrBadToken, p.XID, err))
		}
		for _, vals := range [][]change.Value{before, after} {
			if vals != nil && len(vals) != len(sh.cols) && !skip {
				return r.stop(h, stmt, fmt.Sprintf("XA transaction %s prepared at %s has rows of %s with %d columns, but the shard has %d columns at its XA COMMIT", p.XID, p.At, id, len(vals), len(sh.cols)),
					"", "the transaction's rows of "+id.String()+" that do not fit the shard's columns are not loaded; its other rows are")
			}
		}
		if skip && ((before != nil && len(before) != len(sh.cols)) || (after != nil && len(after) != len(sh.cols))) {
			continue
		}
		if err := r.add(ctx, sh, row.Op, before, after, h.LogPos); err != nil {
			return err
		}
	}
	return nil
}

// startPos reads a binlog position at an instant when no XA transaction
// is prepared (see the comment at the top): the position a fresh stream
// starts from, and the low watermarks of the watermark snapshot mode. It
// reads the position and then XA RECOVER, and repeats until XA RECOVER is
// empty, for up to wait.
func (s *Source) startPos(ctx context.Context, conn *client.Conn, wait time.Duration) (binPos, error) {
	deadline := time.Now().Add(wait)
	for {
		pos, err := masterPos(conn, s.flavor)
		if err != nil {
			return binPos{}, err
		}
		xids, err := preparedXA(conn)
		if err != nil {
			if !s.xaRecoverWarned.Swap(true) {
				s.sh.log.Warn("cannot list prepared XA transactions (XA RECOVER); an XA transaction prepared before the start position (or a watermark snapshot chunk) and committed during the snapshot would be missed", "err", err)
			}
			return pos, nil
		}
		if len(xids) == 0 {
			return pos, nil
		}
		if time.Now().After(deadline) {
			return binPos{}, fmt.Errorf("%w: XA transactions are prepared and not yet committed or rolled back on the source (XA RECOVER: %s) since %s: shardsync starts its binlog position only at an instant when none is prepared, because the rows of a transaction prepared before that position are not in the binlog it reads; commit or roll them back (XA COMMIT / XA ROLLBACK), then start again", ErrPrerequisite, strings.Join(xids, "; "), wait)
		}
		select {
		case <-ctx.Done():
			return binPos{}, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// preparedXA lists the prepared XA transactions (XA RECOVER).
func preparedXA(conn *client.Conn) ([]string, error) {
	res, err := conn.Execute("XA RECOVER")
	if err != nil {
		return nil, err
	}
	defer res.Close()
	var out []string
	for i := range res.Values {
		f, _ := res.GetInt(i, 0)
		g, _ := res.GetInt(i, 1)
		b, _ := res.GetInt(i, 2)
		data, _ := res.GetString(i, 3)
		if g < 0 || b < 0 || int(g+b) > len(data) {
			out = append(out, fmt.Sprintf("formatID %d data %q", f, data))
			continue
		}
		out = append(out, formatXID(f, []byte(data[:g]), []byte(data[g:g+b])))
	}
	return out, nil
}
