package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/dorisemu"
)

// runKafkaDemo is `shardsync demo --source kafka`: TiCDC-style canal-json
// (TiDB extension: commitTs, watermarks) for three sharded orders tables is
// produced into an in-process Kafka broker, and a job merges it into the
// Doris emulator; then more changes, including a TiCDC re-send, follow.
func runKafkaDemo(ctx context.Context, w io.Writer, keep bool) error {
	out := &syncWriter{w: w}
	dir, err := os.MkdirTemp("", "shardsync-demo-")
	if err != nil {
		return err
	}
	if keep {
		defer fmt.Fprintf(out, "\nThe demo's files are kept in %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	const topic = "tidb-cdc"
	demoStep(out, "Starting an in-process Kafka broker with topic %s (3 partitions)", topic)
	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, topic))
	if err != nil {
		return err
	}
	defer broker.Close()
	addr := broker.ListenAddrs()[0]
	fmt.Fprintf(out, "    broker %s\n", addr)
	prod, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return err
	}
	defer prod.Close()
	produce := func(msgs []testenv.CanalMsg) error {
		recs := make([]*kgo.Record, len(msgs))
		for i, m := range msgs {
			recs[i] = &kgo.Record{Topic: topic, Partition: m.Partition, Value: m.Value}
		}
		return prod.ProduceSync(ctx, recs...).FirstErr()
	}
	wl := testenv.NewCanalWorkload(1, "tidb", 3, testenv.ShardID{DB: "shop_1", Table: "orders_1"},
		testenv.ShardID{DB: "shop_1", Table: "orders_2"}, testenv.ShardID{DB: "shop_2", Table: "orders_1"})
	demoStep(out, "Producing TiCDC canal-json (enable-tidb-extension=true): 200 transactions over shop_1.orders_1, shop_1.orders_2, shop_2.orders_1, then a WATERMARK")
	for range 200 {
		if err := produce(wl.Txn()); err != nil {
			return err
		}
	}
	if err := produce(wl.Watermark()); err != nil {
		return err
	}
	expected := func() int {
		n := 0
		for _, rows := range wl.Expected() {
			n += len(rows)
		}
		return n
	}
	fmt.Fprintf(out, "    %d rows exist in the model after the transactions\n", expected())

	demoStep(out, "Starting the Doris emulator (FE 127.0.0.1, BE 127.0.0.2)")
	emu, err := dorisemu.Start(dorisemu.Options{})
	if err != nil {
		return err
	}
	defer emu.Close()
	args := []string{
		"--kafka", addr, "--kafka-topic", topic, "--kafka-format", "canal-json",
		"--sources", "shop_[0-9]+", "--tables", "orders_[0-9]+", "--target", "demo.all_orders",
		"--doris-fe", emu.FEHTTPAddr(), "--doris-query", emu.QueryAddr(),
		"--ledger", filepath.Join(dir, "demo.ledger"), "--checkpoint-interval", "1s",
	}
	demoStep(out, "Running: shardsync %s", strings.Join(quoteArgs(args), " "))
	logPath := filepath.Join(dir, "shardsync.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	fmt.Fprintf(out, "    (the job's log goes to %s)\n", logPath)
	var opts jobOptions
	fs := pflag.NewFlagSet("demo", pflag.ContinueOnError)
	opts.addFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	j, err := prepare(opts, slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{ReplaceAttr: oneLineErrors})), out)
	if err != nil {
		return err
	}
	jobCtx, stopJob := context.WithCancel(ctx)
	defer stopJob()
	jobDone := make(chan error, 1)
	go func() { jobDone <- j.run(jobCtx) }()

	q, err := client.Connect(emu.QueryAddr(), "root", "", "")
	if err != nil {
		return fmt.Errorf("connecting to the emulator's MySQL port: %w", err)
	}
	defer q.Close()
	waitRows := func(n int) error {
		deadline := time.Now().Add(60 * time.Second)
		for {
			select {
			case err := <-jobDone:
				return fmt.Errorf("the job stopped: %w (log: %s)", err, logPath)
			default:
			}
			r, err := q.Execute("SELECT COUNT(*) FROM demo.all_orders")
			if err == nil {
				got, _ := r.GetInt(0, 0)
				r.Close()
				if int(got) == n {
					return nil
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("demo.all_orders did not reach %d rows within 60s (log: %s)", n, logPath)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	demoStep(out, "Waiting for the transactions to be committed in Doris")
	if err := waitRows(expected()); err != nil {
		return err
	}
	if err := showQuery(out, q, "SELECT COUNT(*) FROM demo.all_orders"); err != nil {
		return err
	}
	if err := showQuery(out, q, "SELECT * FROM demo.all_orders ORDER BY id LIMIT 5"); err != nil {
		return err
	}

	demoStep(out, "TiCDC restarts: it sends its last 30 messages again, then 50 new transactions and a WATERMARK")
	if err := produce(wl.Resend(30)); err != nil {
		return err
	}
	for range 50 {
		if err := produce(wl.Txn()); err != nil {
			return err
		}
	}
	if err := produce(wl.Watermark()); err != nil {
		return err
	}
	demoStep(out, "Waiting for the target to follow (re-sent changes are recognised and dropped)")
	if err := waitRows(expected()); err != nil {
		return err
	}
	if err := showQuery(out, q, "SELECT COUNT(*) FROM demo.all_orders"); err != nil {
		return err
	}
	if err := showQuery(out, q, "SELECT * FROM demo.all_orders WHERE database_name = 'shop_2' ORDER BY id LIMIT 3"); err != nil {
		return err
	}
	demoStep(out, "Stopping the job cleanly (as SIGINT/SIGTERM would)")
	stopJob()
	if err := <-jobDone; err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("the job did not stop cleanly: %w (log: %s)", err, logPath)
	}
	demoStep(out, "Done: %d rows merged from 3 shards through Kafka, the re-sent messages included", expected())
	return nil
}
