package merge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
)

// Sentinel errors; the returned errors wrap them with the details (use
// errors.Is).
var (
	// ErrPrerequisite: the server is not configured for change capture.
	ErrPrerequisite = errors.New("source prerequisite not met")
	// ErrBinlogPurged: the binlog needed to resume was purged (ERROR 1236).
	ErrBinlogPurged = errors.New("binlog needed to resume has been purged")
	// ErrDuplicateServerID: another replica registered with our server id
	// (ERROR 4052), or the id equals the server's own.
	ErrDuplicateServerID = errors.New("duplicate replica server id")
	// ErrIncompatibleSchema: shards of one route, or a DDL, cannot be
	// merged into the target.
	ErrIncompatibleSchema = errors.New("incompatible schema")
	// ErrNoShards: a route matched no table.
	ErrNoShards = errors.New("route matches no table")
	// ErrBadToken: a resume token cannot be used with this configuration.
	ErrBadToken = errors.New("unusable resume token")
	// ErrConnect: the server could not be reached or refused the login
	// after all retries.
	ErrConnect = errors.New("cannot connect to source")
	// ErrAccessDenied: the server refused the login (ERROR 1045); wrapped
	// together with ErrConnect. Waiting does not fix a wrong password.
	ErrAccessDenied = errors.New("login refused")
)

// MySQL error codes this package classifies.
const (
	codeAccessDenied   = 1045
	codeMasterFatal    = 1236 // ER_MASTER_FATAL_ERROR_READING_BINLOG
	codeDupServerID    = 4052 // MariaDB: a slave with the same server_uuid/server_id
	codeDupServerIDOld = 1236
)

func myErrCode(err error) (uint16, string, bool) {
	var me *mysql.MyError
	if errors.As(err, &me) {
		return me.Code, me.Message, true
	}
	return 0, "", false
}

// classifyStreamError turns a binlog stream error into a terminal error the
// user can act on, or returns nil when a reconnect may help.
func classifyStreamError(err error, resume string) error {
	code, msg, ok := myErrCode(err)
	if !ok {
		// go-mysql sometimes flattens server errors into text.
		s := err.Error()
		switch {
		case strings.Contains(s, "ERROR 4052") || strings.Contains(s, "same server_uuid/server_id"):
			code, msg, ok = codeDupServerID, s, true
		case strings.Contains(s, "ERROR 1236"):
			code, msg, ok = codeMasterFatal, s, true
		}
	}
	if !ok {
		return nil
	}
	switch code {
	case codeDupServerID:
		return fmt.Errorf("%w: the server dropped this binlog connection because another replica connected with the same server id (MariaDB ERROR 4052: %s); give every shardsync job and every replica its own server id: %w", ErrDuplicateServerID, msg, err)
	case codeMasterFatal:
		if strings.Contains(msg, "same server_uuid/server_id") || strings.Contains(msg, "same server_id") {
			return fmt.Errorf("%w: %s; give every shardsync job and every replica its own server id", ErrDuplicateServerID, msg)
		}
		if strings.Contains(msg, "purged") || strings.Contains(msg, "Could not find first log file") || strings.Contains(msg, "Could not find GTID state") || strings.Contains(msg, "binary log index") {
			return fmt.Errorf("%w: the server no longer has the binlog at the resume position %s (ERROR 1236: %s). The changes since then are lost to the binlog: start the job again without a resume token (a fresh snapshot) and raise binlog_expire_logs_seconds so the binlog outlives downtime", ErrBinlogPurged, resume, msg)
		}
		return fmt.Errorf("reading the binlog from %s: the server refused (ERROR 1236: %s)", resume, msg)
	}
	return nil
}

// dial connects with retries and exponential backoff. Access denied and
// network errors are retried (a password may be being rotated, a host
// restarted); the final error says which it was.
func (s *shared) dial(ctx context.Context, db string) (*client.Conn, error) {
	backoff := s.cfg.RetryBackoff
	var last error
	for attempt := 0; ; attempt++ {
		c, err := client.ConnectWithContext(ctx, s.cfg.Addr, s.cfg.User, s.cfg.Password, db, s.cfg.ConnectTimeout, func(c *client.Conn) error {
			// go-mysql's default handshake collation (255,
			// utf8mb4_0900_ai_ci) is unknown to MariaDB, which then falls
			// back to latin1: ask for utf8mb4 explicitly.
			return c.SetCollation("utf8mb4_general_ci")
		})
		if err == nil {
			return c, nil
		}
		last = err
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if attempt >= s.cfg.ConnectRetries {
			break
		}
		lv := slog.LevelWarn
		if attempt > 0 {
			lv = slog.LevelDebug // one warning per outage here; the job logs its own backoff steps
		}
		s.log.Log(ctx, lv, "connecting to source failed; retrying", "addr", s.cfg.Addr, "attempt", attempt+1, "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
	return nil, connectError(s.cfg.Addr, s.cfg.User, s.cfg.ConnectRetries, last)
}

func connectError(addr, user string, retries int, err error) error {
	if code, msg, ok := myErrCode(err); ok && code == codeAccessDenied {
		return fmt.Errorf("%w: %s refused the login of user %q after %d retries (ERROR 1045: %s): check the user name and password: %w", ErrConnect, addr, user, retries, msg, ErrAccessDenied)
	}
	return fmt.Errorf("%w: %s unreachable after %d retries: check that the server runs and the address is right: %w", ErrConnect, addr, retries, err)
}

// shared holds what every part of a Source needs.
type shared struct {
	cfg Config
	log *slog.Logger
}
