package maxcompute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aliyun/aliyun-odps-go-sdk/odps/data"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/tunnel"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/twopc"
)

// Begin implements twopc.Sink. Sessions are opened lazily per target
// partition on the epoch's first row for it, after rec.Intend. It does not
// fail.
func (s *Sink) Begin(_ context.Context, epoch uint64, rec twopc.Recorder) (twopc.Txn, error) {
	return &txn{s: s, epoch: epoch, rec: rec, parts: map[partKey]part{}, skipped: map[change.TableID]int64{}}, nil
}

// partKey is one session of an epoch: a target and one of its partitions
// ("" for an unpartitioned target).
type partKey struct {
	target    change.TableID
	partition string
}

type txn struct {
	s       *Sink
	epoch   uint64
	rec     twopc.Recorder
	parts   map[partKey]part
	order   []partKey
	skipped map[change.TableID]int64 // deletes ignored on plain tables
}

// part is one target partition's share of an epoch: one session.
type part interface {
	// put adds one record: opUpsert or opDelete (a plain table appends
	// upserts; deletes never reach it).
	put(ctx context.Context, op byte, vals []data.Data) error
	preCommit(ctx context.Context) (twopc.Prepared, error)
	abort(ctx context.Context) error
}

// Write implements twopc.Txn. Each row goes to the session of its target
// partition: static partitions from the partition option, dynamic ones from
// the row's column. On a Delta table an update whose partition (or key)
// changes is a delete by key in the old partition plus an upsert in the new
// one. On error nothing of the epoch may be committed; open sessions are
// abandoned by Abort (and by recovery from their recorded ids).
func (t *txn) Write(ctx context.Context, rows []change.Row) error {
	for _, r := range rows {
		tg, ok := t.s.target(r.Target)
		if !ok {
			return fmt.Errorf("maxcompute: row for %s before its schema was applied (ApplySchema must come first)", r.Target)
		}
		if err := t.route(ctx, tg, r); err != nil {
			return err
		}
	}
	return nil
}

func (t *txn) route(ctx context.Context, tg *target, r change.Row) error {
	switch r.Op {
	case change.Insert:
		return t.send(ctx, tg, r.After, opUpsert)
	case change.Update:
		if tg.delta && r.Before != nil {
			moved, err := tg.movedOrRekeyed(r.Before, r.After)
			if err != nil {
				return err
			}
			if moved { // delete the old row where it was
				if err := t.send(ctx, tg, r.Before, opDelete); err != nil {
					return err
				}
			}
		}
		return t.send(ctx, tg, r.After, opUpsert) // plain tables append the after image
	case change.Delete:
		if !tg.delta {
			t.skipped[tg.id]++ // plain tables cannot delete: ignored, as in Flink CDC
			return nil
		}
		return t.send(ctx, tg, r.Before, opDelete)
	}
	return fmt.Errorf("maxcompute: row with unknown operation %s", r.Op)
}

// movedOrRekeyed reports whether an update changes the row's partition or
// its key: then the before image must be deleted where it was.
func (tg *target) movedOrRekeyed(before, after []change.Value) (bool, error) {
	pb, err := tg.partitionOf(before)
	if err != nil {
		return false, err
	}
	pa, err := tg.partitionOf(after)
	if err != nil {
		return false, err
	}
	if pb != pa {
		return true, nil
	}
	vb, err := tg.values(before)
	if err != nil {
		return false, err
	}
	va, err := tg.values(after)
	if err != nil {
		return false, err
	}
	kb, err := tg.keyString(vb)
	if err != nil {
		return false, err
	}
	ka, err := tg.keyString(va)
	return kb != ka, err
}

func (t *txn) send(ctx context.Context, tg *target, img []change.Value, op byte) error {
	spec, err := tg.partitionOf(img)
	if err != nil {
		return err
	}
	vals, err := tg.values(img)
	if err != nil {
		return err
	}
	key := partKey{tg.id, spec}
	p, ok := t.parts[key]
	if !ok {
		if p, err = t.open(ctx, tg, spec); err != nil {
			return err
		}
		t.parts[key] = p
		t.order = append(t.order, key)
	}
	return p.put(ctx, op, vals)
}

func (t *txn) open(ctx context.Context, tg *target, spec string) (part, error) {
	id := tg.id
	lbl := label(id, spec, t.epoch)
	if err := t.rec.Intend(ctx, twopc.Prepared{Sink: SinkName, Target: id, Label: lbl}); err != nil {
		return nil, fmt.Errorf("maxcompute: recording intent for %s epoch %d: %w", id, t.epoch, err)
	}
	tun, upc, err := t.s.tunnels(ctx)
	if err != nil {
		return nil, err
	}
	if err := t.s.ensurePartition(ctx, tg, spec); err != nil {
		return nil, err
	}
	ref := tg.ref(spec)
	log := t.s.log.With("table", ref.String(), "epoch", t.epoch)
	if tg.delta {
		p := &deltaPart{s: t.s, t: tg, upc: upc, ref: ref, label: lbl, epoch: t.epoch, rec: t.rec,
			streams: map[int]*recordStream{}, log: log, spool: &spool{dir: t.s.cfg.SpoolDir}}
		if err := p.openSession(ctx); err != nil {
			return nil, err
		}
		return p, nil
	}
	opts := append(uploadOptions(t.s.cfg.CompressAlgorithm), tunnel.SessionCfg.WithSchemaName(tg.schema))
	if spec != "" {
		opts = append(opts, tunnel.SessionCfg.WithPartitionKey(spec))
	}
	us, err := call(ctx, t.s.cfg.RequestTimeout, func() (*tunnel.UploadSession, error) {
		return tun.CreateUploadSession(t.s.cfg.Project, tg.table, opts...)
	})
	if err != nil {
		return nil, fmt.Errorf("maxcompute: creating upload session for %s: %s", ref, describe(err))
	}
	if err := intendSession(ctx, t.rec, id, lbl, Extra{Kind: kindUpload, Project: t.s.cfg.Project, Schema: tg.schema,
		Table: tg.table, Partition: spec, SessionID: us.Id, Epoch: t.epoch}); err != nil {
		return nil, err
	}
	log.Debug("maxcompute: upload session open", "session", us.Id)
	return &plainPart{s: t.s, t: tg, us: us, ref: ref, label: lbl, epoch: t.epoch, opened: time.Now(),
		log: log.With("session", us.Id)}, nil
}

// intendSession records the session the service created for label before
// any record is sent to it, so that recovery of an epoch that never reached
// its commit point can abort the session by id rather than wait for it to
// expire. A re-opened session is recorded the same way, replacing the
// earlier id.
func intendSession(ctx context.Context, rec twopc.Recorder, id change.TableID, lbl string, x Extra) error {
	raw, err := json.Marshal(x)
	if err != nil {
		return fmt.Errorf("maxcompute: encoding session record: %w", err)
	}
	if err := rec.Intend(ctx, twopc.Prepared{Sink: SinkName, Target: id, Label: lbl, TxnID: x.SessionID, Extra: raw}); err != nil {
		return fmt.Errorf("maxcompute: recording session %s of %s epoch %d: %w", x.SessionID, id, x.Epoch, err)
	}
	return nil
}

// PreCommit implements twopc.Txn: every buffered bucket or block is sent;
// the sessions stay uncommitted. It returns one Prepared per session (per
// target partition written). On error nothing is committed; the caller
// aborts.
func (t *txn) PreCommit(ctx context.Context) ([]twopc.Prepared, error) {
	out := make([]twopc.Prepared, 0, len(t.order))
	for _, k := range t.order {
		p, err := t.parts[k].preCommit(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	for id, n := range t.skipped {
		t.s.log.Info("maxcompute: deletes ignored on a table without primary key", "target", id.String(), "count", n, "epoch", t.epoch)
	}
	return out, nil
}

// Abort implements twopc.Txn, best effort: upsert sessions are aborted;
// upload sessions are left to expire uncommitted.
func (t *txn) Abort(ctx context.Context) error {
	var first error
	for _, k := range t.order {
		if err := t.parts[k].abort(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// values converts a row image to the table's column order and types.
func (tg *target) values(img []change.Value) ([]data.Data, error) {
	if len(img) != len(tg.source.Columns) {
		return nil, fmt.Errorf("maxcompute: row for %s has %d values but its schema has %d columns", tg.id, len(img), len(tg.source.Columns))
	}
	out := make([]data.Data, len(tg.cols))
	for j, i := range tg.srcIdx {
		if i < 0 {
			continue
		}
		d, err := toData(img[i], tg.types[j], tg.cols[j].Name)
		if err != nil {
			return nil, fmt.Errorf("maxcompute: table %s: %w", tg.table, err)
		}
		out[j] = d
	}
	return out, nil
}

// ---- Delta tables ----

// keyString renders the key of a row's values (table column order).
func (tg *target) keyString(vals []data.Data) (string, error) {
	var key strings.Builder
	for _, j := range tg.keyPos {
		if vals[j] == nil {
			return "", fmt.Errorf("maxcompute: table %s: key column %s is NULL", tg.table, tg.cols[j].Name)
		}
		fmt.Fprintf(&key, "%v\x00", vals[j])
	}
	return key.String(), nil
}

type deltaPart struct {
	s       *Sink
	t       *target
	upc     *upsertClient
	ref     tableRef
	sess    *upsertSession
	buckets int
	label   string
	epoch   uint64
	rec     twopc.Recorder
	streams map[int]*recordStream
	total   int
	rows    int64
	log     *slog.Logger
	opened  time.Time // when sess was created
	spool   *spool    // what sess received, for a re-opened session
}

// openSession creates the part's session, records it in the ledger before
// any record is sent, and keeps it alive.
func (p *deltaPart) openSession(ctx context.Context) error {
	sess, err := p.upc.create(ctx, p.ref)
	if err != nil {
		return fmt.Errorf("maxcompute: %w", err)
	}
	n, err := sess.bucketCount()
	if err != nil {
		return fmt.Errorf("maxcompute: %w", err)
	}
	if p.t.buckets > 0 && n != p.t.buckets {
		return fmt.Errorf("maxcompute: upsert session for %s has %d buckets but the table has write.bucket.num=%d", p.ref, n, p.t.buckets)
	}
	if p.buckets != 0 && n != p.buckets {
		return fmt.Errorf("maxcompute: re-opened upsert session for %s has %d buckets, the one it replaces %d", p.ref, n, p.buckets)
	}
	if err := intendSession(ctx, p.rec, p.t.id, p.label, Extra{Kind: kindUpsert, Project: p.s.cfg.Project, Schema: p.t.schema,
		Table: p.t.table, Partition: p.ref.Partition, SessionID: sess.ID, Epoch: p.epoch}); err != nil {
		return err
	}
	p.sess, p.buckets, p.opened = sess, n, time.Now()
	p.s.keepAlive(p.upc, p.ref, sess.ID)
	p.log.Debug("maxcompute: upsert session open", "session", sess.ID, "buckets", n)
	return nil
}

// reopen replaces the part's session by a new one that gets every record
// the old one got (from the spool), in the same order per bucket; the new
// id replaces the old one in the ledger before its first record, and the
// old session is aborted. Nothing is lost (the spool holds everything sent)
// and nothing doubles (only the new session can ever be committed: the
// ledger no longer names the old one, which is aborted or expired).
func (p *deltaPart) reopen(ctx context.Context, why string) error {
	old := p.sess
	p.s.stopKeepAlive(old.ID)
	if err := p.openSession(ctx); err != nil {
		return fmt.Errorf("maxcompute: re-opening upsert session %s of %s (%s): %w", old.ID, p.ref, why, err)
	}
	if err := p.upc.abort(ctx, p.ref, old); err != nil && !isNotFound(err) {
		p.log.Warn("maxcompute: aborting the replaced upsert session failed; it expires uncommitted", "session", old.ID, "error", describe(err))
	}
	n := 0
	err := p.spool.each(func(b int, enc string, count int64, body []byte) error {
		n++
		return p.upc.put(ctx, p.ref, p.sess, b, body, enc, count)
	})
	if err != nil {
		return fmt.Errorf("maxcompute: re-sending to re-opened upsert session %s of %s: %w", p.sess.ID, p.ref, err)
	}
	p.log.Warn("maxcompute: upsert session re-opened", "reason", why, "old_session", old.ID, "session", p.sess.ID, "bodies_resent", n)
	return nil
}

// renewIfOld re-opens a session older than session.max-age, before the
// service's lifetime ends it.
func (p *deltaPart) renewIfOld(ctx context.Context) error {
	if age := time.Since(p.opened); age > p.s.cfg.SessionMaxAge {
		return p.reopen(ctx, fmt.Sprintf("open for %s, more than session.max-age %s", age.Round(time.Second), p.s.cfg.SessionMaxAge))
	}
	return nil
}

// expired asks the service whether the part's session expired.
func (p *deltaPart) expired(ctx context.Context) (bool, error) {
	sess, err := p.upc.get(ctx, p.ref, p.sess.ID)
	if err != nil {
		if isNotFound(err) {
			return true, nil // an open session the service no longer knows is gone
		}
		return false, fmt.Errorf("maxcompute: %w", err)
	}
	switch st := strings.ToLower(sess.Status); st {
	case "normal":
		return false, nil
	case "expired":
		return true, nil
	default:
		return false, fmt.Errorf("maxcompute: upsert session %s of %s is %s before its commit", p.sess.ID, p.ref, st)
	}
}

func (p *deltaPart) put(ctx context.Context, op byte, vals []data.Data) error {
	if err := p.renewIfOld(ctx); err != nil {
		return err
	}
	hashes := make([]int32, len(p.t.keyPos))
	for k, j := range p.t.keyPos {
		if vals[j] == nil {
			return fmt.Errorf("maxcompute: table %s: key column %s is NULL", p.t.table, p.t.cols[j].Name)
		}
		h, err := hashValue(vals[j], p.t.types[j])
		if err != nil {
			return fmt.Errorf("maxcompute: table %s column %s: %w", p.t.table, p.t.cols[j].Name, err)
		}
		hashes[k] = h
	}
	b := bucketOf(hashes, p.buckets)
	st, ok := p.streams[b]
	if !ok {
		st = newRecordStream()
		p.streams[b] = st
	}
	before := st.Len()
	if err := st.writeUpsert(vals, p.t.types, op); err != nil {
		return fmt.Errorf("maxcompute: encoding a row of %s: %w", p.t.table, err)
	}
	p.total += st.Len() - before
	p.rows++
	if int64(st.Len()) >= p.s.cfg.BucketBufferSize {
		return p.flushBucket(ctx, b)
	}
	if int64(p.total) >= p.s.cfg.TotalBufferSize {
		return p.flushAll(ctx)
	}
	return nil
}

// errSessionGone marks a PUT refused because the session expired.
var errSessionGone = errors.New("maxcompute: upsert session expired")

// flushBucket sends bucket b; a session found expired is re-opened and the
// bucket sent to the new one.
func (p *deltaPart) flushBucket(ctx context.Context, b int) error {
	st := p.streams[b]
	if st == nil {
		return nil
	}
	size, err := p.send(ctx, b, st)
	if errors.Is(err, errSessionGone) {
		if err := p.reopen(ctx, "the service expired it"); err != nil {
			return err
		}
		size, err = p.send(ctx, b, st)
	}
	if err != nil {
		return err
	}
	delete(p.streams, b)
	p.total -= size
	return nil
}

// send finishes bucket b's record stream (once; a repeated send reuses the
// finished body), compresses it, PUTs it to the session and spools it; it
// returns the buffered size the bucket held, or errSessionGone when the
// service expired the session.
func (p *deltaPart) send(ctx context.Context, b int, st *recordStream) (int, error) {
	size := st.Len()
	if st.body == nil {
		body, err := st.finish()
		if err != nil {
			return 0, fmt.Errorf("maxcompute: finishing bucket %d of %s: %w", b, p.t.table, err)
		}
		cbody, enc, err := compress(p.s.cfg.CompressAlgorithm, body)
		if err != nil {
			return 0, fmt.Errorf("maxcompute: %w", err)
		}
		st.body, st.enc, st.size = cbody, enc, size
	}
	if err := p.upc.put(ctx, p.ref, p.sess, b, st.body, st.enc, st.count); err != nil {
		if isNotFound(err) {
			if gone, gerr := p.expired(ctx); gerr == nil && gone {
				return 0, fmt.Errorf("%w: %s", errSessionGone, describe(err))
			}
		}
		return 0, fmt.Errorf("maxcompute: %w", err)
	}
	if err := p.spool.add(b, st.enc, st.count, st.body); err != nil {
		return 0, fmt.Errorf("maxcompute: spooling bucket %d of %s: %w", b, p.ref, err)
	}
	return st.size, nil
}

// flushAll sends every buffered bucket, FlushConcurrentNum at a time; a
// bucket is never sent by two requests at once. Buckets refused because the
// session expired are sent again, one by one, after the session is
// re-opened.
func (p *deltaPart) flushAll(ctx context.Context) error {
	buckets := make([]int, 0, len(p.streams))
	for b := range p.streams {
		buckets = append(buckets, b)
	}
	sort.Ints(buckets)
	type result struct {
		b, size int
		err     error
	}
	results := make(chan result, len(buckets))
	sem := make(chan struct{}, p.s.cfg.FlushConcurrentNum)
	var wg sync.WaitGroup
	for _, b := range buckets {
		st := p.streams[b]
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			size, err := p.send(ctx, b, st)
			results <- result{b, size, err}
		}()
	}
	wg.Wait()
	close(results)
	var gone []int
	var first error
	for r := range results {
		switch {
		case r.err == nil:
			delete(p.streams, r.b)
			p.total -= r.size
		case errors.Is(r.err, errSessionGone):
			gone = append(gone, r.b)
		case first == nil:
			first = r.err
		}
	}
	if first != nil {
		return first
	}
	if len(gone) == 0 {
		return nil
	}
	if err := p.reopen(ctx, "the service expired it"); err != nil {
		return err
	}
	sort.Ints(gone)
	for _, b := range gone {
		if err := p.flushBucket(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// preCommit sends every buffered bucket and makes sure the session is
// still open and young enough to be committed (re-opening it otherwise);
// the session stays uncommitted and the spool is dropped.
func (p *deltaPart) preCommit(ctx context.Context) (twopc.Prepared, error) {
	if err := p.flushAll(ctx); err != nil {
		return twopc.Prepared{}, err
	}
	if err := p.renewIfOld(ctx); err != nil {
		return twopc.Prepared{}, err
	}
	gone, err := p.expired(ctx)
	if err != nil {
		return twopc.Prepared{}, err
	}
	if gone {
		if err := p.reopen(ctx, "the service expired it before pre-commit"); err != nil {
			return twopc.Prepared{}, err
		}
	}
	p.spool.close()
	x, err := json.Marshal(Extra{Kind: kindUpsert, Project: p.s.cfg.Project, Schema: p.t.schema, Table: p.t.table,
		Partition: p.ref.Partition, SessionID: p.sess.ID, Epoch: p.epoch, Rows: p.rows})
	if err != nil {
		return twopc.Prepared{}, fmt.Errorf("maxcompute: encoding prepared extra: %w", err)
	}
	return twopc.Prepared{Sink: SinkName, Target: p.t.id, Label: p.label, TxnID: p.sess.ID, Extra: x}, nil
}

func (p *deltaPart) abort(ctx context.Context) error {
	p.spool.close()
	p.s.stopKeepAlive(p.sess.ID)
	if err := p.upc.abort(ctx, p.ref, p.sess); err != nil && !isNotFound(err) {
		return fmt.Errorf("maxcompute: %w", err)
	}
	return nil
}

// ---- plain tables ----

type plainPart struct {
	s        *Sink
	t        *target
	us       *tunnel.UploadSession
	ref      tableRef
	label    string
	epoch    uint64
	opened   time.Time
	blockIDs []int
	pending  []data.Record
	size     int64
	rows     int64
	log      *slog.Logger
}

// checkAge refuses an upload session older than session.max-age: an upload
// session cannot be re-opened without sending its blocks again, which the
// sink does not keep, so the epoch fails (and is read again from the
// source) instead of losing its rows to the session's 24 h lifetime.
func (p *plainPart) checkAge() error {
	if age := time.Since(p.opened); age > p.s.cfg.SessionMaxAge {
		return fmt.Errorf("maxcompute: epoch %d has kept upload session %s of %s open for %s, more than session.max-age %s; "+
			"an upload session lives 24 h and is not re-opened: lower pipeline.checkpoint-interval or pipeline.max-epoch-rows",
			p.epoch, p.us.Id, p.ref, age.Round(time.Second), p.s.cfg.SessionMaxAge)
	}
	return nil
}

func approxSize(rec data.Record) int64 {
	n := int64(0)
	for _, d := range rec {
		switch v := d.(type) {
		case nil:
		case data.String:
			n += int64(len(v)) + 4
		case data.Binary:
			n += int64(len(v)) + 4
		default:
			n += 10
		}
	}
	return n + 8
}

func (p *plainPart) put(ctx context.Context, op byte, vals []data.Data) error {
	if op != opUpsert {
		return fmt.Errorf("maxcompute: a delete reached plain table %s", p.ref)
	}
	if err := p.checkAge(); err != nil {
		return err
	}
	rec := data.Record(vals)
	p.pending = append(p.pending, rec)
	p.size += approxSize(rec)
	p.rows++
	if p.size >= p.s.cfg.BucketBufferSize {
		return p.flushBlock(ctx)
	}
	return nil
}

// flushBlock writes the pending rows as the next block. A retry rewrites
// the same block id, which replaces the block on the server.
func (p *plainPart) flushBlock(ctx context.Context) error {
	if len(p.pending) == 0 {
		return nil
	}
	id := len(p.blockIDs)
	if id >= 20000 {
		return fmt.Errorf("maxcompute: epoch %d of %s needs more than 20000 blocks; raise bucket.buffer-size or shorten the checkpoint interval", p.epoch, p.t.table)
	}
	recs := p.pending
	what := fmt.Sprintf("writing block %d of upload session %s (table %s)", id, p.us.Id, p.t.table)
	err := retryLoop(ctx, p.s.cfg, p.log, what, func(ctx context.Context) error {
		_, err := call(ctx, p.s.cfg.RequestTimeout, func() (struct{}, error) {
			w, err := p.us.OpenRecordWriter(id)
			if err != nil {
				return struct{}{}, err
			}
			for _, r := range recs {
				if err := w.Write(r); err != nil {
					_ = w.Close()
					return struct{}{}, err
				}
			}
			return struct{}{}, w.Close()
		})
		return err
	}, nil)
	if err != nil {
		return fmt.Errorf("maxcompute: %w", err)
	}
	p.blockIDs = append(p.blockIDs, id)
	p.pending, p.size = nil, 0
	return nil
}

func (p *plainPart) preCommit(ctx context.Context) (twopc.Prepared, error) {
	if err := p.flushBlock(ctx); err != nil {
		return twopc.Prepared{}, err
	}
	if err := p.checkAge(); err != nil {
		return twopc.Prepared{}, err
	}
	x, err := json.Marshal(Extra{Kind: kindUpload, Project: p.s.cfg.Project, Schema: p.t.schema, Table: p.t.table,
		Partition: p.ref.Partition, SessionID: p.us.Id,
		BlockIDs: append([]int{}, p.blockIDs...), Epoch: p.epoch, Rows: p.rows})
	if err != nil {
		return twopc.Prepared{}, fmt.Errorf("maxcompute: encoding prepared extra: %w", err)
	}
	return twopc.Prepared{Sink: SinkName, Target: p.t.id, Label: p.label, TxnID: p.us.Id, Extra: x}, nil
}

func (p *plainPart) abort(context.Context) error { return nil }
