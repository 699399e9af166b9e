package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/merge"
	"github.com/shardsync/shardsync/source/kafka"
	"github.com/shardsync/shardsync/testenv"
)

const topic = "tidb-cdc"

func newCluster(t *testing.T, partitions int32, opts ...kfake.Opt) (*kfake.Cluster, string) {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()[0]
}

func newProducer(t *testing.T, addr string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RecordRetries(100), kgo.RequiredAcks(kgo.AllISRAcks()))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

func produce(t *testing.T, cl *kgo.Client, msgs []testenv.CanalMsg) {
	t.Helper()
	if len(msgs) == 0 {
		return
	}
	recs := make([]*kgo.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = &kgo.Record{Topic: topic, Partition: m.Partition, Value: m.Value}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, cl.ProduceSync(ctx, recs...).FirstErr())
}

func sourceConfig(addr string) kafka.Config {
	r, err := merge.NewRoute(`emp_[0-9]+`, `orders_[0-9]+`, change.TableID{Database: "demo", Table: "orders"})
	if err != nil {
		panic(err)
	}
	return kafka.Config{Brokers: []string{addr}, Topics: []string{topic}, Routes: []merge.Route{r}, BatchRows: 7}
}

type rowKey struct {
	db, table string
	id        int64
}

// model is a sink that applies whole source transactions at each commit
// event and checks every change is applied once and in order: each change
// bumps the row's ver, so an insert of a present row, an update whose
// before-image is not the current version, or a delete of another version
// is a duplicate or a row moved back.
type model struct {
	rows    map[rowKey][]change.Value
	pending []change.Row
	token   change.Token
	applied int
	schema  *change.Schema
}

func newModel() *model { return &model{rows: map[rowKey][]change.Value{}} }

func (m *model) key(v []change.Value) rowKey {
	return rowKey{v[0].(string), v[1].(string), v[2].(int64)}
}

func (m *model) commit() error {
	for _, r := range m.pending {
		switch r.Op {
		case change.Insert:
			k := m.key(r.After)
			if _, ok := m.rows[k]; ok {
				return fmt.Errorf("insert of present row %v (applied twice)", k)
			}
			m.rows[k] = r.After
		case change.Update:
			k := m.key(r.After)
			cur, ok := m.rows[k]
			if !ok || cur[5] != r.Before[5] || r.After[5].(int64) != cur[5].(int64)+1 {
				return fmt.Errorf("update of %v from ver %v to %v, but the row is at %v (present %v)", k, r.Before[5], r.After[5], cur, ok)
			}
			m.rows[k] = r.After
		case change.Delete:
			k := m.key(r.Before)
			cur, ok := m.rows[k]
			if !ok || cur[5] != r.Before[5] {
				return fmt.Errorf("delete of %v at ver %v, but the row is %v (present %v)", k, r.Before[5], cur, ok)
			}
			delete(m.rows, k)
		}
		m.applied++
	}
	m.pending = nil
	return nil
}

// consume reads events until done reports true or limit events were read
// (a simulated crash: pending rows are lost), and returns the error that
// ended the stream, if any.
func (m *model) consume(t *testing.T, cfg kafka.Config, limit int, done func() bool) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	src, err := kafka.Open(ctx, cfg, m.token, nil)
	if err != nil {
		return err
	}
	defer src.Close()
	m.pending = nil
	for n := 0; limit <= 0 || n < limit; n++ {
		if done != nil && done() {
			return nil
		}
		nctx, ncancel := context.WithTimeout(ctx, 2*time.Second)
		ev, err := src.Next(nctx)
		ncancel()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			continue
		}
		if err != nil {
			return err
		}
		switch ev.Kind {
		case change.EventSchema:
			s := ev.Schema.Schema
			m.schema = &s
		case change.EventRows:
			m.pending = append(m.pending, ev.Rows...)
		case change.EventCommit, change.EventProgress:
			if ev.Kind == change.EventProgress && len(m.pending) > 0 {
				return fmt.Errorf("progress event after %d rows without a commit", len(m.pending))
			}
			if err := m.commit(); err != nil {
				return err
			}
			m.token = ev.Token
		}
	}
	return nil
}

// check compares the model with the workload's expected state.
func (m *model) check(t *testing.T, w *testenv.CanalWorkload) {
	t.Helper()
	want := map[rowKey]testenv.CanalRow{}
	for s, rows := range w.Expected() {
		for id, r := range rows {
			want[rowKey{s.DB, s.Table, id}] = r
		}
	}
	require.Len(t, m.rows, len(want))
	for k, r := range want {
		got, ok := m.rows[k]
		require.True(t, ok, "row %v missing", k)
		require.Equal(t, []change.Value{k.db, k.table, r.ID, r.Name, change.Decimal(r.Amount), r.Ver, change.DateTime(r.At)}, got, "row %v", k)
	}
}

// matches reports whether the model equals the expected state.
func (m *model) matches(w *testenv.CanalWorkload) bool {
	n := 0
	for s, rows := range w.Expected() {
		for id, r := range rows {
			n++
			got, ok := m.rows[rowKey{s.DB, s.Table, id}]
			if !ok || got[5] != r.Ver {
				return false
			}
		}
	}
	return n == len(m.rows)
}
