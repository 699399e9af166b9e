package testenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
)

// The values of Change.Op.
const (
	OpInsert = "insert"
	OpUpdate = "update"
	OpDelete = "delete"
)

// TokenPrefix starts every last_name the workload writes.
const TokenPrefix = "w"

// Token is the last_name value that identifies change id: "w" followed by
// id in base 36 (at most 14 characters for any uint64, so it fits
// VARCHAR(16)).
func Token(id uint64) string { return TokenPrefix + strconv.FormatUint(id, 36) }

// TokenID parses a last_name written by the workload back into its change
// id; ok is false for any other value (such as a generated name).
func TokenID(lastName string) (id uint64, ok bool) {
	s, found := strings.CutPrefix(lastName, TokenPrefix)
	if !found || s == "" {
		return 0, false
	}
	id, err := strconv.ParseUint(s, 36, 64)
	if err != nil || Token(id) != lastName {
		return 0, false
	}
	return id, true
}

// Change is one committed row change made by a Workload.
//
// Identifying a change exactly once: every insert and update sets the
// row's last_name to Token(ID), which no other change writes, so the row
// image After (as it appears in the binlog or the sink) names the change.
// A delete has no after image; it is identified by (Shard, Key, Before),
// which is unique because Before's last_name is either the token of the
// change that last wrote the row or the generated name of an initial row,
// and a deleted key is only ever re-inserted with a new token.
type Change struct {
	// ID is unique within the run (and across runs given distinct
	// Workload.FirstID ranges); IDs increase in the order changes were
	// planned, not necessarily in commit order across connections.
	ID uint64
	// Txn is the number of the source transaction that committed the
	// change; all changes of one transaction share it.
	Txn uint64
	// Conn is the workload connection (0-based) that made the change.
	Conn int
	// Op is OpInsert, OpUpdate or OpDelete.
	Op string
	// Shard is the table the change applies to.
	Shard ShardID
	// Key is the row's emp_no: the new row's for an insert, the old row's
	// for an update or delete.
	Key int64
	// NewKey is the row's emp_no after an update that changed the primary
	// key (KeyChanged); otherwise it equals Key for inserts and updates and
	// is 0 for deletes.
	NewKey int64
	// KeyChanged marks an update of emp_no itself: the row at Key is gone
	// and the row at NewKey holds After. A merged table keyed by emp_no
	// sees it as a delete of Key and an upsert of NewKey.
	KeyChanged bool
	// Before is the full row image before the change (nil for inserts);
	// After the full image after it (nil for deletes). See Columns.
	Before, After map[string]string
}

// MergedKey is the merged-table key the change removes or writes: the old
// key for a delete, the new key otherwise.
func (c Change) MergedKey() MergedKey {
	k := c.NewKey
	if c.Op == OpDelete {
		k = c.Key
	}
	return MergedKey{DB: c.Shard.DB, Table: c.Shard.Table, Key: k}
}

// Workload applies random INSERT/UPDATE/DELETE transactions to the shards
// of a ShardSpec and records every committed change.
//
// Each connection owns the keys k with k mod Conns == its index in every
// shard, so connections never touch the same row and the recorded changes,
// applied connection by connection in commit order, give the final state.
// The workload starts from whatever rows the shards hold (it reads them
// first), so it may run on Create's data, on the tutorial's, or after
// another workload; nothing else may write to the shards while it runs.
type Workload struct {
	// Seed makes each connection's choices reproducible (the interleaving
	// of connections is not).
	Seed int64
	// Rate is the target number of transactions per second over all
	// connections; 0 runs as fast as possible.
	Rate float64
	// Duration stops the run after this long (0 = no limit).
	Duration time.Duration
	// Transactions stops the run after this many transactions have been
	// attempted, rolled-back ones included (0 = no limit). At least one of
	// Duration and Transactions must be set.
	Transactions int
	// MaxRowsPerTxn bounds the row changes of one transaction (default
	// 10): most transactions change one row, some 2–5, a few up to this.
	MaxRowsPerTxn int
	// MultiShardFraction of the transactions touch 2 or 3 shards (when
	// there are that many); they are spread evenly over the run.
	MultiShardFraction float64
	// RollbackFraction of the transactions do their writes and then roll
	// back (default 0.03; negative for none); spread evenly over the run.
	RollbackFraction float64
	// KeyUpdateFraction of the updates change emp_no itself (default 0.05;
	// negative for none).
	KeyUpdateFraction float64
	// Conns is the number of concurrent client connections (default 2).
	Conns int
	// XAFraction of the transactions run as XA transactions: XA START …
	// XA END; XA PREPARE; then, after a short random pause during which
	// the other connections keep committing, XA COMMIT (or XA ROLLBACK
	// for XARollbackFraction of them, default 0.2; negative for none).
	// They are spread evenly over the run. XAFlushFraction of the XA
	// transactions (default 0.1; negative for none) run FLUSH BINARY LOGS
	// on a second connection between the prepare and the decision, so the
	// decision lands in another binlog file than the rows.
	XAFraction         float64
	XARollbackFraction float64
	XAFlushFraction    float64
	// FirstID is the first change id (default 1). A second workload on the
	// same server must start above the first's LastID to keep tokens
	// unique; Run also starts above any token it finds in the shards.
	FirstID uint64
	// Logger receives a summary; nil discards.
	Logger *slog.Logger
}

// WorkloadResult is what a workload committed.
type WorkloadResult struct {
	// Changes are every committed row change, in commit order within each
	// connection (connections touch disjoint rows, so applying Changes in
	// this order gives the final state).
	Changes []Change
	// Txns is the number of committed transactions.
	Txns int
	// MultiShardTxns is how many committed transactions touched more than
	// one shard.
	MultiShardTxns int
	// XATxns is how many committed transactions were XA transactions,
	// XARolledBack how many XA transactions were rolled back after their
	// prepare, and XAFlushed how many had FLUSH BINARY LOGS between their
	// prepare and their decision.
	XATxns, XARolledBack, XAFlushed int
	// RolledBack is the number of rolled-back transactions (deliberate, or
	// chosen by the server as deadlock victims); RolledBackChanges holds the
	// changes they attempted, which must appear nowhere downstream.
	RolledBack        int
	RolledBackChanges []Change
	// FirstID and LastID bound the change ids used (committed or not).
	FirstID, LastID uint64
	// Elapsed is the run's wall-clock time.
	Elapsed time.Duration
}

// Apply applies every change, in order, to st: the model of what the
// source (and so the merged table) holds afterwards.
func (r *WorkloadResult) Apply(st MergedState) {
	for _, c := range r.Changes {
		applyChange(st, c)
	}
}

// Expected is initial with every change applied; initial is not modified.
func (r *WorkloadResult) Expected(initial MergedState) MergedState {
	st := initial.Clone()
	r.Apply(st)
	return st
}

// TxnChanges groups Changes by transaction, in commit order per
// connection.
func (r *WorkloadResult) TxnChanges() map[uint64][]Change {
	out := make(map[uint64][]Change)
	for _, c := range r.Changes {
		out[c.Txn] = append(out[c.Txn], c)
	}
	return out
}

func applyChange(st MergedState, c Change) {
	old := MergedKey{DB: c.Shard.DB, Table: c.Shard.Table, Key: c.Key}
	switch c.Op {
	case OpInsert:
		st[old] = maps.Clone(c.After)
	case OpUpdate:
		delete(st, old)
		st[c.MergedKey()] = maps.Clone(c.After)
	case OpDelete:
		delete(st, old)
	}
}

func (w Workload) withDefaults() Workload {
	if w.MaxRowsPerTxn <= 0 {
		w.MaxRowsPerTxn = 10
	}
	if w.Conns <= 0 {
		w.Conns = 2
	}
	if w.RollbackFraction == 0 {
		w.RollbackFraction = 0.03
	}
	if w.KeyUpdateFraction == 0 {
		w.KeyUpdateFraction = 0.05
	}
	if w.FirstID == 0 {
		w.FirstID = 1
	}
	if w.XARollbackFraction == 0 {
		w.XARollbackFraction = 0.2
	}
	if w.XAFlushFraction == 0 {
		w.XAFlushFraction = 0.1
	}
	if w.Logger == nil {
		w.Logger = slog.New(slog.DiscardHandler)
	}
	return w
}

// Run drives the workload against m until Transactions have been attempted
// or Duration has passed, whichever comes first. On an error (including
// ctx ending) it returns the changes committed so far together with the
// error.
func (w Workload) Run(ctx context.Context, m *MariaDB, spec ShardSpec) (*WorkloadResult, error) {
	w = w.withDefaults()
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if w.Duration <= 0 && w.Transactions <= 0 {
		return nil, errors.New("workload needs Duration or Transactions to stop: set at least one")
	}
	if w.Rate < 0 || math.IsNaN(w.Rate) || math.IsInf(w.Rate, 0) {
		return nil, fmt.Errorf("workload Rate %v is not a rate: use 0 for as fast as possible", w.Rate)
	}
	st, err := ReadMergedState(ctx, m, spec)
	if err != nil {
		return nil, fmt.Errorf("reading the shards before the workload: %w", err)
	}
	for _, row := range st {
		if id, ok := TokenID(row["last_name"]); ok && id >= w.FirstID {
			w.FirstID = id + 1
		}
	}
	shards := spec.Shards()
	conns := make([]*workConn, w.Conns)
	for i := range conns {
		c, err := m.Connect("")
		if err == nil {
			_, err = c.Execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
			if err != nil {
				c.Close()
			}
		}
		if err != nil {
			for _, wc := range conns[:i] {
				wc.c.Close()
			}
			return nil, fmt.Errorf("opening workload connection %d: %w", i, err)
		}
		conns[i] = newWorkConn(i, c, w, shards, st)
	}

	run := &workRun{w: w, start: time.Now(), shards: shards}
	run.nextID.Store(w.FirstID)
	if w.Duration > 0 {
		run.deadline = run.start.Add(w.Duration)
	}
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, wc := range conns {
		wg.Go(func() {
			defer wc.c.Close()
			if w.XAFraction > 0 {
				a, err := m.Connect("")
				if err != nil {
					errs[i] = fmt.Errorf("opening workload connection %d's admin connection: %w", i, err)
					return
				}
				wc.admin = a
				defer a.Close()
			}
			errs[i] = wc.loop(ctx, run)
		})
	}
	wg.Wait()

	res := &WorkloadResult{FirstID: w.FirstID, LastID: run.nextID.Load() - 1, Elapsed: time.Since(run.start)}
	for _, wc := range conns {
		res.Changes = append(res.Changes, wc.committed...)
		res.RolledBackChanges = append(res.RolledBackChanges, wc.rolledBack...)
		res.Txns += wc.txns
		res.MultiShardTxns += wc.multiShard
		res.RolledBack += wc.rollbacks
		res.XATxns += wc.xaTxns
		res.XARolledBack += wc.xaRollbacks
		res.XAFlushed += wc.xaFlushes
	}
	w.Logger.Info("workload done", "txns", res.Txns, "changes", len(res.Changes),
		"rolled_back", res.RolledBack, "multi_shard", res.MultiShardTxns, "xa", res.XATxns, "xa_rolled_back", res.XARolledBack, "elapsed", res.Elapsed)
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	return res, nil
}

// workRun is the state the connections share.
type workRun struct {
	w        Workload
	start    time.Time
	deadline time.Time
	shards   []ShardID
	nextTxn  atomic.Int64  // schedule slot of the next transaction (0-based)
	nextID   atomic.Uint64 // next change id
	txnNo    atomic.Uint64 // committed transaction numbers
}

// evenly reports whether slot i is one of the fraction f of slots spread
// evenly over the run; phase (in [0,1)) shifts the pattern so that two
// fractions do not pick the same slots systematically.
func evenly(i int64, f, phase float64) bool {
	if f <= 0 {
		return false
	}
	return math.Floor(float64(i+1)*f+phase) > math.Floor(float64(i)*f+phase)
}

// multiShardSlot and rollbackSlot say which schedule slots are multi-shard
// and deliberately rolled-back transactions.
func (w Workload) multiShardSlot(i int64) bool { return evenly(i, w.MultiShardFraction, 0) }
func (w Workload) rollbackSlot(i int64) bool   { return evenly(i, w.RollbackFraction, 0.382) }

// xaSlot says which schedule slots are XA transactions; xaRollback and
// xaFlush which XA transactions (numbered by their slot) roll back after
// the prepare and flush the binlog before the decision.
func (w Workload) xaSlot(i int64) bool { return evenly(i, w.XAFraction, 0.618) }
func (w Workload) xaRollback(i int64) bool {
	return evenly(int64(float64(i)*w.XAFraction), w.XARollbackFraction, 0.5)
}
func (w Workload) xaFlush(i int64) bool {
	return evenly(int64(float64(i)*w.XAFraction), w.XAFlushFraction, 0.25)
}

// keySet is a set of keys with uniform random choice.
type keySet struct {
	keys []int64
	pos  map[int64]int
}

func newKeySet() *keySet { return &keySet{pos: make(map[int64]int)} }

func (s *keySet) add(k int64) {
	if _, ok := s.pos[k]; ok {
		return
	}
	s.pos[k] = len(s.keys)
	s.keys = append(s.keys, k)
}

func (s *keySet) remove(k int64) {
	i, ok := s.pos[k]
	if !ok {
		return
	}
	last := s.keys[len(s.keys)-1]
	s.keys[i] = last
	s.pos[last] = i
	s.keys = s.keys[:len(s.keys)-1]
	delete(s.pos, k)
}

func (s *keySet) pick(r *rand.Rand) (int64, bool) {
	if len(s.keys) == 0 {
		return 0, false
	}
	return s.keys[r.IntN(len(s.keys))], true
}

// shardModel is one connection's view of the rows it owns in one shard.
type shardModel struct {
	rows    map[int64]map[string]string
	live    *keySet
	deleted *keySet // keys this connection deleted and may re-insert
	nextKey int64   // next never-used key owned by the connection
}

// workConn is one workload connection and the rows it owns.
type workConn struct {
	idx    int
	c      *client.Conn
	w      Workload
	r      *rand.Rand
	shards map[ShardID]*shardModel

	committed, rolledBack       []Change
	txns, multiShard, rollbacks int

	admin                          *client.Conn // FLUSH BINARY LOGS while this connection holds a prepared XA transaction
	xaTxns, xaRollbacks, xaFlushes int
}

func newWorkConn(idx int, c *client.Conn, w Workload, shards []ShardID, st MergedState) *workConn {
	wc := &workConn{idx: idx, c: c, w: w, shards: make(map[ShardID]*shardModel),
		r: rand.New(rand.NewPCG(uint64(w.Seed), uint64(idx)+0x9e3779b97f4a7c15))}
	n := int64(w.Conns)
	for _, sh := range shards {
		wc.shards[sh] = &shardModel{rows: make(map[int64]map[string]string), live: newKeySet(), deleted: newKeySet()}
	}
	maxKey := make(map[ShardID]int64)
	for k, row := range st {
		sm := wc.shards[k.Shard()]
		if sm == nil {
			continue
		}
		maxKey[k.Shard()] = max(maxKey[k.Shard()], k.Key)
		if owner(k.Key, n) == int64(idx) {
			sm.rows[k.Key] = row
			sm.live.add(k.Key)
		}
	}
	for sh, sm := range wc.shards {
		// The first key above every existing one that this connection owns.
		k := maxKey[sh] + 1
		for owner(k, n) != int64(idx) {
			k++
		}
		sm.nextKey = k
	}
	return wc
}

func owner(key, conns int64) int64 { return ((key % conns) + conns) % conns }

// loop runs transactions until the run's limits, ctx or an error stop it.
func (wc *workConn) loop(ctx context.Context, run *workRun) error {
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("workload connection %d: %w", wc.idx, err)
		}
		slot := run.nextTxn.Add(1) - 1
		if wc.w.Transactions > 0 && slot >= int64(wc.w.Transactions) {
			return nil
		}
		if wc.w.Rate > 0 {
			at := run.start.Add(time.Duration(float64(slot) / wc.w.Rate * float64(time.Second)))
			if !run.deadline.IsZero() && at.After(run.deadline) {
				return nil
			}
			if d := time.Until(at); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-ctx.Done():
					t.Stop()
					return fmt.Errorf("workload connection %d: %w", wc.idx, ctx.Err())
				case <-t.C:
				}
			}
		}
		if !run.deadline.IsZero() && time.Now().After(run.deadline) {
			return nil
		}
		if err := wc.txn(run, slot); err != nil {
			return fmt.Errorf("workload connection %d: %w", wc.idx, err)
		}
	}
}

// stmt is one SQL statement of a planned transaction and the changes it
// makes.
type stmt struct {
	sql     string
	changes []Change
}

// overlay is a transaction's uncommitted view over the connection's
// models: key → row, or nil for a row deleted in this transaction.
type overlay map[MergedKey]map[string]string

// txn plans, executes and commits (or deliberately rolls back) one
// transaction.
func (wc *workConn) txn(run *workRun, slot int64) error {
	shards := wc.pickShards(run, slot)
	plan := wc.plan(run, shards)
	rollback := wc.w.rollbackSlot(slot)
	if wc.w.xaSlot(slot) {
		return wc.xaTxn(run, slot, plan)
	}

	if err := wc.c.Begin(); err != nil {
		return fmt.Errorf("BEGIN: %w", err)
	}
	var changes []Change
	for _, s := range plan {
		if _, err := wc.c.Execute(s.sql); err != nil {
			if isRetryable(err) {
				// The server rolled the transaction back (deadlock) or
				// can roll it back safely (lock wait timeout).
				_ = wc.c.Rollback()
				wc.noteRollback(plan)
				return nil
			}
			_ = wc.c.Rollback()
			return fmt.Errorf("executing %q: %w", abbreviate(s.sql, 160), err)
		}
		changes = append(changes, s.changes...)
	}
	if rollback {
		if err := wc.c.Rollback(); err != nil {
			return fmt.Errorf("ROLLBACK: %w", err)
		}
		wc.noteRollback(plan)
		return nil
	}
	if err := wc.c.Commit(); err != nil {
		if isRetryable(err) {
			wc.noteRollback(plan)
			return nil
		}
		// The outcome is unknown (the commit may have happened): the model
		// can no longer be trusted.
		return fmt.Errorf("COMMIT (outcome unknown, the expected state is no longer exact): %w", err)
	}
	wc.noteCommit(run, changes)
	return nil
}

// noteCommit records a committed transaction's changes.
func (wc *workConn) noteCommit(run *workRun, changes []Change) {
	txn := run.txnNo.Add(1)
	touched := make(map[ShardID]bool)
	for i := range changes {
		changes[i].Txn = txn
		wc.applyModel(changes[i])
		touched[changes[i].Shard] = true
	}
	wc.committed = append(wc.committed, changes...)
	wc.txns++
	if len(touched) > 1 {
		wc.multiShard++
	}
}

// xaTxn runs a planned transaction as an XA transaction: XA START, the
// statements, XA END, XA PREPARE, a pause of up to 20 ms (with FLUSH BINARY
// LOGS on the admin connection for some), then XA COMMIT or XA ROLLBACK.
func (wc *workConn) xaTxn(run *workRun, slot int64, plan []stmt) error {
	xid := fmt.Sprintf("'wl%d-%d-%d'", wc.w.Seed, wc.w.FirstID, slot)
	if _, err := wc.c.Execute("XA START " + xid); err != nil {
		return fmt.Errorf("XA START: %w", err)
	}
	var changes []Change
	for _, s := range plan {
		if _, err := wc.c.Execute(s.sql); err != nil {
			_, _ = wc.c.Execute("XA END " + xid)
			_, _ = wc.c.Execute("XA ROLLBACK " + xid)
			if isRetryable(err) {
				wc.noteRollback(plan)
				return nil
			}
			return fmt.Errorf("executing %q in XA transaction %s: %w", abbreviate(s.sql, 160), xid, err)
		}
		changes = append(changes, s.changes...)
	}
	if _, err := wc.c.Execute("XA END " + xid); err != nil {
		return fmt.Errorf("XA END %s: %w", xid, err)
	}
	if _, err := wc.c.Execute("XA PREPARE " + xid); err != nil {
		if isRetryable(err) {
			wc.noteRollback(plan)
			return nil
		}
		return fmt.Errorf("XA PREPARE %s (outcome unknown, the expected state is no longer exact): %w", xid, err)
	}
	time.Sleep(time.Duration(wc.r.IntN(20)) * time.Millisecond)
	if wc.w.xaFlush(slot) {
		if _, err := wc.admin.Execute("FLUSH BINARY LOGS"); err != nil {
			return fmt.Errorf("FLUSH BINARY LOGS with XA transaction %s prepared: %w", xid, err)
		}
		wc.xaFlushes++
	}
	if wc.w.xaRollback(slot) {
		if _, err := wc.c.Execute("XA ROLLBACK " + xid); err != nil {
			return fmt.Errorf("XA ROLLBACK %s (outcome unknown, the expected state is no longer exact): %w", xid, err)
		}
		wc.noteRollback(plan)
		wc.xaRollbacks++
		return nil
	}
	if _, err := wc.c.Execute("XA COMMIT " + xid); err != nil {
		return fmt.Errorf("XA COMMIT %s (outcome unknown, the expected state is no longer exact): %w", xid, err)
	}
	wc.noteCommit(run, changes)
	wc.xaTxns++
	return nil
}

func (wc *workConn) noteRollback(plan []stmt) {
	wc.rollbacks++
	for _, s := range plan {
		wc.rolledBack = append(wc.rolledBack, s.changes...)
	}
}

// isRetryable reports server errors after which the transaction is rolled
// back and nothing of it committed: deadlock (1213), lock wait timeout
// (1205).
func isRetryable(err error) bool {
	var me *mysql.MyError
	if errors.As(err, &me) {
		return me.Code == mysql.ER_LOCK_DEADLOCK || me.Code == mysql.ER_LOCK_WAIT_TIMEOUT
	}
	return false
}

// pickShards chooses the shards of the transaction in schedule slot.
func (wc *workConn) pickShards(run *workRun, slot int64) []ShardID {
	n := 1
	if len(run.shards) > 1 && wc.w.multiShardSlot(slot) {
		n = 2
		if len(run.shards) > 2 && wc.r.IntN(3) == 0 {
			n = 3
		}
	}
	perm := wc.r.Perm(len(run.shards))[:n]
	out := make([]ShardID, n)
	for i, p := range perm {
		out[i] = run.shards[p]
	}
	return out
}

// txnSize draws the number of row changes: mostly 1, some 2–5, a few up to
// MaxRowsPerTxn.
func (wc *workConn) txnSize(shards int) int {
	m := wc.w.MaxRowsPerTxn
	var n int
	switch p := wc.r.Float64(); {
	case p < 0.65:
		n = 1
	case p < 0.9:
		n = 2 + wc.r.IntN(4)
	default:
		n = 1 + wc.r.IntN(m)
	}
	// A multi-shard transaction changes at least one row in each shard.
	return max(min(n, m), min(shards, m))
}

// plan draws the statements of one transaction against the connection's
// model (plus the transaction's own earlier statements).
func (wc *workConn) plan(run *workRun, shards []ShardID) []stmt {
	ov := overlay{}
	size := wc.txnSize(len(shards))
	var out []stmt
	for done, i := 0, 0; done < size; i++ {
		sh := shards[i%len(shards)]
		if i >= len(shards) {
			sh = shards[wc.r.IntN(len(shards))]
		}
		// Leave at least one row for each shard not yet visited.
		rem := size - done
		if unvisited := len(shards) - 1 - i; unvisited > 0 {
			rem = max(1, rem-unvisited)
		}
		batch := 1
		if rem > 1 && wc.r.IntN(3) == 0 {
			batch = 1 + wc.r.IntN(min(rem, 5))
		}
		var s stmt
		switch p := wc.r.Float64(); {
		case p < 0.35:
			s = wc.planInsert(run, ov, sh, batch)
		case p < 0.75:
			s = wc.planUpdate(run, ov, sh)
		default:
			s = wc.planDelete(run, ov, sh, batch)
		}
		if len(s.changes) == 0 { // nothing to update or delete: insert instead
			s = wc.planInsert(run, ov, sh, batch)
		}
		done += len(s.changes)
		out = append(out, s)
	}
	return out
}

// current is the row at key as the transaction sees it.
func (wc *workConn) current(ov overlay, sh ShardID, key int64) (map[string]string, bool) {
	if row, ok := ov[MergedKey{DB: sh.DB, Table: sh.Table, Key: key}]; ok {
		return row, row != nil
	}
	row, ok := wc.shards[sh].rows[key]
	return row, ok
}

// pickLive picks a key that exists in the transaction's view (tries a few
// random keys of the model, then the transaction's own inserts).
func (wc *workConn) pickLive(ov overlay, sh ShardID, exclude map[int64]bool) (int64, bool) {
	sm := wc.shards[sh]
	for range 8 {
		k, ok := sm.live.pick(wc.r)
		if !ok {
			break
		}
		if _, live := wc.current(ov, sh, k); live && !exclude[k] {
			return k, true
		}
	}
	var fresh []int64
	for mk, row := range ov {
		if row != nil && mk.Shard() == sh && !exclude[mk.Key] {
			fresh = append(fresh, mk.Key)
		}
	}
	if len(fresh) == 0 {
		return 0, false
	}
	slices.Sort(fresh)
	return fresh[wc.r.IntN(len(fresh))], true
}

// newKey picks an absent key the connection owns: sometimes a key it
// deleted earlier, usually a never-used one.
func (wc *workConn) newKey(ov overlay, sh ShardID) int64 {
	sm := wc.shards[sh]
	if wc.r.IntN(5) == 0 {
		if k, ok := sm.deleted.pick(wc.r); ok {
			if _, live := wc.current(ov, sh, k); !live {
				return k
			}
		}
	}
	for {
		k := sm.nextKey
		sm.nextKey += int64(wc.w.Conns)
		if _, live := wc.current(ov, sh, k); !live {
			return k
		}
	}
}

func (wc *workConn) planInsert(run *workRun, ov overlay, sh ShardID, n int) stmt {
	var b strings.Builder
	b.WriteString("INSERT INTO " + sh.quoted() + " (" + strings.Join(Columns, ",") + ") VALUES ")
	var s stmt
	for i := range n {
		key := wc.newKey(ov, sh)
		id := run.nextID.Add(1) - 1
		row := randomRow(wc.r.Uint64, key)
		row["last_name"] = Token(id)
		if i > 0 {
			b.WriteByte(',')
		}
		writeTuple(&b, row)
		ov[MergedKey{DB: sh.DB, Table: sh.Table, Key: key}] = row
		s.changes = append(s.changes, Change{ID: id, Conn: wc.idx, Op: OpInsert, Shard: sh, Key: key, NewKey: key, After: row})
	}
	s.sql = b.String()
	return s
}

func (wc *workConn) planUpdate(run *workRun, ov overlay, sh ShardID) stmt {
	key, ok := wc.pickLive(ov, sh, nil)
	if !ok {
		return stmt{}
	}
	before, _ := wc.current(ov, sh, key)
	id := run.nextID.Add(1) - 1
	after := maps.Clone(before)
	after["last_name"] = Token(id)
	set := []string{"last_name=" + sqlString(after["last_name"])}
	fresh := randomRow(wc.r.Uint64, key)
	for _, col := range []string{"birth_date", "first_name", "gender", "hire_date"} {
		if wc.r.IntN(3) == 0 && fresh[col] != before[col] {
			after[col] = fresh[col]
			set = append(set, col+"="+sqlString(fresh[col]))
		}
	}
	newKey := key
	if wc.w.KeyUpdateFraction > 0 && wc.r.Float64() < wc.w.KeyUpdateFraction {
		newKey = wc.newKey(ov, sh)
		after["emp_no"] = strconv.FormatInt(newKey, 10)
		set = append(set, "emp_no="+after["emp_no"])
		ov[MergedKey{DB: sh.DB, Table: sh.Table, Key: key}] = nil
	}
	ov[MergedKey{DB: sh.DB, Table: sh.Table, Key: newKey}] = after
	return stmt{
		sql: "UPDATE " + sh.quoted() + " SET " + strings.Join(set, ", ") + " WHERE emp_no=" + strconv.FormatInt(key, 10),
		changes: []Change{{ID: id, Conn: wc.idx, Op: OpUpdate, Shard: sh, Key: key, NewKey: newKey,
			KeyChanged: newKey != key, Before: before, After: after}},
	}
}

func (wc *workConn) planDelete(run *workRun, ov overlay, sh ShardID, n int) stmt {
	picked := make(map[int64]bool)
	var keys []int64
	for range n {
		k, ok := wc.pickLive(ov, sh, picked)
		if !ok {
			break
		}
		picked[k] = true
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return stmt{}
	}
	// InnoDB deletes an IN list in key order; record the changes so.
	slices.Sort(keys)
	var s stmt
	list := make([]string, len(keys))
	for i, k := range keys {
		before, _ := wc.current(ov, sh, k)
		ov[MergedKey{DB: sh.DB, Table: sh.Table, Key: k}] = nil
		list[i] = strconv.FormatInt(k, 10)
		s.changes = append(s.changes, Change{ID: run.nextID.Add(1) - 1, Conn: wc.idx, Op: OpDelete, Shard: sh, Key: k, Before: before})
	}
	s.sql = "DELETE FROM " + sh.quoted() + " WHERE emp_no IN (" + strings.Join(list, ",") + ")"
	return s
}

// applyModel applies a committed change to the connection's model.
func (wc *workConn) applyModel(c Change) {
	sm := wc.shards[c.Shard]
	switch c.Op {
	case OpInsert:
		sm.rows[c.Key] = c.After
		sm.live.add(c.Key)
		sm.deleted.remove(c.Key)
	case OpUpdate:
		if c.KeyChanged {
			delete(sm.rows, c.Key)
			sm.live.remove(c.Key)
			sm.deleted.add(c.Key)
		}
		sm.rows[c.NewKey] = c.After
		sm.live.add(c.NewKey)
		sm.deleted.remove(c.NewKey)
	case OpDelete:
		delete(sm.rows, c.Key)
		sm.live.remove(c.Key)
		sm.deleted.add(c.Key)
	}
}
