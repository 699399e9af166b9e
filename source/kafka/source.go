// Package kafka is the Kafka source of shardsync: it reads canal-json
// change streams (TiCDC's canal-json protocol with or without the TiDB
// extension, and Alibaba Canal's flat messages) from statically assigned
// partitions and emits them as change events behind the twopc.Source seam,
// with per-partition offsets (and the state TiCDC's re-sends need) as the
// resume token. See state.go for the exactly-once argument and
// docs/kafka.md for the user's view.
package kafka

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/merge"
)

// Sentinel errors; returned errors wrap them with the details.
var (
	// ErrUnavailable: no broker answered (a restart may help).
	ErrUnavailable = errors.New("kafka brokers unavailable")
	// ErrTopic: a topic does not exist or was deleted, or a pattern matches
	// none.
	ErrTopic = errors.New("kafka topic missing")
	// ErrOffsetOutOfRange: the offsets to resume from are no longer (or not
	// yet) in the partition; shardsync never jumps ahead silently.
	ErrOffsetOutOfRange = errors.New("kafka offset out of range")
	// ErrBadRecord: a record is not usable canal-json (see BadRecordError).
	ErrBadRecord = errBadRecord
	// ErrConfig: the source configuration is invalid.
	ErrConfig = errors.New("invalid kafka source configuration")
)

// Config configures a Source.
type Config struct {
	Brokers []string
	// Topics lists topics; TopicPattern (RE2, whole name) selects topics
	// instead. Topics are resolved when the source opens.
	Topics       []string
	TopicPattern string
	// Partitions restricts the source to these partition numbers of every
	// topic (static assignment for scale-out); nil means all.
	Partitions []int32
	// StartFromLatest starts a fresh stream (no token) at the end of each
	// partition instead of its beginning.
	StartFromLatest bool

	Routes                      []merge.Route
	DatabaseColumn, TableColumn string
	// TimeZone is the zone the producer rendered TIMESTAMP values in
	// (TiCDC's --tz, Canal's JVM zone); nil is UTC.
	TimeZone *time.Location
	// BatchRows caps the rows of one EventRows (default 1024).
	BatchRows int

	// DeadLetterFile, when set, receives bad records as JSON lines
	// (topic, partition, offset, reason, value) instead of stopping the
	// stream; OnDeadLetter is called for each.
	DeadLetterFile string
	OnDeadLetter   func()

	// SASL: Mechanism PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 ("" none).
	SASLMechanism, SASLUser, SASLPassword string
	TLS                                   *tls.Config
	// ConnectTimeout bounds reaching the brokers at open (default 10s).
	ConnectTimeout time.Duration
}

// Validate reports every configuration mistake it finds.
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("no brokers: give host:port[,host:port] (--kafka, properties.bootstrap.servers)"))
	}
	if (len(c.Topics) == 0) == (c.TopicPattern == "") {
		errs = append(errs, errors.New("give either topics (--kafka-topic, topic) or a topic pattern (--kafka-topic-pattern, topic-pattern), not both"))
	}
	if c.TopicPattern != "" {
		if _, err := regexp.Compile(c.TopicPattern); err != nil {
			errs = append(errs, fmt.Errorf("topic pattern %q: %w", c.TopicPattern, err))
		}
	}
	switch c.SASLMechanism {
	case "", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
	default:
		errs = append(errs, fmt.Errorf("SASL mechanism %q: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", c.SASLMechanism))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}

// Source is an open canal-json stream. Next is called from one goroutine;
// Targets and Close may be called from any.
type Source struct {
	cfg     Config
	log     *slog.Logger
	cl      *kgo.Client
	st      *state
	dlq     *os.File
	mu      sync.Mutex // guards targets
	targets []merge.TargetInfo
	events  chan change.Event
	err     error
	cancel  context.CancelFunc
	done    chan struct{}
}

// Open connects, resolves the topics and partitions, checks that the
// token's offsets are still in the partitions and starts the stream. A nil
// token starts at the beginning of every partition (or the end, with
// StartFromLatest).
//
// Failure: ErrUnavailable when no broker answers within ConnectTimeout;
// ErrTopic when a topic is missing; ErrOffsetOutOfRange when retention has
// removed offsets the token resumes from; ErrBadToken for a token of
// another job. Nothing is read before Open returns.
func Open(ctx context.Context, cfg Config, from change.Token, log *slog.Logger) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.BatchRows <= 0 {
		cfg.BatchRows = 1024
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	mc := merge.DefaultConfig()
	mc.Routes = cfg.Routes
	if cfg.DatabaseColumn != "" {
		mc.DatabaseColumn = cfg.DatabaseColumn
	}
	if cfg.TableColumn != "" {
		mc.TableColumn = cfg.TableColumn
	}
	merger, err := merge.NewMerger(mc)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	opts := []kgo.Opt{kgo.SeedBrokers(cfg.Brokers...), kgo.DialTimeout(cfg.ConnectTimeout)}
	opts = append(opts, authOpts(cfg)...)
	meta, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	assigned, err := resolve(ctx, meta, cfg)
	if err != nil {
		meta.Close()
		return nil, err
	}
	st := newState(merger, assigned, cfg.TimeZone, cfg.BatchRows)
	var tokSt *tokenState
	if from != nil {
		if tokSt, err = parseToken(from, merger.RoutesFingerprint()); err != nil {
			meta.Close()
			return nil, err
		}
		for _, p := range tokSt.Parts {
			if st.parts[tp{p.Topic, p.Partition}] == nil {
				meta.Close()
				return nil, fmt.Errorf("%w: the ledger's position covers topic %s partition %d, which this job no longer reads (topics or --kafka-partitions changed): a ledger belongs to one partition assignment; keep the assignment or start a new ledger and label prefix", ErrBadToken, p.Topic, p.Partition)
			}
		}
	}
	bounds, err := listBounds(ctx, meta, assigned)
	meta.Close()
	if err != nil {
		return nil, err
	}
	known := map[tp]bool{}
	if tokSt != nil {
		for _, p := range tokSt.Parts {
			known[tp{p.Topic, p.Partition}] = true
		}
	}
	starts := map[string]map[int32]kgo.Offset{}
	for _, k := range assigned {
		b := bounds[k]
		ps := st.parts[k]
		switch {
		case known[k]:
			off := offsetOf(tokSt, k)
			if off < b[0] {
				return nil, fmt.Errorf("%w: topic %s partition %d must be resumed at offset %d, but the oldest offset still kept is %d: records %d..%d were removed by retention while the job was stopped and are lost to it. Re-create the target from a new full export (new ledger and label prefix), and keep retention longer than the job may be down",
					ErrOffsetOutOfRange, k.topic, k.partition, off, b[0], off, b[0]-1)
			}
			if off > b[1] {
				return nil, fmt.Errorf("%w: topic %s partition %d must be resumed at offset %d, but it ends at %d (the topic was deleted and re-created, or truncated): the ledger does not belong to this topic's data; use a new ledger and label prefix",
					ErrOffsetOutOfRange, k.topic, k.partition, off, b[1])
			}
			ps.next = off
		case cfg.StartFromLatest:
			ps.next = b[1]
		default:
			ps.next = b[0]
		}
		if starts[k.topic] == nil {
			starts[k.topic] = map[int32]kgo.Offset{}
		}
		starts[k.topic][k.partition] = kgo.NewOffset().At(ps.next)
	}
	s := &Source{cfg: cfg, log: log, st: st, events: make(chan change.Event, 8), done: make(chan struct{})}
	if cfg.DeadLetterFile != "" {
		if s.dlq, err = os.OpenFile(cfg.DeadLetterFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err != nil {
			return nil, fmt.Errorf("%w: opening the dead-letter file: %w", ErrConfig, err)
		}
		st.deadLetter = s.deadLetter
	}
	copts := append(opts, kgo.ConsumePartitions(starts), kgo.ConsumeResetOffset(kgo.NoResetOffset()),
		kgo.KeepRetryableFetchErrors(), kgo.FetchMaxWait(300*time.Millisecond))
	if s.cl, err = kgo.NewClient(copts...); err != nil {
		s.closeDLQ()
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	var parts []string
	for _, k := range assigned {
		parts = append(parts, fmt.Sprintf("%s/%d@%d", k.topic, k.partition, st.parts[k].next))
	}
	log.Info("kafka source open", "partitions", strings.Join(parts, " "))
	go s.produce(runCtx, tokSt)
	return s, nil
}

func offsetOf(st *tokenState, k tp) int64 {
	for _, p := range st.Parts {
		if p.Topic == k.topic && p.Partition == k.partition {
			return p.Offset
		}
	}
	return 0
}

func authOpts(cfg Config) []kgo.Opt {
	var opts []kgo.Opt
	if cfg.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(cfg.TLS))
	}
	switch cfg.SASLMechanism {
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: cfg.SASLUser, Pass: cfg.SASLPassword}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: cfg.SASLUser, Pass: cfg.SASLPassword}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: cfg.SASLUser, Pass: cfg.SASLPassword}.AsSha512Mechanism()))
	}
	return opts
}

// resolve lists the topics and picks the assigned partitions.
func resolve(ctx context.Context, cl *kgo.Client, cfg Config) ([]tp, error) {
	mctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	if cfg.TopicPattern == "" {
		for _, t := range cfg.Topics {
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr(t)
			req.Topics = append(req.Topics, rt)
		}
	}
	resp, err := req.RequestWith(mctx, cl)
	if err != nil {
		return nil, fmt.Errorf("%w: no answer from %s within %s: %v (check --kafka / properties.bootstrap.servers, the network and the security settings)",
			ErrUnavailable, strings.Join(cfg.Brokers, ","), cfg.ConnectTimeout, err)
	}
	var re *regexp.Regexp
	if cfg.TopicPattern != "" {
		re = regexp.MustCompile(`^(?:` + cfg.TopicPattern + `)$`)
	}
	var out []tp
	found := map[string]bool{}
	for _, t := range resp.Topics {
		name := ""
		if t.Topic != nil {
			name = *t.Topic
		}
		if re != nil && (!re.MatchString(name) || strings.HasPrefix(name, "__")) {
			continue
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			if errors.Is(err, kerr.UnknownTopicOrPartition) {
				return nil, fmt.Errorf("%w: topic %s does not exist on %s (check --kafka-topic / topic)", ErrTopic, name, strings.Join(cfg.Brokers, ","))
			}
			return nil, fmt.Errorf("%w: topic %s: %v", ErrUnavailable, name, err)
		}
		found[name] = true
		for _, p := range t.Partitions {
			if cfg.Partitions == nil || slices.Contains(cfg.Partitions, p.Partition) {
				out = append(out, tp{name, p.Partition})
			}
		}
	}
	if re != nil && len(found) == 0 {
		return nil, fmt.Errorf("%w: no topic matches the pattern %q", ErrTopic, cfg.TopicPattern)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: the topics have none of the assigned partitions %v", ErrTopic, cfg.Partitions)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].topic != out[j].topic {
			return out[i].topic < out[j].topic
		}
		return out[i].partition < out[j].partition
	})
	return out, nil
}

// listBounds returns each partition's [log start, high watermark).
func listBounds(ctx context.Context, cl *kgo.Client, parts []tp) (map[tp][2]int64, error) {
	out := map[tp][2]int64{}
	for i, ts := range []int64{-2, -1} {
		req := kmsg.NewPtrListOffsetsRequest()
		byTopic := map[string]*kmsg.ListOffsetsRequestTopic{}
		for _, p := range parts {
			t := byTopic[p.topic]
			if t == nil {
				rt := kmsg.NewListOffsetsRequestTopic()
				rt.Topic = p.topic
				req.Topics = append(req.Topics, rt)
				t = &req.Topics[len(req.Topics)-1]
				byTopic[p.topic] = t
			}
			rp := kmsg.NewListOffsetsRequestTopicPartition()
			rp.Partition, rp.Timestamp = p.partition, ts
			t.Partitions = append(t.Partitions, rp)
		}
		// Rebuild the topic slice: the map held pointers into a slice that
		// may have moved while growing.
		req.Topics = req.Topics[:0]
		for _, p := range parts {
			if t := byTopic[p.topic]; t != nil {
				req.Topics = append(req.Topics, *t)
				delete(byTopic, p.topic)
			}
		}
		shards := cl.RequestSharded(ctx, req)
		for _, sh := range shards {
			if sh.Err != nil {
				return nil, fmt.Errorf("%w: listing offsets: %v", ErrUnavailable, sh.Err)
			}
			resp := sh.Resp.(*kmsg.ListOffsetsResponse)
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
						return nil, fmt.Errorf("%w: listing offsets of topic %s partition %d: %v", ErrUnavailable, t.Topic, p.Partition, err)
					}
					b := out[tp{t.Topic, p.Partition}]
					b[i] = p.Offset
					out[tp{t.Topic, p.Partition}] = b
				}
			}
		}
	}
	return out, nil
}

func (s *Source) produce(ctx context.Context, tok *tokenState) {
	err := s.run(ctx, tok)
	if ctx.Err() != nil {
		err = fmt.Errorf("source closed: %w", context.Canceled)
	}
	s.err = err
	close(s.events)
	close(s.done)
}

func (s *Source) run(ctx context.Context, tok *tokenState) error {
	s.st.emit = func(ev change.Event) error {
		if ev.Kind == change.EventSchema {
			s.mu.Lock()
			s.targets = s.st.merger.Targets()
			s.mu.Unlock()
		}
		return s.sendCtx(ctx, ev)
	}
	if tok != nil {
		if err := s.st.restore(tok); err != nil {
			return err
		}
	}
	// Restored targets are announced before any row.
	targets := s.st.merger.Targets()
	s.mu.Lock()
	s.targets = targets
	s.mu.Unlock()
	for _, t := range targets {
		ts := &change.TableSchema{Target: t.Target, Schema: t.Schema, Cause: "resume"}
		if err := s.sendCtx(ctx, change.Event{Kind: change.EventSchema, Schema: ts}); err != nil {
			return err
		}
	}
	lastData, down := time.Now(), false
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fetches := s.cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if fetches.NumRecords() > 0 {
			lastData = time.Now()
			if down {
				down = false
				s.log.Info("Kafka brokers reachable again", "brokers", strings.Join(s.cfg.Brokers, ","))
			}
		} else if time.Since(lastData) > s.cfg.ConnectTimeout {
			// Idle for a while: tell a quiet topic from unreachable
			// brokers (the client retries on its own either way).
			lastData = time.Now()
			down = s.checkBrokers(ctx, down)
		}
		for _, fe := range fetches.Errors() {
			if errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled) {
				continue
			}
			if err := s.fetchError(ctx, fe); err != nil {
				return err
			}
		}
		var err error
		fetches.EachRecord(func(r *kgo.Record) {
			if err == nil {
				err = s.st.handle(record{topic: r.Topic, partition: r.Partition, offset: r.Offset, value: r.Value})
			}
		})
		if err == nil {
			err = s.st.commit()
		}
		if err != nil {
			return err
		}
	}
}

func (s *Source) sendCtx(ctx context.Context, ev change.Event) error {
	select {
	case s.events <- ev:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fetchError turns a fetch error into a terminal one, or nil to go on
// (the client retries on its own).
func (s *Source) fetchError(ctx context.Context, fe kgo.FetchError) error {
	switch {
	case errors.Is(fe.Err, kerr.OffsetOutOfRange):
		return fmt.Errorf("%w: topic %s partition %d: the next offset %d is no longer in the partition (retention or deletion removed records not yet applied); shardsync does not skip ahead: re-create the target from a new full export with a new ledger and label prefix",
			ErrOffsetOutOfRange, fe.Topic, fe.Partition, s.st.parts[tp{fe.Topic, fe.Partition}].nextOr())
	case errors.Is(fe.Err, kerr.UnknownTopicOrPartition), errors.Is(fe.Err, kerr.UnknownTopicID):
		mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		req := kmsg.NewPtrMetadataRequest()
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(fe.Topic)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(mctx, s.cl)
		if err == nil && len(resp.Topics) == 1 && errors.Is(kerr.ErrorForCode(resp.Topics[0].ErrorCode), kerr.UnknownTopicOrPartition) {
			return fmt.Errorf("%w: topic %s was deleted while the job read it (partition %d); the records not yet applied are gone: re-create the target with a new ledger and label prefix, or restore the topic", ErrTopic, fe.Topic, fe.Partition)
		}
		return nil
	}
	var dl *kgo.ErrDataLoss
	if errors.As(fe.Err, &dl) {
		return fmt.Errorf("%w: topic %s partition %d: %v", ErrOffsetOutOfRange, fe.Topic, fe.Partition, fe.Err)
	}
	s.log.Warn("kafka fetch error; retrying", "topic", fe.Topic, "partition", fe.Partition, "err", fe.Err)
	return nil
}

// checkBrokers pings the brokers and logs once when they become
// unreachable and once when they are back.
func (s *Source) checkBrokers(ctx context.Context, wasDown bool) bool {
	pctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	err := s.cl.Ping(pctx)
	switch {
	case err != nil && !wasDown:
		s.log.Warn("Kafka brokers unreachable; waiting for them and retrying (nothing is skipped, the position stays in the ledger)",
			"brokers", strings.Join(s.cfg.Brokers, ","), "err", err)
	case err == nil && wasDown:
		s.log.Info("Kafka brokers reachable again", "brokers", strings.Join(s.cfg.Brokers, ","))
	}
	return err != nil
}

func (p *partState) nextOr() int64 {
	if p == nil {
		return -1
	}
	return p.next
}

func (s *Source) deadLetter(r record, reason string) error {
	line, err := json.Marshal(struct {
		Topic     string `json:"topic"`
		Partition int32  `json:"partition"`
		Offset    int64  `json:"offset"`
		Reason    string `json:"reason"`
		Value     string `json:"value"`
	}{r.topic, r.partition, r.offset, reason, string(r.value)})
	if err != nil {
		return err
	}
	if _, err := s.dlq.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("writing the dead-letter file %s: %w", s.cfg.DeadLetterFile, err)
	}
	if err := s.dlq.Sync(); err != nil {
		return fmt.Errorf("syncing the dead-letter file %s: %w", s.cfg.DeadLetterFile, err)
	}
	s.log.Warn("bad record set aside in the dead-letter file", "topic", r.topic, "partition", r.partition, "offset", r.offset, "reason", reason)
	if s.cfg.OnDeadLetter != nil {
		s.cfg.OnDeadLetter()
	}
	return nil
}

func (s *Source) closeDLQ() {
	if s.dlq != nil {
		_ = s.dlq.Close()
	}
}

// Next returns the next event. After an error the stream is over: Close it
// and Open again from the last token the consumer kept.
func (s *Source) Next(ctx context.Context) (change.Event, error) {
	select {
	case ev, ok := <-s.events:
		if !ok {
			return change.Event{}, s.err
		}
		return ev, nil
	case <-ctx.Done():
		return change.Event{}, ctx.Err()
	}
}

// Close stops the stream and the client. Safe to call once.
func (s *Source) Close() error {
	s.cancel()
	for range s.events { // unblock the producer
	}
	<-s.done
	s.cl.Close()
	s.closeDLQ()
	return nil
}

// Targets lists the targets learnt so far.
func (s *Source) Targets() []merge.TargetInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.targets)
}
