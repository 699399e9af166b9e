package ledger

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
)

func TestEpochCodecRoundTrip(t *testing.T) {
	e := Epoch{
		Number: 7, State: StatePrecommitted, Start: change.Token{0, 1, 2}, End: change.Token("end"),
		Intents:  []SinkTxn{txn("doris", "p_t_7")},
		Prepared: []SinkTxn{{Sink: "maxcompute", Label: "m_7", TxnID: "sess", Extra: []byte(`{"blocks":[1,2]}`)}},
		Opened:   time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Note: "n",
	}
	b, err := encodeEpoch(e)
	require.NoError(t, err)
	got, err := decodeEpoch(b)
	require.NoError(t, err)
	require.Equal(t, e, got)

	for _, bad := range []string{
		``, `{}`, `{"v":2,"epoch":1,"state":"OPEN"}`, `{"v":1,"epoch":1,"state":"DONE"}`,
		`{"v":1,"epoch":1,"state":"OPEN","surprise":1}`, `{"v":1,"epoch":1,"state":"OPEN"} {}`,
		`{"v":1,"epoch":1,"state":"OPEN","prepared":[{"sink":"d","label":"l"}]}`,
		`{"v":1,"epoch":1,"state":"OPEN","intents":[{"sink":"","label":"l"}]}`,
	} {
		_, err := decodeEpoch([]byte(bad))
		require.Error(t, err, "%q", bad)
	}
}

// FuzzDecodeEpoch checks that the decoder never panics and that whatever it
// accepts re-encodes to a record it accepts again, unchanged.
func FuzzDecodeEpoch(f *testing.F) {
	f.Add([]byte(`{"v":1,"epoch":3,"state":"OPEN","start":"AAE=","intents":[{"sink":"doris","target":{"Database":"d","Table":"t"},"label":"p_t_3"}],"opened":"2025-01-01T00:00:00Z","updated":"2025-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"v":1,"epoch":4,"state":"COMMITTED","end":"ZW5k","prepared":[{"sink":"doris","target":{"Database":"d","Table":"t"},"label":"l","txn_id":"9","extra":{"a":1}}],"opened":"0001-01-01T00:00:00Z","updated":"0001-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEpoch(b)
		if err != nil {
			return
		}
		enc, err := encodeEpoch(e)
		require.NoError(t, err)
		again, err := decodeEpoch(enc)
		require.NoError(t, err)
		enc2, err := encodeEpoch(again)
		require.NoError(t, err)
		require.JSONEq(t, string(enc), string(enc2))
	})
}
