package merge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/testenv"
)

const benchRows = 200_000

// benchServer holds a table like specs/mysql-cdc.md §4.2 with benchRows
// rows, written in 1000-row transactions; start..end spans those inserts
// in the binlog.
func benchServer(b *testing.B) (*testenv.MariaDB, Route, binPos, binPos) {
	m := testenv.StartMariaDB(b, testenv.MariaDBOptions{ServerID: 50})
	require.NoError(b, m.Exec("CREATE DATABASE bench_1",
		"CREATE TABLE bench_1.t (id BIGINT PRIMARY KEY, a INT, b VARCHAR(64), c DECIMAL(18,4), d DATETIME, e BIGINT)"))
	c, err := m.Connect("")
	require.NoError(b, err)
	defer c.Close()
	_, err = c.Execute("SET SESSION max_recursive_iterations=1000000")
	require.NoError(b, err)
	start := currentPos(b, m)
	for i := 0; i < benchRows; i += 1000 {
		_, err := c.Execute(fmt.Sprintf(`INSERT INTO bench_1.t WITH RECURSIVE s(n) AS (SELECT %d UNION ALL SELECT n+1 FROM s WHERE n < %d)
			SELECT n, n %% 1000, CONCAT('row-', n), n / 7, '2024-01-02 03:04:05', n * 3 FROM s`, i+1, i+1000))
		require.NoError(b, err)
	}
	end := currentPos(b, m)
	r, err := NewRoute(`bench_[0-9]`, `t`, change.TableID{Database: "x", Table: "bench"})
	require.NoError(b, err)
	return m, r, start, end
}

// rawSnapshot reads the table with chunked SELECTs on go-mysql alone.
func rawSnapshot(b *testing.B, m *testenv.MariaDB) (int, time.Duration) {
	c, err := client.Connect(m.Addr(), "root", "", "")
	require.NoError(b, err)
	defer c.Close()
	t0 := time.Now()
	n, lo := 0, int64(0)
	for {
		r, err := c.Execute("SELECT id, a, b, c, d, e FROM bench_1.t WHERE id > ? ORDER BY id LIMIT 8096", lo)
		require.NoError(b, err)
		k := len(r.Values)
		n += k
		if k > 0 {
			lo = r.Values[k-1][0].AsInt64()
		}
		r.Close()
		if k < 8096 {
			return n, time.Since(t0)
		}
	}
}

// rawBinlog decodes the binlog span with a GetEvent loop on go-mysql alone.
func rawBinlog(b *testing.B, m *testenv.MariaDB, start, end binPos) (int, time.Duration) {
	s := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{ServerID: 9000, Flavor: "mariadb", Host: "127.0.0.1",
		Port: uint16(m.Port()), User: "root", UseDecimal: true, TimestampStringLocation: time.UTC, DisableRetrySync: true,
		Logger: discardLogger()})
	defer s.Close()
	t0 := time.Now()
	st, err := s.StartSync(mysql.Position{Name: start.File, Pos: start.Pos})
	require.NoError(b, err)
	n := 0
	for {
		ev, err := st.GetEvent(context.Background())
		require.NoError(b, err)
		if re, ok := ev.Event.(*replication.RowsEvent); ok {
			n += len(re.Rows)
		}
		if ev.Header.LogPos >= end.Pos && ev.Header.EventType == replication.XID_EVENT {
			return n, time.Since(t0)
		}
	}
}

func drain(b *testing.B, src *Source, until func(*consumer) bool) int {
	c := newConsumer(b)
	n := 0
	for {
		ev, err := src.Next(b.Context())
		require.NoError(b, err)
		n += len(ev.Rows)
		switch ev.Kind {
		case change.EventCommit, change.EventProgress:
			c.token = ev.Token
			if until(c) {
				return n
			}
		}
	}
}

func BenchmarkSnapshot(b *testing.B) {
	m, route, _, end := benchServer(b)
	rawN, rawD := rawSnapshot(b, m)
	require.Equal(b, benchRows, rawN)
	cfg := testConfig(b, m, route)
	cfg.ChunkSize, cfg.Readers = 8096, 1
	b.ResetTimer()
	total := 0
	for b.Loop() {
		src, err := Open(b.Context(), cfg, nil, nil)
		require.NoError(b, err)
		total += drain(b, src, func(c *consumer) bool { return c.caughtUp(end) })
		require.NoError(b, src.Close())
	}
	rate := float64(total) / b.Elapsed().Seconds()
	raw := float64(rawN) / rawD.Seconds()
	b.ReportMetric(rate, "rows/s")
	b.ReportMetric(raw, "raw_rows/s")
	b.ReportMetric(rate/raw, "ratio")
}

func BenchmarkBinlog(b *testing.B) {
	m, route, start, end := benchServer(b)
	rawN, rawD := rawBinlog(b, m, start, end)
	require.Equal(b, benchRows, rawN)
	cfg := testConfig(b, m, route)
	tok := (&tokenEncoder{}).encode(&tokenState{Version: 1, Routes: routesFingerprint(cfg.Routes, "database_name", "table_name"),
		Flavor: "mariadb", Pos: start, SnapshotDone: true})
	b.ResetTimer()
	total := 0
	for b.Loop() {
		src, err := Open(b.Context(), cfg, tok, nil)
		require.NoError(b, err)
		total += drain(b, src, func(c *consumer) bool { return c.caughtUp(end) })
		require.NoError(b, src.Close())
	}
	rate := float64(total) / b.Elapsed().Seconds()
	raw := float64(rawN) / rawD.Seconds()
	b.ReportMetric(rate, "rows/s")
	b.ReportMetric(raw, "raw_rows/s")
	b.ReportMetric(rate/raw, "ratio")
}
