package main

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
)

// TestKeylessToDorisAppendsExactlyOnce: shards without a primary key go to
// a Duplicate Key table that shardsync creates. It is an append log, as the
// MaxCompute append table: the snapshot rows, every inserted row and every
// update's after image each appear exactly once, deletes are not applied,
// and SIGKILLs in the middle change none of it (labels and the ledger).
func TestKeylessToDorisAppendsExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts MariaDB")
	}
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{})
	shards := []string{"kl_1.events_1", "kl_2.events_1"}
	want := map[string]int{} // "db|table|id|v" → times it must appear
	for _, sh := range shards {
		db, _, _ := strings.Cut(sh, ".")
		require.NoError(t, m.Exec("CREATE DATABASE "+db, "CREATE TABLE "+sh+" (id INT NOT NULL, v VARCHAR(20), n INT)"))
		var vals []string
		for i := 1; i <= 50; i++ {
			vals = append(vals, fmt.Sprintf("(%d,'s',%d)", i, i))
			want[fmt.Sprintf("%s|%d|s", strings.Replace(sh, ".", "|", 1), i)]++
		}
		require.NoError(t, m.Exec("INSERT INTO "+sh+" VALUES "+strings.Join(vals, ",")))
	}
	emu, err := dorisemu.Start(dorisemu.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = emu.Close() })
	args := []string{"--sources", "kl_[0-9]+", "--tables", "events_[0-9]+", "--target", "kl.events",
		"--mysql", m.Addr(), "--doris-fe", emu.FEHTTPAddr(), "--doris-query", emu.QueryAddr(),
		"--ledger", filepath.Join(t.TempDir(), "job.ledger"), "--checkpoint-interval", "150ms", "--server-id", "778"}
	var runs []*child
	t.Cleanup(func() {
		for _, c := range runs {
			if !c.exited() {
				c.kill(t)
			}
		}
		if t.Failed() && len(runs) > 0 {
			t.Logf("last run (tail):\n%s", bufferTail(runs[len(runs)-1].out.String(), 40))
		}
	})
	start := func() *child {
		c := startChild(t, args)
		runs = append(runs, c)
		return c
	}
	got := func() (map[string]int, error) {
		rows, err := emu.Rows("kl", "events")
		if err != nil {
			return nil, err
		}
		out := map[string]int{}
		for _, r := range rows {
			out[fmt.Sprintf("%s|%s|%s|%s", render(r["database_name"]), render(r["table_name"]), render(r["id"]), render(r["v"]))]++
		}
		return out, nil
	}
	waitFor := func(c *child, want map[string]int) {
		deadline := time.Now().Add(90 * time.Second)
		for {
			g, err := got()
			if err == nil && len(g) == len(want) {
				same := true
				for k, n := range want {
					same = same && g[k] == n
				}
				if same {
					return
				}
			}
			require.False(t, c.exited(), "shardsync exited:\n%s", bufferTail(c.out.String(), 30))
			require.True(t, time.Now().Before(deadline), "target %v (err %v), want %d distinct rows", len(g), err, len(want))
			time.Sleep(150 * time.Millisecond)
		}
	}

	c := start()
	waitFor(c, want)
	require.Contains(t, c.out.String(), "written as an append log")
	require.Contains(t, c.out.String(), "keys_type=DUPLICATE_KEYS", "the created target is a Duplicate Key table")

	// Changes in rounds, with a SIGKILL and a restart after each.
	rng := rand.New(rand.NewPCG(7, 7))
	for round := 1; round <= 6; round++ {
		for _, sh := range shards {
			key := strings.Replace(sh, ".", "|", 1)
			id := 1000 + round
			v := fmt.Sprintf("u%d", round)
			require.NoError(t, m.Exec(
				fmt.Sprintf("INSERT INTO %s VALUES (%d,'i',0)", sh, id),
				fmt.Sprintf("UPDATE %s SET v='%s' WHERE id=%d", sh, v, round),
				fmt.Sprintf("DELETE FROM %s WHERE id=%d", sh, 40+round)))
			want[fmt.Sprintf("%s|%d|i", key, id)]++
			want[fmt.Sprintf("%s|%d|%s", key, round, v)]++ // the update's after image; the old row stays
		}
		time.Sleep(time.Duration(100+rng.IntN(500)) * time.Millisecond)
		c.kill(t)
		c = start()
	}
	waitFor(c, want)
	require.Equal(t, 0, c.stop(t))
	g, err := got()
	require.NoError(t, err)
	for k, n := range g {
		require.Equal(t, 1, n, "%s appended %d times", k, n)
	}
	t.Logf("%d rows appended exactly once over %d runs", len(g), len(runs))
}
