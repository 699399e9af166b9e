package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoPostgres is returned when the PostgreSQL 15 server binaries are not
// installed.
var ErrNoPostgres = errors.New("PostgreSQL 15 binaries (initdb, postgres) not found in " + PostgresBinDir +
	": install them with `apt-get install -y postgresql-15` (scripts/ensure-postgres)")

// PostgresBinDir is where Debian's postgresql-15 package puts the server
// binaries (not on PATH).
const PostgresBinDir = "/usr/lib/postgresql/15/bin"

// PostgresSystemUser is the unprivileged system user throwaway clusters run
// as when the tests run as root (initdb and postgres refuse root). It is
// created with useradd when missing.
const PostgresSystemUser = "shardsync-pg"

// PostgresOptions configures a throwaway PostgreSQL cluster.
type PostgresOptions struct {
	// Dir holds the data directory, socket and log. Empty: a temporary
	// directory removed by Remove. A cluster started on an existing Dir
	// reuses its data (a restart).
	Dir string
	// WalLevel is wal_level (default logical); "replica" is a
	// misconfiguration shardsync must refuse.
	WalLevel string
	// Conf are extra "name=value" settings passed with -c.
	Conf []string
}

// Postgres is a running (or stopped) throwaway PostgreSQL cluster on a free
// loopback port. The superuser postgres logs in without a password over
// TCP; other roles authenticate with scram-sha-256.
type Postgres struct {
	opts    PostgresOptions
	dir     string
	ownDir  bool
	port    int
	cred    *syscall.Credential
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped bool
}

const postgresHost = "127.0.0.1"

// StartPostgres starts a cluster for a test and removes it when the test
// ends.
func StartPostgres(tb testing.TB, opts PostgresOptions) *Postgres {
	tb.Helper()
	p, err := LaunchPostgres(context.Background(), opts)
	if err != nil {
		tb.Fatalf("starting PostgreSQL: %v", err)
	}
	tb.Cleanup(func() {
		if err := p.Stop(); err != nil {
			tb.Logf("stopping PostgreSQL: %v", err)
		}
		p.Remove()
	})
	return p
}

// postgresCredential returns the credential the server runs under: nil
// when not root, else PostgresSystemUser (created when missing).
func postgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(PostgresSystemUser)
	if err != nil {
		out, aerr := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PostgresSystemUser).CombinedOutput()
		if aerr != nil && !strings.Contains(string(out), "already exists") {
			return nil, fmt.Errorf("creating system user %s for PostgreSQL (initdb refuses root): %v: %s", PostgresSystemUser, aerr, out)
		}
		if u, err = user.Lookup(PostgresSystemUser); err != nil {
			return nil, fmt.Errorf("looking up %s: %w", PostgresSystemUser, err)
		}
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// LaunchPostgres initialises a cluster (unless Dir holds one) and starts it
// on a free loopback port. The caller must call Stop, then Remove.
func LaunchPostgres(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	initdb := filepath.Join(PostgresBinDir, "initdb")
	if _, err := os.Stat(initdb); err != nil {
		return nil, ErrNoPostgres
	}
	cred, err := postgresCredential()
	if err != nil {
		return nil, err
	}
	p := &Postgres{opts: opts, dir: opts.Dir, cred: cred}
	if p.dir == "" {
		// Not t.TempDir: its parent is root-only, which the server user
		// cannot traverse.
		d, err := os.MkdirTemp("", "shardsync-pg-")
		if err != nil {
			return nil, fmt.Errorf("making a PostgreSQL directory: %w", err)
		}
		p.dir, p.ownDir = d, true
	}
	if err := p.chown(p.dir); err != nil {
		return nil, err
	}
	data := p.DataDir()
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		cmd := exec.CommandContext(ctx, initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("initdb %s: %v: %s", data, err, lastLines(string(out), 10))
		}
		hba := "local all all trust\n" +
			"host all postgres 127.0.0.1/32 trust\n" +
			"host replication postgres 127.0.0.1/32 trust\n" +
			"host all all 127.0.0.1/32 scram-sha-256\n" +
			"host replication all 127.0.0.1/32 scram-sha-256\n"
		if err := os.WriteFile(filepath.Join(data, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
			return nil, fmt.Errorf("writing pg_hba.conf: %w", err)
		}
		if err := p.chown(filepath.Join(data, "pg_hba.conf")); err != nil {
			return nil, err
		}
	}
	if err := p.start(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Postgres) chown(path string) error {
	if p.cred == nil {
		return nil
	}
	if err := os.Chown(path, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
		return fmt.Errorf("handing %s to %s: %w", path, PostgresSystemUser, err)
	}
	return nil
}

func (p *Postgres) args() []string {
	a := []string{"-D", p.DataDir(),
		"-c", "listen_addresses=" + postgresHost,
		"-c", "port=" + strconv.Itoa(p.port),
		"-c", "unix_socket_directories=" + p.dir,
		"-c", "wal_level=" + or(p.opts.WalLevel, "logical"),
		"-c", "max_replication_slots=20",
		"-c", "max_wal_senders=20",
		"-c", "max_connections=60",
		"-c", "shared_buffers=16MB",
		"-c", "fsync=off",
		"-c", "full_page_writes=off",
		"-c", "logging_collector=off",
		"-c", "log_min_messages=warning",
		"-c", "wal_sender_timeout=60s",
	}
	for _, c := range p.opts.Conf {
		a = append(a, "-c", c)
	}
	return a
}

// LogFile is the server's log (stderr).
func (p *Postgres) LogFile() string { return filepath.Join(p.dir, "postgres.log") }

func (p *Postgres) tailLog(n int) string {
	b, _ := os.ReadFile(p.LogFile())
	return lastLines(string(b), n)
}

func (p *Postgres) start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.port == 0 {
		port, err := freePort(postgresHost)
		if err != nil {
			return err
		}
		p.port = port
	}
	logf, err := os.OpenFile(p.LogFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening the PostgreSQL log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(PostgresBinDir, "postgres"), p.args()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGQUIT, Credential: p.cred}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	p.cmd, p.exited, p.stopped = cmd, exited, false
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("postgres exited during start-up; its log %s ends with:\n%s", p.LogFile(), p.tailLog(15))
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGQUIT)
			return ctx.Err()
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := pgx.Connect(cctx, p.DSN("postgres"))
		cancel()
		if err == nil {
			_ = c.Close(context.Background())
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Signal(syscall.SIGQUIT)
			return fmt.Errorf("postgres did not accept connections on %s within 30s (%v); its log %s ends with:\n%s", p.Addr(), err, p.LogFile(), p.tailLog(15))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// DataDir is the cluster's data directory.
func (p *Postgres) DataDir() string { return filepath.Join(p.dir, "data") }

// Dir is the directory holding the cluster.
func (p *Postgres) Dir() string { return p.dir }

// Addr is host:port.
func (p *Postgres) Addr() string { return net.JoinHostPort(postgresHost, strconv.Itoa(p.port)) }

// Port is the TCP port (kept across restarts).
func (p *Postgres) Port() int { return p.port }

// User is the superuser (no password over loopback TCP).
func (p *Postgres) User() string { return "postgres" }

// DSN is a connection string for the superuser to database db.
func (p *Postgres) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", p.Addr(), db)
}

// Connect opens a connection to database db as the superuser.
func (p *Postgres) Connect(ctx context.Context, db string) (*pgx.Conn, error) {
	return pgx.Connect(ctx, p.DSN(db))
}

// Exec runs statements in database db as the superuser, each on its own
// (outside a transaction unless the statement opens one).
func (p *Postgres) Exec(db string, stmts ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := p.Connect(ctx, db)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	for _, s := range stmts {
		if _, err := c.Exec(ctx, s); err != nil {
			return fmt.Errorf("running %q: %w", abbreviate(s, 200), err)
		}
	}
	return nil
}

// Query runs q in database db and returns its rows as text (NULL: "").
func (p *Postgres) Query(db, q string, args ...any) ([][]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := p.Connect(ctx, db)
	if err != nil {
		return nil, err
	}
	defer c.Close(context.Background())
	rows, err := c.Query(ctx, q, append([]any{pgx.QueryResultFormats{pgx.TextFormatCode}}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("running %q: %w", abbreviate(q, 200), err)
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		raw := rows.RawValues()
		r := make([]string, len(raw))
		for i, b := range raw {
			r[i] = string(b)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Stop shuts the cluster down (fast shutdown: SIGINT). Safe to repeat.
func (p *Postgres) Stop() error {
	return p.signalStop(syscall.SIGINT, 30*time.Second)
}

// Kill stops the cluster abruptly (immediate shutdown, SIGQUIT: no
// checkpoint, crash recovery at the next start), as pg_ctl -m immediate.
func (p *Postgres) Kill() { _ = p.signalStop(syscall.SIGQUIT, 30*time.Second) }

func (p *Postgres) signalStop(sig syscall.Signal, wait time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.stopped {
		return nil
	}
	p.stopped = true
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
		return nil
	case <-time.After(wait):
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
	return fmt.Errorf("postgres on %s did not stop within %s and was killed", p.Addr(), wait)
}

// Start starts a stopped cluster again on the same data and port.
func (p *Postgres) Start(ctx context.Context) error {
	p.mu.Lock()
	running := p.cmd != nil && !p.stopped
	p.mu.Unlock()
	if running {
		return nil
	}
	return p.start(ctx)
}

// Restart stops the cluster cleanly and starts it again.
func (p *Postgres) Restart(ctx context.Context) error {
	if err := p.Stop(); err != nil {
		return err
	}
	return p.start(ctx)
}

// Remove deletes a temporary directory. Call it after Stop.
func (p *Postgres) Remove() {
	if p.ownDir && p.dir != "" {
		_ = os.RemoveAll(p.dir)
	}
}

// TutorialPostgresSQL is TutorialSQL for PostgreSQL: each database emp_N
// becomes a schema emp_N of one database, ENUM('M','F') a PostgreSQL enum.
func TutorialPostgresSQL() string {
	s := strings.ReplaceAll(TutorialSQL, "`", "")
	s = strings.ReplaceAll(strings.ReplaceAll(s, "ENUM (\n  'M','F')", "ENUM ('M','F')"), "ENUM ('M','F')", "public.gender")
	var b strings.Builder
	b.WriteString("CREATE TYPE gender AS ENUM ('M', 'F');\n")
	for _, line := range strings.Split(s, "\n") {
		switch {
		case strings.HasPrefix(line, "CREATE DATABASE "):
			line = "CREATE SCHEMA " + strings.TrimPrefix(line, "CREATE DATABASE ")
		case strings.HasPrefix(line, "USE "):
			line = "SET search_path = " + strings.TrimSuffix(strings.TrimPrefix(line, "USE "), ";") + ", public;"
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}
