package dorisemu

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// TxnState is a Doris TransactionStatus name.
type TxnState string

// Transaction states (spec §4.1). UNKNOWN is what get_load_state reports for
// a label without txns.
const (
	StateUnknown      TxnState = "UNKNOWN"
	StatePrepare      TxnState = "PREPARE"
	StatePrecommitted TxnState = "PRECOMMITTED"
	StateCommitted    TxnState = "COMMITTED"
	StateVisible      TxnState = "VISIBLE"
	StateAborted      TxnState = "ABORTED"
)

func (s TxnState) final() bool { return s == StateVisible || s == StateAborted }

// Abort reasons the FE records (spec §3.3, §4.3).
const (
	ReasonUserAbort = "User Abort"
	ReasonTimeout   = "timeout by txn manager"
)

// LabelRegex is FeNameFormat.LABEL_REGEX.
const LabelRegex = `^[-_A-Za-z0-9:]{1,128}$`

var labelRE = regexp.MustCompile(LabelRegex)

// loadStats are the row/byte counters of one load.
type loadStats struct {
	Total, Loaded, Filtered, Unselected, Bytes int64
}

// rowOp is one row of a load: an upsert/append, or a delete (Unique Key).
// Vals are aligned with the txn's cols.
type rowOp struct {
	Del  bool
	Vals []any
}

// txn is one FE transaction.
type txn struct {
	ID        int64
	Label     string
	db        *database
	Table     string
	TableID   int64
	State     TxnState
	TwoPhase  bool
	Reason    string
	Timeout   time.Duration
	Prepared  time.Time
	Precommit time.Time
	Committed time.Time
	Finished  time.Time
	PublishAt time.Time
	commitSeq int64
	cols      []string
	ops       []rowOp
	stats     loadStats
}

// feError is an FE-side failure as the BE relays it (TStatus code + the
// UserException errCode and detail message).
type feError struct {
	status    string // TStatusCode name: ANALYSIS_ERROR, LABEL_ALREADY_EXISTS, ...
	errCode   int
	detail    string
	jobStatus string // ExistingJobStatus for LABEL_ALREADY_EXISTS
	beLocal   bool   // raised by the BE itself: no "TStatus: errCode" wrapping
}

func (f *feError) Error() string { return f.detail }

func analysisErr(errCode int, format string, args ...any) *feError {
	return &feError{status: "ANALYSIS_ERROR", errCode: errCode, detail: fmt.Sprintf(format, args...)}
}

// loadMessage renders a failure as the load reply's Message (spec §2.3).
func (e *Emulator) loadMessage(f *feError) string {
	inner := f.detail
	if !f.beLocal {
		inner = fmt.Sprintf("errCode = %d, detailMessage = %s", f.errCode, f.detail)
	}
	switch e.opts.Version {
	case "1.2":
		return inner
	case "2.0":
		return "[" + f.status + "]" + inner + "\n0. /root/src/doris-2.0/be/src/common/stack_trace.cpp:302: StackTrace::tryCapture() @ 0x0000000000000000 in /opt/doris/be/lib/doris_be"
	}
	if !f.beLocal {
		inner = "TStatus: " + inner
	}
	return "[" + f.status + "]" + inner
}

// twoPCMessage renders a failure as the "msg" of a 2PC error body.
func (e *Emulator) twoPCMessage(f *feError) string {
	if f.beLocal {
		return f.detail
	}
	inner := fmt.Sprintf("errCode = %d, detailMessage = %s", f.errCode, f.detail)
	if e.opts.Version == "2.1" {
		inner = "TStatus: " + inner
	}
	return inner
}

func (e *Emulator) checkAuth(user, pass, remote string) *feError {
	if user == e.opts.User && pass == e.opts.Password {
		return nil
	}
	using := "YES"
	if pass == "" {
		using = "NO"
	}
	return analysisErr(2, "Access denied for user '%s@%s' (using password: %s)", user, remote, using)
}

// beginTxn is FE loadTxnBegin: db, table, timeout, label format, label
// reuse, running-txn limit — in that order (spec §4.2).
func (e *Emulator) beginTxn(dbName, tblName, label string, twoPC bool, timeout time.Duration) (*txn, *feError) {
	e.tickLocked()
	db := e.dbs[dbName]
	if db == nil {
		return nil, analysisErr(2, "unknown database, database=%s", dbName)
	}
	tbl := db.tables[tblName]
	if tbl == nil {
		return nil, analysisErr(7, "table not found, tableName=%s", tblName)
	}
	if timeout <= 0 {
		timeout = e.opts.PrepareTimeout
	}
	if !labelRE.MatchString(label) {
		return nil, analysisErr(2, "Label format error. regex: %s, label: %s", LabelRegex, label)
	}
	for _, t := range db.labels[label] {
		if t.State != StateAborted {
			f := analysisErr(2, "Label [%s] has already been used, relate to txn [%d]", label, t.ID)
			f.status = "LABEL_ALREADY_EXISTS"
			f.jobStatus = existingJobStatus(t.State)
			return nil, f
		}
	}
	if db.running >= e.opts.MaxRunningTxnPerDB {
		return nil, analysisErr(2, "current running txns on db %d is %d, larger than limit %d",
			db.ID, db.running, e.opts.MaxRunningTxnPerDB)
	}
	e.nextTxnID++
	t := &txn{
		ID: e.nextTxnID, Label: label, db: db, Table: tbl.Name, TableID: tbl.ID,
		State: StatePrepare, TwoPhase: twoPC, Timeout: timeout, Prepared: e.now(),
	}
	e.addTxn(t)
	e.appendJournal(jrec{K: "begin", DB: db.Name, ID: t.ID, Label: label, Table: tbl.Name, TwoPC: twoPC,
		T: t.Prepared, Timeout: timeout})
	e.log.Debug("txn begin", "db", db.Name, "label", label, "txn_id", t.ID, "two_phase", twoPC)
	return t, nil
}

func (e *Emulator) addTxn(t *txn) {
	e.txns[t.ID] = t
	t.db.labels[t.Label] = append(t.db.labels[t.Label], t)
	t.db.running++
}

// existingJobStatus is LabelAlreadyUsedException's mapping (spec §2.2).
func existingJobStatus(s TxnState) string {
	switch s {
	case StatePrecommitted:
		return "PRECOMMITTED"
	case StateCommitted, StateVisible:
		return "FINISHED"
	}
	return "RUNNING"
}

// setState moves t to s, keeping the running counter and purge queue right.
func (e *Emulator) setState(t *txn, s TxnState) {
	wasRunning := !t.State.final()
	t.State = s
	if wasRunning && s.final() {
		t.db.running--
		t.Finished = e.now()
		t.db.final = append(t.db.final, t)
	}
}

// precommitTxn ends the first phase (two_phase_commit) of a load.
func (e *Emulator) precommitTxn(t *txn, cols []string, ops []rowOp, st loadStats) *feError {
	if f := e.checkLoadable(t); f != nil {
		return f
	}
	t.cols, t.ops, t.stats = cols, ops, st
	t.Precommit = e.now()
	e.setState(t, StatePrecommitted)
	e.appendJournal(jrec{K: "precommit", ID: t.ID, T: t.Precommit, Cols: cols, Ops: encodeOps(ops), Stats: &st})
	e.log.Debug("txn precommitted", "label", t.Label, "txn_id", t.ID, "rows", st.Loaded)
	return nil
}

// checkLoadable reports why a load can no longer finish its txn (it was
// aborted meanwhile by timeout or a user abort).
func (e *Emulator) checkLoadable(t *txn) *feError {
	if t.State == StateAborted {
		return analysisErr(2, "transaction [%d] is already aborted. abort reason: %s", t.ID, t.Reason)
	}
	if _, ok := e.txns[t.ID]; !ok {
		return analysisErr(2, "transaction [%d] not found", t.ID)
	}
	return nil
}

// commitLoadTxn is the non-2PC end of a load: PREPARE → COMMITTED.
func (e *Emulator) commitLoadTxn(t *txn, cols []string, ops []rowOp, st loadStats) *feError {
	if f := e.checkLoadable(t); f != nil {
		return f
	}
	t.cols, t.ops, t.stats = cols, ops, st
	e.commitTxn(t)
	return nil
}

// commitTxn flips t to COMMITTED and queues its publish.
func (e *Emulator) commitTxn(t *txn) {
	t.Committed = e.now()
	t.PublishAt = t.Committed.Add(e.publishDelay)
	e.commitSeq++
	t.commitSeq = e.commitSeq
	e.setState(t, StateCommitted)
	e.publishQ = append(e.publishQ, t)
	e.committed = append(e.committed, t)
	rec := jrec{K: "commit", ID: t.ID, T: t.Committed, PublishAt: t.PublishAt}
	if !t.TwoPhase {
		rec.Cols, rec.Ops, rec.Stats = t.cols, encodeOps(t.ops), &t.stats
	}
	e.appendJournal(rec)
	e.log.Debug("txn committed", "label", t.Label, "txn_id", t.ID)
	e.tickLocked()
}

// abortTxn moves t to ABORTED with reason; its label becomes reusable.
func (e *Emulator) abortTxn(t *txn, reason string) {
	if t.State.final() {
		return
	}
	t.Reason = reason
	t.ops = nil
	e.setState(t, StateAborted)
	e.appendJournal(jrec{K: "abort", ID: t.ID, T: t.Finished, Reason: reason})
	e.log.Debug("txn aborted", "label", t.Label, "txn_id", t.ID, "reason", reason)
}

// publishTxn makes t VISIBLE and applies its rows.
func (e *Emulator) publishTxn(t *txn) {
	if tbl := t.db.tableByID(t.TableID); tbl != nil {
		e.applyOps(tbl, t)
	}
	e.setState(t, StateVisible)
	e.appendJournal(jrec{K: "visible", ID: t.ID, T: t.Finished})
}

func (db *database) tableByID(id int64) *table {
	for _, t := range db.tables {
		if t.ID == id {
			return t
		}
	}
	return nil
}

// applyOps applies t's rows to tbl, mapping by column name so a column added
// after the load took its default.
func (e *Emulator) applyOps(tbl *table, t *txn) {
	if len(t.ops) == 0 {
		return
	}
	pos := make([]int, len(tbl.Columns)) // table column -> index in t.cols, or -1
	for i, c := range tbl.Columns {
		pos[i] = -1
		for j, n := range t.cols {
			if strings.EqualFold(n, c.Name) {
				pos[i] = j
			}
		}
	}
	now := e.now()
	ki := tbl.keyIdx()
	// The sequence value of a row: its mapped column, or the hidden one.
	seqAt, seqType := -1, colType{}
	if tbl.SeqCol != "" {
		seqAt = slices.IndexFunc(t.cols, func(n string) bool { return strings.EqualFold(n, tbl.SeqCol) })
		seqType = tbl.Columns[tbl.colIndex(tbl.SeqCol)].Type
	} else if tbl.SeqType != nil {
		seqAt, seqType = slices.Index(t.cols, SequenceColumnHidden), *tbl.SeqType
	}
	for _, op := range t.ops {
		row := make([]any, len(tbl.Columns))
		for i, c := range tbl.Columns {
			if pos[i] >= 0 {
				row[i] = normalizeStored(c.Type, op.Vals[pos[i]])
			} else {
				row[i], _ = c.defaultValue(now)
			}
		}
		if tbl.KeysType == KeysUnique {
			k := encodeKey(row, ki)
			if tbl.hasSequence() {
				// A version with a lower sequence value than the key's
				// newest neither replaces nor deletes it (equal: the later
				// load wins). NULL is the lowest value.
				var seq any
				if seqAt >= 0 {
					seq = normalizeStored(seqType, op.Vals[seqAt])
				}
				if old, ok := tbl.seqs[k]; ok && compareValues(seqType, seq, old) < 0 {
					continue
				}
				if tbl.seqs == nil {
					tbl.seqs = map[string]any{}
				}
				tbl.seqs[k] = seq
			}
			if op.Del {
				delete(tbl.uniq, k)
			} else {
				tbl.uniq[k] = row
			}
		} else if !op.Del {
			tbl.dup = append(tbl.dup, row)
		}
	}
}

// tickLocked runs timeouts, publish and purge (FE removeExpiredAndTimeoutTxns
// and the publish daemon). e.mu must be held.
func (e *Emulator) tickLocked() {
	if e.replaying {
		return
	}
	now := e.now()
	var timedOut []*txn
	for _, t := range e.txns {
		switch {
		case t.State == StatePrepare && now.Sub(t.Prepared) > t.Timeout:
			timedOut = append(timedOut, t)
		case t.State == StatePrecommitted && e.opts.PrecommitTimeout > 0 && now.Sub(t.Precommit) > e.opts.PrecommitTimeout:
			timedOut = append(timedOut, t)
		}
	}
	slices.SortFunc(timedOut, func(a, b *txn) int { return int(a.ID - b.ID) })
	for _, t := range timedOut {
		e.abortTxn(t, ReasonTimeout)
	}
	if !e.holdPublish {
		for len(e.publishQ) > 0 {
			t := e.publishQ[0]
			if t.State != StateCommitted {
				e.publishQ = e.publishQ[1:]
				continue
			}
			if now.Before(t.PublishAt) {
				break // publish in commit (version) order
			}
			e.publishQ = e.publishQ[1:]
			e.publishTxn(t)
		}
	}
	for _, db := range e.dbs {
		e.purgeLocked(db, now)
	}
}

// purgeLocked drops finished txns older than LabelKeepMax, and the oldest
// ones while more than LabelNumThreshold are kept.
func (e *Emulator) purgeLocked(db *database, now time.Time) {
	n := 0
	for n < len(db.final) {
		t := db.final[n]
		expired := now.Sub(t.Finished) > e.opts.LabelKeepMax
		over := e.opts.LabelNumThreshold >= 0 && len(db.final)-n > e.opts.LabelNumThreshold
		if !expired && !over {
			break
		}
		e.dropTxn(t)
		e.appendJournal(jrec{K: "purge", ID: t.ID})
		n++
	}
	if n > 0 {
		db.final = slices.Delete(db.final, 0, n)
	}
}

func (e *Emulator) dropTxn(t *txn) {
	delete(e.txns, t.ID)
	ls := slices.DeleteFunc(t.db.labels[t.Label], func(x *txn) bool { return x == t })
	if len(ls) == 0 {
		delete(t.db.labels, t.Label)
	} else {
		t.db.labels[t.Label] = ls
	}
}

// twoPCRequest is one `_stream_load_2pc` call as the BE forwards it.
type twoPCRequest struct {
	user, pass, remote string
	db                 string
	label              string
	txnID              int64
	hasTxnID           bool
	op                 string // "commit" or "abort"
}

// operate2PC is FE loadTxn2PC (spec §3.3 decision table).
func (e *Emulator) operate2PC(r twoPCRequest) *feError {
	e.tickLocked()
	if f := e.checkAuth(r.user, r.pass, r.remote); f != nil {
		return f
	}
	db := e.dbs[r.db]
	if db == nil {
		return analysisErr(2, "unknown database, database=%s", r.db)
	}
	id := r.txnID
	if !r.hasTxnID {
		statuses := []TxnState{StatePrecommitted}
		if r.op == "abort" {
			statuses = append(statuses, StatePrepare)
		}
		ts := db.labels[r.label]
		if len(ts) == 0 {
			return analysisErr(2, "transaction not found, label=%s", r.label)
		}
		found := false
		for _, t := range ts {
			if slices.Contains(statuses, t.State) {
				id, found = t.ID, true
			}
		}
		if !found {
			return analysisErr(2, "running transaction not found, label=%s", r.label)
		}
	}
	t := e.txns[id]
	if t == nil || t.db != db {
		return analysisErr(2, "transaction [%d] not found", id)
	}
	if r.op == "commit" {
		switch t.State {
		case StateAborted:
			return analysisErr(2, "transaction [%d] is already aborted. abort reason: %s", id, t.Reason)
		case StateVisible:
			return analysisErr(2, "transaction [%d] is already visible, not pre-committed.", id)
		case StateCommitted:
			return analysisErr(2, "transaction [%d] is already committed, not pre-committed.", id)
		case StatePrepare:
			return analysisErr(2, "transaction [%d] is prepare, not pre-committed.", id)
		}
		if db.tableByID(t.TableID) == nil {
			return analysisErr(7, "table not found, tableId=%d", t.TableID)
		}
		e.commitTxn(t)
		return nil
	}
	switch t.State {
	case StateAborted:
		return analysisErr(2, "transaction [%d] is already aborted, abort reason: %s", id, t.Reason)
	case StateCommitted, StateVisible:
		return analysisErr(2, "transaction [%d] is already %s, could not abort.", id, t.State)
	}
	e.abortTxn(t, ReasonUserAbort)
	return nil
}

// labelState is GlobalTransactionMgr.getLabelState: the state of the
// label's newest txn, UNKNOWN if none.
func (e *Emulator) labelState(db *database, label string) TxnState {
	ts := db.labels[label]
	if len(ts) == 0 {
		return StateUnknown
	}
	newest := ts[0]
	for _, t := range ts {
		if t.ID > newest.ID {
			newest = t
		}
	}
	return newest.State
}

// TxnInfo is a snapshot of one transaction for test assertions.
type TxnInfo struct {
	ID          int64
	Label       string
	DB, Table   string
	State       TxnState
	TwoPhase    bool
	AbortReason string
	// Times on the emulator clock; zero when the state was not reached.
	PrepareTime, PrecommitTime, CommitTime, FinishTime time.Time
	// Row counters of the load (NumberLoadedRows etc.).
	TotalRows, LoadedRows, FilteredRows int64
	LoadBytes                           int64
}

func (t *txn) info() TxnInfo {
	return TxnInfo{
		ID: t.ID, Label: t.Label, DB: t.db.Name, Table: t.Table, State: t.State, TwoPhase: t.TwoPhase,
		AbortReason: t.Reason, PrepareTime: t.Prepared, PrecommitTime: t.Precommit, CommitTime: t.Committed,
		FinishTime: t.Finished, TotalRows: t.stats.Total, LoadedRows: t.stats.Loaded,
		FilteredRows: t.stats.Filtered, LoadBytes: t.stats.Bytes,
	}
}

// Txn returns the newest transaction (highest id) carrying label in any
// database, as long as the FE still remembers it (not purged).
func (e *Emulator) Txn(label string) (TxnInfo, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tickLocked()
	var best *txn
	for _, db := range e.dbs {
		for _, t := range db.labels[label] {
			if best == nil || t.ID > best.ID {
				best = t
			}
		}
	}
	if best == nil {
		return TxnInfo{}, false
	}
	return best.info(), true
}

// TxnByID returns the transaction with that id if the FE still remembers it.
func (e *Emulator) TxnByID(id int64) (TxnInfo, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tickLocked()
	t := e.txns[id]
	if t == nil {
		return TxnInfo{}, false
	}
	return t.info(), true
}

// LabelTxns returns every remembered txn of label in db, oldest first
// (any number of ABORTED plus at most one other).
func (e *Emulator) LabelTxns(db, label string) []TxnInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tickLocked()
	d := e.dbs[db]
	if d == nil {
		return nil
	}
	var out []TxnInfo
	for _, t := range d.labels[label] {
		out = append(out, t.info())
	}
	return out
}

// RunningTxns is the number of PREPARE, PRECOMMITTED and COMMITTED txns of
// db, the figure compared with MaxRunningTxnPerDB.
func (e *Emulator) RunningTxns(db string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tickLocked()
	if d := e.dbs[db]; d != nil {
		return d.running
	}
	return 0
}

// RowOp is one row a load applied: an upsert/append, or a delete of the row
// with that key (Unique Key tables).
type RowOp struct {
	Delete bool
	Row    map[string]any
}

// Load is one transaction that reached COMMITTED (and maybe VISIBLE).
// Loads lets tests prove that every change was applied exactly once.
type Load struct {
	Label      string
	TxnID      int64
	DB, Table  string
	TwoPhase   bool
	State      TxnState // current state: COMMITTED or VISIBLE
	LoadedRows int64
	CommitTime time.Time
	// Ops are the rows in body order (nil in CountOnly mode).
	Ops []RowOp
}

// Loads returns every transaction that reached COMMITTED, in commit order.
// Unlike Txn it is not affected by label purge.
func (e *Emulator) Loads() []Load {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tickLocked()
	out := make([]Load, 0, len(e.committed))
	for _, t := range e.committed {
		l := Load{
			Label: t.Label, TxnID: t.ID, DB: t.db.Name, Table: t.Table, TwoPhase: t.TwoPhase, State: t.State,
			LoadedRows: t.stats.Loaded, CommitTime: t.Committed,
		}
		for _, op := range t.ops {
			m := make(map[string]any, len(t.cols))
			for i, c := range t.cols {
				m[c] = op.Vals[i]
			}
			l.Ops = append(l.Ops, RowOp{Delete: op.Del, Row: m})
		}
		out = append(out, l)
	}
	return out
}
