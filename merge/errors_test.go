package merge

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/testenv"
)

func TestPrerequisites(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 9})
	require.NoError(t, m.Exec(testenv.TutorialSQL))
	cases := []struct {
		set, reset string
		wants      []string
	}{
		{"SET GLOBAL binlog_format='MIXED'", "SET GLOBAL binlog_format='ROW'", []string{"binlog_format=MIXED", "SET GLOBAL binlog_format='ROW'"}},
		{"SET GLOBAL binlog_row_image='MINIMAL'", "SET GLOBAL binlog_row_image='FULL'", []string{"binlog_row_image=MINIMAL"}},
		{"SET GLOBAL binlog_row_metadata='MINIMAL'", "SET GLOBAL binlog_row_metadata='FULL'", []string{"binlog_row_metadata=MINIMAL", "SET GLOBAL binlog_row_metadata='FULL'"}},
	}
	for _, tc := range cases {
		require.NoError(t, m.Exec(tc.set))
		_, err := Open(t.Context(), testConfig(t, m, empRoute(t)), nil, nil)
		require.ErrorIs(t, err, ErrPrerequisite, tc.set)
		for _, w := range tc.wants {
			require.Contains(t, err.Error(), w)
		}
		require.NoError(t, m.Exec(tc.reset))
	}

	// Grants.
	require.NoError(t, m.Exec("CREATE USER 'weak'@'%' IDENTIFIED BY 'pw'", "GRANT SELECT ON *.* TO 'weak'@'%'"))
	cfg := testConfig(t, m, empRoute(t))
	cfg.User, cfg.Password = "weak", "pw"
	_, err := Open(t.Context(), cfg, nil, nil)
	require.ErrorIs(t, err, ErrPrerequisite)
	require.Contains(t, err.Error(), "REPLICATION SLAVE")
	require.Contains(t, err.Error(), "GRANT")

	// Wrong password: retried, then a clear error.
	cfg.Password = "wrong"
	_, err = Open(t.Context(), cfg, nil, nil)
	require.ErrorIs(t, err, ErrConnect)
	require.Contains(t, err.Error(), "ERROR 1045")
	require.Contains(t, err.Error(), "password")

	// Host down.
	port, err := testenv.FreePort("127.0.0.1")
	require.NoError(t, err)
	cfg = testConfig(t, m, empRoute(t))
	cfg.Addr = "127.0.0.1:" + strconv.Itoa(port)
	start := time.Now()
	_, err = Open(t.Context(), cfg, nil, nil)
	require.ErrorIs(t, err, ErrConnect)
	require.Contains(t, err.Error(), "unreachable after 2 retries")
	require.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond, "no backoff")

	// The server's own id.
	cfg = testConfig(t, m, empRoute(t))
	cfg.ServerID = 9
	_, err = Open(t.Context(), cfg, nil, nil)
	require.ErrorIs(t, err, ErrDuplicateServerID)
}

func TestBinlogOff(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 10, BinlogOff: true})
	require.NoError(t, m.Exec(testenv.TutorialSQL))
	_, err := Open(t.Context(), testConfig(t, m, empRoute(t)), nil, nil)
	require.ErrorIs(t, err, ErrPrerequisite)
	require.Contains(t, err.Error(), "log_bin=OFF")
	require.Contains(t, err.Error(), "--log-bin")
}

func TestPurgedBinlogAndDuplicateServerID(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 11})
	require.NoError(t, m.Exec(testenv.TutorialSQL))
	cfg := testConfig(t, m, empRoute(t))
	src, err := Open(t.Context(), cfg, nil, nil)
	require.NoError(t, err)
	c := newConsumer(t)
	// A change makes sure the binlog reader is connected.
	require.NoError(t, m.Exec("INSERT INTO emp_1.employees_1 VALUES (3,'1990-01-01','A','B','M','2020-01-01')"))
	end := currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })

	// Another replica registers with our server id: MariaDB drops the
	// older connection (ours) with ERROR 4052.
	other := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{ServerID: cfg.ServerID, Flavor: "mariadb",
		Host: "127.0.0.1", Port: uint16(m.Port()), User: "root", DisableRetrySync: true})
	defer other.Close()
	_, err = other.StartSync(mysqlPos(end))
	require.NoError(t, err)
	for {
		ev, err := src.Next(t.Context())
		if err != nil {
			require.ErrorIs(t, err, ErrDuplicateServerID)
			require.Contains(t, err.Error(), "4052")
			require.Contains(t, err.Error(), "own server id")
			break
		}
		c.handle(ev)
	}
	require.NoError(t, src.Close())
	other.Close()

	// Purge the binlog past the token.
	tok := c.token
	require.NoError(t, m.Exec("INSERT INTO emp_1.employees_1 VALUES (1,'1990-01-01','A','B','M','2020-01-01')", "FLUSH BINARY LOGS",
		"INSERT INTO emp_1.employees_1 VALUES (2,'1990-01-01','A','B','M','2020-01-01')", "FLUSH BINARY LOGS"))
	last := currentPos(t, m)
	// A dump thread still closing may hold the old file: purge until gone.
	require.Eventually(t, func() bool {
		require.NoError(t, m.Exec(fmt.Sprintf("PURGE BINARY LOGS TO '%s'", last.File)))
		rows, err := m.Query("SHOW BINARY LOGS")
		require.NoError(t, err)
		return rows[0][0] == last.File
	}, 10*time.Second, 100*time.Millisecond)
	_, err = Open(t.Context(), cfg, tok, nil)
	require.ErrorIs(t, err, ErrBinlogPurged)
	require.Contains(t, err.Error(), "without a resume token")

	// The server's own ERROR 1236 (GTID purged) is classified the same way.
	err = classifyStreamError(fmt.Errorf("wrapped: %w", &mysqlError{Code: 1236, Message: "Could not find GTID state requested by slave in any binlog files. Probably the slave state is too old and required binlog files have been purged."}), "0-1-5")
	require.ErrorIs(t, err, ErrBinlogPurged)
	require.Contains(t, err.Error(), "ERROR 1236")
}
