// Package twopctest holds an in-memory twopc.Sink with fault knobs, and a
// conformance suite that every twopc.Sink implementation runs (see
// RunConformance).
//
// The fake models a Doris-like destination: one transaction per (epoch,
// target) with a deterministic label, pre-commit making data durable but
// invisible, commit/abort by label that are idempotent, a destination that
// may abort a pre-committed transaction on its own (Expire) or forget it
// (Forget), and rows visible only after commit. It also checks the
// coordinator's side of the contract and records violations.
package twopctest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/twopc"
)

// Op names a sink operation for fault hooks.
type Op string

// The operations a Fault hook sees.
const (
	OpBegin       Op = "begin"
	OpIntend      Op = "intend" // after Recorder.Intend returned, before the first byte
	OpWrite       Op = "write"
	OpPreCommit   Op = "precommit"
	OpCommit      Op = "commit"
	OpAbort       Op = "abort"
	OpTxnAbort    Op = "txn-abort"
	OpApplySchema Op = "apply-schema"
	OpDeleteShard Op = "delete-shard"
)

// ErrInjected is returned by operations failed by a fault hook that returned
// ErrInjected itself; any error works.
var ErrInjected = errors.New("injected fault")

// ErrCrashed is returned by every operation after Crash.
var ErrCrashed = errors.New("sink process crashed")

// Faults are hooks called around each operation. label is the transaction
// label, or "" for operations without one (Begin, ApplySchema, an empty
// PreCommit). A non-nil error from Before fails the operation with no
// effect; from After, the effect happened but the caller gets the error
// (a lost reply).
type Faults struct {
	Before func(op Op, epoch uint64, label string) error
	After  func(op Op, epoch uint64, label string) error
}

// TxnState is the destination-side state of one transaction.
type TxnState string

// Destination transaction states.
const (
	StateStreaming    TxnState = "streaming"
	StatePrecommitted TxnState = "precommitted"
	StateCommitted    TxnState = "committed"
	StateAborted      TxnState = "aborted"
)

// DestTxn is one transaction as the fake destination holds it.
type DestTxn struct {
	Epoch  uint64
	Target change.TableID
	Label  string
	TxnID  string
	State  TxnState
	Rows   []change.Row
}

// Sink is the in-memory fake. The zero value is not usable; call NewSink.
type Sink struct {
	name string

	mu         sync.Mutex
	faults     Faults
	dead       bool
	nextID     int
	txns       map[string]*DestTxn // by label
	order      []string            // labels in commit order
	schemas    map[change.TableID][]change.TableSchema
	open       int // Txns begun and not yet pre-committed or aborted
	violations []string
	labelsSent map[string]bool               // labels that saw a byte
	deletes    map[string]change.ShardDelete // by marker in order
}

var (
	_ twopc.Sink         = (*Sink)(nil)
	_ twopc.ShardDeleter = (*Sink)(nil)
)

// NewSink returns an empty fake sink named name.
func NewSink(name string) *Sink {
	return &Sink{name: name, txns: map[string]*DestTxn{}, schemas: map[change.TableID][]change.TableSchema{}, labelsSent: map[string]bool{},
		deletes: map[string]change.ShardDelete{}}
}

// SetFaults replaces the fault hooks.
func (s *Sink) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// Crash makes every later call fail with ErrCrashed and no effect, as if
// this process died; the destination state stays.
func (s *Sink) Crash() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dead = true
}

// Restart returns a new Sink (a new process) over the same destination,
// without faults.
func (s *Sink) Restart() *Sink {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &Sink{name: s.name, txns: s.txns, order: s.order, schemas: s.schemas, nextID: s.nextID,
		labelsSent: s.labelsSent, violations: s.violations, deletes: s.deletes}
}

// Expire makes the destination abort a pre-committed transaction on its
// own, as Doris does when the pre-commit timeout passes.
func (s *Sink) Expire(label string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.txns[label]
	if t == nil || t.State != StatePrecommitted {
		return false
	}
	t.State = StateAborted
	return true
}

// Forget makes the destination lose all trace of a transaction, so Commit
// answers Unknown.
func (s *Sink) Forget(label string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.txns, label)
}

// Txns returns a copy of every transaction the destination holds, by label.
func (s *Sink) Txns() map[string]DestTxn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]DestTxn, len(s.txns))
	for k, v := range s.txns {
		out[k] = *v
	}
	return out
}

// Visible returns the rows of committed transactions, in commit order.
func (s *Sink) Visible() []change.Row {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rows []change.Row
	for _, l := range s.order {
		if d, ok := s.deletes[l]; ok {
			rows = slices.DeleteFunc(rows, func(r change.Row) bool { return r.Target == d.Target && r.Source == d.Shard })
			continue
		}
		if t := s.txns[l]; t != nil && t.State == StateCommitted {
			rows = append(rows, t.Rows...)
		}
	}
	return rows
}

// DeleteShard implements twopc.ShardDeleter: the rows of d.Shard committed
// so far leave d.Target (in commit order: later commits keep theirs). It
// records a violation when an epoch of this sink is open.
func (s *Sink) DeleteShard(ctx context.Context, d change.ShardDelete) error {
	if err := s.before(OpDeleteShard, 0, ""); err != nil {
		return fmt.Errorf("deleting shard %s: %w", d.Shard, err)
	}
	s.mu.Lock()
	if s.open > 0 {
		s.violations = append(s.violations, fmt.Sprintf("DeleteShard(%s) with %d epoch(s) open", d.Shard, s.open))
	}
	m := fmt.Sprintf("\x00delete:%d", len(s.deletes))
	s.deletes[m] = d
	s.order = append(s.order, m)
	s.mu.Unlock()
	return s.after(OpDeleteShard, 0, "")
}

// Deletes returns the shard deletes the destination ran, in order (repeats
// included).
func (s *Sink) Deletes() []change.ShardDelete {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []change.ShardDelete
	for _, l := range s.order {
		if d, ok := s.deletes[l]; ok {
			out = append(out, d)
		}
	}
	return out
}

// Schemas returns the schemas applied for target, in order.
func (s *Sink) Schemas(target change.TableID) []change.TableSchema {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.schemas[target])
}

// Sent reports whether any byte of label reached the destination.
func (s *Sink) Sent(label string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.labelsSent[label]
}

// Violations lists contract breaches the fake saw from its caller.
func (s *Sink) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.violations)
}

// Label is the fake's deterministic label for (sink, target, epoch).
func Label(sink string, target change.TableID, epoch uint64) string {
	return fmt.Sprintf("%s_%s_%s_%d", sink, target.Database, target.Table, epoch)
}

// before runs the Before hook; the caller holds no lock.
func (s *Sink) before(op Op, epoch uint64, label string) error {
	s.mu.Lock()
	dead, f := s.dead, s.faults.Before
	s.mu.Unlock()
	if dead {
		return ErrCrashed
	}
	if f != nil {
		return f(op, epoch, label)
	}
	return nil
}

func (s *Sink) after(op Op, epoch uint64, label string) error {
	s.mu.Lock()
	f := s.faults.After
	s.mu.Unlock()
	if f != nil {
		return f(op, epoch, label)
	}
	return nil
}

// Name implements twopc.Sink.
func (s *Sink) Name() string { return s.name }

// ApplySchema implements twopc.Sink. It records a violation when an epoch of
// this sink is open.
func (s *Sink) ApplySchema(ctx context.Context, ts change.TableSchema) error {
	if err := s.before(OpApplySchema, 0, ""); err != nil {
		return fmt.Errorf("applying schema of %s: %w", ts.Target, err)
	}
	s.mu.Lock()
	if s.open > 0 {
		s.violations = append(s.violations, fmt.Sprintf("ApplySchema(%s) with %d epoch(s) open", ts.Target, s.open))
	}
	s.schemas[ts.Target] = append(s.schemas[ts.Target], ts)
	s.mu.Unlock()
	return s.after(OpApplySchema, 0, "")
}

// Begin implements twopc.Sink.
func (s *Sink) Begin(ctx context.Context, epoch uint64, rec twopc.Recorder) (twopc.Txn, error) {
	if err := s.before(OpBegin, epoch, ""); err != nil {
		return nil, fmt.Errorf("beginning epoch %d: %w", epoch, err)
	}
	s.mu.Lock()
	s.open++
	s.mu.Unlock()
	return &txn{s: s, epoch: epoch, rec: rec, labels: map[change.TableID]string{}}, s.after(OpBegin, epoch, "")
}

// Commit implements twopc.Sink.
func (s *Sink) Commit(ctx context.Context, p twopc.Prepared) (twopc.Outcome, error) {
	if err := s.before(OpCommit, 0, p.Label); err != nil {
		return twopc.Unknown, fmt.Errorf("committing %s: %w", p, err)
	}
	s.mu.Lock()
	t := s.txns[p.Label]
	var o twopc.Outcome
	var err error
	switch {
	case t == nil:
		o = twopc.Unknown
	case p.TxnID != "" && t.TxnID != p.TxnID:
		err = fmt.Errorf("committing %s: the label belongs to txn %s", p, t.TxnID)
	case t.State == StateCommitted:
		o = twopc.Committed
	case t.State == StateAborted:
		o = twopc.Aborted
	case t.State == StateStreaming:
		err = fmt.Errorf("committing %s: transaction is not pre-committed", p)
	default:
		t.State, o = StateCommitted, twopc.Committed
		s.order = append(s.order, p.Label)
	}
	s.mu.Unlock()
	if err != nil {
		return twopc.Unknown, err
	}
	if err := s.after(OpCommit, 0, p.Label); err != nil {
		return twopc.Unknown, fmt.Errorf("committing %s: %w", p, err)
	}
	return o, nil
}

// Abort implements twopc.Sink.
func (s *Sink) Abort(ctx context.Context, p twopc.Prepared) (twopc.Outcome, error) {
	if err := s.before(OpAbort, 0, p.Label); err != nil {
		return twopc.Unknown, fmt.Errorf("aborting %s: %w", p, err)
	}
	s.mu.Lock()
	o := s.abortLocked(p.Label)
	s.mu.Unlock()
	if err := s.after(OpAbort, 0, p.Label); err != nil {
		return twopc.Unknown, fmt.Errorf("aborting %s: %w", p, err)
	}
	return o, nil
}

func (s *Sink) abortLocked(label string) twopc.Outcome {
	t := s.txns[label]
	switch {
	case t == nil:
		return twopc.Aborted
	case t.State == StateCommitted:
		return twopc.Committed
	}
	t.State = StateAborted
	return twopc.Aborted
}

// Close implements twopc.Sink.
func (s *Sink) Close() error { return nil }

// txn is one epoch on the fake.
type txn struct {
	s      *Sink
	epoch  uint64
	rec    twopc.Recorder
	labels map[change.TableID]string
	order  []change.TableID
	done   bool
}

func (t *txn) Write(ctx context.Context, rows []change.Row) error {
	s := t.s
	if t.done {
		s.mu.Lock()
		s.violations = append(s.violations, fmt.Sprintf("Write after PreCommit/Abort in epoch %d", t.epoch))
		s.mu.Unlock()
		return fmt.Errorf("writing epoch %d: already pre-committed or aborted", t.epoch)
	}
	for _, r := range rows {
		label, ok := t.labels[r.Target]
		if !ok {
			label = Label(s.name, r.Target, t.epoch)
			if err := t.rec.Intend(ctx, twopc.Prepared{Sink: s.name, Target: r.Target, Label: label}); err != nil {
				return fmt.Errorf("writing epoch %d: %w", t.epoch, err)
			}
			if err := s.before(OpIntend, t.epoch, label); err != nil {
				return fmt.Errorf("writing epoch %d: %w", t.epoch, err)
			}
			s.mu.Lock()
			if _, exists := s.txns[label]; exists {
				s.mu.Unlock()
				return fmt.Errorf("writing epoch %d: label %s: Label Already Exists", t.epoch, label)
			}
			s.nextID++
			s.txns[label] = &DestTxn{Epoch: t.epoch, Target: r.Target, Label: label, State: StateStreaming}
			s.mu.Unlock()
			t.labels[r.Target] = label
			t.order = append(t.order, r.Target)
		}
		if err := s.before(OpWrite, t.epoch, label); err != nil {
			return fmt.Errorf("writing epoch %d label %s: %w", t.epoch, label, err)
		}
		s.mu.Lock()
		s.labelsSent[label] = true
		d := s.txns[label]
		if d == nil || d.State != StateStreaming {
			s.mu.Unlock()
			return fmt.Errorf("writing epoch %d label %s: transaction is no longer open at the destination", t.epoch, label)
		}
		d.Rows = append(d.Rows, r)
		s.mu.Unlock()
		if err := s.after(OpWrite, t.epoch, label); err != nil {
			return fmt.Errorf("writing epoch %d label %s: %w", t.epoch, label, err)
		}
	}
	return nil
}

func (t *txn) PreCommit(ctx context.Context) ([]twopc.Prepared, error) {
	s := t.s
	var out []twopc.Prepared
	for _, target := range t.order {
		label := t.labels[target]
		if err := s.before(OpPreCommit, t.epoch, label); err != nil {
			return nil, fmt.Errorf("pre-committing epoch %d label %s: %w", t.epoch, label, err)
		}
		s.mu.Lock()
		d := s.txns[label]
		if d == nil || d.State != StateStreaming {
			s.mu.Unlock()
			return nil, fmt.Errorf("pre-committing epoch %d label %s: transaction is no longer open", t.epoch, label)
		}
		s.nextID++
		d.State, d.TxnID = StatePrecommitted, fmt.Sprint(s.nextID)
		s.mu.Unlock()
		if err := s.after(OpPreCommit, t.epoch, label); err != nil {
			return nil, fmt.Errorf("pre-committing epoch %d label %s: %w", t.epoch, label, err)
		}
		out = append(out, twopc.Prepared{Sink: s.name, Target: target, Label: label, TxnID: d.TxnID})
	}
	t.finish()
	return out, nil
}

func (t *txn) Abort(ctx context.Context) error {
	s := t.s
	if err := s.before(OpTxnAbort, t.epoch, ""); err != nil {
		return fmt.Errorf("aborting epoch %d: %w", t.epoch, err)
	}
	s.mu.Lock()
	for _, l := range t.labels {
		s.abortLocked(l)
	}
	s.mu.Unlock()
	t.finish()
	return s.after(OpTxnAbort, t.epoch, "")
}

func (t *txn) finish() {
	if t.done {
		return
	}
	t.done = true
	t.s.mu.Lock()
	t.s.open--
	t.s.mu.Unlock()
}
