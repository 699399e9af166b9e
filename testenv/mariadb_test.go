package testenv

import (
	"encoding/hex"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTwoMariaDBsWithTutorialShards(t *testing.T) {
	t.Parallel()
	servers := make([]*MariaDB, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range servers {
		wg.Go(func() { servers[i], errs[i] = LaunchMariaDB(t.Context(), MariaDBOptions{ServerID: uint32(10 + i)}) })
	}
	wg.Wait()
	for i, m := range servers {
		if m != nil {
			t.Cleanup(func() { _ = m.Stop(); m.Remove() })
		}
		require.NoError(t, errs[i])
	}
	require.NotEqual(t, servers[0].Addr(), servers[1].Addr())
	for i, m := range servers {
		require.NoError(t, m.Exec(TutorialSQL))
		total := 0
		for _, db := range []string{"emp_1", "emp_2"} {
			for _, tbl := range []string{"employees_1", "employees_2"} {
				rows, err := m.Query("SELECT COUNT(*) FROM " + db + "." + tbl)
				require.NoError(t, err)
				n := 0
				for _, c := range rows[0][0] {
					n = n*10 + int(c-'0')
				}
				require.Positive(t, n, "%s.%s is empty", db, tbl)
				total += n
			}
		}
		require.Equal(t, TutorialRows, total)
		for name, want := range map[string]string{
			"log_bin": "1", "binlog_format": "ROW", "binlog_row_image": "FULL",
			"binlog_row_metadata": "FULL", "server_id": []string{"10", "11"}[i],
		} {
			got, err := m.Variable(name)
			require.NoError(t, err)
			require.Equal(t, want, got, "@@%s", name)
		}
		gtid, err := m.Variable("gtid_binlog_pos")
		require.NoError(t, err)
		require.Regexp(t, `^0-1[01]-[0-9]+$`, gtid, "GTIDs are written to the binlog")
	}
}

func TestMariaDBRestartKeepsData(t *testing.T) {
	t.Parallel()
	m := StartMariaDB(t, MariaDBOptions{})
	require.NoError(t, m.Exec("CREATE DATABASE r", "CREATE TABLE r.t (id INT PRIMARY KEY)", "INSERT INTO r.t VALUES (1),(2)"))
	port := m.Port()
	require.NoError(t, m.Restart(t.Context()))
	require.Equal(t, port, m.Port())
	rows, err := m.Query("SELECT COUNT(*) FROM r.t")
	require.NoError(t, err)
	require.Equal(t, "2", rows[0][0])
	m.Kill()
	require.NoError(t, m.Start(t.Context()))
	rows, err = m.Query("SELECT COUNT(*) FROM r.t")
	require.NoError(t, err)
	require.Equal(t, "2", rows[0][0])
}

func TestMariaDBMisconfigurations(t *testing.T) {
	t.Parallel()
	off := StartMariaDB(t, MariaDBOptions{BinlogOff: true})
	v, err := off.Variable("log_bin")
	require.NoError(t, err)
	require.Equal(t, "0", v)
	mixed := StartMariaDB(t, MariaDBOptions{BinlogFormat: "MIXED", BinlogRowMetadata: "NO_LOG"})
	v, err = mixed.Variable("binlog_format")
	require.NoError(t, err)
	require.Equal(t, "MIXED", v)
	v, err = mixed.Variable("binlog_row_metadata")
	require.NoError(t, err)
	require.Equal(t, "NO_LOG", v)
}

func TestMissingBinariesError(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, _, err := findMariaDBIn(t.TempDir())
	require.ErrorIs(t, err, ErrNoMariaDB)
	require.Contains(t, err.Error(), "apt-get install -y mariadb-server")
}

func TestConnectSpeaksUTF8MB4(t *testing.T) {
	t.Parallel()
	m := StartMariaDB(t, MariaDBOptions{})
	const text = "Zoë 😀 漢字"
	require.NoError(t, m.Exec("CREATE DATABASE u", "CREATE TABLE u.t (s VARCHAR(20) CHARACTER SET utf8mb4)", "INSERT INTO u.t VALUES ('"+text+"')"))
	rows, err := m.Query("SELECT s, HEX(s) FROM u.t")
	require.NoError(t, err)
	require.Equal(t, text, rows[0][0])
	require.Equal(t, strings.ToUpper(hex.EncodeToString([]byte(text))), rows[0][1], "stored as UTF-8, not double-encoded latin1")
}
