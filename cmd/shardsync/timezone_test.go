package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
)

// TestLocalTimeZoneValues checks TIMESTAMP and DATETIME values one by one,
// snapshot and binlog rows, with the source server at +00:00 and +08:00
// and the job without a zone (UTC instants, the default) and with
// local-time-zone Asia/Shanghai (the wall clock Flink CDC writes).
func TestLocalTimeZoneValues(t *testing.T) {
	if testing.Short() {
		t.Skip("starts MariaDB")
	}
	type row struct{ ts, dt string }
	// Rows are written in the server's zone: ts '2024-01-01 00:00:00.123'.
	cases := map[string]map[string][2]row{ // server zone → job zone → {snapshot row, binlog row}
		"+00:00": {
			"":              {{"2024-01-01 00:00:00.123", "2024-01-01 00:00:00"}, {"2024-06-30 23:30:00.500", "2024-06-30 23:30:00"}},
			"Asia/Shanghai": {{"2024-01-01 08:00:00.123", "2024-01-01 00:00:00"}, {"2024-07-01 07:30:00.500", "2024-06-30 23:30:00"}},
		},
		"+08:00": {
			"":              {{"2023-12-31 16:00:00.123", "2024-01-01 00:00:00"}, {"2024-06-30 15:30:00.500", "2024-06-30 23:30:00"}},
			"Asia/Shanghai": {{"2024-01-01 00:00:00.123", "2024-01-01 00:00:00"}, {"2024-06-30 23:30:00.500", "2024-06-30 23:30:00"}},
			"+08:00":        {{"2024-01-01 00:00:00.123", "2024-01-01 00:00:00"}, {"2024-06-30 23:30:00.500", "2024-06-30 23:30:00"}},
		},
	}
	for serverZone, jobs := range cases {
		t.Run("server"+serverZone, func(t *testing.T) {
			m := testenv.StartMariaDB(t, testenv.MariaDBOptions{TimeZone: serverZone})
			require.NoError(t, m.Exec("CREATE DATABASE tz_1",
				"CREATE TABLE tz_1.t_1 (id INT PRIMARY KEY, ts TIMESTAMP(3) NULL, dt DATETIME NULL)",
				"INSERT INTO tz_1.t_1 VALUES (1, '2024-01-01 00:00:00.123', '2024-01-01 00:00:00'), (3, NULL, NULL)"))
			k := 0
			for jobZone, want := range jobs {
				k++
				emu, err := dorisemu.Start(dorisemu.Options{})
				require.NoError(t, err)
				var opts jobOptions
				fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
				opts.addFlags(fs)
				require.NoError(t, fs.Parse([]string{"--sources", "tz_[0-9]+", "--tables", "t_[0-9]+", "--target", "tz.t",
					"--mysql", m.Addr(), "--doris-fe", emu.FEHTTPAddr(), "--doris-query", emu.QueryAddr(),
					"--ledger", filepath.Join(t.TempDir(), "job.ledger"), "--checkpoint-interval", "150ms", "--local-time-zone", jobZone}))
				var out lockedBuffer
				j, err := prepare(opts, slog.New(slog.NewTextHandler(&out, nil)), &out)
				require.NoError(t, err)
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan error, 1)
				go func() { done <- j.run(ctx) }()
				rowsNow := func() map[string]row {
					rows, _ := emu.Rows("tz", "t")
					got := map[string]row{}
					for _, r := range rows {
						got[render(r["id"])] = row{render(r["ts"]), render(r["dt"])}
					}
					return got
				}
				// Rows 10, 11, … came through the binlog of earlier jobs
				// and through this job's snapshot; row 10+k through its binlog.
				require.Eventually(t, func() bool { return len(rowsNow()) == k+1 }, 60*time.Second, 100*time.Millisecond, "%s", &out)
				require.NoError(t, m.Exec(fmt.Sprintf("INSERT INTO tz_1.t_1 VALUES (%d, '2024-06-30 23:30:00.5', '2024-06-30 23:30:00')", 10+k)))
				require.Eventually(t, func() bool { return len(rowsNow()) == k+2 }, 60*time.Second, 100*time.Millisecond, "%s", &out)
				got := rowsNow()
				cancel()
				require.NoError(t, <-done)
				_ = emu.Close()
				require.Equal(t, want[0], got["1"], "server %s, local-time-zone %q: snapshot row", serverZone, jobZone)
				for i := 1; i <= k; i++ {
					require.Equal(t, want[1], got[fmt.Sprint(10+i)], "server %s, local-time-zone %q: row %d (binlog when %d = %d)", serverZone, jobZone, 10+i, i, k)
				}
				require.Equal(t, row{"NULL", "NULL"}, got["3"], fmt.Sprintf("server %s, local-time-zone %q: NULLs", serverZone, jobZone))
			}
		})
	}
}

func TestParseZone(t *testing.T) {
	for in, off := range map[string]int{"+08:00": 8 * 3600, "GMT+08:00": 8 * 3600, "UTC-5": -5 * 3600, "Asia/Shanghai": 8 * 3600, "UTC": 0} {
		loc, err := parseZone(in)
		require.NoError(t, err, in)
		_, got := time.Date(2024, 1, 1, 0, 0, 0, 0, loc).Zone()
		require.Equal(t, off, got, in)
	}
	loc, err := parseZone("")
	require.NoError(t, err)
	require.Nil(t, loc)
	for _, bad := range []string{"Mars/Olympus", "+25:00", "Local"} {
		_, err := parseZone(bad)
		require.ErrorContains(t, err, "--local-time-zone", bad)
	}
}
