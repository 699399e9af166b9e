package kafka_test

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/testenv"
)

var shards = []testenv.ShardID{{DB: "emp_1", Table: "orders_1"}, {DB: "emp_1", Table: "orders_2"}, {DB: "emp_2", Table: "orders_1"}}

// TestExactRandomWorkload produces a random canal-json workload (each
// flavour) into a 4-partition topic and consumes it with simulated
// crashes at random points, resuming each time from the last committed
// token; with the TiDB extension, TiCDC re-sends (its restart) are mixed
// in. Every change must be applied exactly once and in order, and the end
// state must equal the model.
func TestExactRandomWorkload(t *testing.T) {
	for _, flavor := range []string{"tidb", "ticdc", "canal"} {
		t.Run(flavor, func(t *testing.T) {
			_, addr := newCluster(t, 4)
			prod := newProducer(t, addr)
			w := testenv.NewCanalWorkload(uint64(len(flavor)), flavor, 4, shards...)
			rnd := rand.New(rand.NewPCG(7, 11))
			m := newModel()
			cfg := sourceConfig(addr)
			for round := range 8 {
				for range 40 {
					produce(t, prod, w.Txn())
					if flavor == "tidb" {
						if rnd.IntN(4) == 0 {
							produce(t, prod, w.Watermark())
						}
						if rnd.IntN(25) == 0 {
							produce(t, prod, w.Resend(1+rnd.IntN(12)))
						}
					}
				}
				if flavor == "tidb" {
					produce(t, prod, w.Watermark())
				}
				// A crash after a random number of events.
				require.NoError(t, m.consume(t, cfg, 5+rnd.IntN(60), func() bool { return m.matches(w) }), "round %d", round)
			}
			require.NoError(t, m.consume(t, cfg, 0, func() bool { return m.matches(w) }))
			m.check(t, w)
			t.Logf("%s: %d changes applied, %d rows", flavor, m.applied, len(m.rows))
			require.NotNil(t, m.schema)
			require.Equal(t, []string{"database_name", "table_name", "id"}, m.schema.Key)
		})
	}
}
