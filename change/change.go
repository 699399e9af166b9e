// Package change is the vocabulary shared by every stage of shardsync: the
// rows, schemas, source transactions and resume tokens that flow from the
// source (package merge) through the checkpoint coordinator (package twopc)
// to the sinks (packages doris and maxcompute).
//
// It holds types only: no I/O and no logic beyond small accessors, so that
// sinks never need to import the source and the arrows point one way.
package change

import (
	"fmt"
	"time"
)

// Op is what happened to a row.
type Op uint8

// The row operations. Update rows carry both images; Insert only After;
// Delete only Before.
const (
	Insert Op = iota + 1
	Update
	Delete
)

func (o Op) String() string {
	switch o {
	case Insert:
		return "insert"
	case Update:
		return "update"
	case Delete:
		return "delete"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// TableID names a table as database.table.
type TableID struct {
	Database string
	Table    string
}

func (t TableID) String() string { return t.Database + "." + t.Table }

// Kind is the family of a column type. Each kind has exactly one Go
// representation for its values (see Value).
type Kind uint8

// Column kinds. The comment gives the Go type of a non-NULL value.
const (
	KindInvalid   Kind = iota
	KindInt            // int64 (TINYINT..BIGINT signed, MEDIUMINT, YEAR)
	KindUint           // uint64 (unsigned integers)
	KindFloat          // float32 (FLOAT)
	KindDouble         // float64 (DOUBLE, REAL)
	KindDecimal        // Decimal: exact decimal text
	KindString         // string: CHAR, VARCHAR, TEXT (utf8mb4 as UTF-8)
	KindBytes          // []byte: BINARY, VARBINARY, BLOB
	KindDate           // Date: "2006-01-02"
	KindDateTime       // DateTime: "2006-01-02 15:04:05[.ffffff]" wall clock, no zone
	KindTimestamp      // Timestamp: "2006-01-02 15:04:05[.ffffff]" in UTC
	KindTime           // Time: "[-]HHH:MM:SS[.ffffff]"
	KindEnum           // string: the label
	KindSet            // string: comma-separated labels
	KindJSON           // JSON: JSON text
	KindBit            // uint64: the bits, right-aligned
	KindYear           // int64: the year (0 for the zero year)
)

var kindNames = [...]string{
	KindInvalid: "invalid", KindInt: "int", KindUint: "uint", KindFloat: "float",
	KindDouble: "double", KindDecimal: "decimal", KindString: "string", KindBytes: "bytes",
	KindDate: "date", KindDateTime: "datetime", KindTimestamp: "timestamp", KindTime: "time",
	KindEnum: "enum", KindSet: "set", KindJSON: "json", KindBit: "bit", KindYear: "year",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Decimal is an exact decimal number as text, e.g. "-12.50". Never a float.
type Decimal string

// Date is a calendar date "YYYY-MM-DD". MySQL zero dates arrive as
// "0000-00-00"; sinks decide how to store them and document it.
type Date string

// DateTime is a wall-clock date and time without a zone,
// "YYYY-MM-DD HH:MM:SS" with an optional fraction of up to 6 digits.
type DateTime string

// Timestamp is an instant rendered in UTC, same layout as DateTime.
type Timestamp string

// Time is a MySQL TIME value "[-]HH:MM:SS[.ffffff]"; hours may exceed 24.
type Time string

// JSON is JSON text as MySQL would print it.
type JSON string

// Value is a column value: nil for NULL, otherwise the Go type its column's
// Kind names.
type Value = any

// Type describes one column's type.
type Type struct {
	Kind      Kind
	SQL       string   // the source type as MySQL prints it, e.g. "decimal(10,2) unsigned"
	Length    int      // characters for strings, bytes for binary, bits for BIT
	Precision int      // DECIMAL precision; fractional digits of DATETIME/TIMESTAMP/TIME
	Scale     int      // DECIMAL scale
	Elems     []string // ENUM/SET labels in definition order
}

// Column is one column of a table schema.
type Column struct {
	Name     string
	Type     Type
	Nullable bool
	// Default is the value, as SQL literal text without quotes (e.g. "7",
	// "abc", "2024-01-31"), that rows existing when the column is added
	// hold: the source filled them with it (ADD COLUMN … DEFAULT x, or the
	// implicit default of a NOT NULL column). nil: NULL. Set on AddColumn
	// changes (and on the column in the announced Schema); a sink adding the
	// column must give existing rows this value.
	Default *string
}

// Schema is the shape of a table at one moment. Key holds the primary key
// column names in key order; it is empty for a table without a primary key.
type Schema struct {
	Columns []Column
	Key     []string
}

// Index returns the position of the named column, or -1.
func (s *Schema) Index(name string) int {
	for i, c := range s.Columns {
		if c.Name == name {
			return i
		}
	}
	return -1
}

// Row is one changed row routed to its target table. Before and After are
// aligned with the target's current Schema (the last TableSchema event the
// stream carried for Target); columns a shard does not have are nil.
// The metadata columns (database_name, table_name) are part of the target
// schema and filled in by the source.
type Row struct {
	Op     Op
	Target TableID // the merged table the row goes to
	Source TableID // the shard it came from
	Before []Value // Update and Delete
	After  []Value // Insert and Update
}

// TableSchema announces the schema of a target table. The first one for a
// target comes before its first row; later ones are schema changes (a column
// added at the end, a type widened) and come in stream order, between whole
// source transactions.
type TableSchema struct {
	Target TableID
	Schema Schema
	// Changes lists what differs from the previous schema of Target, in
	// words a sink can apply: added columns and widened types. Empty for the
	// first announcement.
	Changes []SchemaChange
	// Cause is the source statement that led here, for messages.
	Cause string
}

// SchemaChange is one compatible change to a target schema.
type SchemaChange struct {
	Kind   SchemaChangeKind
	Column Column // the added or widened column, with its new type
}

// SchemaChangeKind says what a SchemaChange does.
type SchemaChangeKind uint8

// The compatible schema changes shardsync applies to targets.
const (
	AddColumn SchemaChangeKind = iota + 1
	WidenColumn
)

// Token is an opaque resume token produced by the source at a source
// transaction boundary: opening the source from it continues with the next
// whole transaction, losing nothing and repeating nothing. The ledger stores
// it as bytes; only package merge reads it.
type Token []byte

// EventKind tells which field of an Event is set.
type EventKind uint8

// The kinds of Event the source emits.
const (
	EventRows     EventKind = iota + 1 // Rows: part of the current source transaction
	EventCommit                        // the current source transaction ended at Token
	EventSchema                        // Schema: a target's schema (before rows that need it)
	EventProgress                      // Token advanced without rows (heartbeat, skipped txn, finished chunk)
	// EventShardDelete: every row of one shard leaves its target (TRUNCATE
	// of the shard, or DROP/RENAME when the job is set to delete). Token is
	// the boundary right after the statement; the event is its own source
	// transaction.
	EventShardDelete
)

// ShardDelete asks the sinks to remove from Target every row whose
// metadata columns name Shard: the rows where DatabaseColumn = Shard.Database
// and TableColumn = Shard.Table. Applying it twice is the same as once as
// long as no newer row of the shard reached the target in between, which
// the coordinator's ordering guarantees.
type ShardDelete struct {
	Target         TableID `json:"target"`
	Shard          TableID `json:"shard"`
	DatabaseColumn string  `json:"database_column"`
	TableColumn    string  `json:"table_column"`
	// Cause is the source statement, for messages and the ledger.
	Cause string `json:"cause,omitempty"`
}

// Event is one item of the ordered change stream. Rows of one source
// transaction may span several EventRows events (huge transactions are
// streamed, not collected) and end with one EventCommit. A consumer may cut
// a checkpoint only right after an EventCommit, EventSchema or EventProgress.
type Event struct {
	Kind   EventKind
	Rows   []Row
	Schema *TableSchema
	// Deletes are set on EventShardDelete: every shard one statement
	// removes (DROP DATABASE may name several), applied together.
	Deletes []ShardDelete
	Token   Token     // set on EventCommit, EventProgress and EventShardDelete
	Time    time.Time // source commit time (binlog event time); zero for snapshot rows
}
