// Package testenv holds what tests, benchmarks and `shardsync demo` need to
// run shardsync on one machine: a real MariaDB server started from Debian's
// mariadb-server binaries, the tutorial data, a deterministic data generator
// and workload driver, and (in sub-packages) protocol-faithful emulators of
// Doris and MaxCompute.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
)

// ErrNoMariaDB is returned when the MariaDB server binaries are not installed.
var ErrNoMariaDB = errors.New("mariadbd and mariadb-install-db not found: install them with `apt-get install -y mariadb-server`")

// MariaDBOptions configures a throwaway MariaDB server.
type MariaDBOptions struct {
	// ServerID is the server's server_id (default 1).
	ServerID uint32
	// Dir is the directory that holds the datadir, socket and logs. When
	// empty a temporary directory is made and removed on Stop. A server
	// started on an existing Dir reuses its data (a restart).
	Dir string
	// BinlogOff starts the server without a binary log (a misconfiguration
	// shardsync must refuse).
	BinlogOff bool
	// BinlogFormat is ROW (default), MIXED or STATEMENT.
	BinlogFormat string
	// BinlogRowImage is FULL (default), MINIMAL or NOBLOB.
	BinlogRowImage string
	// BinlogRowMetadata is FULL (default), MINIMAL or NO_LOG.
	BinlogRowMetadata string
	// TimeZone sets the server's default time_zone (e.g. "+08:00"); empty
	// keeps SYSTEM.
	TimeZone string
	// ExtraArgs are appended to the mariadbd command line.
	ExtraArgs []string
}

// MariaDB is a running (or stopped) throwaway MariaDB server listening on
// a free loopback port. User is root with an empty password.
type MariaDB struct {
	opts    MariaDBOptions
	dir     string
	ownDir  bool
	port    int
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped bool
}

// Host is the loopback address the server listens on.
const mariaDBHost = "127.0.0.1"

// sbinDirs are searched after PATH: Debian installs mariadbd in /usr/sbin,
// which is not on every user's PATH.
var sbinDirs = []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"}

func findMariaDB() (installDB, server string, err error) { return findMariaDBIn(sbinDirs...) }

func findMariaDBIn(dirs ...string) (installDB, server string, err error) {
	installDB, err1 := lookBin("mariadb-install-db", dirs)
	server, err2 := lookBin("mariadbd", dirs)
	if err1 != nil || err2 != nil {
		return "", "", ErrNoMariaDB
	}
	return installDB, server, nil
}

func lookBin(name string, dirs []string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// StartMariaDB starts a server for a test and stops it (removing its files)
// when the test ends. It fails the test with one clear line when MariaDB is
// not installed.
func StartMariaDB(tb testing.TB, opts MariaDBOptions) *MariaDB {
	tb.Helper()
	m, err := LaunchMariaDB(context.Background(), opts)
	if err != nil {
		tb.Fatalf("starting MariaDB: %v", err)
	}
	tb.Cleanup(func() {
		if err := m.Stop(); err != nil {
			tb.Logf("stopping MariaDB: %v", err)
		}
		m.Remove()
	})
	return m
}

// LaunchMariaDB initialises a datadir (unless Dir already holds one) and
// starts mariadbd on a free loopback port. The caller must call Stop, and
// Remove to delete a temporary directory.
func LaunchMariaDB(ctx context.Context, opts MariaDBOptions) (*MariaDB, error) {
	installDB, _, err := findMariaDB()
	if err != nil {
		return nil, err
	}
	if opts.ServerID == 0 {
		opts.ServerID = 1
	}
	m := &MariaDB{opts: opts, dir: opts.Dir}
	if m.dir == "" {
		d, err := os.MkdirTemp("", "shardsync-mariadb-")
		if err != nil {
			return nil, fmt.Errorf("making a MariaDB directory: %w", err)
		}
		m.dir, m.ownDir = d, true
	}
	dataDir := filepath.Join(m.dir, "data")
	if _, err := os.Stat(filepath.Join(dataDir, "mysql")); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dataDir, 0o755); err != nil {
			return nil, fmt.Errorf("making MariaDB datadir: %w", err)
		}
		// Each server gets its own tmpdir: bootstrap processes sharing /tmp
		// have been seen to delete each other's temporary tables.
		tmp := filepath.Join(m.dir, "tmp")
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			return nil, fmt.Errorf("making MariaDB tmpdir: %w", err)
		}
		args := []string{"--no-defaults", "--datadir=" + dataDir, "--auth-root-authentication-method=normal",
			"--skip-test-db", "--innodb-log-file-size=8M", "--tmpdir=" + tmp}
		if os.Geteuid() == 0 {
			args = append(args, "--user=root")
		}
		cmd := exec.CommandContext(ctx, installDB, args...)
		if out, err := cmd.CombinedOutput(); err != nil {
			m.Remove()
			return nil, fmt.Errorf("mariadb-install-db in %s: %w\n%s", dataDir, err, firstLines(string(out), 12))
		}
	}
	if err := m.start(ctx); err != nil {
		m.Remove()
		return nil, err
	}
	return m, nil
}

func (m *MariaDB) args() []string {
	o := m.opts
	a := []string{"--no-defaults",
		"--datadir=" + filepath.Join(m.dir, "data"),
		"--socket=" + m.Socket(),
		"--port=" + strconv.Itoa(m.port),
		"--bind-address=" + mariaDBHost,
		"--pid-file=" + filepath.Join(m.dir, "mariadbd.pid"),
		"--log-error=" + m.ErrorLog(),
		"--tmpdir=" + filepath.Join(m.dir, "tmp"),
		"--innodb-log-file-size=8M",
		"--innodb-buffer-pool-size=64M",
		"--skip-name-resolve",
		"--server-id=" + strconv.FormatUint(uint64(o.ServerID), 10),
		"--max-connections=500",
	}
	if os.Geteuid() == 0 {
		a = append(a, "--user=root")
	}
	if !o.BinlogOff {
		a = append(a, "--log-bin=mysql-bin",
			"--binlog-format="+or(o.BinlogFormat, "ROW"),
			"--binlog-row-image="+or(o.BinlogRowImage, "FULL"),
			"--binlog-row-metadata="+or(o.BinlogRowMetadata, "FULL"))
	}
	if o.TimeZone != "" {
		a = append(a, "--default-time-zone="+o.TimeZone)
	}
	return append(a, o.ExtraArgs...)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (m *MariaDB) start(ctx context.Context) error {
	_, server, err := findMariaDB()
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.port == 0 {
		p, err := freePort(mariaDBHost)
		if err != nil {
			return err
		}
		m.port = p
	}
	_ = os.Remove(m.Socket())
	cmd := exec.Command(server, m.args()...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting mariadbd: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	m.cmd, m.exited, m.stopped = cmd, exited, false

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("mariadbd exited during start-up; its log %s ends with:\n%s", m.ErrorLog(), m.tailLog(15))
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			return ctx.Err()
		default:
		}
		if c, err := client.Connect(m.Addr(), "root", "", ""); err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			return fmt.Errorf("mariadbd did not accept connections on %s within 30s; its log %s ends with:\n%s", m.Addr(), m.ErrorLog(), m.tailLog(15))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Addr is the server's TCP address, host:port.
func (m *MariaDB) Addr() string { return net.JoinHostPort(mariaDBHost, strconv.Itoa(m.port)) }

// Host is the address the server listens on.
func (m *MariaDB) Host() string { return mariaDBHost }

// Port is the server's TCP port (kept across restarts).
func (m *MariaDB) Port() int { return m.port }

// User is the administrative user (root, empty password).
func (m *MariaDB) User() string { return "root" }

// Password is the administrative user's password (empty).
func (m *MariaDB) Password() string { return "" }

// ServerID is the server's server_id.
func (m *MariaDB) ServerID() uint32 { return m.opts.ServerID }

// Dir is the directory holding the datadir, socket and logs.
func (m *MariaDB) Dir() string { return m.dir }

// Socket is the server's unix socket path.
func (m *MariaDB) Socket() string { return filepath.Join(m.dir, "mariadbd.sock") }

// ErrorLog is the path of the server's error log.
func (m *MariaDB) ErrorLog() string { return filepath.Join(m.dir, "error.log") }

func (m *MariaDB) tailLog(n int) string {
	b, err := os.ReadFile(m.ErrorLog())
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return lastLines(string(b), n)
}

// utf8mb4 makes a connection speak utf8mb4: go-mysql's default handshake
// collation is unknown to MariaDB, which then falls back to latin1 and
// stores non-ASCII text garbled.
func utf8mb4(c *client.Conn) error { return c.SetCollation("utf8mb4_general_ci") }

// Connect opens a new client connection as root, with db as the default
// database (may be empty), speaking utf8mb4.
func (m *MariaDB) Connect(db string) (*client.Conn, error) {
	c, err := client.Connect(m.Addr(), "root", "", db, utf8mb4)
	if err != nil {
		return nil, fmt.Errorf("connecting to MariaDB at %s: %w", m.Addr(), err)
	}
	return c, nil
}

// Exec runs statements (each may be multi-row) on a fresh connection and
// returns the first error. Statements are run in order; a string holding
// several statements separated by ";\n" is split (see SplitStatements).
func (m *MariaDB) Exec(stmts ...string) error {
	c, err := m.Connect("")
	if err != nil {
		return err
	}
	defer c.Close()
	for _, s := range stmts {
		for _, q := range SplitStatements(s) {
			if _, err := c.Execute(q); err != nil {
				return fmt.Errorf("executing %q: %w", abbreviate(q, 120), err)
			}
		}
	}
	return nil
}

// Query runs one query and returns its result rows as strings (NULL as
// "NULL").
func (m *MariaDB) Query(q string, args ...any) ([][]string, error) {
	c, err := m.Connect("")
	if err != nil {
		return nil, err
	}
	defer c.Close()
	r, err := c.Execute(q, args...)
	if err != nil {
		return nil, fmt.Errorf("querying %q: %w", abbreviate(q, 120), err)
	}
	defer r.Close()
	return ResultStrings(r), nil
}

// ResultStrings renders a go-mysql result as strings (NULL as "NULL").
func ResultStrings(r *mysql.Result) [][]string {
	if r == nil || r.Resultset == nil {
		return nil
	}
	out := make([][]string, len(r.Values))
	for i, row := range r.Values {
		out[i] = make([]string, len(row))
		for j, v := range row {
			if v.Type == mysql.FieldValueTypeNull {
				out[i][j] = "NULL"
				continue
			}
			switch v.Type {
			case mysql.FieldValueTypeString:
				out[i][j] = string(v.AsString())
			default:
				out[i][j] = v.String()
			}
		}
	}
	return out
}

// Variable returns a global server variable's value.
func (m *MariaDB) Variable(name string) (string, error) {
	rows, err := m.Query("SELECT @@GLOBAL." + name)
	if err != nil {
		return "", err
	}
	if len(rows) != 1 || len(rows[0]) != 1 {
		return "", fmt.Errorf("reading @@GLOBAL.%s: unexpected result %v", name, rows)
	}
	return rows[0][0], nil
}

// Stop shuts the server down cleanly (SHUTDOWN, then SIGTERM, then SIGKILL
// after a grace period). It is safe to call more than once.
func (m *MariaDB) Stop() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil || m.stopped {
		return nil
	}
	m.stopped = true
	if c, err := client.Connect(m.Addr(), "root", "", ""); err == nil {
		_, _ = c.Execute("SHUTDOWN")
		_ = c.Close()
	} else {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-m.exited:
		return nil
	case <-time.After(20 * time.Second):
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = m.cmd.Process.Kill()
	<-m.exited
	return fmt.Errorf("mariadbd on %s did not stop within 30s and was killed", m.Addr())
}

// Kill stops the server abruptly (SIGKILL), as a crash would.
func (m *MariaDB) Kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil || m.stopped {
		return
	}
	m.stopped = true
	_ = m.cmd.Process.Kill()
	<-m.exited
}

// Restart stops the server and starts it again on the same datadir and
// port.
func (m *MariaDB) Restart(ctx context.Context) error {
	if err := m.Stop(); err != nil {
		return err
	}
	return m.start(ctx)
}

// Start starts a stopped server again on the same datadir and port.
func (m *MariaDB) Start(ctx context.Context) error {
	m.mu.Lock()
	running := m.cmd != nil && !m.stopped
	m.mu.Unlock()
	if running {
		return nil
	}
	return m.start(ctx)
}

// Remove deletes the server's directory if it was a temporary one. Call it
// after Stop.
func (m *MariaDB) Remove() {
	if m.ownDir && m.dir != "" {
		_ = os.RemoveAll(m.dir)
	}
}

// freePort asks the kernel for a free TCP port on host.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreePort returns a free TCP port on a loopback host.
func FreePort(host string) (int, error) { return freePort(host) }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func abbreviate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// SplitStatements splits SQL text on semicolons that end a line, skipping
// blank statements. It is meant for fixture files, not for arbitrary SQL
// (a semicolon at a line end inside a string literal would split it).
func SplitStatements(sql string) []string {
	var out []string
	var b strings.Builder
	for _, line := range strings.SplitAfter(sql, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "--") && b.Len() == 0 {
			continue
		}
		b.WriteString(line)
		if strings.HasSuffix(trimmed, ";") {
			if q := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(b.String()), ";")); q != "" {
				out = append(out, q)
			}
			b.Reset()
		}
	}
	if q := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(b.String()), ";")); q != "" {
		out = append(out, q)
	}
	return out
}

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}
