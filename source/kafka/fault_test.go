package kafka_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/source/kafka"
	"github.com/shardsync/shardsync/testenv"
)

// TestTiCDCResendAfterRestart: TiCDC restarts from a checkpoint below the
// last watermark it sent and sends the changes since then again, at higher
// offsets, some of which shardsync applied (released by the watermark) and
// some it still buffers; shardsync itself also restarts in between. Each
// change must be applied once, and no row moves back.
func TestTiCDCResendAfterRestart(t *testing.T) {
	_, addr := newCluster(t, 3)
	prod := newProducer(t, addr)
	w := testenv.NewCanalWorkload(42, "tidb", 3, shards...)
	m := newModel()
	cfg := sourceConfig(addr)
	for range 30 {
		produce(t, prod, w.Txn())
	}
	produce(t, prod, w.Watermark()) // everything so far is applied once read
	for range 10 {
		produce(t, prod, w.Txn()) // buffered: no watermark yet
	}
	require.NoError(t, m.consume(t, cfg, 0, func() bool { return m.matchesBelow(w, 30) }))
	// TiCDC restarts at a checkpoint below the watermark: the last 25
	// messages again (applied ones and buffered ones).
	produce(t, prod, w.Resend(25))
	require.NoError(t, m.consume(t, cfg, 3, nil)) // shardsync crashes too
	produce(t, prod, w.Resend(8))
	for range 10 {
		produce(t, prod, w.Txn())
	}
	produce(t, prod, w.Watermark())
	require.NoError(t, m.consume(t, cfg, 0, func() bool { return m.matches(w) }))
	m.check(t, w)
}

// matchesBelow reports whether at least n changes were applied.
func (m *model) matchesBelow(_ *testenv.CanalWorkload, n int) bool { return m.applied >= n }

// TestBrokerRestart stops the broker while the source reads and starts it
// again on the same port and data: the open source carries on, exactly.
func TestBrokerRestart(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	start := func() *kfake.Cluster {
		var c *kfake.Cluster
		require.Eventually(t, func() bool {
			c, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.SeedTopics(2, topic), kfake.DataDir(dir), kfake.SyncWrites())
			return err == nil
		}, 20*time.Second, 100*time.Millisecond)
		return c
	}
	c := start()
	addr := c.ListenAddrs()[0]
	w := testenv.NewCanalWorkload(3, "tidb", 2, shards...)
	prod := newProducer(t, addr)
	for range 20 {
		produce(t, prod, w.Txn())
	}
	produce(t, prod, w.Watermark())

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	m := newModel()
	logs := &syncBuf{}
	cfg := sourceConfig(addr)
	cfg.ConnectTimeout = time.Second
	src, err := kafka.Open(ctx, cfg, nil, slog.New(slog.NewTextHandler(logs, nil)))
	require.NoError(t, err)
	defer src.Close()
	read := func(until func() bool) {
		for !until() {
			ev, err := src.Next(ctx)
			require.NoError(t, err)
			switch ev.Kind {
			case change.EventRows:
				m.pending = append(m.pending, ev.Rows...)
			case change.EventCommit:
				require.NoError(t, m.commit())
			}
		}
	}
	read(func() bool { return m.matches(w) })
	c.Close()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "Kafka brokers unreachable") }, 30*time.Second, 100*time.Millisecond)
	c = start()
	defer c.Close()
	for range 20 {
		produce(t, prod, w.Txn())
	}
	produce(t, prod, w.Watermark())
	read(func() bool { return m.matches(w) })
	m.check(t, w)
	require.Contains(t, logs.String(), "Kafka brokers reachable again")
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestBadRecords: a bad record stops the stream naming topic, partition,
// offset and reason; with a dead-letter file it is set aside there,
// counted, and the stream goes on.
func TestBadRecords(t *testing.T) {
	_, addr := newCluster(t, 1)
	prod := newProducer(t, addr)
	w := testenv.NewCanalWorkload(5, "ticdc", 1, shards...)
	produce(t, prod, w.Txn())
	produce(t, prod, []testenv.CanalMsg{{Value: []byte(`{"isDdl":false,"type":"UPSERT","database":"emp_1","table":"orders_1"}`)}})
	produce(t, prod, []testenv.CanalMsg{{Value: []byte(`{"id":0,"database":"emp_1","table":"orders_1","pkNames":["id"],"isDdl":false,"type":"INSERT","mysqlType":{"id":"bigint","name":"varchar"},"data":[{"name":"x"}]}`)}})
	produce(t, prod, []testenv.CanalMsg{{Value: []byte(`{"id":0,"database":"emp_1","table":"orders_1","pkNames":["id"],"isDdl":false,"type":"INSERT","mysqlType":{"id":"bigint","name":"varchar(32)","amount":"decimal(10,2)","ver":"int","at":"datetime(3)"},"data":[{"id":"x1","name":"x","amount":"1","ver":"1","at":null}]}`)}})
	produce(t, prod, w.Txn())

	m := newModel()
	cfg := sourceConfig(addr)
	err := m.consume(t, cfg, 0, nil)
	var bad *kafka.BadRecordError
	require.ErrorAs(t, err, &bad)
	require.ErrorIs(t, err, kafka.ErrBadRecord)
	require.Equal(t, topic, bad.Topic)
	require.Equal(t, int32(0), bad.Partition)
	require.Contains(t, err.Error(), `unknown type "UPSERT"`)
	first := bad.Offset

	dlq := filepath.Join(t.TempDir(), "dead.jsonl")
	cfg.DeadLetterFile = dlq
	n := 0
	cfg.OnDeadLetter = func() { n++ }
	require.NoError(t, m.consume(t, cfg, 0, func() bool { return m.matches(w) }))
	m.check(t, w)
	require.Equal(t, 3, n)
	b, err := os.ReadFile(dlq)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	require.Len(t, lines, 3)
	require.Contains(t, lines[0], `"offset":`+itoa(first))
	require.Contains(t, lines[1], "lacks the value of key column id")
	require.Contains(t, lines[2], `column id (bigint)`)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// deleteRecordsBefore deletes a partition's records up to its end, as
// retention would.
func deleteRecordsBefore(t *testing.T, cl *kgo.Client, topic string, partition int32) {
	t.Helper()
	req := kmsg.NewPtrDeleteRecordsRequest()
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewDeleteRecordsRequestTopicPartition()
	rp.Partition, rp.Offset = partition, -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 10000
	resp, err := req.RequestWith(context.Background(), cl)
	require.NoError(t, err)
	require.NoError(t, kerr.ErrorForCode(resp.Topics[0].Partitions[0].ErrorCode))
}

// TestOffsetOutOfRange: records the ledger resumes from were deleted
// (retention) while the job was stopped: Open refuses, naming the gap,
// instead of jumping ahead.
func TestOffsetOutOfRange(t *testing.T) {
	_, addr := newCluster(t, 1)
	prod := newProducer(t, addr)
	w := testenv.NewCanalWorkload(9, "ticdc", 1, shards...)
	for range 5 {
		produce(t, prod, w.Txn())
	}
	m := newModel()
	cfg := sourceConfig(addr)
	require.NoError(t, m.consume(t, cfg, 0, func() bool { return m.matches(w) }))
	for range 5 {
		produce(t, prod, w.Txn())
	}
	adm, err := kgo.NewClient(kgo.SeedBrokers(addr))
	require.NoError(t, err)
	defer adm.Close()
	deleteRecordsBefore(t, adm, topic, 0)
	err = m.consume(t, cfg, 0, nil)
	require.ErrorIs(t, err, kafka.ErrOffsetOutOfRange)
	require.ErrorContains(t, err, "removed by retention")

	_, err = kafka.Open(context.Background(), kafka.Config{Brokers: []string{addr}, Topics: []string{"nope"}, Routes: cfg.Routes}, nil, nil)
	require.ErrorIs(t, err, kafka.ErrTopic)
	_, err = kafka.Open(context.Background(), kafka.Config{Brokers: []string{"127.0.0.1:1"}, Topics: []string{topic}, Routes: cfg.Routes, ConnectTimeout: time.Second}, nil, nil)
	require.ErrorIs(t, err, kafka.ErrUnavailable)
	require.ErrorContains(t, err, "127.0.0.1:1")
}

// TestTopicDeleted: the topic is deleted while the source reads it: the
// stream ends with ErrTopic naming it.
func TestTopicDeleted(t *testing.T) {
	_, addr := newCluster(t, 1)
	prod := newProducer(t, addr)
	w := testenv.NewCanalWorkload(2, "ticdc", 1, shards...)
	produce(t, prod, w.Txn())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	src, err := kafka.Open(ctx, sourceConfig(addr), nil, nil)
	require.NoError(t, err)
	defer src.Close()
	for {
		ev, err := src.Next(ctx)
		require.NoError(t, err)
		if ev.Kind == change.EventCommit {
			break
		}
	}
	req := kmsg.NewPtrDeleteTopicsRequest()
	req.TopicNames = []string{topic}
	rt := kmsg.NewDeleteTopicsRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 10000
	_, err = req.RequestWith(ctx, prod)
	require.NoError(t, err)
	for {
		_, err = src.Next(ctx)
		if err != nil {
			break
		}
	}
	require.ErrorIs(t, err, kafka.ErrTopic)
	require.ErrorContains(t, err, "topic "+topic+" was deleted")
}
