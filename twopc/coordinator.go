// Package twopc cuts the change stream into epochs and drives every sink
// through two-phase commit, with the ledger as the durable decision record.
//
// # Guarantee
//
// Every source transaction the Source delivers is made visible at every sink
// exactly once, provided the assumptions below hold. This is achieved the
// way Flink's TwoPhaseCommitSinkFunction does it, with the ledger as the
// checkpoint store:
//
//  1. An epoch N starts at the source token S (the end of N-1). Sinks begin
//     lazily on the epoch's first rows; before a sink sends the first byte of
//     a sink transaction it calls Recorder.Intend, which writes (fsync) the
//     label into the ledger: OPEN{N, S, labels}. An epoch that never writes a
//     row has no record at all.
//  2. The epoch closes only at a source-transaction boundary (after
//     EventCommit, EventProgress or EventSchema): when the checkpoint
//     interval elapsed, when it holds at least MaxEpochRows rows, before a
//     schema change, and on shutdown. A timer or size cut that falls inside a
//     source transaction waits for its end, so one huge transaction makes one
//     big epoch.
//  3. At the barrier every sink pre-commits in parallel, in the streaming
//     goroutine (Flink's snapshotState). Then the ledger records
//     PRECOMMITTED{N, prepared txns, end token E}: this single fsync is the
//     commit point. Before it, the epoch is aborted on any failure; after
//     it, it is committed, by this process or by recovery.
//  4. The epoch is handed to the committer goroutine (Flink's
//     notifyCheckpointComplete), which commits each prepared txn in parallel,
//     retrying errors, and then records COMMITTED{N}, which makes E the
//     resume position in the same update. Epochs are committed strictly in
//     order by that one goroutine; an empty epoch whose token moved only
//     advances the resume position, in order too.
//  5. Pipelining: epoch N+1 streams while N commits. The hand-off channel is
//     unbuffered, so at most two epochs are unfinished at once (one
//     committing, one streaming or waiting at its barrier); the stream stalls
//     when commits fall behind.
//
// Epoch numbers come from the ledger's next number and grow by one per epoch
// (empty epochs included); a number with a record is never used again, even
// across crashes and rewinds, so a sink label is never reused.
//
// # Failures in the running process
//
// Run does not repair anything in-process beyond the epoch at hand; it
// returns an error and leaves the rest to Recover at the next start, which is
// the one tested path to a consistent state:
//   - A Write or PreCommit error, a failed PRECOMMITTED write or a source
//     error aborts the open epoch (Txn.Abort, then Sink.Abort of every
//     recorded label; the ledger says ABORTED only when every sink confirmed
//     Aborted, otherwise it stays OPEN for recovery) and returns the error.
//   - A Commit error is retried per Config.Commit; when retries run out Run
//     returns and the epoch stays PRECOMMITTED for recovery.
//   - Commit answering Aborted (the destination dropped a pre-committed txn,
//     e.g. Doris's pre-commit timeout) returns a *RewindError (ErrRestart):
//     Recover then aborts that epoch and every later one, and the source
//     re-reads from the epoch's start under new epoch numbers.
//   - Commit answering Unknown, or a mix of Committed and Aborted within one
//     epoch, returns an *InDoubtError naming the epoch, sink, target, label
//     and txn id and the `shardsync txn resolve` choices.
//
// # Shutdown
//
// Cancelling Run's ctx asks for a clean stop. At a boundary the open epoch is
// cut and committed; inside a source transaction Run keeps reading for up to
// ShutdownGrace to reach its end, and aborts the epoch otherwise. Commits
// already decided are finished. All of it is bounded by ShutdownTimeout,
// after which in-flight calls are cancelled and recovery finishes the rest.
// Run returns nil when everything was settled.
//
// # Assumptions
//
//   - The Source delivers whole source transactions in commit order, ends
//     each with EventCommit carrying a token from which reopening continues
//     with the next transaction, emits EventSchema and EventProgress only
//     between transactions, and honours ctx in Next.
//   - Sinks keep their Sink contract: Intend before the first byte of a
//     transaction (the ledger refuses a PRECOMMITTED record with a label that
//     was never intended), idempotent Commit and Abort, truthful outcomes.
//   - A pre-committed transaction survives at its destination until
//     committed or until the destination aborts it and says so (Aborted).
//     A destination that silently loses it and answers Unknown stops the job
//     for an operator; it is never guessed.
//   - Labels are deterministic in (sink, target, epoch), so an epoch number
//     that is never reused makes labels unique.
//   - The ledger file lives on storage where fsync means durable. Losing it
//     loses the record of pre-committed transactions; the ledger refuses to
//     reset itself when damaged.
//   - Idle sources: an epoch without rows writes nothing unless its token
//     moved, and then a single resume-position update.
package twopc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/ledger"
)

// Source is the ordered change stream the coordinator consumes (implemented
// by package merge). Next blocks until the next event or until ctx is done,
// and then returns ctx's error. An error other than ctx's ends the run.
type Source interface {
	Next(ctx context.Context) (change.Event, error)
}

// CommitListener is implemented by a Source that must learn which of its tokens
// the ledger has made the resume position (for example to let the source
// server release what it keeps for replay, like a PostgreSQL slot's WAL).
// The coordinator calls Committed from its committer goroutine right after
// the COMMITTED (or resume-position) record holding tok is durable, in
// token order; the source must not block in it.
type CommitListener interface {
	Committed(tok change.Token)
}

// Config tunes the coordinator.
type Config struct {
	// CheckpointInterval closes an epoch this long after it opened (at the
	// next source-transaction boundary). Default 10s.
	CheckpointInterval time.Duration
	// MaxEpochRows closes an epoch once it holds this many rows (at the next
	// boundary). Default 500000.
	MaxEpochRows int
	// ShutdownGrace is how long a stop waits for the current source
	// transaction to end before the open epoch is aborted. Default 10s.
	ShutdownGrace time.Duration
	// ShutdownTimeout bounds everything after a stop request. Default 60s.
	ShutdownTimeout time.Duration
	// Commit is the retry policy of Commit calls (and of Abort calls when an
	// epoch fails). Zero means DefaultRetry.
	Commit RetryPolicy
	// Observer receives metrics; nil means NopObserver.
	Observer Observer
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		CheckpointInterval: 10 * time.Second,
		MaxEpochRows:       500_000,
		ShutdownGrace:      10 * time.Second,
		ShutdownTimeout:    60 * time.Second,
		Commit:             DefaultRetry(),
	}
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.CheckpointInterval <= 0:
		return fmt.Errorf("checkpoint interval must be positive, got %s", c.CheckpointInterval)
	case c.MaxEpochRows <= 0:
		return fmt.Errorf("max epoch rows must be positive, got %d", c.MaxEpochRows)
	case c.ShutdownGrace < 0 || c.ShutdownTimeout <= 0:
		return fmt.Errorf("shutdown grace (%s) must not be negative and shutdown timeout (%s) must be positive",
			c.ShutdownGrace, c.ShutdownTimeout)
	}
	return nil
}

// Coordinator runs epochs over a set of sinks. Create it with New; Run it
// once per process after Recover.
type Coordinator struct {
	cfg    Config
	ledger *ledger.Ledger
	sinks  []Sink
	log    *slog.Logger
	obs    Observer
}

// New returns a coordinator. Sink names must be distinct and non-empty.
func New(cfg Config, l *ledger.Ledger, sinks []Sink, log *slog.Logger) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("configuring the checkpoint coordinator: %w", err)
	}
	if len(sinks) == 0 {
		return nil, errors.New("configuring the checkpoint coordinator: no sinks")
	}
	seen := map[string]bool{}
	for _, s := range sinks {
		if s.Name() == "" || seen[s.Name()] {
			return nil, fmt.Errorf("configuring the checkpoint coordinator: sink name %q is empty or repeated", s.Name())
		}
		seen[s.Name()] = true
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	obs := cfg.Observer
	if obs == nil {
		obs = NopObserver{}
	}
	cfg.Commit = cfg.Commit.orDefault()
	return &Coordinator{cfg: cfg, ledger: l, sinks: sinks, log: log, obs: obs}, nil
}

// epoch is the in-memory state of one epoch.
type epoch struct {
	n          uint64
	start, end change.Token
	atBoundary bool
	rows       int
	txns       []Txn // one per sink, in c.sinks order; nil until the first rows
	opened     time.Time
	barrier    time.Time
	cut        string

	mu      sync.Mutex
	intents []Prepared // recorded in the ledger
}

// recorder is the Recorder handed to sinks for one epoch.
type recorder struct {
	l *ledger.Ledger
	e *epoch
}

func (r recorder) Intend(ctx context.Context, p Prepared) error {
	if err := r.l.Intend(ctx, r.e.n, r.e.start, toLedger(p)); err != nil {
		return fmt.Errorf("recording intent of %s before its first byte: %w", p, err)
	}
	r.e.mu.Lock()
	defer r.e.mu.Unlock()
	for i, x := range r.e.intents {
		if x.Sink == p.Sink && x.Label == p.Label {
			if p.TxnID != "" || len(p.Extra) > 0 {
				r.e.intents[i].TxnID, r.e.intents[i].Extra = p.TxnID, p.Extra
			}
			return nil
		}
	}
	r.e.intents = append(r.e.intents, Prepared{Sink: p.Sink, Target: p.Target, Label: p.Label, TxnID: p.TxnID, Extra: p.Extra})
	return nil
}

func (e *epoch) recordedIntents() []Prepared {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Prepared(nil), e.intents...)
}

// job is what the streaming loop hands to the committer.
type job struct {
	e        *epoch
	prepared []Prepared
	done     chan struct{} // a barrier: closed when every earlier job is settled
}

type event struct {
	ev  change.Event
	err error
}

// Run streams src into epochs until ctx is cancelled (a clean stop: nil
// when everything was settled) or an error occurs. The ledger must hold no
// unfinished epoch (run Recover first), and src must have been opened at
// the ledger's resume position.
func (c *Coordinator) Run(ctx context.Context, src Source) error {
	un, err := c.ledger.Unfinished()
	if err != nil {
		return err
	}
	if len(un) > 0 {
		return fmt.Errorf("starting the stream: epoch %d is %s in ledger %s: %w; run recovery first",
			un[0].Number, un[0].State, c.ledger.Path(), ErrNeedsRecovery)
	}
	next, err := c.ledger.NextEpoch()
	if err != nil {
		return err
	}
	resume, err := c.ledger.Resume()
	if err != nil {
		return err
	}

	// work outlives a stop request so that decided commits finish; it ends
	// ShutdownTimeout after the stop, or when Run returns.
	work, cancelWork := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelWork(nil)
	var hardTimer *time.Timer
	var hardMu sync.Mutex
	stopHard := context.AfterFunc(ctx, func() {
		hardMu.Lock()
		defer hardMu.Unlock()
		hardTimer = time.AfterFunc(c.cfg.ShutdownTimeout, func() {
			cancelWork(fmt.Errorf("shutdown did not finish within %s", c.cfg.ShutdownTimeout))
		})
	})
	defer func() {
		stopHard()
		hardMu.Lock()
		if hardTimer != nil {
			hardTimer.Stop()
		}
		hardMu.Unlock()
	}()

	// The reader decouples blocking Next calls from timers and stop requests.
	readCtx, stopReading := context.WithCancel(work)
	events := make(chan event)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			ev, err := src.Next(readCtx)
			select {
			case events <- event{ev, err}:
			case <-readCtx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	})
	defer wg.Wait()
	defer stopReading()

	r := &run{c: c, work: work, jobs: make(chan job), failed: make(chan struct{}), done: make(chan struct{}), lastResume: resume}
	r.notify, _ = src.(CommitListener)
	wg.Go(r.commitLoop)
	err = func() error {
		defer close(r.jobs) // also on a panic, so that the committer and wg.Wait end
		return r.stream(ctx, events, next, resume)
	}()
	<-r.done
	if cerr := r.err(); cerr != nil && !errors.Is(err, cerr) {
		err = errors.Join(err, cerr)
	}
	return err
}

// run is the state shared by the streaming loop and the committer.
type run struct {
	c          *Coordinator
	work       context.Context //nolint:containedctx // the run's own lifetime, shared by its two goroutines
	jobs       chan job
	lastResume change.Token   // owned by the committer
	notify     CommitListener // the source, when it wants to learn committed tokens

	failOnce sync.Once
	failed   chan struct{}
	failErr  error
	done     chan struct{} // closed when the committer returned
}

func (r *run) fail(err error) {
	r.failOnce.Do(func() {
		r.failErr = err
		close(r.failed)
	})
}

func (r *run) err() error {
	select {
	case <-r.failed:
		return r.failErr
	default:
		return nil
	}
}

func (r *run) newEpoch(n uint64, start change.Token) *epoch {
	return &epoch{n: n, start: start, end: start, atBoundary: true, opened: time.Now()}
}

// stream is the streaming loop. It returns nil after a clean stop.
func (r *run) stream(ctx context.Context, events <-chan event, next uint64, start change.Token) error {
	c := r.c
	cur := r.newEpoch(next, start)
	timer := time.NewTimer(c.cfg.CheckpointInterval)
	defer timer.Stop()
	var grace <-chan time.Time
	stop := ctx.Done()
	stopping, pendingCut := false, ""

	// cut closes cur at the current boundary and opens the next epoch.
	cut := func(reason string) error {
		cur.cut = reason
		if err := r.barrier(cur); err != nil {
			return err
		}
		cur = r.newEpoch(cur.n+1, cur.end)
		pendingCut = ""
		timer.Reset(c.cfg.CheckpointInterval)
		return nil
	}
	abort := func(cause error) error {
		r.abortEpoch(cur, cause.Error())
		return cause
	}

	for {
		select {
		case <-stop:
			stop, stopping = nil, true
			c.log.Info("stop requested: closing the open epoch", "epoch", cur.n, "at_boundary", cur.atBoundary)
			if cur.atBoundary {
				return cut("shutdown")
			}
			g := time.NewTimer(c.cfg.ShutdownGrace)
			defer g.Stop()
			grace = g.C
		case <-grace:
			c.log.Warn("source transaction did not end within the shutdown grace: aborting the open epoch",
				"epoch", cur.n, "grace", c.cfg.ShutdownGrace)
			return r.abortEpochClean(cur, "shutdown inside a source transaction")
		case <-timer.C:
			if cur.atBoundary {
				if err := cut("timer"); err != nil {
					return err
				}
			} else {
				pendingCut = "timer"
			}
		case <-r.failed:
			return abort(fmt.Errorf("stopping epoch %d: %w", cur.n, r.failErr))
		case <-r.work.Done():
			return abort(fmt.Errorf("stopping epoch %d: %w", cur.n, context.Cause(r.work)))
		case in := <-events:
			if in.err != nil {
				return abort(fmt.Errorf("reading the source in epoch %d: %w", cur.n, in.err))
			}
			reason, err := r.apply(cur, in.ev)
			if err != nil {
				return abort(err)
			}
			if reason == "" && cur.atBoundary {
				reason = pendingCut
				if stopping {
					reason = "shutdown"
				}
			}
			if reason == "" {
				continue
			}
			if err := cut(reason); err != nil {
				return err
			}
			if in.ev.Kind == change.EventSchema {
				if err := r.applySchema(in.ev.Schema); err != nil {
					return err
				}
			}
			if in.ev.Kind == change.EventShardDelete {
				if err := r.applyDelete(cur, in.ev); err != nil {
					return err
				}
				cur = r.newEpoch(cur.n+1, in.ev.Token)
			}
			if stopping {
				return nil
			}
		}
	}
}

// apply feeds one event into cur and returns a cut reason when the epoch
// must close now.
func (r *run) apply(cur *epoch, ev change.Event) (string, error) {
	c := r.c
	switch ev.Kind {
	case change.EventRows:
		if len(ev.Rows) == 0 {
			return "", nil
		}
		cur.atBoundary = false
		if err := r.write(cur, ev.Rows); err != nil {
			return "", err
		}
		cur.rows += len(ev.Rows)
		return "", nil
	case change.EventCommit, change.EventProgress:
		if ev.Kind == change.EventProgress && !cur.atBoundary {
			return "", fmt.Errorf("source emitted progress inside a source transaction in epoch %d: %w", cur.n, ErrProtocol)
		}
		cur.end, cur.atBoundary = ev.Token, true
		if cur.rows >= c.cfg.MaxEpochRows {
			return "size", nil
		}
		return "", nil
	case change.EventSchema:
		if !cur.atBoundary || ev.Schema == nil {
			return "", fmt.Errorf("source emitted a schema event inside a source transaction (or without a schema) in epoch %d: %w", cur.n, ErrProtocol)
		}
		return "schema", nil
	case change.EventShardDelete:
		if !cur.atBoundary || len(ev.Deletes) == 0 || ev.Token == nil {
			return "", fmt.Errorf("source emitted a shard delete inside a source transaction (or without a delete or token) in epoch %d: %w", cur.n, ErrProtocol)
		}
		return "shard delete", nil
	}
	return "", fmt.Errorf("source emitted an event of unknown kind %d in epoch %d: %w", ev.Kind, cur.n, ErrProtocol)
}

// write sends rows to every sink, beginning the epoch's sink transactions
// on its first rows.
func (r *run) write(cur *epoch, rows []change.Row) error {
	c := r.c
	if cur.txns == nil {
		cur.txns = make([]Txn, len(c.sinks))
		for i, s := range c.sinks {
			t, err := s.Begin(r.work, cur.n, recorder{l: c.ledger, e: cur})
			if err != nil {
				return fmt.Errorf("beginning epoch %d on sink %s: %w", cur.n, s.Name(), err)
			}
			cur.txns[i] = t
		}
		c.log.Debug("epoch begun", "epoch", cur.n)
	}
	if len(cur.txns) == 1 {
		if err := cur.txns[0].Write(r.work, rows); err != nil {
			return fmt.Errorf("writing epoch %d to sink %s: %w", cur.n, c.sinks[0].Name(), err)
		}
		return nil
	}
	g, gctx := errgroup.WithContext(r.work)
	for i, t := range cur.txns {
		g.Go(func() error {
			if err := t.Write(gctx, rows); err != nil {
				return fmt.Errorf("writing epoch %d to sink %s: %w", cur.n, c.sinks[i].Name(), err)
			}
			return nil
		})
	}
	return g.Wait()
}

// barrier pre-commits cur, records PRECOMMITTED and hands it to the
// committer. An epoch without rows is handed over as is. On failure the
// epoch is aborted (or left to recovery) and the error returned.
func (r *run) barrier(cur *epoch) error {
	c := r.c
	cur.barrier = time.Now()
	if cur.txns == nil {
		return r.handOff(job{e: cur})
	}
	prepared := make([][]Prepared, len(cur.txns))
	g, gctx := errgroup.WithContext(r.work)
	for i, t := range cur.txns {
		g.Go(func() error {
			t0 := time.Now()
			ps, err := t.PreCommit(gctx)
			c.obs.SinkCall(c.sinks[i].Name(), "precommit", time.Since(t0), err)
			if err != nil {
				return fmt.Errorf("pre-committing epoch %d on sink %s: %w", cur.n, c.sinks[i].Name(), err)
			}
			for _, p := range ps {
				if p.Sink != c.sinks[i].Name() || p.Label == "" {
					return fmt.Errorf("pre-committing epoch %d: sink %s returned %s without its name or a label: %w",
						cur.n, c.sinks[i].Name(), p, ErrProtocol)
				}
			}
			prepared[i] = ps
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		r.abortEpoch(cur, err.Error())
		return err
	}
	var all []Prepared
	for _, ps := range prepared {
		all = append(all, ps...)
	}
	lt := make([]ledger.SinkTxn, len(all))
	for i, p := range all {
		lt[i] = toLedger(p)
	}
	if len(all) == 0 && len(cur.recordedIntents()) == 0 {
		// Rows were written but no sink opened a transaction (every row was
		// filtered by the sinks): nothing to commit, only a position.
		return r.handOff(job{e: cur})
	}
	if err := c.ledger.Precommit(r.work, cur.n, cur.end, lt); err != nil {
		err = fmt.Errorf("recording the commit point of epoch %d: %w", cur.n, err)
		r.abortEpoch(cur, err.Error())
		return err
	}
	for _, p := range all {
		c.log.Debug("pre-committed", "epoch", cur.n, "sink", p.Sink, "target", p.Target.String(), "label", p.Label, "txn_id", p.TxnID)
	}
	return r.handOff(job{e: cur, prepared: all})
}

func (r *run) handOff(j job) error {
	select {
	case r.jobs <- j:
		return nil
	case <-r.failed:
		return fmt.Errorf("handing epoch %d to the committer: %w", j.e.n, r.failErr)
	}
}

// applySchema waits until every earlier epoch is settled, then applies ts
// to every sink.
func (r *run) applySchema(ts *change.TableSchema) error {
	done := make(chan struct{})
	select {
	case r.jobs <- job{done: done}:
	case <-r.failed:
		return r.failErr
	}
	select {
	case <-done:
	case <-r.failed:
		return r.failErr
	}
	for _, s := range r.c.sinks {
		if err := s.ApplySchema(r.work, *ts); err != nil {
			return fmt.Errorf("applying the schema of %s (%s) on sink %s: %w", ts.Target, ts.Cause, s.Name(), err)
		}
		r.c.log.Info("schema applied", "sink", s.Name(), "target", ts.Target.String(), "changes", len(ts.Changes))
	}
	return nil
}

// abortEpoch abandons cur: Txn.Abort on every sink, then Sink.Abort of every
// recorded label; the ledger records ABORTED only when every label is
// confirmed aborted. It returns whether the epoch is settled.
func (r *run) abortEpoch(cur *epoch, reason string) bool {
	c := r.c
	for i, t := range cur.txns {
		if t == nil {
			continue // Begin failed on this sink
		}
		if err := t.Abort(r.work); err != nil {
			c.log.Warn("aborting epoch on sink failed; recovery will abort by label", "epoch", cur.n, "sink", c.sinks[i].Name(), "err", err)
		}
	}
	intents := cur.recordedIntents()
	if len(intents) == 0 {
		if cur.rows > 0 {
			c.obs.EpochFinished(EpochStats{Epoch: cur.n, Outcome: "aborted", Rows: cur.rows})
		}
		return true
	}
	settled := true
	for _, p := range intents {
		s := c.sink(p.Sink)
		if s == nil {
			settled = false
			continue
		}
		t0 := time.Now()
		o, err := settle(r.work, c.cfg.Commit, c.log, "aborting "+p.String(), func(ctx context.Context) (Outcome, error) {
			return s.Abort(ctx, p)
		})
		c.obs.SinkCall(p.Sink, "abort", time.Since(t0), err)
		switch {
		case err != nil:
			settled = false
			c.log.Warn("abort not confirmed; the epoch stays OPEN for recovery", "epoch", cur.n, "sink", p.Sink, "label", p.Label, "err", err)
		case o == Committed:
			settled = false
			c.log.Error("sink says a transaction of an epoch that never reached its commit point is committed",
				"epoch", cur.n, "sink", p.Sink, "target", p.Target.String(), "label", p.Label, "err", ErrProtocol)
		}
	}
	if !settled {
		return false
	}
	if err := c.ledger.Abort(r.work, cur.n, reason); err != nil {
		c.log.Warn("recording ABORTED failed; recovery will redo the abort", "epoch", cur.n, "err", err)
		return false
	}
	c.log.Info("epoch aborted", "epoch", cur.n, "reason", reason)
	c.obs.EpochFinished(EpochStats{Epoch: cur.n, Outcome: "aborted", Rows: cur.rows})
	return true
}

// abortEpochClean aborts cur on a clean stop and reports whether anything
// was left for recovery.
func (r *run) abortEpochClean(cur *epoch, reason string) error {
	if r.abortEpoch(cur, reason) {
		return nil
	}
	return fmt.Errorf("stopping: epoch %d could not be aborted at every sink; the next start's recovery will abort it: %w", cur.n, ErrRestart)
}

func (c *Coordinator) sink(name string) Sink {
	for _, s := range c.sinks {
		if s.Name() == name {
			return s
		}
	}
	return nil
}

// commitLoop settles handed-off epochs strictly in order.
func (r *run) commitLoop() {
	defer close(r.done)
	for j := range r.jobs {
		if r.err() != nil {
			continue // drain: nothing after a failure may commit
		}
		if j.done != nil {
			close(j.done)
			continue
		}
		if err := r.commit(j); err != nil {
			r.fail(err)
		}
	}
}

func (r *run) commit(j job) error {
	c, e := r.c, j.e
	t0 := time.Now()
	if j.prepared == nil && len(e.recordedIntents()) == 0 {
		if bytes.Equal(e.end, r.lastResume) {
			return nil
		}
		if err := c.ledger.Advance(r.work, e.n, e.end); err != nil {
			return fmt.Errorf("advancing the resume position after empty epoch %d: %w", e.n, err)
		}
		r.lastResume = e.end
		r.committed(e.end)
		c.obs.EpochFinished(EpochStats{Epoch: e.n, Outcome: "empty", Cut: e.cut, Rows: e.rows,
			Stream: e.barrier.Sub(e.opened), Commit: time.Since(t0)})
		return nil
	}
	outcomes := make([]Outcome, len(j.prepared))
	g, gctx := errgroup.WithContext(r.work)
	for i, p := range j.prepared {
		s := c.sink(p.Sink)
		g.Go(func() error {
			o, err := settle(gctx, c.cfg.Commit, c.log, "committing "+p.String(), func(ctx context.Context) (Outcome, error) {
				t1 := time.Now()
				o, err := s.Commit(ctx, p)
				c.obs.SinkCall(p.Sink, "commit", time.Since(t1), err)
				return o, err
			})
			if err != nil {
				return fmt.Errorf("committing epoch %d %s: %w; the epoch stays PRECOMMITTED and the next start commits it: %w",
					e.n, p, err, ErrRestart)
			}
			outcomes[i] = o
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := judge(e.n, j.prepared, outcomes, c.ledger.Path()); err != nil {
		for i, p := range j.prepared {
			c.log.Error("epoch not committed", "epoch", e.n, "sink", p.Sink, "target", p.Target.String(),
				"label", p.Label, "txn_id", p.TxnID, "outcome", outcomes[i].String())
		}
		return err
	}
	if err := c.ledger.Commit(r.work, e.n, ""); err != nil {
		return fmt.Errorf("recording epoch %d as COMMITTED after its sinks committed: %w; the next start re-commits it (idempotent): %w",
			e.n, err, ErrRestart)
	}
	r.lastResume = e.end
	r.committed(e.end)
	c.log.Info("epoch committed", "epoch", e.n, "rows", e.rows, "txns", len(j.prepared), "cut", e.cut)
	c.obs.EpochFinished(EpochStats{Epoch: e.n, Outcome: "committed", Cut: e.cut, Rows: e.rows, Txns: len(j.prepared),
		Stream: e.barrier.Sub(e.opened), PreCommit: t0.Sub(e.barrier), Commit: time.Since(t0)})
	return nil
}

// committed tells the source that tok is the durable resume position.
func (r *run) committed(tok change.Token) {
	if r.notify != nil {
		r.notify.Committed(tok)
	}
}

// judge turns one epoch's commit outcomes into nil (all committed), a
// *RewindError (all that answered are aborted) or an *InDoubtError.
func judge(n uint64, prepared []Prepared, outcomes []Outcome, ledgerPath string) error {
	var committed, aborted, unknown int
	first := -1
	for i, o := range outcomes {
		switch o {
		case Committed:
			committed++
		case Aborted:
			aborted++
			if first < 0 {
				first = i
			}
		default:
			unknown++
		}
	}
	switch {
	case committed == len(outcomes):
		return nil
	case aborted == len(outcomes):
		return &RewindError{Epoch: n, Txn: prepared[first]}
	}
	return &InDoubtError{Epoch: n, Txns: prepared, Outcomes: outcomes, Ledger: ledgerPath}
}
