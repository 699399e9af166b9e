package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/ledger"
	"github.com/shardsync/shardsync/source/postgres"
	"github.com/shardsync/shardsync/twopc"
)

// The job's phases, as status and the shardsync_phase metric show them.
const (
	phaseStarting   = "starting"
	phaseRecovering = "recovering"
	phaseConnecting = "connecting"
	phaseSnapshot   = "snapshot"
	phaseStreaming  = "streaming"
	phaseWaiting    = "waiting" // waiting out an outage (or a restart's backoff)
	phaseFailed     = "failed"
)

var allPhases = []string{phaseStarting, phaseRecovering, phaseConnecting, phaseSnapshot, phaseStreaming, phaseWaiting, phaseFailed}

// monitor collects a running job's metrics and status. It is the
// coordinator's twopc.Observer, wraps the source (rows read, binlog lag)
// and the sinks (rows written, errors, ledger intent latency), and serves
// both over HTTP. Its methods are safe for concurrent use.
type monitor struct {
	name    string
	log     *slog.Logger
	reg     *prometheus.Registry
	started time.Time

	rowsRead      *prometheus.CounterVec
	rowsWritten   *prometheus.CounterVec
	epochs        *prometheus.CounterVec
	epochRows     prometheus.Histogram
	precommitTime prometheus.Histogram
	commitTime    prometheus.Histogram
	sinkCalls     *prometheus.HistogramVec
	sinkErrors    *prometheus.CounterVec
	endToEnd      prometheus.Histogram
	lastVisible   prometheus.Gauge
	binlogLag     prometheus.Gauge
	ledgerFsync   prometheus.Histogram
	restarts      prometheus.Counter
	lastEpoch     prometheus.Gauge
	// kafkaDeadLetter counts records set aside by the Kafka source.
	kafkaDeadLetter prometheus.Counter

	mu          sync.Mutex
	phase       string
	src         jobSource
	slotCfg     *postgres.Config // the PostgreSQL source's slot, when it is one
	led         *ledger.Ledger
	lastErr     string
	committed   uint64
	committedAt time.Time
	visibleAt   time.Time // source commit time of the newest visible txn
	lag         float64
	lagSet      bool
	// source commit times seen since the last barrier, and per epoch
	winOldest, winNewest time.Time
	windows              map[uint64][2]time.Time
	pending              map[uint64]map[writeKey]int
	// outages by component (outage.go); addrs: component → address
	outages map[string]*outage
	addrs   map[string]string
	anyDown atomic.Bool
}

type writeKey struct {
	sink, target, op string
}

func newMonitor(name string, log *slog.Logger) *monitor {
	m := &monitor{
		name: name, log: log, reg: prometheus.NewRegistry(), started: time.Now(), phase: phaseStarting,
		windows: map[uint64][2]time.Time{}, pending: map[uint64]map[writeKey]int{}, outages: map[string]*outage{},
	}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	lat := prometheus.ExponentialBuckets(0.001, 2.5, 14) // 1ms .. ~2.6h
	m.rowsRead = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shardsync_rows_read_total",
		Help: "Rows read from the shards (snapshot and binlog), by target table and operation."}, []string{"target", "op"})
	m.rowsWritten = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shardsync_rows_written_total",
		Help: "Rows made visible in a sink (counted when their epoch commits), by sink, target table and operation."}, []string{"sink", "target", "op"})
	m.epochs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shardsync_epochs_total",
		Help: "Epochs settled in this process, by outcome (committed, aborted, empty)."}, []string{"outcome"})
	m.epochRows = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "shardsync_epoch_rows",
		Help: "Rows per committed epoch.", Buckets: prometheus.ExponentialBuckets(1, 4, 12)})
	m.precommitTime = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "shardsync_precommit_duration_seconds",
		Help: "Time from an epoch's barrier to its PRECOMMITTED ledger record (every sink pre-committed).", Buckets: lat})
	m.commitTime = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "shardsync_commit_duration_seconds",
		Help: "Commit latency: time from an epoch's PRECOMMITTED record to COMMITTED (every sink committed).", Buckets: lat})
	m.sinkCalls = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "shardsync_sink_call_duration_seconds",
		Help: "Duration of sink calls, by sink and operation (precommit, commit, abort).", Buckets: lat}, []string{"sink", "op"})
	m.sinkErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shardsync_sink_errors_total",
		Help: "Failed sink calls, by sink, operation and error class (timeout, network, rejected, in_doubt, protocol, canceled)."}, []string{"sink", "op", "class"})
	m.endToEnd = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "shardsync_end_to_end_latency_seconds",
		Help: "Freshness per committed epoch: time from the source commit of its oldest binlog transaction until the epoch is visible in every sink.", Buckets: lat})
	m.lastVisible = prometheus.NewGauge(prometheus.GaugeOpts{Name: "shardsync_last_visible_source_commit_timestamp_seconds",
		Help: "Source commit time (Unix seconds) of the newest binlog transaction visible in the sinks; time() minus this is the freshness of the targets."})
	m.binlogLag = prometheus.NewGauge(prometheus.GaugeOpts{Name: "shardsync_binlog_lag_seconds",
		Help: "How far behind the source the binlog reader is: read time minus source commit time of the last transaction read."})
	m.ledgerFsync = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "shardsync_ledger_fsync_duration_seconds",
		Help: "Latency of ledger writes (one bbolt transaction with fsync), measured on the intent records written before each sink transaction.", Buckets: lat})
	m.restarts = prometheus.NewCounter(prometheus.CounterOpts{Name: "shardsync_restarts_total",
		Help: "Times the stream restarted from the ledger after a transient failure."})
	m.lastEpoch = prometheus.NewGauge(prometheus.GaugeOpts{Name: "shardsync_last_committed_epoch",
		Help: "Number of the last epoch committed by this process."})
	for _, c := range []prometheus.Collector{m.rowsRead, m.rowsWritten, m.epochs, m.epochRows, m.precommitTime, m.commitTime,
		m.sinkCalls, m.sinkErrors, m.endToEnd, m.lastVisible, m.binlogLag, m.ledgerFsync, m.restarts, m.lastEpoch,
		snapshotCollector{m}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		f(c)
	}
	for _, o := range []string{"committed", "aborted", "empty"} {
		m.epochs.WithLabelValues(o)
	}
	m.kafkaMetrics()
	return m
}

func (m *monitor) setPhase(p string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.phase = p
}

func (m *monitor) setFailed(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.phase, m.lastErr = phaseFailed, errText(err)
}

func (m *monitor) noteRestart(err error) {
	m.restarts.Inc()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastErr = errText(err)
}

func (m *monitor) setSource(s jobSource) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.src = s
}

func (m *monitor) setLedger(l *ledger.Ledger) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.led = l
}

// currentPhase is the phase, with snapshot/streaming read from the source.
func (m *monitor) currentPhase() (string, jobSource) {
	m.mu.Lock()
	p, src := m.phase, m.src
	m.mu.Unlock()
	if src != nil && (p == phaseConnecting || p == phaseSnapshot || p == phaseStreaming) {
		if src.Progress().Done {
			return phaseStreaming, src
		}
		return phaseSnapshot, src
	}
	return p, src
}

// snapshotCollector exports the current source's snapshot progress and
// the job's phase at scrape time.
type snapshotCollector struct{ m *monitor }

var (
	descSnapRows   = prometheus.NewDesc("shardsync_snapshot_rows", "Rows of a shard copied by the snapshot so far.", []string{"table", "target"}, nil)
	descSnapEst    = prometheus.NewDesc("shardsync_snapshot_estimated_rows", "The server's row estimate of a shard at the start of its snapshot.", []string{"table", "target"}, nil)
	descSnapChunks = prometheus.NewDesc("shardsync_snapshot_chunks", "Snapshot chunks of a shard finished so far.", []string{"table", "target"}, nil)
	descSnapDone   = prometheus.NewDesc("shardsync_snapshot_table_done", "1 once a shard's snapshot is finished.", []string{"table", "target"}, nil)
	descPhase      = prometheus.NewDesc("shardsync_phase", "1 for the job's current phase.", []string{"phase"}, nil)
	descDown       = prometheus.NewDesc("shardsync_unreachable", "1 while a component (source, or a sink by name) is unreachable and the job waits it out.", []string{"component"}, nil)
	descDownSince  = prometheus.NewDesc("shardsync_unreachable_since_timestamp_seconds", "Start (Unix seconds) of a component's current outage; 0 while it is reachable.", []string{"component"}, nil)
	descDownTries  = prometheus.NewDesc("shardsync_unreachable_attempts", "Failed attempts to reach a component in its current outage; 0 while it is reachable.", []string{"component"}, nil)
)

func (c snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSnapRows, descSnapEst, descSnapChunks, descSnapDone, descPhase, descDown, descDownSince, descDownTries} {
		ch <- d
	}
}

func (c snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	phase, src := c.m.currentPhase()
	for _, p := range allPhases {
		v := 0.0
		if p == phase {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descPhase, prometheus.GaugeValue, v, p)
	}
	c.m.collectOutages(ch)
	if src == nil {
		return
	}
	for _, t := range src.Progress().Tables {
		lv := []string{t.Table.String(), t.Target.String()}
		done := 0.0
		if t.Done {
			done = 1
		}
		ch <- prometheus.MustNewConstMetric(descSnapRows, prometheus.GaugeValue, float64(t.Rows), lv...)
		ch <- prometheus.MustNewConstMetric(descSnapEst, prometheus.GaugeValue, float64(t.EstimatedRows), lv...)
		ch <- prometheus.MustNewConstMetric(descSnapChunks, prometheus.GaugeValue, float64(t.Chunks), lv...)
		ch <- prometheus.MustNewConstMetric(descSnapDone, prometheus.GaugeValue, done, lv...)
	}
}

// EpochFinished implements twopc.Observer.
func (m *monitor) EpochFinished(s twopc.EpochStats) {
	m.epochs.WithLabelValues(s.Outcome).Inc()
	now := time.Now()
	m.mu.Lock()
	pend := m.pending[s.Epoch]
	win, hasWin := m.windows[s.Epoch]
	delete(m.pending, s.Epoch)
	delete(m.windows, s.Epoch)
	if s.Outcome == "committed" {
		m.committed, m.committedAt = s.Epoch, now
		if hasWin && win[1].After(m.visibleAt) {
			m.visibleAt = win[1]
		}
	}
	m.mu.Unlock()
	if s.Outcome != "committed" {
		return
	}
	m.lastEpoch.Set(float64(s.Epoch))
	m.epochRows.Observe(float64(s.Rows))
	m.precommitTime.Observe(s.PreCommit.Seconds())
	m.commitTime.Observe(s.Commit.Seconds())
	for k, n := range pend {
		m.rowsWritten.WithLabelValues(k.sink, k.target, k.op).Add(float64(n))
	}
	if hasWin && !win[0].IsZero() {
		m.endToEnd.Observe(now.Sub(win[0]).Seconds())
		m.lastVisible.Set(float64(win[1].UnixNano()) / 1e9)
	}
}

// SinkCall implements twopc.Observer.
func (m *monitor) SinkCall(sink, op string, d time.Duration, err error) {
	m.sinkCalls.WithLabelValues(sink, op).Observe(d.Seconds())
	if err != nil {
		m.sinkErrors.WithLabelValues(sink, op, errorClass(err)).Inc()
	}
}

var _ twopc.Observer = (*monitor)(nil)

// errorClass sorts a sink error into a few classes for alerting.
func errorClass(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, twopc.ErrInDoubt):
		return "in_doubt"
	case errors.Is(err, twopc.ErrProtocol):
		return "protocol"
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, io.EOF), errors.Is(err, syscall.EPIPE), errors.As(err, new(*net.OpError)):
		return "network"
	}
	return "rejected"
}

// wrapSource counts the rows read and tracks source commit times.
func (m *monitor) wrapSource(src twopc.Source) twopc.Source { return &countingSource{src: src, m: m} }

type countingSource struct {
	src twopc.Source
	m   *monitor
}

func (s *countingSource) Next(ctx context.Context) (change.Event, error) {
	ev, err := s.src.Next(ctx)
	if err != nil {
		return ev, fromComponent(componentSource, err)
	}
	s.m.reachable(componentSource)
	switch ev.Kind {
	case change.EventRows:
		s.m.countRead(ev.Rows)
	case change.EventCommit:
		if !ev.Time.IsZero() {
			s.m.sawCommit(ev.Time)
		}
	}
	return ev, nil
}

// Committed forwards the coordinator's committed tokens to a source that
// listens for them (the PostgreSQL source acknowledges its slot with them).
func (s *countingSource) Committed(tok change.Token) {
	if l, ok := s.src.(twopc.CommitListener); ok {
		l.Committed(tok)
	}
}

func (m *monitor) countRead(rows []change.Row) {
	if len(rows) == 0 {
		return
	}
	type k struct {
		t change.TableID
		o change.Op
	}
	counts := map[k]int{}
	for _, r := range rows {
		counts[k{r.Target, r.Op}]++
	}
	for key, n := range counts {
		m.rowsRead.WithLabelValues(key.t.String(), key.o.String()).Add(float64(n))
	}
}

func (m *monitor) sawCommit(t time.Time) {
	lag := max(time.Since(t).Seconds(), 0)
	m.binlogLag.Set(lag)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lag, m.lagSet = lag, true
	if m.winOldest.IsZero() || t.Before(m.winOldest) {
		m.winOldest = t
	}
	if t.After(m.winNewest) {
		m.winNewest = t
	}
}

// closeWindow assigns the source commit times seen since the last barrier
// to epoch n (at its first PreCommit). The reader runs at most one event
// ahead of the coordinator, so this is exact to one source transaction.
func (m *monitor) closeWindow(n uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.windows[n]; ok {
		return
	}
	m.windows[n] = [2]time.Time{m.winOldest, m.winNewest}
	m.winOldest, m.winNewest = time.Time{}, time.Time{}
}

func (m *monitor) addPending(n uint64, sink string, counts map[writeKey]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.pending[n]
	if p == nil {
		p = map[writeKey]int{}
		m.pending[n] = p
	}
	for k, v := range counts {
		p[writeKey{sink, k.target, k.op}] += v
	}
}

// instrumentSinks wraps every sink so that writes, errors and ledger
// intent latency are measured.
func (m *monitor) instrumentSinks(sinks []twopc.Sink) []twopc.Sink {
	out := make([]twopc.Sink, len(sinks))
	for i, s := range sinks {
		out[i] = &instrumentedSink{Sink: s, m: m}
	}
	return out
}

type instrumentedSink struct {
	twopc.Sink
	m *monitor
}

// The wrappers tag every sink error with the sink's name (outage.go) and
// end a sink's outage when a call that reaches it succeeds.

func (s *instrumentedSink) ApplySchema(ctx context.Context, ts change.TableSchema) error {
	return fromComponent(s.Name(), s.Sink.ApplySchema(ctx, ts))
}

func (s *instrumentedSink) Commit(ctx context.Context, p twopc.Prepared) (twopc.Outcome, error) {
	o, err := s.Sink.Commit(ctx, p)
	if err != nil {
		return o, fromComponent(s.Name(), err)
	}
	s.m.reachable(s.Name())
	return o, nil
}

func (s *instrumentedSink) Abort(ctx context.Context, p twopc.Prepared) (twopc.Outcome, error) {
	o, err := s.Sink.Abort(ctx, p)
	if err != nil {
		return o, fromComponent(s.Name(), err)
	}
	s.m.reachable(s.Name())
	return o, nil
}

func (s *instrumentedSink) Begin(ctx context.Context, epoch uint64, rec twopc.Recorder) (twopc.Txn, error) {
	t, err := s.Sink.Begin(ctx, epoch, timedRecorder{rec: rec, m: s.m})
	if err != nil {
		s.m.sinkErrors.WithLabelValues(s.Name(), "begin", errorClass(err)).Inc()
		return nil, fromComponent(s.Name(), err)
	}
	return &instrumentedTxn{Txn: t, s: s, epoch: epoch, counts: map[writeKey]int{}}, nil
}

type timedRecorder struct {
	rec twopc.Recorder
	m   *monitor
}

func (r timedRecorder) Intend(ctx context.Context, p twopc.Prepared) error {
	t0 := time.Now()
	err := r.rec.Intend(ctx, p)
	if err == nil {
		r.m.ledgerFsync.Observe(time.Since(t0).Seconds())
	}
	return err
}

type instrumentedTxn struct {
	twopc.Txn
	s      *instrumentedSink
	epoch  uint64
	counts map[writeKey]int // target and op only
}

func (t *instrumentedTxn) Write(ctx context.Context, rows []change.Row) error {
	if err := t.Txn.Write(ctx, rows); err != nil {
		t.s.m.sinkErrors.WithLabelValues(t.s.Name(), "write", errorClass(err)).Inc()
		return fromComponent(t.s.Name(), err)
	}
	for _, r := range rows {
		t.counts[writeKey{target: r.Target.String(), op: r.Op.String()}]++
	}
	return nil
}

func (t *instrumentedTxn) PreCommit(ctx context.Context) ([]twopc.Prepared, error) {
	t.s.m.closeWindow(t.epoch)
	p, err := t.Txn.PreCommit(ctx)
	if err != nil {
		return p, fromComponent(t.s.Name(), err)
	}
	t.s.m.addPending(t.epoch, t.s.Name(), t.counts)
	t.s.m.reachable(t.s.Name())
	return p, nil
}

func (t *instrumentedTxn) Abort(ctx context.Context) error {
	return fromComponent(t.s.Name(), t.Txn.Abort(ctx))
}

// serveHTTP serves /metrics, /healthz, /readyz, /status and, with pprof,
// /debug/pprof/ on addr until stop is called. It returns the bound address.
func serveHTTP(ctx context.Context, addr string, m *monitor, withPprof bool, log *slog.Logger) (stop func(), bound string, err error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, "", usagef("--http-addr %s: %v", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if p, _ := m.currentPhase(); p == phaseFailed {
			http.Error(w, "failed: "+m.lastError(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		p, _ := m.currentPhase()
		if down := m.unreachable(); len(down) > 0 {
			d := down[0]
			http.Error(w, fmt.Sprintf("not ready: %s %s unreachable since %s (%d attempts)", d.Component, d.Addr,
				d.Since.UTC().Format(time.RFC3339), d.Attempts), http.StatusServiceUnavailable)
			return
		}
		if p != phaseSnapshot && p != phaseStreaming {
			http.Error(w, "not ready: "+p, http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready: "+p+"\n")
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = writeJSON(w, m.status())
	})
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("the metrics server stopped", "err", err)
		}
	}()
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
	}, ln.Addr().String(), nil
}

func (m *monitor) lastError() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastErr
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0 && !strings.EqualFold(os.Getenv("TERM"), "dumb")
}

// DeleteShard forwards a shard delete to the wrapped sink, timed.
func (s *instrumentedSink) DeleteShard(ctx context.Context, d change.ShardDelete) error {
	del, ok := s.Sink.(twopc.ShardDeleter)
	if !ok {
		return fmt.Errorf("sink %s cannot delete the rows of shard %s: %w", s.Name(), d.Shard, twopc.ErrShardDelete)
	}
	err := del.DeleteShard(ctx, d)
	if err != nil {
		s.m.sinkErrors.WithLabelValues(s.Name(), "delete", errorClass(err)).Inc()
	}
	return err
}
