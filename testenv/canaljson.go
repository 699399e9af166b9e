package testenv

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strconv"
)

// CanalWorkload generates canal-json change streams, to the message shapes
// documented for TiCDC (canal-json protocol, one row per message, with or
// without enable-tidb-extension) and for Alibaba Canal (flat messages,
// 1..N rows per rows event), from a model of sharded "orders" tables. The
// model is the expected merged state; every change bumps the row's ver
// column, so a consumer can check each change was applied exactly once and
// in order.
//
// Columns: id bigint (key), name varchar(32), amount decimal(10,2),
// ver int, at datetime(3).
type CanalWorkload struct {
	Shards     []ShardID
	Partitions int32
	// Flavor: "tidb" (TiCDC with the TiDB extension: commitTs and
	// watermarks), "ticdc" (TiCDC without it), "canal" (Alibaba Canal).
	Flavor string
	rnd    *rand.Rand
	ts     uint64 // last commit TSO
	rows   map[ShardID]map[int64]CanalRow
	nextID map[ShardID]int64
	// sent is every message produced, for re-sends.
	sent []CanalMsg
	// held are messages delayed to after the next transaction.
	held []CanalMsg
	ops  []CanalOp
}

// CanalOp is one change the model made: an upsert of row version Ver, or
// the delete of that version.
type CanalOp struct {
	Shard  ShardID
	ID     int64
	Ver    int64
	Delete bool
}

// CanalRow is one row of the model.
type CanalRow struct {
	ID     int64
	Name   string
	Amount string
	Ver    int64
	At     string
}

// CanalMsg is one Kafka record to produce.
type CanalMsg struct {
	Partition int32
	Value     []byte
	CommitTs  uint64 // 0 for watermarks and flavours without commitTs
}

// NewCanalWorkload makes a workload over shards.
func NewCanalWorkload(seed uint64, flavor string, partitions int32, shards ...ShardID) *CanalWorkload {
	w := &CanalWorkload{Shards: shards, Partitions: partitions, Flavor: flavor, rnd: rand.New(rand.NewPCG(seed, seed^0x9e37)),
		ts: 451973165907443717, rows: map[ShardID]map[int64]CanalRow{}, nextID: map[ShardID]int64{}}
	for _, s := range shards {
		w.rows[s] = map[int64]CanalRow{}
		w.nextID[s] = 1
	}
	return w
}

var canalTypes = [][2]string{{"id", "bigint"}, {"name", "varchar(32)"}, {"amount", "decimal(10,2)"}, {"ver", "int"}, {"at", "datetime(3)"}}

func (w *CanalWorkload) partitionOf(s ShardID, id int64) int32 {
	if w.Flavor == "canal" {
		return 0
	}
	h := fnv.New32a()
	fmt.Fprintf(h, "%s.%s.%d", s.DB, s.Table, id)
	return int32(h.Sum32() % uint32(w.Partitions))
}

type canalChange struct {
	shard       ShardID
	typ         string
	before, row *CanalRow
}

// Txn makes one source transaction of 1..4 row changes and returns its
// messages (possibly delayed ones of an earlier transaction too).
func (w *CanalWorkload) Txn() []CanalMsg {
	w.ts += 1 << 18 * uint64(1+w.rnd.IntN(3))
	n := 1 + w.rnd.IntN(4)
	var changes []canalChange
	touched := map[string]bool{}
	for range n {
		s := w.Shards[w.rnd.IntN(len(w.Shards))]
		m := w.rows[s]
		op := w.rnd.IntN(10)
		switch {
		case op < 5 || len(m) < 3:
			id := w.nextID[s]
			w.nextID[s]++
			r := CanalRow{ID: id, Name: fmt.Sprintf("n%d", w.rnd.IntN(1000)), Amount: fmt.Sprintf("%d.%02d", w.rnd.IntN(10000), w.rnd.IntN(100)), Ver: 1, At: w.at()}
			m[id] = r
			changes = append(changes, canalChange{s, "INSERT", nil, &r})
			w.ops = append(w.ops, CanalOp{s, id, 1, false})
			touched[fmt.Sprint(s, id)] = true
		default:
			id := w.pick(m)
			if touched[fmt.Sprint(s, id)] {
				continue // a row appears once per TiCDC transaction
			}
			touched[fmt.Sprint(s, id)] = true
			old := m[id]
			if op < 8 {
				r := old
				r.Name, r.Ver, r.At = fmt.Sprintf("u%d", w.rnd.IntN(1000)), old.Ver+1, w.at()
				r.Amount = fmt.Sprintf("%d.%02d", w.rnd.IntN(10000), w.rnd.IntN(100))
				m[id] = r
				changes = append(changes, canalChange{s, "UPDATE", &old, &r})
				w.ops = append(w.ops, CanalOp{s, id, r.Ver, false})
			} else {
				delete(m, id)
				changes = append(changes, canalChange{s, "DELETE", &old, nil})
				w.ops = append(w.ops, CanalOp{s, id, old.Ver, true})
			}
		}
	}
	var msgs []CanalMsg
	if w.Flavor == "canal" {
		// One flat message per (shard, type) run, as one rows event.
		for i := 0; i < len(changes); {
			j := i + 1
			for j < len(changes) && changes[j].shard == changes[i].shard && changes[j].typ == changes[i].typ {
				j++
			}
			msgs = append(msgs, w.message(changes[i:j]))
			i = j
		}
	} else {
		for _, c := range changes {
			msgs = append(msgs, w.message([]canalChange{c}))
		}
	}
	if w.Flavor == "tidb" && w.held == nil && w.rnd.IntN(5) == 0 {
		// Hold this transaction until after the next one: a partition then
		// carries an older commitTs after a newer one (TiCDC keeps order
		// per table, not across tables), the case that made "drop below
		// the highest commitTs seen" lose data.
		w.held = msgs
		return nil
	}
	out := append(msgs, w.held...)
	w.held = nil
	w.sent = append(w.sent, out...)
	return out
}

func (w *CanalWorkload) at() string {
	return fmt.Sprintf("2024-08-%02d %02d:%02d:%02d.%03d", 1+w.rnd.IntN(28), w.rnd.IntN(24), w.rnd.IntN(60), w.rnd.IntN(60), w.rnd.IntN(1000))
}

func (w *CanalWorkload) pick(m map[int64]CanalRow) int64 {
	ids := make([]int64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids[w.rnd.IntN(len(ids))]
}

func (r CanalRow) image() map[string]*string {
	s := func(v string) *string { return &v }
	return map[string]*string{"id": s(strconv.FormatInt(r.ID, 10)), "name": s(r.Name), "amount": s(r.Amount),
		"ver": s(strconv.FormatInt(r.Ver, 10)), "at": s(r.At)}
}

// orderedTypes renders mysqlType/sqlType in column order.
type orderedTypes struct{ sql bool }

func (o orderedTypes) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	codes := map[string]int{"id": -5, "name": 12, "amount": 3, "ver": 4, "at": 93}
	for i, c := range canalTypes {
		if i > 0 {
			b = append(b, ',')
		}
		k, _ := json.Marshal(c[0])
		b = append(b, k...)
		b = append(b, ':')
		if o.sql {
			b = strconv.AppendInt(b, int64(codes[c[0]]), 10)
		} else {
			v, _ := json.Marshal(c[1])
			b = append(b, v...)
		}
	}
	return append(b, '}'), nil
}

func (w *CanalWorkload) message(cs []canalChange) CanalMsg {
	c0 := cs[0]
	msg := map[string]any{
		"id": 0, "database": c0.shard.DB, "table": c0.shard.Table, "pkNames": []string{"id"}, "isDdl": false,
		"type": c0.typ, "es": int64(w.ts >> 18), "ts": int64(w.ts>>18) + 1, "sql": "",
		"sqlType": orderedTypes{sql: true}, "mysqlType": orderedTypes{}, "old": nil,
	}
	var data, old []map[string]*string
	var part int32
	for _, c := range cs {
		switch c.typ {
		case "INSERT":
			data = append(data, c.row.image())
			part = w.partitionOf(c.shard, c.row.ID)
		case "DELETE":
			data = append(data, c.before.image())
			part = w.partitionOf(c.shard, c.before.ID)
		case "UPDATE":
			data = append(data, c.row.image())
			o := c.before.image()
			if w.Flavor == "canal" { // only the changed columns
				for k, v := range c.row.image() {
					if *o[k] == *v {
						delete(o, k)
					}
				}
			}
			old = append(old, o)
			part = w.partitionOf(c.shard, c.row.ID)
		}
	}
	msg["data"] = data
	if old != nil {
		msg["old"] = old
	}
	var commitTs uint64
	switch w.Flavor {
	case "tidb":
		msg["_tidb"] = map[string]any{"commitTs": w.ts}
		commitTs = w.ts
	case "canal":
		msg["id"] = w.rnd.IntN(1000) + 1
		msg["gtid"] = ""
		msg["mysqlType"] = canalFullTypes{}
	}
	b, err := json.Marshal(msg)
	if err != nil {
		panic(err)
	}
	return CanalMsg{Partition: part, Value: b, CommitTs: commitTs}
}

// canalFullTypes is Canal's mysqlType: the full column types.
type canalFullTypes struct{}

func (canalFullTypes) MarshalJSON() ([]byte, error) {
	return []byte(`{"id":"bigint(20)","name":"varchar(32)","amount":"decimal(10,2)","ver":"int(11)","at":"datetime(3)"}`), nil
}

// Watermark returns a TIDB_WATERMARK for every partition saying every
// transaction made so far has been sent (held ones are released first).
func (w *CanalWorkload) Watermark() []CanalMsg {
	out := w.held
	w.held = nil
	w.sent = append(w.sent, out...)
	wm := w.ts + 1
	for p := range w.Partitions {
		b, _ := json.Marshal(map[string]any{"id": 0, "database": "", "table": "", "pkNames": nil, "isDdl": false,
			"type": "TIDB_WATERMARK", "es": int64(wm >> 18), "ts": int64(wm >> 18), "sql": "", "sqlType": nil,
			"mysqlType": nil, "data": nil, "old": nil, "_tidb": map[string]any{"watermarkTs": wm}})
		out = append(out, CanalMsg{Partition: p, Value: b})
	}
	return out
}

// Resend returns the last n data messages again, as TiCDC sends after its
// restart (from its checkpoint, which may lie below watermarks it sent).
func (w *CanalWorkload) Resend(n int) []CanalMsg {
	n = min(n, len(w.sent))
	return slices.Clone(w.sent[len(w.sent)-n:])
}

// Ops lists every change made so far, in order.
func (w *CanalWorkload) Ops() []CanalOp { return w.ops }

// Expected returns the model: shard → id → row.
func (w *CanalWorkload) Expected() map[ShardID]map[int64]CanalRow { return w.rows }
