package merge

// Shard lifecycle: TRUNCATE, DROP and RENAME of shards, schema change
// behaviours and operator decisions on single source events.
//
// A TRUNCATE of a shard at binlog position T becomes a change.EventShardDelete
// with the token right after T: the sinks delete the shard's rows between
// epochs (package twopc orders and records it). The shard's snapshot filter
// is dropped at the same time: after the truncate the table's state is fully
// described by the binlog events after T (it starts empty), so every later
// event is emitted, and rows a snapshot chunk read after T, which the delete
// removed, come back from the binlog. This makes TRUNCATE exact in the
// snapshot phase too.
//
// A DROP of a shard (DROP TABLE, DROP DATABASE, RENAME out of the routes)
// makes it leave its route. Its rows stay in the target, or are deleted as
// for TRUNCATE (Config.DroppedShardRows). A shard whose snapshot was cut
// short by the drop (its table vanished while it was read) always has its
// rows deleted: what was read of it is not a consistent picture.
//
// A table that joins a route while the binlog is followed by a RENAME (it
// arrives with rows that have no binlog events) is snapshotted right there,
// with the same chunked snapshot and per-chunk filter as at start; its
// progress is in the token, so a crash resumes its snapshot. A table that
// joins by CREATE TABLE is empty at its CREATE: the binlog has all its rows.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/shardsync/shardsync/change"
)

// Schema change behaviours (Config.SchemaChange), Flink CDC's
// schema.change.behavior values.
const (
	BehaviorException = "exception"
	BehaviorEvolve    = "evolve"
	BehaviorTryEvolve = "try_evolve"
	BehaviorLenient   = "lenient"
	BehaviorIgnore    = "ignore"
)

// Behaviors lists the accepted Config.SchemaChange values.
var Behaviors = []string{BehaviorException, BehaviorEvolve, BehaviorTryEvolve, BehaviorLenient, BehaviorIgnore}

// Dropped shard row policies (Config.DroppedShardRows).
const (
	DroppedKeep   = "keep"
	DroppedDelete = "delete"
)

// Operator decisions on one source event (Config.Decisions).
const (
	DecisionSkip  = "skip"
	DecisionApply = "apply"
)

// behavior returns the schema change behaviour, lenient by default.
func (c *Config) behavior() string {
	if c.SchemaChange == "" {
		return BehaviorLenient
	}
	return strings.ToLower(c.SchemaChange)
}

// deleteDropped tells whether a dropped shard's rows are deleted.
func (c *Config) deleteDropped() bool {
	switch c.DroppedShardRows {
	case DroppedDelete:
		return true
	case DroppedKeep:
		return false
	}
	b := c.behavior()
	return b == BehaviorEvolve || b == BehaviorTryEvolve
}

func (c *Config) validateLifecycle() []error {
	var errs []error
	if !slices.Contains(Behaviors, c.behavior()) {
		errs = append(errs, fmt.Errorf("schema change behavior %q is unknown: use %s", c.SchemaChange, strings.Join(Behaviors, ", ")))
	}
	switch c.DroppedShardRows {
	case "", DroppedKeep, DroppedDelete:
	default:
		errs = append(errs, fmt.Errorf("dropped shard rows %q: use keep or delete (or leave it empty: delete under evolve and try_evolve, keep otherwise)", c.DroppedShardRows))
	}
	for pos, d := range c.Decisions {
		if d != DecisionSkip && d != DecisionApply {
			errs = append(errs, fmt.Errorf("decision %q for source event %s: use skip or apply", d, pos))
		}
	}
	return errs
}

// EventStopError is a stop on one source event that the job will not apply
// on its own. It names the event's position (GTID when the server has
// them, and binlog file:offset) so that an operator can decide with
// `shardsync skip-event`: Config.Decisions keyed by either form.
type EventStopError struct {
	// Key is the decision key when it is not the event's position: a
	// column change is keyed by the shard's new definition
	// (schemaChangeKey), whether the binlog or a snapshot chunk met it.
	Key       string
	GTID      string // the event's GTID, "" without GTIDs
	File      string // binlog file of the event
	Pos       uint32 // offset of the event in File
	Statement string
	Reason    string
	// Apply says what applying the event would do ("" when it cannot be
	// applied, only skipped).
	Apply string
	Skip  string // what skipping it does
}

// Position is the key an operator decision for this event is recorded
// under: the GTID when there is one, else file:offset.
func (e *EventStopError) Position() string {
	if e.Key != "" {
		return e.Key
	}
	if e.GTID != "" {
		return e.GTID
	}
	return fmt.Sprintf("%s:%d", e.File, e.Pos)
}

func (e *EventStopError) Error() string {
	var b strings.Builder
	if e.File == "" {
		fmt.Fprintf(&b, "%s; statement: %s", e.Reason, e.Statement)
	} else {
		fmt.Fprintf(&b, "%s; statement: %s; binlog event %s:%d", e.Reason, e.Statement, e.File, e.Pos)
	}
	if e.GTID != "" {
		fmt.Fprintf(&b, " (GTID %s)", e.GTID)
	}
	if e.Skip == "" && e.Apply != "" {
		fmt.Fprintf(&b, ". To go on, apply this one event with `shardsync skip-event --position %s --apply` (apply: %s) and start the job again", e.Position(), e.Apply)
		return b.String()
	}
	fmt.Fprintf(&b, ". To go on, decide this one event with `shardsync skip-event --position %s`", e.Position())
	if e.Skip != "" {
		fmt.Fprintf(&b, " (skip: %s)", e.Skip)
	}
	if e.Apply != "" {
		fmt.Fprintf(&b, " or `shardsync skip-event --position %s --apply` (apply: %s)", e.Position(), e.Apply)
	}
	b.WriteString(" and start the job again")
	return b.String()
}

// Unwrap makes the stop an ErrIncompatibleSchema (a restart meets it again).
func (e *EventStopError) Unwrap() error { return ErrIncompatibleSchema }

// Departed is a shard that left its route while the job ran.
type Departed struct {
	Shard   change.TableID `json:"shard"`
	Target  change.TableID `json:"target"`
	Cause   string         `json:"cause"`
	Deleted bool           `json:"deleted"` // its rows were deleted from the target
}

// eventPos is the position of the statement being handled.
func (r *binlogReader) eventPos(h *replication.EventHeader) (gtid, file string, pos uint32) {
	if r.inTxn {
		gtid = r.txnGTID
	}
	return gtid, r.file, h.LogPos - h.EventSize
}

// decision returns the operator's decision on the event at h, or "".
func (r *binlogReader) decision(h *replication.EventHeader) string {
	gtid, file, pos := r.eventPos(h)
	return r.decisionAt(gtid, binPos{File: file, Pos: pos})
}

// decisionAt returns the operator's decision on the event with gtid (""
// without) at p, or "".
func (r *binlogReader) decisionAt(gtid string, p binPos) string {
	d := r.s.sh.cfg.Decisions
	if len(d) == 0 {
		return ""
	}
	if gtid != "" && d[gtid] != "" {
		return d[gtid]
	}
	return d[fmt.Sprintf("%s:%d", p.File, p.Pos)]
}

func (r *binlogReader) stop(h *replication.EventHeader, q, reason, apply, skip string) error {
	return r.stopKeyed(h, "", q, reason, apply, skip)
}

// stopKeyed is stop with a decision key other than the event's position
// (see schemaChangeKey).
func (r *binlogReader) stopKeyed(h *replication.EventHeader, key, q, reason, apply, skip string) error {
	gtid, file, pos := r.eventPos(h)
	return fatal(&EventStopError{Key: key, GTID: gtid, File: file, Pos: pos, Statement: q, Reason: reason, Apply: apply, Skip: skip})
}

// lifecycle handles TRUNCATE, DROP TABLE, DROP DATABASE and RENAME of
// routed tables (st.kind is one of those). Deletes and joins it decides are
// carried out by commit, right after the statement's position.
func (r *binlogReader) lifecycle(ctx context.Context, st ddlStmt, q string, h *replication.EventHeader) error {
	cfg := &r.s.sh.cfg
	dec := r.decision(h)
	if dec == DecisionSkip {
		r.s.sh.log.Warn("skipping a source statement as the operator decided (shardsync skip-event)", "statement", q)
		return nil
	}
	beh := cfg.behavior()
	var leaving, truncated, joining []change.TableID
	switch st.kind {
	case ddlTruncate:
		for _, id := range st.tables {
			if r.s.shards[id] != nil {
				truncated = append(truncated, id)
			}
		}
	case ddlDrop:
		for _, id := range st.tables {
			if r.s.shards[id] != nil {
				leaving = append(leaving, id)
			}
		}
	case ddlDropDatabase:
		for _, id := range sortedIDs(r.s.shards) {
			if id.Database == st.db {
				leaving = append(leaving, id)
			}
		}
	case ddlRename:
		// pairs applied in order, as MySQL does: a→b, b→c moves a to c
		renamed := map[change.TableID]change.TableID{}
		for i := 0; i+1 < len(st.tables); i += 2 {
			from, to := st.tables[i], st.tables[i+1]
			orig := from
			for o, cur := range renamed {
				if cur == from {
					orig = o
				}
			}
			renamed[orig] = to
		}
		for orig, to := range renamed {
			if orig == to {
				continue
			}
			if r.s.shards[orig] != nil {
				leaving = append(leaving, orig)
			}
			if routeOf(cfg.Routes, to) >= 0 {
				joining = append(joining, to)
			}
		}
		slices.SortFunc(leaving, cmpID)
		slices.SortFunc(joining, cmpID)
	}
	if len(leaving)+len(truncated)+len(joining) == 0 {
		return nil
	}
	if beh == BehaviorException && dec != DecisionApply {
		return r.stop(h, q, fmt.Sprintf("schema.change.behavior is exception and the statement changes routed shards (%s)", describeIDs(leaving, truncated, joining)),
			"as under evolve: truncated and dropped shards' rows are deleted from the target, tables renamed into a route join with a snapshot",
			"nothing changes in the target: truncated or dropped shards' rows stay, a table renamed into a route joins without a snapshot (from its next change)")
	}
	if beh == BehaviorIgnore && dec != DecisionApply {
		if len(truncated) > 0 {
			r.s.sh.log.Warn("schema.change.behavior is ignore: a shard was truncated but its rows stay in the target", "statement", q)
		}
		truncated = nil
	}
	for _, id := range truncated {
		sh := r.s.shards[id]
		r.pendingDeletes = append(r.pendingDeletes, r.shardDelete(sh, q))
		r.dropFilter(id)
		r.s.sh.log.Info("shard truncated: its rows leave the target", "shard", id.String(), "target", sh.target.id.String(), "statement", q)
	}
	del := cfg.deleteDropped() || dec == DecisionApply
	for _, id := range leaving {
		sh := r.s.shards[id]
		delete(r.s.unseen, id)
		cut := r.snapshotCut(id)
		d := del || cut
		if d {
			r.pendingDeletes = append(r.pendingDeletes, r.shardDelete(sh, q))
		}
		r.s.removeShard(sh, q, d)
		r.dropFilter(id)
		clear(r.tmCache)
		msg := "shard dropped: it leaves its route and its rows stay in the target"
		switch {
		case cut:
			msg = "shard dropped before its snapshot finished: it leaves its route and the rows read of it are deleted"
		case d:
			msg = "shard dropped: it leaves its route and its rows are deleted from the target"
		}
		r.s.sh.log.Warn(msg, "shard", id.String(), "target", sh.target.id.String(), "statement", q)
	}
	for _, id := range joining {
		if sh := r.s.shards[id]; sh != nil {
			if r.s.unseen[id] {
				// found at start, after this RENAME: its rows are not in
				// the binlog after the token, so it joins here as the
				// RENAME made it join in the run that was interrupted
				delete(r.s.unseen, id)
				r.pendingJoins = append(r.pendingJoins, sh)
				r.s.sh.log.Info("table renamed into a route (found at start, its RENAME replayed): it joins with a snapshot", "shard", id.String(), "target", sh.target.id.String(), "statement", q)
			}
			continue
		}
		cols, key, err := r.loadSchema(ctx, id)
		if err != nil {
			return err
		}
		sh, err := r.s.addShard(ctx, id, routeOf(cfg.Routes, id), cols, key, q)
		if err != nil {
			return fatal(err)
		}
		r.pendingJoins = append(r.pendingJoins, sh)
		r.s.sh.log.Info("table renamed into a route: it joins with a snapshot", "shard", id.String(), "target", sh.target.id.String(), "statement", q)
	}
	return nil
}

func cmpID(a, b change.TableID) int { return strings.Compare(a.String(), b.String()) }

func describeIDs(groups ...[]change.TableID) string {
	var parts []string
	for _, g := range groups {
		for _, id := range g {
			parts = append(parts, id.String())
		}
	}
	return strings.Join(parts, ", ")
}

func (r *binlogReader) shardDelete(sh *shard, q string) change.ShardDelete {
	return change.ShardDelete{Target: sh.target.id, Shard: sh.id, DatabaseColumn: r.s.sh.cfg.DatabaseColumn,
		TableColumn: r.s.sh.cfg.TableColumn, Cause: q}
}

// snapshotCut tells whether id's snapshot ended early because the table
// vanished while it was read.
func (r *binlogReader) snapshotCut(id change.TableID) bool {
	for _, t := range r.s.state.Tables {
		if t.id() == id && t.Cut {
			return true
		}
	}
	return false
}

// dropFilter forgets id's snapshot filter: every later event of the table
// is emitted.
func (r *binlogReader) dropFilter(id change.TableID) {
	delete(r.s.filter, id)
	st := r.s.state
	st.Tables = slices.DeleteFunc(st.Tables, func(t *tableSnap) bool { return t.id() == id })
	r.s.enc.dirty = true
}

// removeShard takes a dropped shard out of its route.
func (s *Source) removeShard(sh *shard, cause string, deleted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(sh.target.shards, sh.id)
	delete(s.shards, sh.id)
	delete(s.progress, sh.id)
	s.departed = append(s.departed, Departed{Shard: sh.id, Target: sh.target.id, Cause: cause, Deleted: deleted})
}

// Departed lists the shards that left their routes since Open (dropped or
// renamed away), oldest first.
func (s *Source) Departed() []Departed {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.departed)
}

// finishLifecycle runs after a statement's position became the current
// one: it emits the statement's shard deletes and snapshots the tables it
// brought into a route. The tables to snapshot are in the token of the
// delete event already, so a crash after the delete resumes their
// snapshot.
func (r *binlogReader) finishLifecycle(ctx context.Context) error {
	joins, deletes := r.pendingJoins, r.pendingDeletes
	r.pendingJoins, r.pendingDeletes = nil, nil
	s := r.s
	for _, sh := range joins {
		t := newTableSnap(sh)
		s.state.Tables = append(s.state.Tables, t)
		s.filter[sh.id] = t
		s.state.SnapshotDone = false
		s.mu.Lock()
		s.progress[sh.id] = &TableProgress{Table: sh.id, Target: sh.target.id, Whole: t.Whole}
		s.mu.Unlock()
		s.enc.dirty = true
	}
	if len(deletes) > 0 {
		r.unreported = false
		if err := s.emit(ctx, change.Event{Kind: change.EventShardDelete, Deletes: deletes, Token: s.enc.encode(s.state)}); err != nil {
			return err
		}
	}
	if len(joins) > 0 {
		r.unreported = false
		return s.runSnapshot(ctx)
	}
	return nil
}

// newTableSnap plans the snapshot of a shard as discover does at start.
func newTableSnap(sh *shard) *tableSnap {
	ts := &tableSnap{DB: sh.id.Database, Table: sh.id.Table, Whole: len(sh.key) == 0}
	for _, k := range sh.key {
		i := slices.IndexFunc(sh.cols, func(c shardCol) bool { return c.name == k })
		kind := sh.cols[i].typ.kind()
		ts.KeyKinds = append(ts.KeyKinds, kind)
		if !orderedKind(kind) {
			ts.Whole = true
		}
	}
	if ts.Whole {
		ts.KeyKinds = nil
	}
	return ts
}

// alterBehavior applies Config.SchemaChange and operator decisions to an
// ALTER of shard sh that leads to cols and key. It returns done when the
// statement was handled here (ignored, skipped or stopped on); otherwise
// the change is applied to the target as usual.
func (r *binlogReader) alterBehavior(sh *shard, cols []shardCol, key []string, q string, h *replication.EventHeader) (bool, error) {
	if sameCols(sh.cols, cols) && slices.Equal(sh.key, key) {
		return false, nil
	}
	cfg := &r.s.sh.cfg
	// A column change is decided by the shard's new definition (the same
	// change may first be met by a snapshot chunk, which has no binlog
	// position: see snapshotDDL); a decision by the event's position is
	// honoured too.
	sk := schemaChangeKey(sh.id, cols, key)
	dec, beh := r.decision(h), cfg.behavior()
	if dec == "" {
		dec = cfg.Decisions[sk]
	}
	keep := "the target keeps its columns: values of columns the shard gained are not loaded, columns it lost are loaded as NULL"
	switch {
	case dec == DecisionApply:
		return false, nil
	case dec == DecisionSkip || beh == BehaviorIgnore:
		r.s.mu.Lock()
		sh.cols, sh.key, sh.lastDDL = cols, key, q
		sh.remap(cfg)
		r.s.mu.Unlock()
		clear(r.tmCache)
		r.s.sh.log.Warn("schema change not applied to the target (schema.change.behavior ignore, or skipped by the operator)", "shard", sh.id.String(), "target", sh.target.id.String(), "statement", q)
		return true, nil
	case beh == BehaviorException:
		return true, r.stopKeyed(h, sk, q, fmt.Sprintf("schema.change.behavior is exception and the statement changes the columns of shard %s", sh.id),
			"the change is applied to the target as under evolve (compatible changes only)", keep)
	}
	if err := checkEvolution(sh.id, sh.cols, cols, sh.key, key, q); err != nil {
		return true, r.stopKeyed(h, sk, q, err.Error(), "", keep)
	}
	return false, nil
}

// isNoSuchTable tells whether err is MySQL's "Table doesn't exist".
func isNoSuchTable(err error) bool {
	var me *mysql.MyError
	return errors.As(err, &me) && me.Code == mysql.ER_NO_SUCH_TABLE
}

// isTableDefChanged tells whether err is MariaDB's "Table definition has
// changed, please retry transaction" (a TRUNCATE or ALTER after the
// consistent snapshot's read view was taken).
func isTableDefChanged(err error) bool {
	var me *mysql.MyError
	return errors.As(err, &me) && me.Code == mysql.ER_TABLE_DEF_CHANGED
}
