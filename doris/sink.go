// Package doris is the Apache Doris sink of shardsync: Stream Load with
// two-phase commit.
//
// Each epoch streams one chunked PUT /api/{db}/{table}/_stream_load per
// target table, with two_phase_commit: true and a label derived from the
// label prefix, the ledger id, the target and the epoch (see Label).
// Before the stream starts, ClaimTargets records the ledger at each target
// and refuses targets holding another ledger's rows. Targets with a
// sequence column get a growing value per change (see Sink.seq). Rows are NDJSON;
// deletes carry __DORIS_DELETE_SIGN__ (Unique Key targets). The body is fed
// as rows arrive through a bounded buffer and ended at the epoch barrier;
// the reply's TxnId is the pre-committed transaction, later committed or
// aborted through /api/{db}/_stream_load_2pc. Every reply is sorted by one
// pure function, Classify.
//
// The FE answers a load with a 307 to a BE, with the credentials in the
// Location's userinfo. The sink asks the FE with an empty PUT first and
// streams straight to that BE (or to Config.BENodes), re-issues a PUT
// whose 307 beat "100 Continue" with the same body reader, never follows
// redirects through net/http, and never logs or returns the Location's
// password.
//
// Targets are created over the FE's MySQL port when missing (Unique Key on
// the metadata columns plus the source key) and get ADD COLUMN for schema
// changes; user-made targets are used as they are.
package doris

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/twopc"
)

// Name is the sink's name in the ledger and in logs.
const Name = "doris"

var _ twopc.Sink = (*Sink)(nil)

// Sink is the Doris twopc.Sink. It is safe for concurrent use.
type Sink struct {
	cfg Config
	log *slog.Logger
	c   *client

	mu      sync.Mutex
	targets map[change.TableID]*target

	noLabelOps bool // FE/BE answered abort-by-label as unsupported (< 2.1); under mu

	// seq is the last sequence value handed out (targets with a sequence
	// column that shardsync fills). Each row takes the next value, and each
	// epoch starts at least at its wall-clock time in milliseconds << 20,
	// so values grow with every change: within a process because epochs
	// and their rows are written in source order, and across restarts and
	// replaced ledgers as long as the clock does not step back by more than
	// the downtime (the values of one epoch run ahead of the clock by one
	// millisecond per 2^20 rows).
	seq atomic.Int64
}

// target is what the sink knows of one target table.
type target struct {
	enc *encoder
}

// New returns a Sink for cfg. It does not contact Doris.
func New(cfg Config, log *slog.Logger) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		return nil, errors.New("doris: New needs a logger")
	}
	log = log.With(slog.String("sink", Name))
	c, err := newClient(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("doris config: %w", err)
	}
	return &Sink{cfg: cfg, log: log, c: c, targets: map[change.TableID]*target{}}, nil
}

// labelPrefix is what the labels of new loads start with: the configured
// prefix and the ledger id, so that labels are unique to the ledger.
func (s *Sink) labelPrefix() string {
	if s.cfg.LedgerID == "" {
		return s.cfg.LabelPrefix
	}
	return s.cfg.LabelPrefix + "_" + s.cfg.LedgerID
}

// Name returns "doris".
func (s *Sink) Name() string { return Name }

// Close releases idle connections. Open loads are left to Txn.Abort and
// recovery.
func (s *Sink) Close() error {
	s.c.small.HTTPClient.CloseIdleConnections()
	s.c.stream.CloseIdleConnections()
	return nil
}

func (s *Sink) target(id change.TableID) (*target, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.targets[id]
	if !ok {
		return nil, fmt.Errorf("doris: no schema announced for target %s before its first row", id)
	}
	return t, nil
}

// Begin opens the sink's part of epoch. Nothing is sent until Write.
func (s *Sink) Begin(_ context.Context, epoch uint64, rec twopc.Recorder) (twopc.Txn, error) {
	if rec == nil {
		return nil, errors.New("doris: Begin needs a Recorder")
	}
	floor := time.Now().UnixMilli() << 20
	for {
		cur := s.seq.Load()
		if cur >= floor || s.seq.CompareAndSwap(cur, floor) {
			break
		}
	}
	return &txn{s: s, epoch: epoch, rec: rec, streams: map[change.TableID]*stream{}}, nil
}

// Commit commits p's pre-committed txn by id. "already committed/visible"
// is Committed, "already aborted" (user abort, pre-commit timeout) is
// Aborted; "not found" is settled with get_load_state: VISIBLE or
// COMMITTED → Committed, ABORTED → Aborted, UNKNOWN → Unknown. Errors mean
// nothing is known to have changed (Doris unreachable, retries exhausted, a
// terminal answer).
func (s *Sink) Commit(ctx context.Context, p twopc.Prepared) (twopc.Outcome, error) {
	id, err := strconv.ParseInt(p.TxnID, 10, 64)
	if err != nil || id <= 0 {
		return twopc.Unknown, fmt.Errorf("committing doris txn of %s: txn id %q is not a positive number", p, p.TxnID)
	}
	v, err := s.c.twoPC(ctx, OpCommit, p.Target.Database, id, "")
	if err != nil {
		return twopc.Unknown, fmt.Errorf("committing doris txn %s: %w", p, err)
	}
	log := s.log.With("label", p.Label, "txn_id", p.TxnID)
	switch v.Class {
	case ClassSuccess:
		log.Debug("doris txn committed")
		return twopc.Committed, nil
	case ClassAlreadyDone:
		log.Info("doris txn was already committed", "reply", v.Message)
		return twopc.Committed, nil
	case ClassAborted:
		log.Warn("doris txn was aborted by doris before commit", "reply", v.Message)
		return twopc.Aborted, nil
	case ClassNotFound:
		st, err := s.c.loadState(ctx, p.Target.Database, p.Label)
		if err != nil {
			return twopc.Unknown, fmt.Errorf("committing doris txn %s: doris answered %q and then: %w", p, v.Message, err)
		}
		log.Warn("doris does not know the txn; label state decides", "reply", v.Message, "state", st)
		switch st {
		case "VISIBLE", "COMMITTED":
			return twopc.Committed, nil
		case "ABORTED":
			return twopc.Aborted, nil
		case "UNKNOWN":
			return twopc.Unknown, nil
		}
		return twopc.Unknown, fmt.Errorf("committing doris txn %s: doris says %q but the label is in state %s; try again later", p, v.Message, st)
	case ClassRetryable:
		return twopc.Unknown, fmt.Errorf("committing doris txn %s: still transient after %d retries: %s: %w", p, s.cfg.Retries, v, twopc.ErrUnavailable)
	}
	return twopc.Unknown, fmt.Errorf("committing doris txn %s: %s", p, v)
}

// Abort aborts p: by txn id when known, else by label (Doris ≥ 2.1) or, on
// older Doris, by probing the label with an empty two-phase load and
// aborting the txn the answer names. It returns Aborted when the txn is
// aborted or never existed, Committed when Doris says it is committed.
func (s *Sink) Abort(ctx context.Context, p twopc.Prepared) (twopc.Outcome, error) {
	if p.TxnID != "" {
		id, err := strconv.ParseInt(p.TxnID, 10, 64)
		if err != nil || id <= 0 {
			return twopc.Unknown, fmt.Errorf("aborting doris txn of %s: txn id %q is not a positive number", p, p.TxnID)
		}
		v, err := s.c.twoPC(ctx, OpAbort, p.Target.Database, id, "")
		if err != nil {
			return twopc.Unknown, fmt.Errorf("aborting doris txn %s: %w", p, err)
		}
		if o, done, err := s.abortOutcome(ctx, p, v); done || err != nil {
			return o, err
		}
		// The id is unknown (purged or never begun): the label decides.
	}
	s.mu.Lock()
	noLabel := s.noLabelOps
	s.mu.Unlock()
	if !noLabel {
		v, err := s.c.twoPC(ctx, OpAbort, p.Target.Database, 0, p.Label)
		if err != nil {
			return twopc.Unknown, fmt.Errorf("aborting doris label %s: %w", p, err)
		}
		if v.Class != ClassUnsupported {
			o, done, err := s.abortOutcome(ctx, p, v)
			if done || err != nil {
				return o, err
			}
			return s.abortByState(ctx, p, v)
		}
		s.log.Info("doris does not abort by label (before 2.1); probing labels instead", "reply", v.Message)
		s.mu.Lock()
		s.noLabelOps = true
		s.mu.Unlock()
	}
	return s.abortByProbe(ctx, p)
}

// abortOutcome maps an abort answer; done is false for ClassNotFound.
func (s *Sink) abortOutcome(_ context.Context, p twopc.Prepared, v Verdict) (twopc.Outcome, bool, error) {
	switch v.Class {
	case ClassSuccess, ClassAlreadyDone:
		s.log.Debug("doris txn aborted", "label", p.Label, "txn_id", p.TxnID, "reply", v.Message)
		return twopc.Aborted, true, nil
	case ClassCommitted:
		return twopc.Committed, true, nil
	case ClassNotFound:
		return twopc.Unknown, false, nil
	case ClassRetryable:
		return twopc.Unknown, true, fmt.Errorf("aborting doris txn %s: still transient after %d retries: %s: %w", p, s.cfg.Retries, v, twopc.ErrUnavailable)
	}
	return twopc.Unknown, true, fmt.Errorf("aborting doris txn %s: %s", p, v)
}

// abortByState settles an abort whose label has no running txn.
func (s *Sink) abortByState(ctx context.Context, p twopc.Prepared, v Verdict) (twopc.Outcome, error) {
	st, err := s.c.loadState(ctx, p.Target.Database, p.Label)
	if err != nil {
		return twopc.Unknown, fmt.Errorf("aborting doris label %s: doris answered %q and then: %w", p, v.Message, err)
	}
	switch st {
	case "UNKNOWN", "ABORTED":
		return twopc.Aborted, nil
	case "VISIBLE", "COMMITTED":
		return twopc.Committed, nil
	}
	return twopc.Unknown, fmt.Errorf("aborting doris label %s: doris says %q but the label is in state %s; try again", p, v.Message, st)
}

// abortByProbe is the pre-2.1 way: an empty two-phase load under the label
// either names the txn holding it (abort that) or creates an empty txn
// (abort it too; the label is then free and unused).
func (s *Sink) abortByProbe(ctx context.Context, p twopc.Prepared) (twopc.Outcome, error) {
	v, err := s.c.probe(ctx, p.Target.Database, p.Target.Table, p.Label)
	if err != nil {
		return twopc.Unknown, fmt.Errorf("aborting doris label %s: %w", p, err)
	}
	switch v.Class {
	case ClassAlreadyDone:
		return twopc.Committed, nil
	case ClassLabelExists, ClassSuccess:
		if v.TxnID <= 0 {
			return twopc.Unknown, fmt.Errorf("aborting doris label %s: the probe answered %s without a txn id", p, v)
		}
		a, err := s.c.twoPC(ctx, OpAbort, p.Target.Database, v.TxnID, "")
		if err != nil {
			return twopc.Unknown, fmt.Errorf("aborting doris label %s (txn %d): %w", p, v.TxnID, err)
		}
		o, done, err := s.abortOutcome(ctx, p, a)
		if !done && err == nil {
			return twopc.Aborted, nil // gone between probe and abort: it was rolled back
		}
		return o, err
	}
	return twopc.Unknown, fmt.Errorf("aborting doris label %s: probe failed: %s", p, v)
}

// txn is one epoch of the sink.
type txn struct {
	s       *Sink
	epoch   uint64
	rec     twopc.Recorder
	streams map[change.TableID]*stream
	order   []*stream
	failed  error
}

// Write streams rows, starting one load per target on its first row (after
// recording its label with the Recorder).
func (t *txn) Write(ctx context.Context, rows []change.Row) error {
	if t.failed != nil {
		return fmt.Errorf("doris epoch %d already failed: %w", t.epoch, t.failed)
	}
	for i := 0; i < len(rows); {
		id := rows[i].Target
		j := i + 1
		for j < len(rows) && rows[j].Target == id {
			j++
		}
		st, err := t.stream(ctx, id)
		if err == nil {
			err = st.write(ctx, rows[i:j])
		}
		if err != nil {
			t.failed = err
			return err
		}
		i = j
	}
	return nil
}

func (t *txn) stream(ctx context.Context, id change.TableID) (*stream, error) {
	if st, ok := t.streams[id]; ok {
		return st, nil
	}
	tg, err := t.s.target(id)
	if err != nil {
		return nil, err
	}
	label := Label(t.s.labelPrefix(), id, t.epoch)
	if err := t.rec.Intend(ctx, twopc.Prepared{Sink: Name, Target: id, Label: label}); err != nil {
		return nil, fmt.Errorf("recording doris label %s before loading: %w", label, err)
	}
	st, err := t.s.c.startLoad(ctx, id, label, tg.enc, t.s.cfg.BufferSize)
	if err != nil {
		return nil, fmt.Errorf("starting doris load %s: %w", label, err)
	}
	st.seq = &t.s.seq
	t.s.log.Debug("doris load started", "label", label, "batch", t.epoch)
	t.streams[id] = st
	t.order = append(t.order, st)
	return st, nil
}

// PreCommit ends every load of the epoch and returns their pre-committed
// txns. A load that filtered rows fails the epoch (nothing is dropped
// silently); the caller then aborts, which also aborts the pre-committed
// loads.
func (t *txn) PreCommit(ctx context.Context) ([]twopc.Prepared, error) {
	if t.failed != nil {
		return nil, fmt.Errorf("doris epoch %d already failed: %w", t.epoch, t.failed)
	}
	var out []twopc.Prepared
	var errs []error
	for _, st := range t.order {
		err := st.finish(ctx)
		r := st.verdict.Load
		if r != nil && st.err == nil && r.NumberFilteredRows > 0 {
			first := r.FirstErrorMsg
			if first == "" && r.ErrorURL != "" {
				first = t.s.c.firstError(ctx, r.ErrorURL)
			}
			errs = append(errs, fmt.Errorf("doris load %s into %s filtered %d of %d rows (first error: %q; all rejected rows at %s); fix the data or the target's column types",
				st.label, st.target, r.NumberFilteredRows, r.NumberTotalRows, first, r.ErrorURL))
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, twopc.Prepared{Sink: Name, Target: st.target, Label: st.label, TxnID: strconv.FormatInt(r.TxnID, 10)})
		t.s.log.Debug("doris load pre-committed", "label", st.label, "txn_id", r.TxnID, "rows", r.NumberLoadedRows, "bytes", r.LoadBytes)
	}
	if err := errors.Join(errs...); err != nil {
		t.failed = err
		return nil, fmt.Errorf("pre-committing doris epoch %d: %w", t.epoch, err)
	}
	return out, nil
}

// Abort kills the epoch's open loads (Doris rolls them back) and aborts
// whatever was begun or pre-committed, by txn id or label.
func (t *txn) Abort(ctx context.Context) error {
	var errs []error
	for _, st := range t.order {
		st.kill(fmt.Errorf("doris epoch %d aborted", t.epoch))
	}
	for _, st := range t.order {
		select {
		case <-st.done:
		case <-ctx.Done():
			return fmt.Errorf("aborting doris epoch %d: %w", t.epoch, ctx.Err())
		}
		p := twopc.Prepared{Sink: Name, Target: st.target, Label: st.label}
		if st.err == nil && st.verdict.Class == ClassSuccess && st.verdict.TxnID > 0 {
			p.TxnID = strconv.FormatInt(st.verdict.TxnID, 10)
		}
		o, err := t.s.Abort(ctx, p)
		switch {
		case err != nil:
			errs = append(errs, err)
		case o == twopc.Committed:
			errs = append(errs, fmt.Errorf("aborting doris %s: doris says it is committed", p))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("aborting doris epoch %d: %w", t.epoch, err)
	}
	return nil
}
