package postgres

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/merge"
)

// tokenState is what a resume token holds. Tokens are JSON with
// "kind":"postgres".
type tokenState struct {
	Kind   string `json:"kind"`
	V      int    `json:"v"`
	Routes string `json:"routes"`
	Slot   string `json:"slot"`
	// LSN is where START_REPLICATION resumes: the end of the last emitted
	// transaction (Commit.TransactionEndLSN), the slot's consistent point
	// before any, or an idle keepalive's WAL end with nothing in flight.
	LSN    uint64        `json:"lsn"`
	Tables []*tableState `json:"tables"`
}

// tableState is one shard: its schema at LSN and its snapshot.
type tableState struct {
	Schema string    `json:"schema"`
	Table  string    `json:"table"`
	Cols   []colInfo `json:"cols"`
	Key    []string  `json:"key,omitempty"`
	// Full: REPLICA IDENTITY FULL, so deletes carry whole rows. Otherwise a
	// delete carries only the key and the other columns are nullable in
	// the target (a NOT NULL column would refuse the delete's row).
	Full bool `json:"full,omitempty"`
	// Chunked: the key is one integer column and the table is read in
	// key ranges; otherwise in one piece.
	Chunked bool    `json:"chunked,omitempty"`
	Done    bool    `json:"done,omitempty"`
	Rows    int64   `json:"rows,omitempty"`
	NChunks int     `json:"nchunks,omitempty"`
	Chunks  []chunk `json:"chunks,omitempty"` // dropped once no snapshot can matter
	// Est is the server's row estimate when found (status only).
	Est int64 `json:"est,omitempty"`
}

// colInfo is a shard column as the token keeps it.
type colInfo struct {
	Name     string `json:"name"`
	Type     pgType `json:"type"`
	Nullable bool   `json:"null,omitempty"`
}

// chunk is one key range read in one MVCC snapshot: keys above the
// previous chunk's Hi up to Hi (nil: no upper bound).
type chunk struct {
	Hi   *int64 `json:"hi,omitempty"`
	Snap string `json:"snap"` // pg_current_snapshot(): xmin:xmax:xip,…
	// After is pg_current_wal_insert_lsn() read after the snapshot: a
	// transaction whose commit record starts at or after it is not
	// visible in Snap.
	After uint64 `json:"after"`
}

func (t *tableState) id() change.TableID { return change.TableID{Database: t.Schema, Table: t.Table} }

func (t *tableState) shardColumns() []merge.ShardColumn {
	out := make([]merge.ShardColumn, len(t.Cols))
	for i, c := range t.Cols {
		out[i] = merge.ShardColumn{Name: c.Name, Type: mapType(c.Type), Nullable: c.Nullable || (!t.Full && !slices.Contains(t.Key, c.Name))}
	}
	return out
}

// chunkOf returns the chunk holding key k (nil k: the table's only chunk).
func (t *tableState) chunkOf(k *int64) *chunk {
	if len(t.Chunks) == 0 {
		return nil
	}
	if !t.Chunked || k == nil {
		return &t.Chunks[len(t.Chunks)-1]
	}
	i, _ := slices.BinarySearchFunc(t.Chunks, *k, func(c chunk, k int64) int {
		if c.Hi == nil || *c.Hi >= k {
			return 1
		}
		return -1
	})
	if i >= len(t.Chunks) {
		return nil // beyond the chunks read so far
	}
	return &t.Chunks[i]
}

func parseToken(tok change.Token) (*tokenState, error) {
	var st tokenState
	if err := json.Unmarshal(tok, &st); err != nil || st.Kind != "postgres" {
		return nil, fmt.Errorf("%w: not a PostgreSQL source token", merge.ErrBadToken)
	}
	if st.V != 1 {
		return nil, fmt.Errorf("%w: PostgreSQL token version %d is unknown to this shardsync", merge.ErrBadToken, st.V)
	}
	return &st, nil
}

func (st *tokenState) encode() change.Token {
	b, err := json.Marshal(st)
	if err != nil {
		panic(err) // plain data
	}
	return b
}

// IsToken reports whether tok was made by this source kind.
func IsToken(tok change.Token) bool {
	_, err := parseToken(tok)
	return err == nil
}

// DescribeToken decodes a token for status displays.
func DescribeToken(tok change.Token) (merge.TokenInfo, error) {
	st, err := parseToken(tok)
	if err != nil {
		return merge.TokenInfo{}, err
	}
	info := merge.TokenInfo{Flavor: "postgres", Position: fmt.Sprintf("slot %s at LSN %s", st.Slot, pglogrepl.LSN(st.LSN)), SnapshotDone: true}
	for _, t := range st.Tables {
		info.Tables = append(info.Tables, merge.TableProgress{Table: t.id(), Rows: t.Rows, Chunks: t.NChunks, Whole: !t.Chunked, Done: t.Done})
		if !t.Done {
			info.SnapshotDone = false
		}
	}
	return info, nil
}

// pgSnapshot is a parsed pg_snapshot.
type pgSnapshot struct {
	xmin, xmax uint64
	xip        []uint64
}

func parseSnapshot(s string) (pgSnapshot, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return pgSnapshot{}, fmt.Errorf("snapshot %q is not xmin:xmax:xip", s)
	}
	var sn pgSnapshot
	var err error
	if sn.xmin, err = strconv.ParseUint(parts[0], 10, 64); err != nil {
		return sn, fmt.Errorf("snapshot %q: %w", s, err)
	}
	if sn.xmax, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
		return sn, fmt.Errorf("snapshot %q: %w", s, err)
	}
	if parts[2] != "" {
		for _, x := range strings.Split(parts[2], ",") {
			v, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return sn, fmt.Errorf("snapshot %q: %w", s, err)
			}
			sn.xip = append(sn.xip, v)
		}
	}
	return sn, nil
}

// visible reports whether the committed transaction with 32-bit xid x was
// visible in the snapshot (committed before it was taken). The 64-bit xid
// is the one nearest the snapshot's xmax with x's low 32 bits.
func (sn pgSnapshot) visible(x uint32) bool {
	full := int64(sn.xmax) + int64(int32(x-uint32(sn.xmax)))
	if full < 0 {
		return true
	}
	f := uint64(full)
	switch {
	case f < sn.xmin:
		return true
	case f >= sn.xmax:
		return false
	}
	return !slices.Contains(sn.xip, f)
}
