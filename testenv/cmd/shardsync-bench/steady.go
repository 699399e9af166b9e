package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-mysql-org/go-mysql/client"

	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
)

// The steady scenario writes a constant rate of row changes (autocommit
// INSERTs, UPDATEs and DELETEs of 1–9 rows) and measures, for every source
// transaction, the time from sending its statement to the commit of the
// Doris load that holds its rows (dorisemu Load.CommitTime). The emulator
// keeps rows in this scenario: the rows name their transaction
// (last_name = testenv.Token(txn)), which is how a load is matched to the
// transactions it holds; at a few thousand rows/s that costs the emulator
// little.

const steadyConns = 4

// steadyTxn is one source transaction of the steady scenario.
type steadyTxn struct {
	sent time.Time
	rows int
}

// scheduler hands out transaction ids and their due times so that rows
// arrive at a constant rate over all connections.
type scheduler struct {
	mu    sync.Mutex
	start time.Time
	end   time.Time
	rate  float64
	rows  int64
	next  uint64
}

// take reserves a transaction of n rows: its id and when to send it; ok is
// false once the run's time is up.
func (s *scheduler) take(n int) (id uint64, due time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	due = s.start.Add(time.Duration(float64(s.rows) / s.rate * float64(time.Second)))
	if !due.Before(s.end) {
		return 0, due, false
	}
	s.rows += int64(n)
	s.next++
	return s.next, due, true
}

// steadyConn is one driver connection; it owns the keys k ≡ idx (mod
// steadyConns) of every shard.
type steadyConn struct {
	idx    int
	c      *client.Conn
	r      *rand.Rand
	shards []testenv.ShardID
	live   [][]int64          // per shard: live keys owned
	name   []map[int64]string // per shard: key → current last_name
	next   []int64            // per shard: next unused key owned
	txns   map[uint64]steadyTxn
	dels   map[string]uint64 // deleted row version → deleting txn
}

func delKey(db, table string, key int64, name string) string {
	return db + "\x00" + table + "\x00" + strconv.FormatInt(key, 10) + "\x00" + name
}

func newSteadyConn(idx int, c *client.Conn, spec testenv.ShardSpec) *steadyConn {
	sc := &steadyConn{idx: idx, c: c, r: rand.New(rand.NewPCG(uint64(idx), 42)), shards: spec.Shards(),
		txns: map[uint64]steadyTxn{}, dels: map[string]uint64{}}
	for _, sh := range sc.shards {
		names := map[int64]string{}
		var live []int64
		for k := int64(1); k <= int64(spec.Rows); k++ {
			if int(k%steadyConns) == idx {
				live = append(live, k)
				names[k] = spec.Row(sh, k)["last_name"]
			}
		}
		n := int64(spec.Rows) + 1
		for int(n%steadyConns) != idx {
			n++
		}
		sc.live, sc.name, sc.next = append(sc.live, live), append(sc.name, names), append(sc.next, n)
	}
	return sc
}

func (sc *steadyConn) loop(ctx context.Context, s *scheduler) error {
	for {
		n := 1 + sc.r.IntN(9)
		id, due, ok := s.take(n)
		if !ok {
			return nil
		}
		if d := time.Until(due); d > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
			}
		}
		si := sc.r.IntN(len(sc.shards))
		sh := sc.shards[si]
		tok := testenv.Token(id)
		var q string
		switch p := sc.r.IntN(10); {
		case p < 2 && len(sc.live[si]) >= n+50: // delete
			var keys []string
			for range n {
				i := sc.r.IntN(len(sc.live[si]))
				k := sc.live[si][i]
				sc.live[si] = slices.Delete(sc.live[si], i, i+1)
				sc.dels[delKey(sh.DB, sh.Table, k, sc.name[si][k])] = id
				delete(sc.name[si], k)
				keys = append(keys, strconv.FormatInt(k, 10))
			}
			q = "DELETE FROM " + quoted(sh) + " WHERE emp_no IN (" + strings.Join(keys, ",") + ")"
		case p < 6 && len(sc.live[si]) >= n: // update distinct rows
			var keys []string
			for _, i := range sc.r.Perm(len(sc.live[si]))[:n] {
				k := sc.live[si][i]
				sc.name[si][k] = tok
				keys = append(keys, strconv.FormatInt(k, 10))
			}
			q = "UPDATE " + quoted(sh) + " SET last_name = '" + tok + "', hire_date = hire_date + INTERVAL 1 DAY WHERE emp_no IN (" + strings.Join(keys, ",") + ")"
		default: // insert
			var vals []string
			for range n {
				k := sc.next[si]
				sc.next[si] += steadyConns
				sc.live[si] = append(sc.live[si], k)
				sc.name[si][k] = tok
				vals = append(vals, fmt.Sprintf("(%d,'1970-01-01','Steady','%s','F','2001-02-03')", k, tok))
			}
			q = "INSERT INTO " + quoted(sh) + " " + insertCols + " VALUES " + strings.Join(vals, ",")
		}
		sent := time.Now()
		r, err := sc.c.Execute(q)
		if err != nil {
			return fmt.Errorf("steady workload: %q: %w", abbreviate(q, 100), err)
		}
		if int(r.AffectedRows) != n {
			return fmt.Errorf("steady workload: %q changed %d rows, want %d", abbreviate(q, 100), r.AffectedRows, n)
		}
		r.Close()
		sc.txns[id] = steadyTxn{sent: sent, rows: n}
	}
}

func (b *bench) steady(ctx context.Context) (r result, err error) {
	r = result{name: "steady", scale: 1, steady: true, wantRate: float64(b.cfg.steadyRate)}
	m, err := b.startMariaDB(ctx)
	if err != nil {
		return r, err
	}
	defer stopMariaDB(m)
	spec := benchSpec("live_")
	spec.Rows = 1000
	if err := spec.Create(ctx, m); err != nil {
		return r, err
	}
	baseRows := int64(spec.Rows * benchShards)
	emu, err := dorisemu.Start(dorisemu.Options{})
	if err != nil {
		return r, err
	}
	defer emu.Close()
	j, err := b.newJob(m, emu, spec.DBPrefix, "steady")
	if err != nil {
		return r, err
	}
	c, err := b.start(ctx, j, "steady")
	if err != nil {
		return r, err
	}
	defer c.kill()
	if _, err := j.waitLoaded(ctx, c, baseRows, timeout(baseRows)); err != nil {
		return r, err
	}
	if err := b.settle(j, baseRows); err != nil {
		return r, err
	}

	conns := make([]*steadyConn, steadyConns)
	for i := range conns {
		cl, err := m.Connect("")
		if err != nil {
			return r, err
		}
		defer cl.Close()
		conns[i] = newSteadyConn(i, cl, spec)
	}
	cpu0, err := c.cpu()
	if err != nil {
		return r, err
	}
	t0 := time.Now()
	s := &scheduler{start: t0, end: t0.Add(b.cfg.steadyDur), rate: r.wantRate}
	b.log.Info("steady: writing", "rate", b.cfg.steadyRate, "for", b.cfg.steadyDur)
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, sc := range conns {
		wg.Go(func() { errs[i] = sc.loop(ctx, s) })
	}
	wg.Wait()
	wrote := time.Since(t0)
	for _, e := range errs {
		if e != nil {
			return r, e
		}
	}
	txns := map[uint64]steadyTxn{}
	dels := map[string]uint64{}
	var rows int64
	for _, sc := range conns {
		for id, t := range sc.txns {
			txns[id] = t
			rows += int64(t.rows)
		}
		for k, id := range sc.dels {
			dels[k] = id
		}
	}
	r.rows, r.achievedRate = rows, float64(rows)/wrote.Seconds()
	if _, err := j.waitLoaded(ctx, c, baseRows+rows, 60*time.Second); err != nil {
		return r, err
	}
	cpu1, err := c.cpu()
	if err != nil {
		return r, err
	}
	window := time.Since(t0)
	r.cpuCores = (cpu1 - cpu0).Seconds() / window.Seconds()
	r.cpuPer1kChange = float64((cpu1 - cpu0).Milliseconds()) / (float64(rows) / 1000)
	r.secs = wrote.Seconds()
	if err := b.settle(j, baseRows+rows); err != nil {
		return r, err
	}
	fr, err := freshness(emu.Loads(), j, txns, dels)
	if err != nil {
		return r, err
	}
	r.p50, r.p99, r.pmax = fr[len(fr)/2], fr[min(len(fr)-1, len(fr)*99/100)], fr[len(fr)-1]
	u, err := c.stop()
	r.cpu, r.peakRSS = u.cpu, u.peakRSS
	b.logChild(c)
	return r, err
}

// freshness matches every committed row of the target to its source
// transaction and returns, sorted, each transaction's time from send to
// the commit of the (last) load holding its rows. It fails when a
// transaction's rows are missing or present more than once.
func freshness(loads []dorisemu.Load, j *job, txns map[uint64]steadyTxn, dels map[string]uint64) ([]time.Duration, error) {
	seen := make(map[uint64]int, len(txns))
	done := make(map[uint64]time.Time, len(txns))
	for _, l := range loads {
		if l.DB != j.db || l.Table != j.tb {
			continue
		}
		for _, op := range l.Ops {
			name := fmt.Sprint(op.Row["last_name"])
			var id uint64
			if op.Delete {
				key, err := strconv.ParseInt(fmt.Sprint(op.Row["emp_no"]), 10, 64)
				if err != nil {
					return nil, fmt.Errorf("deleted row with emp_no %v: %w", op.Row["emp_no"], err)
				}
				var ok bool
				if id, ok = dels[delKey(fmt.Sprint(op.Row["database_name"]), fmt.Sprint(op.Row["table_name"]), key, name)]; !ok {
					return nil, fmt.Errorf("a load deleted %v, which no workload transaction deleted", op.Row)
				}
			} else {
				var ok bool
				if id, ok = testenv.TokenID(name); !ok {
					continue // an initial row, from the snapshot
				}
			}
			seen[id]++
			if l.CommitTime.After(done[id]) {
				done[id] = l.CommitTime
			}
		}
	}
	out := make([]time.Duration, 0, len(txns))
	for id, t := range txns {
		if seen[id] != t.rows {
			return nil, fmt.Errorf("transaction %d changed %d rows but the target's loads hold %d of them", id, t.rows, seen[id])
		}
		out = append(out, done[id].Sub(t.sent))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the steady workload committed no transaction")
	}
	slices.Sort(out)
	return out, nil
}
