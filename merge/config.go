// Package merge is the source half of shardsync: it finds the shards whose
// database and table names match a job's routes, snapshots them without
// locks, follows the binlog, and emits one ordered stream of whole source
// transactions whose rows are routed to merged target tables (see
// change.Event for the vocabulary).
//
// The snapshot algorithm and its exactness argument are described at the top
// of snapshot.go; binlog following and resumption in binlog.go; schema
// tracking in schema.go; value conversions in value.go.
package merge

import (
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/shardsync/shardsync/change"
)

// Route maps every table whose database name matches Databases and whose
// table name matches Tables to the target table Target. Both expressions are
// RE2 and must match the whole name (use Anchor to build them from user
// text).
type Route struct {
	Databases *regexp.Regexp
	Tables    *regexp.Regexp
	Target    change.TableID
}

// Anchor compiles a user regular expression so that it must match a whole
// name: `emp_[0-9]+` matches "emp_1" but not "xemp_1" or "emp_1_old".
func Anchor(expr string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, fmt.Errorf("compiling regular expression %q (RE2 syntax, not a glob): %w", expr, err)
	}
	return re, nil
}

// NewRoute builds a Route from user-written database and table expressions.
func NewRoute(databases, tables string, target change.TableID) (Route, error) {
	d, err := Anchor(databases)
	if err != nil {
		return Route{}, err
	}
	t, err := Anchor(tables)
	if err != nil {
		return Route{}, err
	}
	return Route{Databases: d, Tables: t, Target: target}, nil
}

func (r Route) String() string {
	return fmt.Sprintf("%s.%s -> %s", r.Databases, r.Tables, r.Target)
}

// Config configures a Source.
type Config struct {
	// Addr is host:port of the MySQL or MariaDB primary.
	Addr     string
	User     string
	Password string
	// ServerID is the replica id the binlog reader registers with. It must
	// be unique among all replicas of the server and differ from the
	// server's own server_id.
	ServerID uint32
	// Flavor is "mariadb" or "mysql"; empty detects it from VERSION().
	Flavor string

	// Routes are the job's routes (at least one).
	Routes []Route
	// AllowEmptyRoutes lets a route match no table at start (its shards
	// are expected to be created later). Without it Open fails, naming the
	// route, because an expression matching nothing is usually a mistake.
	AllowEmptyRoutes bool

	// DatabaseColumn and TableColumn name the metadata columns every
	// target row carries (default "database_name", "table_name").
	DatabaseColumn string
	TableColumn    string

	// ChunkSize is the number of rows per snapshot chunk (default 8096).
	ChunkSize int
	// Readers is the number of tables snapshotted in parallel (default:
	// one per CPU).
	Readers int
	// BatchRows caps the rows of one EventRows (default 1024).
	BatchRows int
	// SnapshotMode chooses how a chunk is made consistent with the binlog
	// (see snapshot.go): "consistent" reads each chunk in a consistent-
	// snapshot transaction at MariaDB's binlog_snapshot position (MariaDB
	// only); "watermark" is Flink CDC's algorithm (low watermark, SELECT,
	// high watermark, replay of the binlog slice into the chunk) and works
	// on MySQL and MariaDB; "auto" (default) is consistent on MariaDB and
	// watermark on MySQL. The watermark mode reads each slice with its own
	// replica connection: reader i (0-based) registers as ServerID+1+i, so
	// the ids ServerID … ServerID+Readers must all be unused by other
	// replicas.
	SnapshotMode string

	// Heartbeat is the binlog heartbeat period the server is asked for
	// (default 5s); an idle stream emits EventProgress at this rate.
	Heartbeat time.Duration
	// ReadTimeout declares the binlog connection dead when nothing, not
	// even a heartbeat, arrived for this long (default 3×Heartbeat).
	ReadTimeout time.Duration
	// ConnectTimeout bounds one connection attempt (default 10s).
	ConnectTimeout time.Duration
	// ConnectRetries is how many times a failed connection (host down,
	// refused, wrong password) is retried before Open or Next fail
	// (default 5). Backoff starts at RetryBackoff (default 500ms) and
	// doubles up to 30s.
	ConnectRetries int
	RetryBackoff   time.Duration

	// SchemaChange is Flink CDC's schema.change.behavior: exception,
	// evolve, try_evolve, lenient (default) or ignore; lifecycle.go and
	// docs/shard-merging.md say what each does with each statement.
	SchemaChange string
	// DroppedShardRows is what a DROP (or RENAME out of the routes) of a
	// shard does to its rows in the target: keep or delete; empty means
	// delete under evolve and try_evolve, keep otherwise.
	DroppedShardRows string
	// Decisions are operator decisions on single source events that
	// stopped the job (`shardsync skip-event`): skip or apply, keyed by
	// the event's GTID or binlog file:offset (EventStopError.Position).
	Decisions map[string]string
}

// DefaultConfig returns a Config with every default filled in; callers set
// Addr, User, Password, ServerID and Routes.
func DefaultConfig() Config {
	var c Config
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.DatabaseColumn == "" {
		c.DatabaseColumn = "database_name"
	}
	if c.TableColumn == "" {
		c.TableColumn = "table_name"
	}
	if c.ChunkSize == 0 {
		c.ChunkSize = 8096
	}
	if c.Readers == 0 {
		c.Readers = runtime.NumCPU()
	}
	if c.BatchRows == 0 {
		c.BatchRows = 1024
	}
	if c.SnapshotMode == "" {
		c.SnapshotMode = SnapshotAuto
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 5 * time.Second
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 3 * c.Heartbeat
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.ConnectRetries == 0 {
		c.ConnectRetries = 5
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = 500 * time.Millisecond
	}
}

// Validate reports every configuration mistake it finds (after defaults).
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	if _, _, err := splitAddr(c.Addr); err != nil {
		errs = append(errs, err)
	}
	if c.User == "" {
		errs = append(errs, errors.New("source user is empty: set the user shardsync logs in as"))
	}
	if c.ServerID == 0 {
		errs = append(errs, errors.New("server id is 0: choose a replica server id unique among the source's replicas (e.g. 5400)"))
	}
	switch c.Flavor {
	case "", "mariadb", "mysql":
	default:
		errs = append(errs, fmt.Errorf("flavor %q is unknown: use mariadb, mysql or leave it empty to detect", c.Flavor))
	}
	if len(c.Routes) == 0 {
		errs = append(errs, errors.New("no routes: a job needs at least one database/table regex pair and a target"))
	}
	for i, r := range c.Routes {
		if r.Databases == nil || r.Tables == nil {
			errs = append(errs, fmt.Errorf("route %d has no database or table expression", i+1))
			continue
		}
		if r.Target.Database == "" || r.Target.Table == "" {
			errs = append(errs, fmt.Errorf("route %d (%s.%s) has no target database.table", i+1, r.Databases, r.Tables))
		}
		for _, re := range []*regexp.Regexp{r.Databases, r.Tables} {
			if s := re.String(); !strings.HasPrefix(s, "^") || !strings.HasSuffix(s, "$") {
				errs = append(errs, fmt.Errorf("route %d: expression %q is not anchored: build it with merge.Anchor", i+1, s))
			}
		}
	}
	if c.DatabaseColumn == c.TableColumn {
		errs = append(errs, fmt.Errorf("database and table metadata columns are both %q: give them different names", c.DatabaseColumn))
	}
	if c.ChunkSize < 1 {
		errs = append(errs, fmt.Errorf("chunk size %d must be at least 1", c.ChunkSize))
	}
	if c.Readers < 1 {
		errs = append(errs, fmt.Errorf("readers %d must be at least 1", c.Readers))
	}
	if c.BatchRows < 1 {
		errs = append(errs, fmt.Errorf("batch rows %d must be at least 1", c.BatchRows))
	}
	switch c.SnapshotMode {
	case SnapshotAuto, SnapshotConsistent, SnapshotWatermark:
	default:
		errs = append(errs, fmt.Errorf("snapshot mode %q is unknown: use auto (consistent on MariaDB, watermark on MySQL), consistent (MariaDB only) or watermark", c.SnapshotMode))
	}
	if c.Readers >= 1 && uint64(c.ServerID)+uint64(c.Readers) > math.MaxUint32 {
		errs = append(errs, fmt.Errorf("server id %d is too large: the watermark snapshot's readers use ids up to server id + readers (%d), which must fit in 32 bits", c.ServerID, c.Readers))
	}
	if c.Heartbeat < time.Millisecond || c.ReadTimeout <= c.Heartbeat {
		errs = append(errs, fmt.Errorf("heartbeat %s and read timeout %s: the read timeout must exceed the heartbeat", c.Heartbeat, c.ReadTimeout))
	}
	errs = append(errs, c.validateLifecycle()...)
	if c.ConnectRetries < 0 {
		errs = append(errs, fmt.Errorf("connect retries %d must not be negative", c.ConnectRetries))
	}
	return errors.Join(errs...)
}

// Snapshot modes (Config.SnapshotMode).
const (
	SnapshotAuto       = "auto"
	SnapshotConsistent = "consistent"
	SnapshotWatermark  = "watermark"
)

// snapshotMode resolves "auto" for a server flavor.
func (c *Config) snapshotMode(flavor string) string {
	if c.SnapshotMode == SnapshotAuto || c.SnapshotMode == "" {
		if flavor == "mariadb" {
			return SnapshotConsistent
		}
		return SnapshotWatermark
	}
	return c.SnapshotMode
}

// backfillServerID is the replica server id reader i (0-based) of the
// watermark snapshot uses for its binlog slices.
func (c *Config) backfillServerID(reader int) uint32 { return c.ServerID + 1 + uint32(reader) }

func splitAddr(addr string) (string, uint16, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("source address %q is not host:port: %w", addr, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("source address %q has no valid port", addr)
	}
	return h, uint16(n), nil
}
