package twopc_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/ledger"
	"github.com/shardsync/shardsync/twopc"
	"github.com/shardsync/shardsync/twopc/twopctest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	tblA = change.TableID{Database: "demo", Table: "a"}
	tblB = change.TableID{Database: "demo", Table: "b"}
)

// srcTxn is one scripted source transaction.
type srcTxn struct {
	rows   []change.Row
	schema *change.TableSchema // emitted before the transaction
	del    *change.ShardDelete // the transaction is a shard delete (no rows)
}

// script is a deterministic source history. Transaction i ends at token
// "t<i+1>"; opening at token "t<k>" continues with transaction k.
type script struct {
	txns  []srcTxn
	chunk int // rows per EventRows
}

// makeScript builds n transactions with 1..3 rows each, ids counting up,
// alternating targets.
func makeScript(n int) *script {
	s := &script{chunk: 2}
	id := int64(0)
	for i := range n {
		var rows []change.Row
		for range 1 + i%3 {
			tg := tblA
			if id%2 == 1 {
				tg = tblB
			}
			rows = append(rows, change.Row{Op: change.Insert, Target: tg, Source: change.TableID{Database: "s1", Table: "t1"}, After: []change.Value{id}})
			id++
		}
		s.txns = append(s.txns, srcTxn{rows: rows})
	}
	return s
}

func tokenOf(i int) change.Token { return change.Token("t" + strconv.Itoa(i)) }

func indexOf(t *testing.T, tok change.Token) int {
	if tok == nil {
		return 0
	}
	i, err := strconv.Atoi(string(tok[1:]))
	require.NoError(t, err)
	return i
}

// source replays a script from a token. After the script it either blocks
// (idle) or, with progress set, emits EventProgress with the last token.
type source struct {
	s      *script
	events []change.Event
	pos    int
	// block, when set, is called before each event; it may block.
	block func(ctx context.Context, i int, ev change.Event) error
	mu    sync.Mutex
	read  int
}

func (s *script) open(t *testing.T, from change.Token) *source {
	start := indexOf(t, from)
	var evs []change.Event
	for i := start; i < len(s.txns); i++ {
		tx := s.txns[i]
		if tx.schema != nil {
			evs = append(evs, change.Event{Kind: change.EventSchema, Schema: tx.schema})
		}
		if tx.del != nil {
			evs = append(evs, change.Event{Kind: change.EventShardDelete, Deletes: []change.ShardDelete{*tx.del}, Token: tokenOf(i + 1)})
			continue
		}
		for j := 0; j < len(tx.rows); j += s.chunk {
			evs = append(evs, change.Event{Kind: change.EventRows, Rows: tx.rows[j:min(j+s.chunk, len(tx.rows))]})
		}
		evs = append(evs, change.Event{Kind: change.EventCommit, Token: tokenOf(i + 1)})
	}
	return &source{s: s, events: evs}
}

func (src *source) Next(ctx context.Context) (change.Event, error) {
	if src.pos >= len(src.events) {
		<-ctx.Done()
		return change.Event{}, ctx.Err()
	}
	ev := src.events[src.pos]
	if src.block != nil {
		if err := src.block(ctx, src.pos, ev); err != nil {
			return change.Event{}, err
		}
	}
	src.pos++
	src.mu.Lock()
	src.read = src.pos
	src.mu.Unlock()
	return ev, nil
}

func (src *source) done() bool {
	src.mu.Lock()
	defer src.mu.Unlock()
	return src.read >= len(src.events)
}

func openLedger(t *testing.T, path string) *ledger.Ledger {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "ledger.db")
	}
	l, err := ledger.Open(path, ledger.Options{Timeout: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func testConfig() twopc.Config {
	cfg := twopc.DefaultConfig()
	cfg.CheckpointInterval = 20 * time.Millisecond
	cfg.ShutdownGrace = 200 * time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Commit = twopc.RetryPolicy{Min: time.Millisecond, Max: 5 * time.Millisecond, Attempts: 3}
	return cfg
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// observer records what the coordinator reports.
type observer struct {
	mu     sync.Mutex
	epochs []twopc.EpochStats
	calls  map[string]int
}

func (o *observer) EpochFinished(s twopc.EpochStats) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.epochs = append(o.epochs, s)
}

func (o *observer) SinkCall(sink, op string, _ time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.calls == nil {
		o.calls = map[string]int{}
	}
	o.calls[fmt.Sprintf("%s/%s/%t", sink, op, err == nil)]++
}

func (o *observer) finished() []twopc.EpochStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]twopc.EpochStats(nil), o.epochs...)
}

// requireExactlyOnce checks that sink shows every row of the script's first
// n transactions exactly once.
func requireExactlyOnce(t *testing.T, sink *twopctest.Sink, s *script, n int) {
	t.Helper()
	want := map[int64]int{}
	for _, tx := range s.txns[:n] {
		for _, r := range tx.rows {
			want[r.After[0].(int64)] = 1
		}
	}
	got := map[int64]int{}
	for _, r := range sink.Visible() {
		got[r.After[0].(int64)]++
	}
	require.Equal(t, want, got, "sink %s: every row exactly once", sink.Name())
}

// runUntil runs the coordinator until cond holds, then stops it cleanly.
func runUntil(t *testing.T, c *twopc.Coordinator, src twopc.Source, cond func() bool) error {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx, src) }()
	deadline := time.After(20 * time.Second)
	for !cond() {
		select {
		case err := <-errc:
			return err
		case <-deadline:
			cancel()
			<-errc
			t.Fatal("condition not reached in time")
		case <-time.After(2 * time.Millisecond):
		}
	}
	cancel()
	return <-errc
}
