package twopc_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/twopc"
	"github.com/shardsync/shardsync/twopc/twopctest"
)

// committedSource records the tokens the coordinator reports as committed
// and checks each one is already the ledger's resume position.
type committedSource struct {
	*source
	t      *testing.T
	resume func() change.Token
	mu     sync.Mutex
	got    []change.Token
}

func (c *committedSource) Committed(tok change.Token) {
	require.Equal(c.t, tok, c.resume(), "Committed is called only after the ledger made the token the resume position")
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, tok)
}

func TestCommittedHookReportsDurableTokensInOrder(t *testing.T) {
	l := openLedger(t, "")
	d := twopctest.NewSink("doris")
	c, err := twopc.New(testConfig(), l, []twopc.Sink{d}, testLogger(t))
	require.NoError(t, err)
	s := makeScript(30)
	src := &committedSource{source: s.open(t, nil), t: t, resume: func() change.Token {
		tok, err := l.Resume()
		require.NoError(t, err)
		return tok
	}}
	require.NoError(t, runUntil(t, c, src, src.done))
	requireExactlyOnce(t, d, s, len(s.txns))
	src.mu.Lock()
	defer src.mu.Unlock()
	require.NotEmpty(t, src.got)
	last := -1
	for _, tok := range src.got {
		i := indexOf(t, tok)
		require.Greater(t, i, last, "tokens in order")
		last = i
	}
	require.Equal(t, len(s.txns), last, "the final token is reported")
}
