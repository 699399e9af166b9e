package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardsync/shardsync/maxcompute"
	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
	"github.com/shardsync/shardsync/testenv/mcemu"
)

const (
	kTopic  = "tidb-cdc"
	kDB     = "crash"
	kTable  = "korders"
	kShards = 3
)

// kafkaRig is an in-process Kafka broker (kfake), the Doris and MaxCompute
// emulators, and the arguments of a shardsync child reading canal-json
// from the broker: everything but the child lives in the test process, so
// it outlives a killed child.
type kafkaRig struct {
	addr string
	prod *kgo.Client
	emu  *dorisemu.Emulator
	mc   *mcemu.Emulator
	args []string
	env  []string
	runs []*child

	mu sync.Mutex // guards w while a producer goroutine runs
	w  *testenv.CanalWorkload
}

func newKafkaRig(t *testing.T, flavor string, partitions int32, extra ...string) *kafkaRig {
	t.Helper()
	cl, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, kTopic))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	r := &kafkaRig{addr: cl.ListenAddrs()[0]}
	r.prod, err = kgo.NewClient(kgo.SeedBrokers(r.addr), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RecordRetries(100))
	require.NoError(t, err)
	t.Cleanup(r.prod.Close)
	var shards []testenv.ShardID
	for i := 1; i <= kShards; i++ {
		shards = append(shards, testenv.ShardID{DB: fmt.Sprintf("emp_%d", (i+1)/2), Table: fmt.Sprintf("orders_%d", i)})
	}
	r.w = testenv.NewCanalWorkload(uint64(time.Now().UnixNano()), flavor, partitions, shards...)
	r.emu, err = dorisemu.Start(dorisemu.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.emu.Close() })
	r.mc = mcemu.New(mcemu.Options{})
	t.Cleanup(r.mc.Close)
	dir := t.TempDir()
	r.args = append([]string{
		"--kafka", r.addr, "--kafka-topic", kTopic, "--kafka-format", "canal-json",
		"--sources", "emp_[0-9]+", "--tables", "orders_[0-9]+", "--target", kDB + "." + kTable,
		"--doris-fe", r.emu.FEHTTPAddr(), "--doris-query", r.emu.QueryAddr(),
		"--sink", "doris,maxcompute", "--maxcompute-endpoint", r.mc.Endpoint(),
		"--maxcompute-project", r.mc.Project(), "--maxcompute-access-id", r.mc.AccessID(), "--maxcompute-buckets", "4",
		"--ledger", filepath.Join(dir, "job.ledger"), "--checkpoint-interval", "150ms", "--log-level", "debug",
	}, extra...)
	r.env = []string{maxcompute.EnvAccessKey + "=" + r.mc.AccessKey()}
	t.Cleanup(func() {
		for _, c := range r.runs {
			if !c.exited() {
				c.kill(t)
			}
		}
		if t.Failed() {
			for i, c := range r.runs {
				t.Logf("run %d output (tail):\n%s", i, bufferTail(c.out.String(), 40))
			}
		}
	})
	return r
}

func (r *kafkaRig) start(t *testing.T) *child {
	t.Helper()
	c := startChild(t, r.args, r.env...)
	r.runs = append(r.runs, c)
	return c
}

func (r *kafkaRig) produce(t *testing.T, msgs []testenv.CanalMsg) {
	if len(msgs) == 0 {
		return
	}
	recs := make([]*kgo.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = &kgo.Record{Topic: kTopic, Partition: m.Partition, Value: m.Value}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Errorf("producing: %v", err)
	}
}

// step produces one transaction, and with the TiDB extension now and then
// a watermark or a TiCDC restart's re-sends.
func (r *kafkaRig) step(t *testing.T, rng *rand.Rand) {
	r.mu.Lock()
	msgs := r.w.Txn()
	if r.w.Flavor == "tidb" {
		if rng.IntN(3) == 0 {
			msgs = append(msgs, r.w.Watermark()...)
		}
		if rng.IntN(30) == 0 {
			msgs = append(msgs, r.w.Resend(1+rng.IntN(15))...)
		}
	}
	r.mu.Unlock()
	r.produce(t, msgs)
}

func (r *kafkaRig) finish(t *testing.T) {
	r.mu.Lock()
	var msgs []testenv.CanalMsg
	if r.w.Flavor == "tidb" {
		msgs = r.w.Watermark()
	}
	r.mu.Unlock()
	r.produce(t, msgs)
}

type kRowKey struct {
	db, table string
	id        int64
}

// states reads both sinks' targets as key → "ver|name|amount|at".
func (r *kafkaRig) states(t *testing.T) (map[kRowKey]string, map[kRowKey]string, error) {
	rows, err := r.emu.Rows(kDB, kTable)
	if err != nil {
		return nil, nil, err
	}
	d := map[kRowKey]string{}
	for _, row := range rows {
		d[kRowKey{render(row["database_name"]), render(row["table_name"]), toInt(t, row["id"])}] =
			fmt.Sprintf("%s|%s|%s|%s", render(row["ver"]), render(row["name"]), render(row["amount"]), render(row["at"]))
	}
	ti, ok := r.mc.Table(kTable)
	if !ok {
		return d, nil, fmt.Errorf("maxcompute table %s does not exist yet", kTable)
	}
	m := map[kRowKey]string{}
	for _, row := range r.mc.Rows(kTable) {
		v := map[string]any{}
		for i, c := range ti.Columns {
			v[c.Name] = row[i]
			if tm, ok := row[i].(time.Time); ok {
				v[c.Name] = tm.UTC().Format("2006-01-02 15:04:05.000")
			}
		}
		m[kRowKey{render(v["database_name"]), render(v["table_name"]), toInt(t, v["id"])}] =
			fmt.Sprintf("%s|%s|%s|%s", render(v["ver"]), render(v["name"]), render(v["amount"]), render(v["at"]))
	}
	return d, m, nil
}

func (r *kafkaRig) want() map[kRowKey]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[kRowKey]string{}
	for s, rows := range r.w.Expected() {
		for id, row := range rows {
			out[kRowKey{s.DB, s.Table, id}] = fmt.Sprintf("%d|%s|%s|%s", row.Ver, row.Name, row.Amount, row.At)
		}
	}
	return out
}

func (r *kafkaRig) waitConverged(t *testing.T, c *child, within time.Duration) {
	t.Helper()
	want := r.want()
	deadline := time.Now().Add(within)
	for {
		d, m, err := r.states(t)
		diff := ""
		switch {
		case err != nil:
			diff = err.Error()
		case !mapsEqual(want, d):
			diff = fmt.Sprintf("doris has %d rows, want %d", len(d), len(want))
		case !mapsEqual(want, m):
			diff = fmt.Sprintf("maxcompute has %d rows, want %d", len(m), len(want))
		default:
			return
		}
		require.False(t, c.exited(), "shardsync exited:\n%s", bufferTail(c.out.String(), 30))
		if time.Now().After(deadline) {
			for k, v := range want {
				if d[k] != v {
					t.Logf("doris %v = %q, want %q", k, d[k], v)
					break
				}
			}
			t.Fatalf("targets did not converge within %s: %s", within, diff)
		}
		time.Sleep(150 * time.Millisecond)
	}
}

func mapsEqual(a, b map[kRowKey]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// requireExactlyOnce checks every change of the workload was applied by
// exactly one committed Doris load operation, and nothing else was.
func (r *kafkaRig) requireExactlyOnce(t *testing.T) int {
	t.Helper()
	type op struct {
		k   kRowKey
		ver int64
		del bool
	}
	got := map[op]int{}
	for _, l := range r.emu.Loads() {
		if l.DB != kDB || l.Table != kTable {
			continue
		}
		for _, o := range l.Ops {
			got[op{kRowKey{render(o.Row["database_name"]), render(o.Row["table_name"]), toInt(t, o.Row["id"])}, toInt(t, o.Row["ver"]), o.Delete}]++
		}
	}
	r.mu.Lock()
	ops := r.w.Ops()
	r.mu.Unlock()
	for _, o := range ops {
		k := op{kRowKey{o.Shard.DB, o.Shard.Table, o.ID}, o.Ver, o.Delete}
		require.Equal(t, 1, got[k], "change %+v applied %d times", k, got[k])
		delete(got, k)
	}
	require.Empty(t, got, "operations no change made")
	return len(ops)
}

// TestKafkaCrashLoopExactlyOnce runs the real binary on a TiCDC canal-json
// stream (TiDB extension: commitTs transactions over 3 partitions,
// watermarks, TiCDC re-sends after its own restarts) while SIGKILLing it
// at random moments, at least 30 times; the broker and both sinks live in
// this process. Then Doris and MaxCompute must equal the model and every
// change must have been applied exactly once.
func TestKafkaCrashLoopExactlyOnce(t *testing.T) {
	seed := time.Now().UnixNano()
	if s := os.Getenv("SHARDSYNC_CRASH_SEED"); s != "" {
		var err error
		seed, err = strconv.ParseInt(s, 10, 64)
		require.NoError(t, err)
	}
	t.Logf("seed %d (rerun with SHARDSYNC_CRASH_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	r := newKafkaRig(t, "tidb", 3)
	stop := make(chan struct{})
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		prng := rand.New(rand.NewPCG(uint64(seed), 2))
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			r.step(t, prng)
		}
	}()
	kills := 32
	for range kills {
		c := r.start(t)
		time.Sleep(time.Duration(150+rng.IntN(700)) * time.Millisecond)
		require.False(t, c.exited(), "shardsync exited by itself before the kill:\n%s", bufferTail(c.out.String(), 30))
		c.kill(t)
	}
	close(stop)
	<-produced
	r.finish(t)
	c := r.start(t)
	r.waitConverged(t, c, 90*time.Second)
	require.Equal(t, 0, c.stop(t), "SIGTERM must stop shardsync cleanly:\n%s", bufferTail(c.out.String(), 20))
	n := r.requireExactlyOnce(t)
	t.Logf("%d kills; %d changes each applied exactly once in Doris; Doris and MaxCompute equal the model (%d rows)", kills, n, len(r.want()))
}

// TestKafkaJobFlavours runs the job once per flavour without the TiDB
// extension (TiCDC plain and Alibaba Canal): the targets converge and every
// change is applied once.
func TestKafkaJobFlavours(t *testing.T) {
	for _, flavor := range []string{"ticdc", "canal"} {
		t.Run(flavor, func(t *testing.T) {
			r := newKafkaRig(t, flavor, 2)
			rng := rand.New(rand.NewPCG(1, 2))
			for range 60 {
				r.step(t, rng)
			}
			c := r.start(t)
			r.waitConverged(t, c, 60*time.Second)
			for range 40 {
				r.step(t, rng)
			}
			r.waitConverged(t, c, 60*time.Second)
			require.Equal(t, 0, c.stop(t))
			r.requireExactlyOnce(t)
		})
	}
}

// TestKafkaDemo runs `shardsync demo --source kafka` as a user would.
func TestKafkaDemo(t *testing.T) {
	out, err := run(t, "demo", "--source", "kafka")
	require.NoError(t, err, out)
	for _, want := range []string{
		"Starting an in-process Kafka broker", "shop_[0-9]+.orders_[0-9]+ (database.table named in the messages) → demo.all_orders",
		"doris> SELECT COUNT(*) FROM demo.all_orders;", "TiCDC restarts", "Stopping the job cleanly", "Done:",
	} {
		require.Contains(t, out, want)
	}
	require.NotContains(t, strings.ToLower(out), "error")
}

// TestKafkaPipelineFile: a Flink SQL Kafka table's options in a pipeline
// file make the same job as the flags.
func TestKafkaPipelineFile(t *testing.T) {
	yaml := `source:
  type: kafka
  properties.bootstrap.servers: b1:9092,b2:9092
  topic: tidb-a;tidb-b
  value.format: canal-json
  canal-json.database.include: emp_[0-9]+
  canal-json.table.include: orders_[0-9]+
  scan.startup.mode: earliest-offset
  properties.group.id: flink-job
  properties.security.protocol: SASL_PLAINTEXT
  properties.sasl.mechanism: SCRAM-SHA-256
  properties.sasl.jaas.config: org.apache.kafka.common.security.scram.ScramLoginModule required username="cdc" password="${KPW}";
  partitions: 0-3
sink:
  type: doris
  fenodes: f:8030
pipeline:
  name: k
`
	o, warns, err := parsePipeline("p.yaml", []byte(yaml), mapEnv(map[string]string{"KPW": "s3cret"}))
	require.NoError(t, err)
	require.Equal(t, "b1:9092,b2:9092", o.kafka.brokers)
	require.Equal(t, "tidb-a,tidb-b", o.kafka.topics)
	require.Equal(t, "emp_[0-9]+", o.sources)
	require.Equal(t, "orders_[0-9]+", o.tables)
	require.Equal(t, "cdc", o.kafka.saslUser)
	require.Equal(t, "s3cret", o.kafka.password)
	require.Equal(t, "0-3", o.kafka.partitions)
	require.Len(t, warns, 1)
	require.Contains(t, warns[0], "properties.group.id")
	o.target = "d.t"
	c, err := o.kafkaConfig()
	require.NoError(t, err)
	require.Equal(t, []int32{0, 1, 2, 3}, c.Partitions)
	require.Equal(t, "SCRAM-SHA-256", c.SASLMechanism)
	require.Equal(t, "s3cret", c.SASLPassword)

	_, _, err = parsePipeline("p.yaml", []byte(strings.Replace(yaml, "partitions: 0-3", "canal-json.ignore-parse-errors: true", 1)), mapEnv(map[string]string{"KPW": "x"}))
	require.ErrorContains(t, err, "never drops records silently")
	_, err = parsePartitions("3-1")
	require.Error(t, err)
	// Scale-out: processes with other partitions get other default label
	// prefixes (and so other ledgers).
	a, b := o, o
	b.kafka.partitions = "4-7"
	require.NotEqual(t, defaultPrefix(a), defaultPrefix(b))
}

func TestKafkaPosition(t *testing.T) {
	pos, ok := kafkaPosition([]byte(`{"v":1,"source":"kafka","routes":"x","mode":"tidb","released":42,"parts":[{"t":"b","p":1,"o":7},{"t":"a","p":0,"o":3}]}`))
	require.True(t, ok)
	require.Equal(t, "kafka a/0@3 b/1@7 (TiCDC commitTs below 42 applied)", pos)
	_, ok = kafkaPosition([]byte(`{"Version":1}`))
	require.False(t, ok)
}
