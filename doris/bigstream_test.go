package doris_test

import (
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/doris"
	"github.com/shardsync/shardsync/testenv/dorisemu"
	"github.com/shardsync/shardsync/twopc"
)

// TestEmuBigStream pushes ≥ 1 GiB through one transaction (64 MiB under
// -race or -short) and checks the client's heap stays flat: rows are
// generated on the fly and the stream holds at most its buffer.
func TestEmuBigStream(t *testing.T) {
	size := int64(1 << 30)
	if raceEnabled || testing.Short() {
		size = 64 << 20
	}
	e := startEmu(t, dorisemu.Options{CountOnly: true})
	s, _ := emuSink(t, e, nil)
	ctx := t.Context()
	ts := empSchema(target)
	ts.Schema.Columns[3].Type = change.Type{Kind: change.KindString, SQL: "text"}
	require.NoError(t, s.ApplySchema(ctx, ts))

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	}()

	pad := strings.Repeat("p", 900)
	batch := make([]change.Row, 1000)
	for i := range batch {
		batch[i] = ins(target, "emp_1", 0, pad)
		batch[i].After = append([]change.Value(nil), batch[i].After...)
	}
	rowLen := int64(len(`{"database_name":"emp_1","table_name":"employees_1","id":1000000,"name":"","salary":"1234567890.12","hired":"2024-01-02 03:04:05.123456","__DORIS_DELETE_SIGN__":0}`) + len(pad) + 1)
	tx, err := s.Begin(ctx, 1, &recorder{})
	require.NoError(t, err)
	start := time.Now()
	var rows int64
	for rows*rowLen < size+size/50 {
		for i := range batch {
			batch[i].After[2] = rows + int64(i)
		}
		require.NoError(t, tx.Write(ctx, batch))
		rows += int64(len(batch))
	}
	prep, err := tx.PreCommit(ctx)
	require.NoError(t, err)
	close(stop)
	<-sampled
	require.Len(t, prep, 1)
	require.Equal(t, twopc.Committed, commit(t, s, prep[0]))
	info, ok := e.Txn(prep[0].Label)
	require.True(t, ok)
	require.Equal(t, rows, info.LoadedRows)
	require.GreaterOrEqual(t, info.LoadBytes, size)
	growth := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("streamed %d rows, %d MiB in %s; heap in use grew by at most %d KiB (buffer %d KiB)",
		rows, info.LoadBytes>>20, time.Since(start).Round(time.Millisecond), growth>>10, doris.DefaultBufferSize>>10)
	// Client buffer (1 MiB) + transport buffers + the in-process emulator's
	// read buffers; anything proportional to the stream would be >> 64 MiB.
	require.Less(t, growth, int64(48<<20), "client memory grew with the stream")
}
