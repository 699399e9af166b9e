// Package postgres is shardsync's PostgreSQL source: it follows one
// database through a logical replication slot with the pgoutput plugin
// (github.com/jackc/pglogrepl over pgx/v5), snapshots the matched tables
// without locks, and emits the same ordered change stream as the MySQL
// source (package change), merged by package merge's rules.
//
// # Exactness
//
// The slot is created (after the publication holds every matched table)
// before anything is read, at its consistent point C: every transaction
// committing after C is in the stream, none before it. Tables are then read
// in primary-key chunks, each chunk in its own REPEATABLE READ transaction
// whose MVCC snapshot (pg_current_snapshot()) is kept in the resume token
// with the chunk's key range. Streaming starts at C once every table is
// read. A streamed transaction's changes to a row are dropped when the
// transaction (its xid, from the Begin message) is visible in the snapshot
// of the chunk holding the row — the chunk already has them — and emitted
// otherwise. Visibility is decided exactly from the snapshot's xmin, xmax
// and in-progress list, so each committed change reaches the sinks once,
// whichever chunk it falls into and whenever the chunk was read. A chunk's
// snapshot is taken in a transaction of its own, so a crash mid-snapshot
// resumes after the last chunk the ledger committed (no exported snapshot
// has to outlive the process). Once the stream passes the WAL position read
// right after the newest chunk snapshot, no later transaction can be
// visible in any of them and the chunk list is dropped from the token.
//
// Transactions are emitted whole and in commit order; each ends with an
// EventCommit whose token holds Commit.TransactionEndLSN, which
// START_REPLICATION resumes from (a transaction is re-sent only when its
// commit LSN is at or after the start point). The slot's confirmed flush
// LSN is advanced (StandbyStatusUpdate) only to tokens the ledger has
// committed (Committed, called by the coordinator), so a crash at any point
// replays from the ledger and the server keeps exactly the WAL still needed.
package postgres

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/shardsync/shardsync/merge"
)

// Sentinel errors (wrapped with details; use errors.Is). Prerequisite,
// schema, route and token problems reuse package merge's sentinels
// (merge.ErrPrerequisite, merge.ErrIncompatibleSchema, merge.ErrNoShards,
// merge.ErrBadToken), so callers treat every source kind alike.
var (
	// ErrSlot: the replication slot or publication is missing, lost, in use
	// by another process, or was moved past the job's position. The job must
	// not continue on its own: an operator decides.
	ErrSlot = errors.New("replication slot or publication unusable")
	// ErrToast: an UPDATE left an out-of-line (TOASTed) value unchanged and
	// pgoutput did not send it.
	ErrToast = errors.New("unchanged TOAST value not sent")
	// ErrAuth: the server refused the login (wrong password, no such role,
	// pg_hba.conf).
	ErrAuth = errors.New("postgres login refused")
)

// Config configures a Source.
type Config struct {
	// Addr is host:port of the PostgreSQL primary (logical decoding runs
	// on the primary in PostgreSQL 15).
	Addr     string
	User     string
	Password string
	// Database is the database whose schemas and tables the routes match
	// (a slot decodes one database).
	Database string
	// SSLMode is libpq's sslmode (default "prefer").
	SSLMode string
	// Slot and Publication name the logical replication slot and the
	// publication shardsync creates (or extends) and reads.
	Slot        string
	Publication string

	// Routes: Route.Databases matches schema names, Route.Tables table
	// names.
	Routes []merge.Route
	// AllowEmptyRoutes lets a route match no table at start.
	AllowEmptyRoutes bool
	// DatabaseColumn and TableColumn name the metadata columns (default
	// database_name, holding the schema, and table_name).
	DatabaseColumn, TableColumn string

	// ChunkSize is the number of rows per snapshot chunk (default 8096).
	ChunkSize int
	// BatchRows caps the rows of one EventRows (default 1024).
	BatchRows int
	// MaxTxnRows is how many rows of one source transaction are held
	// before they are streamed on (default 100000). A Relation change
	// inside a transaction that was streamed on stops the job.
	MaxTxnRows int
	// StatusInterval is how often the replication connection reports its
	// position (StandbyStatusUpdate; default 10s, below the server's
	// wal_sender_timeout).
	StatusInterval time.Duration
	// DiscoverInterval is how often the catalog is searched for new tables
	// matching a route (default 10s).
	DiscoverInterval time.Duration
	// IdleProgress is how often an idle stream emits EventProgress
	// (default 5s).
	IdleProgress time.Duration
	// ConnectTimeout bounds one connection attempt (default 10s).
	ConnectTimeout time.Duration
}

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config {
	var c Config
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&c.DatabaseColumn, "database_name")
	def(&c.TableColumn, "table_name")
	def(&c.SSLMode, "prefer")
	defI := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defI(&c.ChunkSize, 8096)
	defI(&c.BatchRows, 1024)
	defI(&c.MaxTxnRows, 100_000)
	defD := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	defD(&c.StatusInterval, 10*time.Second)
	defD(&c.DiscoverInterval, 10*time.Second)
	defD(&c.IdleProgress, 5*time.Second)
	defD(&c.ConnectTimeout, 10*time.Second)
}

var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// SlotName turns a label prefix into a valid slot or publication name
// (lowercase letters, digits and underscores, at most 63 bytes).
func SlotName(prefix string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(prefix) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := b.String()
	if s == "" {
		s = "shardsync"
	}
	if len(s) > 63 {
		s = s[:63]
	}
	return s
}

// Validate reports every configuration mistake it finds (after defaults).
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	if h, p, err := net.SplitHostPort(c.Addr); err != nil || h == "" {
		errs = append(errs, fmt.Errorf("postgres address %q is not host:port", c.Addr))
	} else if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
		errs = append(errs, fmt.Errorf("postgres address %q has no valid port", c.Addr))
	}
	if c.User == "" {
		errs = append(errs, errors.New("postgres user is empty: set the role shardsync logs in as (it needs LOGIN REPLICATION)"))
	}
	if c.Database == "" {
		errs = append(errs, errors.New("postgres database is empty: name the database holding the shards"))
	}
	if !slotName.MatchString(c.Slot) {
		errs = append(errs, fmt.Errorf("slot name %q is invalid: use 1-63 lowercase letters, digits and underscores", c.Slot))
	}
	if c.Publication == "" || strings.ContainsAny(c.Publication, "\"\x00") {
		errs = append(errs, fmt.Errorf("publication name %q is invalid", c.Publication))
	}
	if len(c.Routes) == 0 {
		errs = append(errs, errors.New("no routes: a job needs at least one schema/table regex pair and a target"))
	}
	for i, r := range c.Routes {
		if r.Databases == nil || r.Tables == nil || r.Target.Database == "" || r.Target.Table == "" {
			errs = append(errs, fmt.Errorf("route %d is incomplete (schema regex, table regex and target db.table are needed)", i+1))
		}
	}
	if c.DatabaseColumn == c.TableColumn {
		errs = append(errs, fmt.Errorf("database and table metadata columns are both %q", c.DatabaseColumn))
	}
	if c.ChunkSize < 1 || c.BatchRows < 1 || c.MaxTxnRows < c.BatchRows {
		errs = append(errs, fmt.Errorf("chunk size %d, batch rows %d and max txn rows %d must be positive, max txn rows at least batch rows", c.ChunkSize, c.BatchRows, c.MaxTxnRows))
	}
	if c.StatusInterval <= 0 || c.DiscoverInterval <= 0 || c.IdleProgress <= 0 {
		errs = append(errs, errors.New("status, discover and idle-progress intervals must be positive"))
	}
	switch c.SSLMode {
	case "disable", "allow", "prefer", "require", "verify-ca", "verify-full":
	default:
		errs = append(errs, fmt.Errorf("sslmode %q is unknown", c.SSLMode))
	}
	return errors.Join(errs...)
}
