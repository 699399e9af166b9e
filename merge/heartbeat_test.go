package merge

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/testenv"
)

// An idle stream still emits progress (heartbeats), and a token taken on a
// heartbeat resumes exactly.
func TestHeartbeatProgressAndIdleResume(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ServerID: 12})
	require.NoError(t, m.Exec(testenv.TutorialSQL))
	cfg := testConfig(t, m, empRoute(t))
	src, err := Open(t.Context(), cfg, nil, nil)
	require.NoError(t, err)
	c := newConsumer(t)
	end := currentPos(t, m)
	c.run(t.Context(), src, func() bool { return c.caughtUp(end) })
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	progress := 0
	for progress < 3 {
		ev, err := src.Next(ctx)
		require.NoError(t, err, "no heartbeat progress on an idle stream")
		if ev.Kind == change.EventProgress {
			progress++
		}
		c.handle(ev)
	}
	require.NoError(t, src.Close())
	src, err = Open(t.Context(), cfg, c.token, nil)
	require.NoError(t, err)
	defer src.Close()
	ctx2, cancel2 := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel2()
	progress = 0
	for progress < 2 {
		ev, err := src.Next(ctx2)
		require.NoError(t, err, "no heartbeat progress after resuming idle")
		if ev.Kind == change.EventProgress {
			progress++
		}
		c.handle(ev)
	}
	require.Len(t, c.state, testenv.TutorialRows)
}
