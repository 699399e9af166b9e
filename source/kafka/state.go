package kafka

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/merge"
)

// The stream state, independent of the Kafka client so that it can be
// driven record by record.
//
// Exactly once. The position is the set of per-partition offsets; a token
// holds, per partition, the first offset whose message has not yet been
// applied (or dropped as a duplicate), so everything from there is read
// again after a restart and nothing before it is.
//
// With the TiDB extension (messages carry _tidb.commitTs) a source
// transaction is every message sharing a commitTs, spread over any
// partitions. Messages are buffered by commitTs. A WATERMARK w read on a
// partition says every message with commitTs < w has been sent to it
// before; once every assigned partition has delivered a watermark, the
// smallest of them, W, bounds what is complete: all buffered transactions
// below W are released in commitTs order as one unit (rows, then one
// EventCommit), and Released becomes W. DDL (partition 0 only) sits in
// this order like any transaction.
//
// TiCDC re-sends after its own restart, so an older commitTs can sit at a
// higher offset. Two cases:
//   - commitTs < Released: the watermark contract says the original was
//     read before the watermark that released it, so it has been applied;
//     the copy is dropped. (This is not the "highest commitTs seen" rule
//     that lost data in TiCDC's reference consumer: Released only moves
//     when every partition has confirmed completeness below it.)
//   - commitTs ≥ Released: the original is still buffered (not applied);
//     the copy is recognised by (database, table, type, key images,
//     commitTs) and dropped, so each change is applied once.
// Released is in the token; watermarks are not (they are read again after
// the resume offsets, which is what makes a release after a restart safe).
//
// Without the extension (TiCDC plain, Alibaba Canal) there is no
// transaction boundary in the stream: each message is applied whole and
// at most one epoch boundary falls between two messages. Duplicates the
// producer sends cannot be told from new changes; upserts by key make them
// converge.

// record is one Kafka record handed to the state.
type record struct {
	topic     string
	partition int32
	offset    int64
	value     []byte
}

func (r record) where() string {
	return fmt.Sprintf("topic %s partition %d offset %d", r.topic, r.partition, r.offset)
}

type tp struct {
	topic     string
	partition int32
}

type partState struct {
	tp
	next int64  // next offset to read
	wm   uint64 // last watermark read since open (0: none)
}

// pending is a buffered TiDB-extension message.
type pending struct {
	tp     tp
	offset int64
	msg    *message
	key    string
}

type shardInfo struct {
	sh    *merge.Shard
	texts [][2]string // name, mysqlType as registered
	types []merge.ColumnType
	names []string
	key   []string
	ddl   string // the last DDL statement seen for the shard, for messages
}

// BadRecordError is a record that is not usable canal-json, with where it
// is and why.
type BadRecordError struct {
	Topic     string
	Partition int32
	Offset    int64
	Reason    string
}

// Unwrap makes errors.Is(err, ErrBadRecord) hold.
func (e *BadRecordError) Unwrap() error { return errBadRecord }

func (e *BadRecordError) Error() string {
	return fmt.Sprintf("bad canal-json record at topic %s partition %d offset %d: %s (fix the producer, or run with a dead-letter file to set such records aside)",
		e.Topic, e.Partition, e.Offset, e.Reason)
}

// emitter receives the events the state produces.
type emitter func(change.Event) error

type state struct {
	merger *merge.Merger
	loc    *time.Location
	batch  int
	// deadLetter, when set, takes bad records instead of failing.
	deadLetter func(r record, reason string) error

	mode     string
	released uint64
	parts    map[tp]*partState
	order    []tp
	shards   map[change.TableID]*shardInfo
	shardSeq []change.TableID

	groups map[uint64][]*pending // tidb: buffered by commitTs
	seen   map[string]bool       // tidb: keys of buffered messages

	rows  []change.Row
	dirty bool // rows or a position change since the last commit event
	// unitRows: rows were emitted since the last commit event.
	unitRows bool
	lastES   int64
	emit     emitter
	routeFP  string
}

func newState(merger *merge.Merger, assigned []tp, loc *time.Location, batch int) *state {
	s := &state{merger: merger, loc: loc, batch: batch, parts: map[tp]*partState{},
		shards: map[change.TableID]*shardInfo{}, groups: map[uint64][]*pending{}, seen: map[string]bool{},
		routeFP: merger.RoutesFingerprint()}
	for _, p := range assigned {
		s.parts[p] = &partState{tp: p}
		s.order = append(s.order, p)
	}
	return s
}

// restore applies a token: offsets, mode, released and the learnt shards.
// Announcements for the restored targets go out through emit.
func (s *state) restore(st *tokenState) error {
	s.mode, s.released = st.Mode, st.Released
	for _, p := range st.Parts {
		if ps := s.parts[tp{p.Topic, p.Partition}]; ps != nil {
			ps.next = p.Offset
		}
	}
	for _, sh := range st.Shards {
		id := change.TableID{Database: sh.DB, Table: sh.Table}
		cols := make([]colText, len(sh.Cols))
		for i, c := range sh.Cols {
			cols[i] = colText{c[0], c[1]}
		}
		if _, err := s.learn(id, cols, sh.Key, "", "resume"); err != nil {
			return fmt.Errorf("%w: restoring shard %s: %w", ErrBadToken, id, err)
		}
	}
	return nil
}

func (s *state) token() change.Token {
	st := tokenState{Version: 1, Source: "kafka", Routes: s.routeFP, Mode: s.mode, Released: s.released}
	minOff := map[tp]int64{}
	for _, g := range s.groups {
		for _, p := range g {
			if o, ok := minOff[p.tp]; !ok || p.offset < o {
				minOff[p.tp] = p.offset
			}
		}
	}
	for _, k := range s.order {
		off := s.parts[k].next
		if o, ok := minOff[k]; ok && o < off {
			off = o
		}
		st.Parts = append(st.Parts, partToken{Topic: k.topic, Partition: k.partition, Offset: off})
	}
	for _, id := range s.shardSeq {
		si := s.shards[id]
		st.Shards = append(st.Shards, shardToken{DB: id.Database, Table: id.Table, Cols: si.texts, Key: si.key})
	}
	b, err := json.Marshal(st)
	if err != nil {
		panic(fmt.Sprintf("encoding kafka token: %v", err)) // plain data
	}
	return b
}

func (s *state) flushRows() error {
	if len(s.rows) == 0 {
		return nil
	}
	ev := change.Event{Kind: change.EventRows, Rows: s.rows, Time: s.esTime()}
	s.rows = nil
	return s.emit(ev)
}

func (s *state) esTime() time.Time {
	if s.lastES == 0 {
		return time.Time{}
	}
	return time.UnixMilli(s.lastES)
}

// commit ends the current unit: pending rows, then EventCommit with the
// token (or EventProgress when no rows were emitted).
func (s *state) commit() error {
	if !s.dirty {
		return nil
	}
	kind := change.EventProgress
	if s.unitRows {
		kind = change.EventCommit
	}
	s.unitRows = false
	if err := s.flushRows(); err != nil {
		return err
	}
	s.dirty = false
	return s.emit(change.Event{Kind: kind, Token: s.token(), Time: s.esTime()})
}

// handle processes one record. Plain-mode messages are applied at once
// (rows, and a commit at the caller's next boundary); TiDB-extension
// messages are buffered until a watermark releases them.
func (s *state) handle(r record) error {
	ps := s.parts[tp{r.topic, r.partition}]
	if ps == nil {
		return nil // not assigned (cannot happen with static assignment)
	}
	if r.offset < ps.next {
		return nil // read again below the resume point
	}
	defer func() { ps.next = r.offset + 1; s.dirty = true }()
	m, err := decode(r.value)
	if err != nil {
		return s.bad(r, err)
	}
	if m.kind == 0 {
		return nil
	}
	mode := "plain"
	if m.commitTs != 0 || m.kind == kindWatermark {
		mode = "tidb"
	}
	if s.mode == "" {
		s.mode = mode
	} else if s.mode != mode {
		return s.bad(r, fmt.Errorf("%w: %s message %s the TiDB extension (_tidb.commitTs) but earlier messages of this stream %s: every message must come from the same producer settings (enable-tidb-extension)",
			errBadRecord, m.typ, map[bool]string{true: "carries", false: "lacks"}[mode == "tidb"], map[bool]string{true: "did", false: "did not"}[s.mode == "tidb"]))
	}
	if m.kind == kindWatermark {
		if m.watermarkTs > ps.wm {
			ps.wm = m.watermarkTs
		}
		return s.releaseTiDB()
	}
	if s.mode == "plain" {
		return s.apply(r, m)
	}
	if m.commitTs < s.released {
		return nil // a re-send of an applied change
	}
	key := dedupKey(m)
	if s.seen[key] {
		return nil // a re-send of a buffered change
	}
	s.seen[key] = true
	s.groups[m.commitTs] = append(s.groups[m.commitTs], &pending{tp: ps.tp, offset: r.offset, msg: m, key: key})
	return nil
}

// bad reports a bad record: an error, or the dead-letter file.
func (s *state) bad(r record, err error) error {
	if !errors.Is(err, errBadRecord) {
		return err
	}
	reason := strings.TrimPrefix(err.Error(), errBadRecord.Error()+": ")
	if s.deadLetter != nil {
		return s.deadLetter(r, reason)
	}
	return &BadRecordError{Topic: r.topic, Partition: r.partition, Offset: r.offset, Reason: reason}
}

func dedupKey(m *message) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d\x00%s\x00%s\x00%s", m.commitTs, m.database, m.table, m.typ)
	if m.kind == kindDDL {
		b.WriteString("\x00" + m.sql)
		return b.String()
	}
	keyCols := m.pkNames
	if len(keyCols) == 0 {
		for _, c := range m.cols {
			keyCols = append(keyCols, c.name)
		}
	}
	for i := range m.data {
		before, after := m.images(i)
		for _, img := range []map[string]*string{before, after} {
			b.WriteByte('\x01')
			for _, k := range keyCols {
				if v := img[k]; v != nil {
					b.WriteString("\x00" + *v)
				} else {
					b.WriteString("\x00\x02")
				}
			}
		}
	}
	return b.String()
}

// releaseTiDB applies every buffered transaction below the smallest
// watermark of all assigned partitions, in commitTs order.
func (s *state) releaseTiDB() error {
	var w uint64
	for i, k := range s.order {
		wm := s.parts[k].wm
		if wm == 0 {
			return nil
		}
		if i == 0 || wm < w {
			w = wm
		}
	}
	if w <= s.released {
		return nil
	}
	var ts []uint64
	for t := range s.groups {
		if t < w {
			ts = append(ts, t)
		}
	}
	slices.Sort(ts)
	for _, t := range ts {
		g := s.groups[t]
		// Partition order, then offset: a key swap's DELETE precedes its
		// INSERT within the partition its key hashes to.
		slices.SortStableFunc(g, func(a, b *pending) int {
			if c := strings.Compare(a.tp.topic, b.tp.topic); c != 0 {
				return c
			}
			if a.tp.partition != b.tp.partition {
				return int(a.tp.partition - b.tp.partition)
			}
			return int(a.offset - b.offset)
		})
		// Schema first (an announcement is a cut point: commit what came
		// before, with Released at this transaction).
		for _, p := range g {
			if err := s.prepareSchema(record{topic: p.tp.topic, partition: p.tp.partition, offset: p.offset}, p.msg, t); err != nil {
				return err
			}
		}
		for _, p := range g {
			if err := s.apply(record{topic: p.tp.topic, partition: p.tp.partition, offset: p.offset}, p.msg); err != nil {
				return err
			}
			delete(s.seen, p.key)
		}
		delete(s.groups, t)
	}
	s.released = w
	s.dirty = true
	return s.commit()
}

// prepareSchema registers or evolves the message's shard before any of the
// transaction's rows are emitted. at is the Released value a commit made
// here carries (the transaction's commitTs, or 0 in plain mode).
func (s *state) prepareSchema(r record, m *message, at uint64) error {
	if m.kind == kindDDL {
		return s.ddl(m)
	}
	id := change.TableID{Database: m.database, Table: m.table}
	ri := s.merger.Route(id)
	if ri < 0 {
		return nil
	}
	si := s.shards[id]
	if si != nil && sameTexts(si.texts, m.cols) {
		return nil
	}
	if si != nil && m.typ == "DELETE" && subsetTexts(si.texts, m.cols) {
		return nil // DELETE with only the key columns
	}
	cause := fmt.Sprintf("canal-json %s at %s", m.typ, r.where())
	if si != nil && si.ddl != "" {
		cause = si.ddl
	}
	// An announcement is a cut point: end the unit before it.
	if s.unitRows {
		if s.mode == "tidb" {
			saved := s.released
			if at > s.released {
				s.released = at
			}
			s.dirty = true
			err := s.commit()
			s.released = saved
			if err != nil {
				return err
			}
		} else if err := s.commit(); err != nil {
			return err
		}
	}
	ann, err := s.learn(id, m.cols, m.pkNames, cause, r.where())
	if err != nil {
		if errors.Is(err, errBadRecord) {
			m.rejected = true
			return s.bad(r, err)
		}
		return err
	}
	if ann != nil {
		return s.emit(change.Event{Kind: change.EventSchema, Schema: ann})
	}
	return nil
}

func sameTexts(have [][2]string, cols []colText) bool {
	if len(have) != len(cols) {
		return false
	}
	for i, c := range cols {
		if have[i][0] != c.name || have[i][1] != c.mysqlType {
			return false
		}
	}
	return true
}

func subsetTexts(have [][2]string, cols []colText) bool {
	for _, c := range cols {
		if !slices.Contains(have, [2]string{c.name, c.mysqlType}) {
			return false
		}
	}
	return true
}

// learn registers or changes a shard from a message's columns and key.
func (s *state) learn(id change.TableID, cols []colText, key []string, cause, where string) (*change.TableSchema, error) {
	texts := make([][2]string, len(cols))
	mcols := make([]merge.Column, len(cols))
	types := make([]merge.ColumnType, len(cols))
	names := make([]string, len(cols))
	for i, c := range cols {
		t, err := merge.ParseColumnType(c.mysqlType)
		if err != nil {
			return nil, badf("%s column %s: %v", id, c.name, err)
		}
		texts[i], types[i], names[i] = [2]string{c.name, c.mysqlType}, t, c.name
		mcols[i] = merge.Column{Name: c.name, Type: t, Nullable: !slices.Contains(key, c.name)}
	}
	key = slices.Clone(key)
	si := s.shards[id]
	var ann *change.TableSchema
	var err error
	if si == nil {
		ri := s.merger.Route(id)
		var sh *merge.Shard
		sh, ann, err = s.merger.AddShard(id, ri, mcols, key, cause)
		if err != nil {
			return nil, err
		}
		si = &shardInfo{sh: sh}
		s.shards[id] = si
		s.shardSeq = append(s.shardSeq, id)
	} else {
		if ann, err = s.merger.ChangeShard(si.sh, mcols, key, cause); err != nil {
			return nil, err
		}
	}
	si.texts, si.types, si.names, si.key = texts, types, names, key
	return ann, nil
}

// ddl handles a DDL message in stream order.
func (s *state) ddl(m *message) error {
	id := change.TableID{Database: m.database, Table: m.table}
	si := s.shards[id]
	if si == nil {
		if m.table == "" && m.typ == "QUERY" && strings.Contains(strings.ToUpper(m.sql), "DROP DATABASE") {
			for _, sid := range s.shardSeq {
				if sid.Database == m.database {
					return fmt.Errorf("%w: DROP DATABASE %s drops shard %s of target %s, which cannot be applied to the merged target; statement: %s",
						merge.ErrIncompatibleSchema, m.database, sid, s.shards[sid].sh.Target(), m.sql)
				}
			}
		}
		return nil
	}
	switch m.typ {
	case "ERASE", "TRUNCATE", "RENAME":
		return fmt.Errorf("%w: shard %s of target %s was dropped, truncated or renamed, which shardsync does not apply to the merged target; statement: %s",
			merge.ErrIncompatibleSchema, id, si.sh.Target(), m.sql)
	case "ALTER":
		si.ddl = m.sql // the next DML shows the new columns
	}
	return nil
}

// apply converts a message's rows (the schema is prepared in tidb mode;
// in plain mode here).
func (s *state) apply(r record, m *message) error {
	if s.mode == "plain" {
		if err := s.prepareSchema(r, m, 0); err != nil {
			return err
		}
	}
	if m.kind == kindDDL || m.rejected {
		return nil
	}
	id := change.TableID{Database: m.database, Table: m.table}
	si := s.shards[id]
	if si == nil {
		return nil // not routed, or set aside as bad
	}
	if m.es > 0 {
		s.lastES = m.es
	}
	op := map[string]change.Op{"INSERT": change.Insert, "UPDATE": change.Update, "DELETE": change.Delete}[m.typ]
	rows := make([]change.Row, 0, len(m.data))
	for i := range m.data {
		before, after := m.images(i)
		row := change.Row{Op: op, Target: si.sh.Target(), Source: id}
		var err error
		if before != nil {
			if row.Before, err = s.image(si, before); err != nil {
				return s.bad(r, err)
			}
		}
		if after != nil {
			if row.After, err = s.image(si, after); err != nil {
				return s.bad(r, err)
			}
		}
		rows = append(rows, row)
	}
	s.rows = append(s.rows, rows...)
	s.dirty, s.unitRows = true, len(rows) > 0 || s.unitRows
	if len(s.rows) >= s.batch {
		return s.flushRows()
	}
	return nil
}

func (s *state) image(si *shardInfo, img map[string]*string) ([]change.Value, error) {
	vals := make([]change.Value, len(si.names))
	for i, n := range si.names {
		v := img[n]
		if v == nil {
			continue
		}
		cv, err := si.types[i].ValueFromText(*v, s.loc)
		if err != nil {
			return nil, badf("%s column %s (%s): %v", si.sh.ID(), n, si.texts[i][1], err)
		}
		vals[i] = cv
	}
	return si.sh.TargetRow(vals), nil
}

// buffered is how many TiDB-extension messages wait for a watermark.
func (s *state) buffered() int {
	n := 0
	for _, g := range s.groups {
		n += len(g)
	}
	return n
}
