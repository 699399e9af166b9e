// Package dorisemu is a protocol-faithful emulator of an Apache Doris FE and
// BE for tests, benchmarks, the demo and people trying shardsync by hand.
//
// It serves, on loopback only:
//
//   - the FE HTTP port (FEHTTPAddr): `PUT /api/{db}/{tbl}/_stream_load` and
//     `PUT /api/{db}[/{tbl}]/_stream_load_2pc` answered with a 307 to the BE
//     (credentials in the Location userinfo, body never read),
//     `GET /api/{db}/get_load_state?label=`, `GET /api/backends?is_alive=true`
//     and `GET /api/{db}/{tbl}/_schema`;
//   - the BE HTTP port (BEHTTPAddr, a different loopback IP): Stream Load
//     (CSV and JSON, chunked or sized bodies streamed without buffering), the
//     2PC endpoint and `GET /api/_load_error_log?file=`;
//   - a MySQL-protocol port (QueryAddr) with the DDL/query subset described
//     on [Emulator.Exec].
//
// The transaction manager follows docs spec doris.md §2–§4: label rules,
// ExistingJobStatus, the running-transaction limit, PREPARE and PRECOMMITTED
// timeouts ("timeout by txn manager"), label purge by age and by count,
// commit → COMMITTED → VISIBLE after PublishDelay, and the 2PC decision table
// with its exact strings. Replies use the 2.1 Message format unless
// Options.Version says otherwise.
//
// Time is the wall clock plus an offset that [Emulator.Advance] moves, so
// tests can fire timeouts without sleeping. Fault knobs live on
// [Emulator.Faults]. With Options.Dir set, every durable change is appended
// to a journal and replayed by Start, so state survives a restart; like a
// real FE, PREPARE transactions are not durable and vanish on restart.
package dorisemu

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-mysql-org/go-mysql/server"
)

// Options configure an Emulator. The zero value is usable.
type Options struct {
	// FEHost and BEHost are loopback IPs for the FE and BE ports
	// (defaults 127.0.0.1 and 127.0.0.2). The MySQL port listens on FEHost.
	FEHost, BEHost string
	// FEHTTPPort, BEHTTPPort and QueryPort fix the ports; 0 picks a free port.
	FEHTTPPort, BEHTTPPort, QueryPort int
	// User and Password are the only accepted credentials (default "root", "").
	User, Password string
	// Dir, when set, holds the journal that makes state survive a restart.
	Dir string
	// Version selects version-specific behaviour: "2.1" (default), "2.0" or
	// "1.2". Before 2.1 the 2PC endpoint only accepts txn_id (no commit or
	// abort by label) and Message strings use that version's format (§2.3);
	// 1.2 also defaults MaxRunningTxnPerDB to 100 and PrepareTimeout to 600s.
	Version string
	// PrepareTimeout is the PREPARE timeout when a load sends no `timeout`
	// header (stream_load_default_timeout_second; 259200s, 600s on 1.2).
	PrepareTimeout time.Duration
	// PrecommitTimeout aborts PRECOMMITTED txns with "timeout by txn manager"
	// (stream_load_default_precommit_timeout_second, default 3600s; 1.2 FEs
	// had no such timeout: a negative value disables it).
	PrecommitTimeout time.Duration
	// LabelKeepMax is how long a finished (VISIBLE or ABORTED) txn and its
	// label are kept (streaming_label_keep_max_second, default 12h).
	LabelKeepMax time.Duration
	// LabelNumThreshold caps the finished txns kept per database; older ones
	// are purged first (label_num_threshold, default 2000; -1 = no cap).
	LabelNumThreshold int
	// MaxRunningTxnPerDB limits PREPARE+PRECOMMITTED+COMMITTED txns per
	// database (default 1000, 100 for 1.2).
	MaxRunningTxnPerDB int
	// PublishDelay is how long a committed txn stays COMMITTED before it
	// turns VISIBLE. A non-2PC load whose publish is not immediate replies
	// "Publish Timeout". Default 0 (visible at once).
	PublishDelay time.Duration
	// SweepInterval is how often timeouts, publish and purge run in the
	// background (they also run before every request). Default 50ms.
	SweepInterval time.Duration
	// CountOnly parses and counts rows but keeps none (benchmark mode):
	// Rows returns no rows and Loads carries no Ops.
	CountOnly bool
	// Logger receives request and state-change logs (default: discard).
	Logger *slog.Logger
}

func (o *Options) setDefaults() error {
	if o.FEHost == "" {
		o.FEHost = "127.0.0.1"
	}
	if o.BEHost == "" {
		o.BEHost = "127.0.0.2"
	}
	for _, h := range []string{o.FEHost, o.BEHost} {
		ip := net.ParseIP(h)
		if ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("host %q is not a loopback IP: the emulator only serves on 127.0.0.0/8", h)
		}
	}
	if o.User == "" {
		o.User = "root"
	}
	switch o.Version {
	case "":
		o.Version = "2.1"
	case "2.1", "2.0", "1.2":
	default:
		return fmt.Errorf("unsupported Version %q: use 2.1, 2.0 or 1.2", o.Version)
	}
	if o.PrepareTimeout == 0 {
		o.PrepareTimeout = 259200 * time.Second
		if o.Version == "1.2" {
			o.PrepareTimeout = 600 * time.Second
		}
	}
	if o.PrecommitTimeout == 0 {
		o.PrecommitTimeout = 3600 * time.Second
	}
	if o.LabelKeepMax == 0 {
		o.LabelKeepMax = 12 * time.Hour
	}
	if o.LabelNumThreshold == 0 {
		o.LabelNumThreshold = 2000
	}
	if o.MaxRunningTxnPerDB == 0 {
		o.MaxRunningTxnPerDB = 1000
		if o.Version == "1.2" {
			o.MaxRunningTxnPerDB = 100
		}
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = 50 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return nil
}

// Emulator is a running FE+BE+MySQL emulator. All methods are safe for
// concurrent use.
type Emulator struct {
	opts   Options
	log    *slog.Logger
	faults *Faults

	mu           sync.Mutex
	offset       time.Duration
	publishDelay time.Duration
	holdPublish  bool
	nextObjID    int64
	nextTxnID    int64
	commitSeq    int64
	dbs          map[string]*database
	txns         map[int64]*txn
	publishQ     []*txn
	committed    []*txn // every txn that reached COMMITTED, in commit order
	errorLogs    map[string]string
	errorLogKeys []string
	journal      *journal
	replaying    bool

	feLn, queryLn net.Listener
	feSrv         *http.Server
	beMu          sync.Mutex
	beAddr        string
	beLn          net.Listener
	beSrv         *http.Server
	beDown        bool // port closed
	beDownNoticed bool // FE knows (no redirect, is_alive=false)
	mysqlSrv      *server.Server
	connMu        sync.Mutex
	mysqlConns    map[net.Conn]struct{}

	stop      chan struct{}
	wg        sync.WaitGroup
	handlers  sync.WaitGroup // in-flight HTTP handlers
	closeOnce sync.Once
}

// database is one Doris database with its label table.
type database struct {
	ID      int64
	Name    string
	tables  map[string]*table
	labels  map[string][]*txn
	final   []*txn // VISIBLE/ABORTED txns in finish order (purge queue)
	running int
}

// Start launches the emulator and returns once all ports accept connections.
func Start(opts Options) (*Emulator, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	e := &Emulator{
		opts:         opts,
		log:          opts.Logger,
		publishDelay: opts.PublishDelay,
		nextObjID:    10000,
		nextTxnID:    1000,
		dbs:          map[string]*database{},
		txns:         map[int64]*txn{},
		errorLogs:    map[string]string{},
		mysqlConns:   map[net.Conn]struct{}{},
		stop:         make(chan struct{}),
	}
	e.faults = &Faults{e: e}
	if opts.Dir != "" {
		j, err := openJournal(opts.Dir)
		if err != nil {
			return nil, err
		}
		e.journal = j
		if err := e.replay(); err != nil {
			_ = j.close()
			return nil, err
		}
	}
	if err := e.listen(); err != nil {
		e.closeListeners()
		if e.journal != nil {
			_ = e.journal.close()
		}
		return nil, err
	}
	e.wg.Add(1)
	go e.sweepLoop()
	e.log.Info("doris emulator started", "fe", e.FEHTTPAddr(), "be", e.BEHTTPAddr(), "query", e.QueryAddr(),
		"version", opts.Version, "dir", opts.Dir)
	return e, nil
}

func (e *Emulator) listen() error {
	var err error
	e.feLn, err = net.Listen("tcp", net.JoinHostPort(e.opts.FEHost, strconv.Itoa(e.opts.FEHTTPPort)))
	if err != nil {
		return fmt.Errorf("listening for FE HTTP on %s: %w", e.opts.FEHost, err)
	}
	e.beLn, err = net.Listen("tcp", net.JoinHostPort(e.opts.BEHost, strconv.Itoa(e.opts.BEHTTPPort)))
	if err != nil {
		return fmt.Errorf("listening for BE HTTP on %s (on macOS add the alias with `ifconfig lo0 alias %s`): %w",
			e.opts.BEHost, e.opts.BEHost, err)
	}
	e.beAddr = e.beLn.Addr().String()
	e.queryLn, err = net.Listen("tcp", net.JoinHostPort(e.opts.FEHost, strconv.Itoa(e.opts.QueryPort)))
	if err != nil {
		return fmt.Errorf("listening for the MySQL protocol on %s: %w", e.opts.FEHost, err)
	}
	e.feSrv = &http.Server{Handler: http.HandlerFunc(e.serveFE), ReadHeaderTimeout: 30 * time.Second}
	e.serveHTTP(e.feSrv, e.feLn)
	e.beSrv = e.newBEServer()
	e.serveHTTP(e.beSrv, e.beLn)
	e.startMySQL()
	return nil
}

func (e *Emulator) newBEServer() *http.Server {
	return &http.Server{Handler: http.HandlerFunc(e.serveBE), ReadHeaderTimeout: 30 * time.Second}
}

func (e *Emulator) serveHTTP(srv *http.Server, ln net.Listener) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("http server stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
}

func (e *Emulator) closeListeners() {
	for _, ln := range []net.Listener{e.feLn, e.beLn, e.queryLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// FEHTTPAddr is the FE HTTP address, e.g. "127.0.0.1:8030".
func (e *Emulator) FEHTTPAddr() string { return e.feLn.Addr().String() }

// BEHTTPAddr is the BE HTTP address, e.g. "127.0.0.2:8040". It stays the
// same while the BE is down (Faults.BEDown).
func (e *Emulator) BEHTTPAddr() string { return e.beAddr }

// QueryAddr is the MySQL-protocol address on the FE host.
func (e *Emulator) QueryAddr() string { return e.queryLn.Addr().String() }

// Faults returns the fault-injection knobs.
func (e *Emulator) Faults() *Faults { return e.faults }

// Close stops every port, waits for in-flight handlers and closes the
// journal. It is idempotent.
func (e *Emulator) Close() error {
	var err error
	e.closeOnce.Do(func() {
		close(e.stop)
		_ = e.feSrv.Close()
		e.beMu.Lock()
		if e.beSrv != nil {
			_ = e.beSrv.Close()
		}
		e.beMu.Unlock()
		_ = e.queryLn.Close()
		e.connMu.Lock()
		for c := range e.mysqlConns {
			_ = c.Close()
		}
		e.connMu.Unlock()
		e.wg.Wait()
		e.handlers.Wait() // cut loads record their rollback before the journal closes
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.journal != nil {
			err = e.journal.close()
		}
	})
	return err
}

// now is the emulator clock: wall time plus the Advance offset.
func (e *Emulator) now() time.Time { return time.Now().Add(e.offset) }

// Now returns the emulator's current time (wall clock plus Advance offsets).
func (e *Emulator) Now() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now()
}

// Advance moves the emulator clock forward by d and immediately runs
// timeouts, publish and purge, so tests need not sleep.
func (e *Emulator) Advance(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.offset += d
	e.tickLocked()
}

func (e *Emulator) sweepLoop() {
	defer e.wg.Done()
	t := time.NewTicker(e.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			e.mu.Lock()
			e.tickLocked()
			e.mu.Unlock()
		}
	}
}

func (e *Emulator) nextID() int64 {
	e.nextObjID++
	return e.nextObjID
}

// errorURLFor stores an error log and returns the URL the BE serves it at.
func (e *Emulator) errorURLFor(content string) string {
	file := fmt.Sprintf("__shard_%d/error_log_insert_stmt_%x-%x_%x_%x", len(e.errorLogKeys)%10,
		e.now().UnixNano(), e.nextTxnID, e.commitSeq, len(e.errorLogKeys))
	e.errorLogs[file] = content
	e.errorLogKeys = append(e.errorLogKeys, file)
	if len(e.errorLogKeys) > 1000 {
		delete(e.errorLogs, e.errorLogKeys[0])
		e.errorLogKeys = e.errorLogKeys[1:]
	}
	return "http://" + e.beAddr + "/api/_load_error_log?file=" + file
}
