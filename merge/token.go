package merge

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/shardsync/shardsync/change"
)

// binPos is a binlog position at a transaction boundary. File/Pos are
// always set (they order events for the snapshot filter); GTID is the
// server's GTID position at the same boundary when the server has GTIDs
// (MariaDB domain-server-seq list, or a MySQL executed GTID set).
type binPos struct {
	File string `json:"file"`
	Pos  uint32 `json:"pos"`
	GTID string `json:"gtid,omitempty"`
}

func (p binPos) String() string {
	if p.GTID != "" {
		return fmt.Sprintf("%s:%d (gtid %s)", p.File, p.Pos, p.GTID)
	}
	return fmt.Sprintf("%s:%d", p.File, p.Pos)
}

// compareFilePos orders two positions of one server's binlog.
func compareFilePos(aFile string, aPos uint32, bFile string, bPos uint32) int {
	if aFile != bFile {
		an, aok := binlogSeq(aFile)
		bn, bok := binlogSeq(bFile)
		if aok && bok && an != bn {
			return cmp3(an < bn, an > bn)
		}
		if len(aFile) != len(bFile) {
			return cmp3(len(aFile) < len(bFile), len(aFile) > len(bFile))
		}
		return strings.Compare(aFile, bFile)
	}
	return cmp3(aPos < bPos, aPos > bPos)
}

func binlogSeq(f string) (uint64, bool) {
	i := strings.LastIndexByte(f, '.')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(f[i+1:], 10, 64)
	return n, err == nil
}

// tokenState is what a change.Token holds (JSON).
type tokenState struct {
	Version int    `json:"v"`
	Routes  string `json:"routes"` // fingerprint of the routes
	Flavor  string `json:"flavor"`
	// Pos is where the binlog is read from on resume: during the snapshot
	// the position taken before the tables were listed; afterwards the
	// boundary after the last emitted transaction.
	Pos binPos `json:"pos"`
	// SnapshotDone is set once every table's snapshot was emitted.
	SnapshotDone bool `json:"snapshot_done"`
	// Tables are the snapshotted tables whose chunk high watermarks still
	// filter binlog events (all tables during the snapshot).
	Tables []*tableSnap `json:"tables,omitempty"`
	// XA are the prepared XA transactions read before Pos whose XA COMMIT
	// or XA ROLLBACK was not read yet, with their row images (see xa.go).
	XA []*xaPrepared `json:"xa,omitempty"`
	// Schemas is the schema history at Pos: every shard's columns as of
	// the token's position and every target's columns as announced, so a
	// resumed stream reads the events after Pos with the schema they were
	// written under, and the DDL after Pos evolves it in order. Absent in
	// tokens of earlier versions (then the schemas are read from the
	// server at start).
	Schemas *schemaState `json:"schemas,omitempty"`
}

// schemaState is the schema part of a token. Shards usually share their
// shape, so each distinct column list is stored once in Shapes and shards
// refer to it by index (a token is written with every epoch).
type schemaState struct {
	Shapes  [][]colState  `json:"shapes"`
	Targets []targetState `json:"targets"`
}

type targetState struct {
	DB     string       `json:"db"`
	Table  string       `json:"table"`
	Cols   []colState   `json:"cols"`
	Key    []string     `json:"key,omitempty"`
	KeyOf  string       `json:"key_of,omitempty"`
	Shards []shardState `json:"shards"`
}

type shardState struct {
	DB    string   `json:"db"`
	Table string   `json:"table"`
	Shape int      `json:"shape"` // index in schemaState.Shapes
	Key   []string `json:"key,omitempty"`
}

type colState struct {
	Name     string   `json:"name"`
	Base     string   `json:"base"`
	Unsigned bool     `json:"unsigned,omitempty"`
	Length   int      `json:"len,omitempty"`
	Prec     int      `json:"prec,omitempty"`
	Scale    int      `json:"scale,omitempty"`
	Elems    []string `json:"elems,omitempty"`
	Charset  string   `json:"charset,omitempty"`
	Nullable bool     `json:"null,omitempty"`
	Def      *string  `json:"def,omitempty"`
	DefExpr  bool     `json:"def_expr,omitempty"`
	Fill     *string  `json:"fill,omitempty"`
}

func colsState(cols []shardCol) []colState {
	out := make([]colState, len(cols))
	for i, c := range cols {
		t := c.typ
		out[i] = colState{Name: c.name, Base: t.base, Unsigned: t.unsigned, Length: t.length, Prec: t.prec, Scale: t.scale,
			Elems: t.elems, Charset: t.charset, Nullable: c.nullable, Def: c.def, DefExpr: c.defExpr, Fill: c.fill}
	}
	return out
}

func colsFromState(cs []colState) []shardCol {
	out := make([]shardCol, len(cs))
	for i, c := range cs {
		out[i] = shardCol{name: c.Name, typ: colType{base: c.Base, unsigned: c.Unsigned, length: c.Length, prec: c.Prec, scale: c.Scale,
			elems: c.Elems, charset: c.Charset}, nullable: c.Nullable, def: c.Def, defExpr: c.DefExpr, fill: c.Fill}
	}
	return out
}

// schemaState captures the targets and shards (producer goroutine only).
func (s *Source) schemaState() *schemaState {
	st := &schemaState{}
	shapes := map[string]int{}
	shape := func(cols []shardCol) int {
		cs := colsState(cols)
		b, err := json.Marshal(cs)
		if err != nil {
			panic(fmt.Sprintf("encoding a shard shape: %v", err)) // plain data: cannot fail
		}
		i, ok := shapes[string(b)]
		if !ok {
			i = len(st.Shapes)
			shapes[string(b)] = i
			st.Shapes = append(st.Shapes, cs)
		}
		return i
	}
	for _, id := range s.targetOrder {
		t := s.targets[id]
		ts := targetState{DB: id.Database, Table: id.Table, Cols: colsState(t.cols), Key: t.key, KeyOf: t.keyOf.String()}
		for _, sid := range sortedIDs(t.shards) {
			sh := t.shards[sid]
			ts.Shards = append(ts.Shards, shardState{DB: sid.Database, Table: sid.Table, Shape: shape(sh.cols), Key: sh.key})
		}
		st.Targets = append(st.Targets, ts)
	}
	return st
}

// restoreSchemas registers the targets and shards a token recorded.
func (s *Source) restoreSchemas(st *schemaState) error {
	for _, ts := range st.Targets {
		id := change.TableID{Database: ts.DB, Table: ts.Table}
		tg := &target{id: id, route: -1, cols: colsFromState(ts.Cols), key: ts.Key, shards: map[change.TableID]*shard{}}
		for _, ss := range ts.Shards {
			sid := change.TableID{Database: ss.DB, Table: ss.Table}
			ri := routeOf(s.sh.cfg.Routes, sid)
			if ri < 0 || s.sh.cfg.Routes[ri].Target != id {
				return fmt.Errorf("%w: the token routes shard %s to %s, which the routes no longer do; changing routes needs a fresh snapshot (open without a token)", ErrBadToken, sid, id)
			}
			if ss.Shape < 0 || ss.Shape >= len(st.Shapes) {
				return fmt.Errorf("%w: shard %s refers to schema shape %d of %d", ErrBadToken, sid, ss.Shape, len(st.Shapes))
			}
			tg.route = ri
			if sid.String() == ts.KeyOf {
				tg.keyOf = sid
			}
			sh := &shard{id: sid, target: tg, cols: colsFromState(st.Shapes[ss.Shape]), key: ss.Key}
			tg.shards[sid] = sh
			s.shards[sid] = sh
		}
		if tg.route < 0 {
			continue // a target without shards: announced again when one appears
		}
		for _, sh := range tg.shards {
			sh.remap(&s.sh.cfg)
		}
		tg.setFillRow()
		s.targets[id] = tg
		s.targetOrder = append(s.targetOrder, id)
	}
	return nil
}

// tableSnap is one table's snapshot progress.
type tableSnap struct {
	DB    string `json:"db"`
	Table string `json:"table"`
	// Whole: the table is read in one consistent-snapshot transaction (no
	// primary key, or a key whose order Go cannot reproduce); otherwise
	// every chunk is its own transaction with its own high watermark.
	Whole    bool          `json:"whole,omitempty"`
	KeyKinds []change.Kind `json:"key_kinds,omitempty"`
	// Chunks are the finished chunks in key order: chunk i holds the keys
	// in (Chunks[i-1].Hi, Chunks[i].Hi]; the last chunk of a finished
	// table has no Hi (unbounded).
	Chunks []chunkDone `json:"chunks,omitempty"`
	Done   bool        `json:"done,omitempty"`
	Rows   int64       `json:"rows,omitempty"`
	// Cut: the table vanished while it was read, so its snapshot ended
	// early; its DROP deletes the rows read of it (lifecycle.go).
	Cut bool `json:"cut,omitempty"`

	hi    [][]change.Value // decoded Chunks[i].Hi
	maxHW binPos
}

type chunkDone struct {
	Hi []string `json:"hi,omitempty"`
	HW binPos   `json:"hw"`
}

func (t *tableSnap) id() change.TableID { return change.TableID{Database: t.DB, Table: t.Table} }

// prepare decodes the chunk bounds and computes the maximum watermark.
func (t *tableSnap) prepare() error {
	t.hi = make([][]change.Value, len(t.Chunks))
	t.maxHW = binPos{}
	for i, c := range t.Chunks {
		if c.Hi != nil {
			k, err := decodeKey(c.Hi, t.KeyKinds)
			if err != nil {
				return fmt.Errorf("%w: table %s chunk %d: %w", ErrBadToken, t.id(), i, err)
			}
			t.hi[i] = k
		}
		if i == 0 || compareFilePos(c.HW.File, c.HW.Pos, t.maxHW.File, t.maxHW.Pos) > 0 {
			t.maxHW = c.HW
		}
	}
	return nil
}

// addChunk records a finished chunk.
func (t *tableSnap) addChunk(hi []change.Value, hw binPos, rows int64) {
	c := chunkDone{HW: hw}
	if hi != nil {
		c.Hi = encodeKey(hi)
	}
	t.Chunks = append(t.Chunks, c)
	t.hi = append(t.hi, hi)
	t.Rows += rows
	if len(t.Chunks) == 1 || compareFilePos(hw.File, hw.Pos, t.maxHW.File, t.maxHW.Pos) > 0 {
		t.maxHW = hw
	}
	if hi == nil {
		t.Done = true
	}
}

// emitAt tells whether a binlog change of key (nil for a table read
// whole) at event position file:pos is not already in the snapshot.
func (t *tableSnap) emitAt(key []change.Value, file string, pos uint32) bool {
	if compareFilePos(file, pos, t.maxHW.File, t.maxHW.Pos) > 0 {
		return true
	}
	i := 0
	if !t.Whole && key != nil {
		lo, hi := 0, len(t.hi)-1
		i = len(t.hi)
		for lo <= hi { // first chunk whose upper bound ≥ key
			m := (lo + hi) / 2
			if t.hi[m] == nil || compareKeys(key, t.hi[m]) <= 0 {
				i, hi = m, m-1
			} else {
				lo = m + 1
			}
		}
	}
	if i < 0 || i >= len(t.Chunks) {
		return true
	}
	hw := t.Chunks[i].HW
	return compareFilePos(file, pos, hw.File, hw.Pos) > 0
}

func routesFingerprint(routes []Route, dbCol, tblCol string) string {
	h := sha256.New()
	for _, r := range routes {
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00", r.Databases, r.Tables, r.Target)
	}
	fmt.Fprintf(h, "%s\x00%s", dbCol, tblCol)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func parseToken(tok change.Token) (*tokenState, error) {
	var st tokenState
	if err := json.Unmarshal(tok, &st); err != nil {
		return nil, fmt.Errorf("%w: it is not a shardsync source token: %w", ErrBadToken, err)
	}
	if st.Version != 1 {
		return nil, fmt.Errorf("%w: token version %d is not supported", ErrBadToken, st.Version)
	}
	for _, t := range st.Tables {
		if err := t.prepare(); err != nil {
			return nil, err
		}
	}
	return &st, nil
}

// tokenEncoder caches the encoding of the snapshot tables, which changes
// rarely once the binlog phase runs.
type tokenEncoder struct {
	tablesJSON json.RawMessage
	dirty      bool
	// xaJSON caches the encoding of the prepared XA transactions, which
	// changes only at an XA PREPARE, COMMIT or ROLLBACK.
	xaJSON  json.RawMessage
	xaDirty bool
	// schemas renders the current schemas; schemasJSON caches it until
	// schemaDirty (set on every shard or target schema change).
	schemas     func() *schemaState
	schemasJSON json.RawMessage
	schemaDirty bool
}

func (e *tokenEncoder) encode(st *tokenState) change.Token {
	if e.dirty || e.tablesJSON == nil {
		b, err := json.Marshal(st.Tables)
		if err != nil {
			panic(fmt.Sprintf("encoding token tables: %v", err)) // plain data: cannot fail
		}
		e.tablesJSON, e.dirty = b, false
	}
	if e.xaDirty || (e.xaJSON == nil && len(st.XA) > 0) {
		e.xaJSON, e.xaDirty = nil, false
		if len(st.XA) > 0 {
			b, err := json.Marshal(st.XA)
			if err != nil {
				panic(fmt.Sprintf("encoding token XA transactions: %v", err)) // plain data: cannot fail
			}
			e.xaJSON = b
		}
	}
	if e.schemas != nil && (e.schemaDirty || e.schemasJSON == nil) {
		b, err := json.Marshal(e.schemas())
		if err != nil {
			panic(fmt.Sprintf("encoding token schemas: %v", err)) // plain data: cannot fail
		}
		e.schemasJSON, e.schemaDirty = b, false
	}
	hdr := struct {
		Version      int             `json:"v"`
		Routes       string          `json:"routes"`
		Flavor       string          `json:"flavor"`
		Pos          binPos          `json:"pos"`
		SnapshotDone bool            `json:"snapshot_done"`
		Tables       json.RawMessage `json:"tables,omitempty"`
		XA           json.RawMessage `json:"xa,omitempty"`
		Schemas      json.RawMessage `json:"schemas,omitempty"`
	}{st.Version, st.Routes, st.Flavor, st.Pos, st.SnapshotDone, e.tablesJSON, e.xaJSON, e.schemasJSON}
	if len(st.Tables) == 0 {
		hdr.Tables = nil
	}
	if len(st.XA) == 0 {
		hdr.XA = nil
	}
	b, err := json.Marshal(hdr)
	if err != nil {
		panic(fmt.Sprintf("encoding token: %v", err))
	}
	return b
}
