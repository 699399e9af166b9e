// Package ledger is the durable state machine of shardsync's epochs, kept
// in a bbolt file.
//
// Every epoch moves OPEN → PRECOMMITTED → COMMITTED, or OPEN/PRECOMMITTED →
// ABORTED. Each transition is exactly one bbolt read-write transaction,
// which bbolt fsyncs before Update returns; a method that returned nil has
// made its change durable. The ledger also keeps the next epoch number (so
// numbers, and therefore sink labels, are never reused) and the resume
// position: the source token after the last contiguous committed data.
//
// Each ledger has an id, created with it and recorded in it (see ID): sinks
// put it into their labels, so that labels are unique to the ledger, and
// record it at the targets, so that a job can tell that a target holds rows
// written under another ledger. A ledger written by a shardsync from before
// ids gets one assigned on its first Open (see IDAssigned).
//
// One process per ledger: Open takes bbolt's exclusive file lock and
// records who holds it in a sidecar file "<path>.holder", so that a second
// opener gets an error naming the file and the holder.
//
// A ledger that cannot be read is reported with ErrDamaged and never reset.
// The ledger knows states and positions only; it does not talk to sinks.
package ledger

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/shardsync/shardsync/change"
)

// State is the state of one epoch.
type State uint8

// The epoch states. Only the transitions Open→Precommitted,
// Precommitted→Committed, Open→Aborted and Precommitted→Aborted exist.
const (
	StateOpen         State = iota + 1 // labels may exist at sinks; nothing may be committed
	StatePrecommitted                  // the commit point: every prepared txn must be committed
	StateCommitted                     // finished: its end position is (or was) the resume position
	StateAborted                       // finished: nothing of it is visible at any sink
)

var stateNames = [...]string{StateOpen: "OPEN", StatePrecommitted: "PRECOMMITTED", StateCommitted: "COMMITTED", StateAborted: "ABORTED"}

func (s State) valid() bool { return s >= StateOpen && s <= StateAborted }

func (s State) String() string {
	if s.valid() {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Finished reports whether s is COMMITTED or ABORTED.
func (s State) Finished() bool { return s == StateCommitted || s == StateAborted }

// MarshalText encodes the state by name.
func (s State) MarshalText() ([]byte, error) {
	if !s.valid() {
		return nil, fmt.Errorf("encoding epoch state: invalid state %d", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText decodes a state name.
func (s *State) UnmarshalText(b []byte) error {
	for i, n := range stateNames {
		if n != "" && n == string(b) {
			*s = State(i)
			return nil
		}
	}
	return fmt.Errorf("unknown epoch state %q", b)
}

// SinkTxn is one sink transaction of an epoch as the ledger records it. It
// mirrors twopc.Prepared (the ledger does not import twopc).
type SinkTxn struct {
	Sink   string          `json:"sink"`
	Target change.TableID  `json:"target"`
	Label  string          `json:"label"`
	TxnID  string          `json:"txn_id,omitempty"`
	Extra  json.RawMessage `json:"extra,omitempty"`
}

// Epoch is the ledger's record of one epoch.
type Epoch struct {
	Number uint64 `json:"epoch"`
	State  State  `json:"state"`
	// Start is the source token the epoch began reading at.
	Start change.Token `json:"start"`
	// End is the source token after the epoch's last whole source
	// transaction; set from PRECOMMITTED on.
	End change.Token `json:"end,omitempty"`
	// Intents are the sink transactions that may exist at the sinks, each
	// recorded before its first byte was sent.
	Intents []SinkTxn `json:"intents,omitempty"`
	// Prepared are the pre-committed sink transactions (PRECOMMITTED on).
	Prepared []SinkTxn `json:"prepared,omitempty"`
	Opened   time.Time `json:"opened"`
	Updated  time.Time `json:"updated"`
	// Note says why the epoch was aborted or how an operator resolved it.
	Note string `json:"note,omitempty"`
	// Deletes are the shard deletes of a delete epoch (see RecordDeletes):
	// it has no sink transactions, only these statements to run.
	Deletes []change.ShardDelete `json:"deletes,omitempty"`
}

// Options tune Open.
type Options struct {
	// Timeout bounds the wait for the file lock; 0 means DefaultTimeout.
	Timeout time.Duration
	// Keep is how many finished (COMMITTED/ABORTED) epochs are kept for
	// inspection; older ones are pruned when an epoch finishes. 0 means
	// DefaultKeep. Unfinished epochs are never pruned.
	Keep int
	// Now returns the time stamped on records; nil means time.Now.
	Now func() time.Time
}

// DefaultTimeout is the lock wait used when Options.Timeout is 0.
const DefaultTimeout = 2 * time.Second

// DefaultKeep is the finished-epoch history kept when Options.Keep is 0.
const DefaultKeep = 100

// Holder identifies the process that holds a ledger open.
type Holder struct {
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	Started time.Time `json:"started"`
	Command string    `json:"command,omitempty"`
}

func (h Holder) String() string {
	return fmt.Sprintf("pid %d on host %s since %s (%s)", h.PID, h.Host, h.Started.Format(time.RFC3339), h.Command)
}

// Ledger is an open ledger file. Its methods are safe for concurrent use.
type Ledger struct {
	path   string
	db     *bolt.DB
	keep   int
	now    func() time.Time
	holder Holder
	id     string
	// assigned: the id was given on open to a ledger created without one.
	assigned bool
}

var (
	bucketMeta   = []byte("meta")
	bucketEpochs = []byte("epochs")
	keyFormat    = []byte("format")
	keyNext      = []byte("next_epoch")
	keyResume    = []byte("resume")
	// keyID holds the ledger id; keyIDOrigin says whether it was created
	// with the ledger ("created") or assigned to an older ledger on open
	// ("assigned"). Both were added after format 1 shipped: a shardsync
	// without ids ignores them.
	keyID       = []byte("ledger_id")
	keyIDOrigin = []byte("ledger_id_origin")
)

// idRE is the shape of a ledger id: 16 lower-case hex digits, safe inside
// Doris labels ([-_A-Za-z0-9:]) and MaxCompute names.
var idRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// newID returns a random ledger id.
func newID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("creating a ledger id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Open opens or creates the ledger at path. It returns an error wrapping
// ErrLocked when another process holds it (naming the file and the holder)
// and ErrDamaged when the file exists but is not a readable ledger; in that
// case the file is left untouched.
func Open(path string, opts Options) (l *Ledger, err error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Keep <= 0 {
		opts.Keep = DefaultKeep
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	fresh := false
	switch st, serr := os.Stat(path); {
	case errors.Is(serr, os.ErrNotExist):
		fresh = true
	case serr != nil:
		return nil, fmt.Errorf("opening ledger %s: %w", path, serr)
	case st.IsDir():
		return nil, fmt.Errorf("opening ledger %s: it is a directory; --ledger must name a file", path)
	case st.Size() == 0:
		fresh = true
	}

	// bbolt panics on some malformed files; report those as damage too.
	defer func() {
		if r := recover(); r != nil {
			l, err = nil, damaged(path, fmt.Sprintf("reading the file failed: %v", r))
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.Timeout})
	if err != nil {
		switch {
		case errors.Is(err, bolterrors.ErrTimeout):
			return nil, lockedError(path)
		case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrVersionMismatch),
			errors.Is(err, bolterrors.ErrChecksum), errors.Is(err, bolterrors.ErrInvalidMapping):
			return nil, damaged(path, err.Error())
		}
		return nil, fmt.Errorf("opening ledger %s: %w", path, err)
	}
	l = &Ledger{path: path, db: db, keep: opts.Keep, now: opts.Now}
	if err := l.init(fresh); err != nil {
		_ = db.Close()
		return nil, err
	}
	l.holder = Holder{PID: os.Getpid(), Started: opts.Now().UTC()}
	l.holder.Host, _ = os.Hostname()
	if len(os.Args) > 0 {
		l.holder.Command = os.Args[0]
	}
	if err := writeHolder(path, l.holder); err != nil {
		_ = db.Close()
		return nil, err
	}
	return l, nil
}

// init creates the buckets of a fresh ledger, or checks an existing one.
func (l *Ledger) init(fresh bool) error {
	if fresh {
		err := l.db.Update(func(tx *bolt.Tx) error {
			if tx.Bucket(bucketMeta) != nil {
				return nil // created by an earlier Open of this still-empty file
			}
			meta, err := tx.CreateBucket(bucketMeta)
			if err != nil {
				return fmt.Errorf("initialising ledger %s: %w", l.path, err)
			}
			if _, err := tx.CreateBucket(bucketEpochs); err != nil {
				return fmt.Errorf("initialising ledger %s: %w", l.path, err)
			}
			res, err := encodeResume(resumeRecord{Updated: l.now().UTC()})
			if err != nil {
				return err
			}
			id, err := newID()
			if err != nil {
				return err
			}
			for k, v := range map[string][]byte{string(keyFormat): {formatVersion}, string(keyNext): epochKey(1), string(keyResume): res,
				string(keyID): []byte(id), string(keyIDOrigin): []byte("created")} {
				if err := meta.Put([]byte(k), v); err != nil {
					return fmt.Errorf("initialising ledger %s: %w", l.path, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		return l.ensureID()
	}
	err := l.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return damaged(l.path, "bbolt consistency check: "+err.Error())
		}
		meta := tx.Bucket(bucketMeta)
		if meta == nil || tx.Bucket(bucketEpochs) == nil {
			return damaged(l.path, "the meta or epochs bucket is missing (is this a shardsync ledger?)")
		}
		f := meta.Get(keyFormat)
		if len(f) != 1 || f[0] != formatVersion {
			return damaged(l.path, fmt.Sprintf("format version %v, this shardsync reads %d", f, formatVersion))
		}
		if _, err := l.readNext(tx); err != nil {
			return err
		}
		if _, err := l.readResume(tx); err != nil {
			return err
		}
		return tx.Bucket(bucketEpochs).ForEach(func(k, v []byte) error {
			_, err := l.decode(k, v)
			return err
		})
	})
	if err != nil {
		return err
	}
	return l.ensureID()
}

// ensureID reads the ledger id, assigning one to a ledger created by a
// shardsync from before ids.
func (l *Ledger) ensureID() error {
	return l.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return damaged(l.path, "the meta bucket is missing (is this a shardsync ledger?)")
		}
		if v := meta.Get(keyID); v != nil {
			if !idRE.Match(v) {
				return damaged(l.path, fmt.Sprintf("ledger id %q is not 16 hex digits", v))
			}
			l.id, l.assigned = string(v), string(meta.Get(keyIDOrigin)) == "assigned"
			return nil
		}
		id, err := newID()
		if err != nil {
			return err
		}
		if err := meta.Put(keyID, []byte(id)); err != nil {
			return fmt.Errorf("recording ledger id in %s: %w", l.path, err)
		}
		if err := meta.Put(keyIDOrigin, []byte("assigned")); err != nil {
			return fmt.Errorf("recording ledger id in %s: %w", l.path, err)
		}
		l.id, l.assigned = id, true
		return nil
	})
}

// ID is the ledger's id: 16 lower-case hex digits, random, created with the
// ledger (or assigned on the first Open of a ledger from before ids) and
// never changed. Sinks put it into labels and record it at their targets.
func (l *Ledger) ID() string { return l.id }

// IDAssigned reports whether the id was assigned to a ledger that a
// shardsync from before ids created: such a ledger may have written rows
// to targets that carry no record of it.
func (l *Ledger) IDAssigned() bool { return l.assigned }

// Close releases the file lock and removes the holder sidecar.
func (l *Ledger) Close() error {
	removeHolder(l.path, l.holder)
	if err := l.db.Close(); err != nil {
		return fmt.Errorf("closing ledger %s: %w", l.path, err)
	}
	return nil
}

// Path is the ledger file's path.
func (l *Ledger) Path() string { return l.path }

// NextEpoch returns the smallest epoch number never used. Numbers below it
// may have labels at sinks and must not be handed out again.
func (l *Ledger) NextEpoch() (uint64, error) {
	var n uint64
	err := l.db.View(func(tx *bolt.Tx) (err error) {
		n, err = l.readNext(tx)
		return err
	})
	return n, err
}

// Resume returns the source token to resume from: the end of the last
// COMMITTED epoch (or the last Advance). It is nil on a fresh ledger, which
// means "start from the beginning" (a full snapshot).
func (l *Ledger) Resume() (change.Token, error) {
	var t change.Token
	err := l.db.View(func(tx *bolt.Tx) error {
		r, err := l.readResume(tx)
		t = r.Token
		return err
	})
	return t, err
}

// Epoch returns the record of epoch n, or an error wrapping ErrNotFound.
func (l *Ledger) Epoch(n uint64) (Epoch, error) {
	var e Epoch
	err := l.db.View(func(tx *bolt.Tx) (err error) {
		e, err = l.get(tx, n)
		return err
	})
	return e, err
}

// Epochs returns every epoch the ledger still holds, in ascending order.
func (l *Ledger) Epochs() ([]Epoch, error) {
	var out []Epoch
	err := l.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEpochs).ForEach(func(k, v []byte) error {
			e, err := l.decode(k, v)
			out = append(out, e)
			return err
		})
	})
	return out, err
}

// Unfinished returns the OPEN and PRECOMMITTED epochs in ascending order.
func (l *Ledger) Unfinished() ([]Epoch, error) {
	all, err := l.Epochs()
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(e Epoch) bool { return e.State.Finished() }), nil
}

// Intend records durably that sink transaction t of epoch n may begin. The
// first call for n creates the epoch OPEN with start as its start token
// (n must not have been used before; the next epoch number becomes n+1);
// later calls add t to its intents. Repeating a recorded label is a no-op.
func (l *Ledger) Intend(ctx context.Context, n uint64, start change.Token, t SinkTxn) error {
	if t.Sink == "" || t.Label == "" {
		return fmt.Errorf("recording intent for epoch %d: sink and label are required", n)
	}
	return l.update(ctx, fmt.Sprintf("recording intent %s/%s for epoch %d", t.Sink, t.Label, n), func(tx *bolt.Tx) error {
		e, err := l.get(tx, n)
		switch {
		case errors.Is(err, ErrNotFound):
			if err := l.claim(tx, n); err != nil {
				return err
			}
			now := l.now().UTC()
			e = Epoch{Number: n, State: StateOpen, Start: bytes.Clone(start), Opened: now}
		case err != nil:
			return err
		case e.State != StateOpen:
			return fmt.Errorf("epoch %d is %s, not OPEN: %w", n, e.State, ErrTransition)
		case !bytes.Equal(e.Start, start):
			return fmt.Errorf("epoch %d started at %x, not %x: %w", n, e.Start, start, ErrTransition)
		}
		if i := slices.IndexFunc(e.Intents, func(x SinkTxn) bool { return x.Sink == t.Sink && x.Label == t.Label }); i >= 0 {
			// A repeated intent may name the destination's transaction
			// (its id and sink data), learnt after the first intent.
			if t.TxnID == "" && len(t.Extra) == 0 {
				return nil
			}
			e.Intents[i].TxnID, e.Intents[i].Extra = t.TxnID, t.Extra
			return l.put(tx, e)
		}
		e.Intents = append(e.Intents, t)
		return l.put(tx, e)
	})
}

// Precommit moves epoch n from OPEN to PRECOMMITTED with its end token and
// prepared transactions: the single commit point of the epoch. Every
// prepared label must have been recorded by Intend (else ErrIntent).
func (l *Ledger) Precommit(ctx context.Context, n uint64, end change.Token, prepared []SinkTxn) error {
	return l.update(ctx, fmt.Sprintf("recording epoch %d as PRECOMMITTED", n), func(tx *bolt.Tx) error {
		e, err := l.get(tx, n)
		if err != nil {
			if errors.Is(err, ErrNotFound) && len(prepared) > 0 {
				return fmt.Errorf("epoch %d has %d prepared transactions (first %s/%s) but was never opened: %w",
					n, len(prepared), prepared[0].Sink, prepared[0].Label, ErrIntent)
			}
			return err
		}
		if e.State != StateOpen {
			return fmt.Errorf("epoch %d is %s, not OPEN: %w", n, e.State, ErrTransition)
		}
		for _, p := range prepared {
			if p.Sink == "" || p.Label == "" {
				return fmt.Errorf("epoch %d: prepared transaction %+v lacks sink or label", n, p)
			}
			if !slices.ContainsFunc(e.Intents, func(x SinkTxn) bool { return x.Sink == p.Sink && x.Label == p.Label }) {
				return fmt.Errorf("epoch %d: %s label %s: %w", n, p.Sink, p.Label, ErrIntent)
			}
		}
		e.State, e.End, e.Prepared = StatePrecommitted, bytes.Clone(end), slices.Clone(prepared)
		return l.put(tx, e)
	})
}

// Commit moves epoch n from PRECOMMITTED to COMMITTED and makes its end
// token the resume position, in one update. Every earlier epoch must be
// finished (else ErrOrder). Committing a COMMITTED epoch is a no-op. note
// is kept on the record (e.g. "resolved by operator").
func (l *Ledger) Commit(ctx context.Context, n uint64, note string) error {
	return l.update(ctx, fmt.Sprintf("recording epoch %d as COMMITTED", n), func(tx *bolt.Tx) error {
		e, err := l.get(tx, n)
		if err != nil {
			return err
		}
		switch e.State {
		case StateCommitted:
			return nil
		case StatePrecommitted:
		default:
			return fmt.Errorf("epoch %d is %s, not PRECOMMITTED: %w", n, e.State, ErrTransition)
		}
		if err := l.checkOrder(tx, n); err != nil {
			return err
		}
		e.State = StateCommitted
		if note != "" {
			e.Note = note
		}
		if err := l.put(tx, e); err != nil {
			return err
		}
		if err := l.putResume(tx, n, e.End); err != nil {
			return err
		}
		return l.prune(tx)
	})
}

// Abort moves epoch n from OPEN or PRECOMMITTED to ABORTED. The resume
// position is not changed: it never moved past an unfinished epoch.
// Aborting an ABORTED epoch is a no-op; aborting a COMMITTED one is
// ErrTransition.
func (l *Ledger) Abort(ctx context.Context, n uint64, note string) error {
	return l.update(ctx, fmt.Sprintf("recording epoch %d as ABORTED", n), func(tx *bolt.Tx) error {
		e, err := l.get(tx, n)
		if err != nil {
			return err
		}
		switch e.State {
		case StateAborted:
			return nil
		case StateCommitted:
			return fmt.Errorf("epoch %d is COMMITTED and cannot be aborted: %w", n, ErrTransition)
		}
		e.State, e.Note = StateAborted, note
		if err := l.put(tx, e); err != nil {
			return err
		}
		return l.prune(tx)
	})
}

// Advance sets the resume position to end for epoch n, which wrote nothing
// to any sink and so has no record (an idle epoch whose source token still
// moved). Every recorded epoch before n must be finished (else ErrOrder); n
// must not have a record. n does not consume an epoch number.
func (l *Ledger) Advance(ctx context.Context, n uint64, end change.Token) error {
	return l.update(ctx, fmt.Sprintf("advancing the resume position for empty epoch %d", n), func(tx *bolt.Tx) error {
		if _, err := l.get(tx, n); err == nil {
			return fmt.Errorf("epoch %d has a record; finish it with Commit or Abort: %w", n, ErrTransition)
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		if err := l.checkOrder(tx, n); err != nil {
			return err
		}
		return l.putResume(tx, n, end)
	})
}

// update runs fn in one read-write bbolt transaction, which bbolt fsyncs
// before returning.
func (l *Ledger) update(ctx context.Context, what string, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s in ledger %s: %w", what, l.path, err)
	}
	if err := l.db.Update(fn); err != nil {
		return fmt.Errorf("%s in ledger %s: %w", what, l.path, err)
	}
	return nil
}

func (l *Ledger) readNext(tx *bolt.Tx) (uint64, error) {
	n, err := decodeEpochKey(tx.Bucket(bucketMeta).Get(keyNext))
	if err != nil || n == 0 {
		return 0, damaged(l.path, fmt.Sprintf("next epoch number unreadable: %v", err))
	}
	return n, nil
}

func (l *Ledger) readResume(tx *bolt.Tx) (resumeRecord, error) {
	v := tx.Bucket(bucketMeta).Get(keyResume)
	if v == nil {
		return resumeRecord{}, damaged(l.path, "the resume position is missing")
	}
	r, err := decodeResume(v)
	if err != nil {
		return resumeRecord{}, damaged(l.path, err.Error())
	}
	return r, nil
}

func (l *Ledger) putResume(tx *bolt.Tx, n uint64, t change.Token) error {
	b, err := encodeResume(resumeRecord{Token: bytes.Clone(t), Epoch: n, Updated: l.now().UTC()})
	if err != nil {
		return err
	}
	return tx.Bucket(bucketMeta).Put(keyResume, b)
}

// claim reserves epoch number n, which must be at least the next number.
func (l *Ledger) claim(tx *bolt.Tx, n uint64) error {
	next, err := l.readNext(tx)
	if err != nil {
		return err
	}
	if n < next {
		return fmt.Errorf("epoch %d (next unused is %d): %w", n, next, ErrEpochReused)
	}
	return tx.Bucket(bucketMeta).Put(keyNext, epochKey(n+1))
}

func (l *Ledger) get(tx *bolt.Tx, n uint64) (Epoch, error) {
	k := epochKey(n)
	v := tx.Bucket(bucketEpochs).Get(k)
	if v == nil {
		return Epoch{}, fmt.Errorf("epoch %d: %w", n, ErrNotFound)
	}
	return l.decode(k, v)
}

func (l *Ledger) decode(k, v []byte) (Epoch, error) {
	n, err := decodeEpochKey(k)
	if err != nil {
		return Epoch{}, damaged(l.path, err.Error())
	}
	e, err := decodeEpoch(v)
	if err != nil {
		return Epoch{}, damaged(l.path, fmt.Sprintf("record of epoch %d: %v", n, err))
	}
	if e.Number != n {
		return Epoch{}, damaged(l.path, fmt.Sprintf("record under key %d says epoch %d", n, e.Number))
	}
	return e, nil
}

func (l *Ledger) put(tx *bolt.Tx, e Epoch) error {
	e.Updated = l.now().UTC()
	b, err := encodeEpoch(e)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketEpochs).Put(epochKey(e.Number), b)
}

// checkOrder fails when an epoch before n is unfinished.
func (l *Ledger) checkOrder(tx *bolt.Tx, n uint64) error {
	c := tx.Bucket(bucketEpochs).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		e, err := l.decode(k, v)
		if err != nil {
			return err
		}
		if e.Number >= n {
			break
		}
		if !e.State.Finished() {
			return fmt.Errorf("epoch %d cannot finish while earlier epoch %d is %s: %w", n, e.Number, e.State, ErrOrder)
		}
	}
	return nil
}

// prune deletes the oldest finished epochs beyond the kept history.
func (l *Ledger) prune(tx *bolt.Tx) error {
	b := tx.Bucket(bucketEpochs)
	var finished [][]byte
	err := b.ForEach(func(k, v []byte) error {
		e, err := l.decode(k, v)
		if err != nil {
			return err
		}
		if e.State.Finished() {
			finished = append(finished, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for len(finished) > l.keep {
		if err := b.Delete(finished[0]); err != nil {
			return err
		}
		finished = finished[1:]
	}
	return nil
}

// damaged builds the ErrDamaged error, telling the operator what not to do.
func damaged(path, detail string) error {
	return fmt.Errorf("ledger %s: %s: %w. Do not delete or recreate this file: it may be the only record of "+
		"pre-committed sink transactions. Keep a copy, inspect it with `bbolt check %s` and `bbolt buckets %s`, "+
		"and settle open transactions at the sinks by hand before starting with a new ledger",
		path, detail, ErrDamaged, path, path)
}
