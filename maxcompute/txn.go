package maxcompute

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"

	"github.com/aliyun/aliyun-odps-go-sdk/odps/data"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/tunnel"
	"golang.org/x/sync/errgroup"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/twopc"
)

// Begin implements twopc.Sink. Sessions are opened lazily per target on
// the epoch's first row for it, after rec.Intend.
func (s *Sink) Begin(_ context.Context, epoch uint64, rec twopc.Recorder) (twopc.Txn, error) {
	return &txn{s: s, epoch: epoch, rec: rec, parts: map[change.TableID]part{}}, nil
}

type txn struct {
	s     *Sink
	epoch uint64
	rec   twopc.Recorder
	parts map[change.TableID]part
	order []change.TableID
}

// part is one target's share of an epoch.
type part interface {
	write(ctx context.Context, r change.Row) error
	preCommit(ctx context.Context) (twopc.Prepared, error)
	abort(ctx context.Context) error
}

// Write implements twopc.Txn. On error nothing of the epoch may be
// committed; open sessions are abandoned by Abort.
func (t *txn) Write(ctx context.Context, rows []change.Row) error {
	for _, r := range rows {
		p, ok := t.parts[r.Target]
		if !ok {
			var err error
			if p, err = t.open(ctx, r.Target); err != nil {
				return err
			}
			t.parts[r.Target] = p
			t.order = append(t.order, r.Target)
		}
		if err := p.write(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

func (t *txn) open(ctx context.Context, id change.TableID) (part, error) {
	tg, ok := t.s.target(id)
	if !ok {
		return nil, fmt.Errorf("maxcompute: row for %s before its schema was applied (ApplySchema must come first)", id)
	}
	lbl := label(id, t.epoch)
	if err := t.rec.Intend(ctx, twopc.Prepared{Sink: SinkName, Target: id, Label: lbl}); err != nil {
		return nil, fmt.Errorf("maxcompute: recording intent for %s epoch %d: %w", id, t.epoch, err)
	}
	tun, upc, err := t.s.tunnels(ctx)
	if err != nil {
		return nil, err
	}
	log := t.s.log.With("table", tg.table, "epoch", t.epoch)
	if tg.delta {
		sess, err := upc.create(ctx, tg.table)
		if err != nil {
			return nil, fmt.Errorf("maxcompute: %w", err)
		}
		n, err := sess.bucketCount()
		if err != nil {
			return nil, fmt.Errorf("maxcompute: %w", err)
		}
		if tg.buckets > 0 && n != tg.buckets {
			return nil, fmt.Errorf("maxcompute: upsert session for %s has %d buckets but the table has write.bucket.num=%d", tg.table, n, tg.buckets)
		}
		if err := t.intendSession(ctx, id, lbl, Extra{Kind: kindUpsert, Project: t.s.cfg.Project, Table: tg.table, SessionID: sess.ID, Epoch: t.epoch}); err != nil {
			return nil, err
		}
		log.Debug("maxcompute: upsert session open", "session", sess.ID, "buckets", n)
		return &deltaPart{s: t.s, t: tg, upc: upc, sess: sess, buckets: n, label: lbl, epoch: t.epoch,
			streams: map[int]*recordStream{}, log: log.With("session", sess.ID)}, nil
	}
	us, err := call(ctx, t.s.cfg.RequestTimeout, func() (*tunnel.UploadSession, error) {
		return tun.CreateUploadSession(t.s.cfg.Project, tg.table, uploadOptions(t.s.cfg.CompressAlgorithm)...)
	})
	if err != nil {
		return nil, fmt.Errorf("maxcompute: creating upload session for %s: %s", tg.table, describe(err))
	}
	if err := t.intendSession(ctx, id, lbl, Extra{Kind: kindUpload, Project: t.s.cfg.Project, Table: tg.table, SessionID: us.Id, Epoch: t.epoch}); err != nil {
		return nil, err
	}
	log.Debug("maxcompute: upload session open", "session", us.Id)
	return &plainPart{s: t.s, t: tg, us: us, label: lbl, epoch: t.epoch, log: log.With("session", us.Id)}, nil
}

// intendSession records the session the service created for label before
// any record is sent to it, so that recovery of an epoch that never reached
// its commit point can abort the session by id rather than wait for it to
// expire.
func (t *txn) intendSession(ctx context.Context, id change.TableID, lbl string, x Extra) error {
	raw, err := json.Marshal(x)
	if err != nil {
		return fmt.Errorf("maxcompute: encoding session record: %w", err)
	}
	if err := t.rec.Intend(ctx, twopc.Prepared{Sink: SinkName, Target: id, Label: lbl, TxnID: x.SessionID, Extra: raw}); err != nil {
		return fmt.Errorf("maxcompute: recording session %s of %s epoch %d: %w", x.SessionID, id, t.epoch, err)
	}
	return nil
}

// PreCommit implements twopc.Txn: every buffered bucket or block is sent;
// the sessions stay uncommitted.
func (t *txn) PreCommit(ctx context.Context) ([]twopc.Prepared, error) {
	out := make([]twopc.Prepared, 0, len(t.order))
	for _, id := range t.order {
		p, err := t.parts[id].preCommit(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Abort implements twopc.Txn, best effort: upsert sessions are aborted;
// upload sessions are left to expire uncommitted.
func (t *txn) Abort(ctx context.Context) error {
	var first error
	for _, id := range t.order {
		if err := t.parts[id].abort(ctx); err != nil && first == nil {
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

type deltaPart struct {
	s       *Sink
	t       *target
	upc     *upsertClient
	sess    *upsertSession
	buckets int
	label   string
	epoch   uint64
	streams map[int]*recordStream
	total   int
	rows    int64
	log     *slog.Logger
}

func (p *deltaPart) keyOf(vals []data.Data) (string, int, error) {
	hashes := make([]int32, len(p.t.keyPos))
	var key string
	for k, j := range p.t.keyPos {
		if vals[j] == nil {
			return "", 0, fmt.Errorf("maxcompute: table %s: key column %s is NULL", p.t.table, p.t.cols[j].Name)
		}
		h, err := hashValue(vals[j], p.t.types[j])
		if err != nil {
			return "", 0, fmt.Errorf("maxcompute: table %s column %s: %w", p.t.table, p.t.cols[j].Name, err)
		}
		hashes[k] = h
		key += fmt.Sprintf("%v\x00", vals[j])
	}
	return key, bucketOf(hashes, p.buckets), nil
}

func (p *deltaPart) add(ctx context.Context, vals []data.Data, op byte) error {
	_, b, err := p.keyOf(vals)
	if err != nil {
		return err
	}
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

func (p *deltaPart) write(ctx context.Context, r change.Row) error {
	switch r.Op {
	case change.Insert:
		v, err := p.t.values(r.After)
		if err != nil {
			return err
		}
		return p.add(ctx, v, opUpsert)
	case change.Update:
		after, err := p.t.values(r.After)
		if err != nil {
			return err
		}
		if r.Before != nil {
			before, err := p.t.values(r.Before)
			if err != nil {
				return err
			}
			kb, _, err := p.keyOf(before)
			if err != nil {
				return err
			}
			ka, _, err := p.keyOf(after)
			if err != nil {
				return err
			}
			if kb != ka { // the key changed: delete the old row
				if err := p.add(ctx, before, opDelete); err != nil {
					return err
				}
			}
		}
		return p.add(ctx, after, opUpsert)
	case change.Delete:
		v, err := p.t.values(r.Before)
		if err != nil {
			return err
		}
		return p.add(ctx, v, opDelete)
	}
	return fmt.Errorf("maxcompute: row with unknown operation %s", r.Op)
}

func (p *deltaPart) flushBucket(ctx context.Context, b int) error {
	st := p.streams[b]
	if st == nil {
		return nil
	}
	size, err := p.send(ctx, b, st)
	if err != nil {
		return err
	}
	delete(p.streams, b)
	p.total -= size
	return nil
}

// send finishes bucket b's record stream, compresses it and PUTs it to the
// session; it returns the buffered size the bucket held.
func (p *deltaPart) send(ctx context.Context, b int, st *recordStream) (int, error) {
	size := st.Len()
	body, err := st.finish()
	if err != nil {
		return 0, fmt.Errorf("maxcompute: finishing bucket %d of %s: %w", b, p.t.table, err)
	}
	cbody, enc, err := compress(p.s.cfg.CompressAlgorithm, body)
	if err != nil {
		return 0, fmt.Errorf("maxcompute: %w", err)
	}
	if err := p.upc.put(ctx, p.t.table, p.sess, b, cbody, enc, st.count); err != nil {
		return 0, fmt.Errorf("maxcompute: %w", err)
	}
	return size, nil
}

// flushAll sends every buffered bucket, FlushConcurrentNum at a time; a
// bucket is never sent by two requests at once.
func (p *deltaPart) flushAll(ctx context.Context) error {
	buckets := make([]int, 0, len(p.streams))
	for b := range p.streams {
		buckets = append(buckets, b)
	}
	sort.Ints(buckets)
	type sent struct {
		b    int
		size int
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.s.cfg.FlushConcurrentNum)
	done := make(chan sent, len(buckets))
	for _, b := range buckets {
		st := p.streams[b]
		g.Go(func() error {
			size, err := p.send(gctx, b, st)
			if err != nil {
				return err
			}
			done <- sent{b, size}
			return nil
		})
	}
	err := g.Wait()
	close(done)
	for s := range done {
		delete(p.streams, s.b)
		p.total -= s.size
	}
	return err
}

func (p *deltaPart) extra() (json.RawMessage, error) {
	return json.Marshal(Extra{Kind: kindUpsert, Project: p.s.cfg.Project, Table: p.t.table, SessionID: p.sess.ID, Epoch: p.epoch, Rows: p.rows})
}

func (p *deltaPart) preCommit(ctx context.Context) (twopc.Prepared, error) {
	if err := p.flushAll(ctx); err != nil {
		return twopc.Prepared{}, err
	}
	x, err := p.extra()
	if err != nil {
		return twopc.Prepared{}, fmt.Errorf("maxcompute: encoding prepared extra: %w", err)
	}
	return twopc.Prepared{Sink: SinkName, Target: p.t.id, Label: p.label, TxnID: p.sess.ID, Extra: x}, nil
}

func (p *deltaPart) abort(ctx context.Context) error {
	if err := p.upc.abort(ctx, p.t.table, p.sess); err != nil && !isNotFound(err) {
		return fmt.Errorf("maxcompute: %w", err)
	}
	return nil
}

// ---- plain tables ----

type plainPart struct {
	s        *Sink
	t        *target
	us       *tunnel.UploadSession
	label    string
	epoch    uint64
	blockIDs []int
	pending  []data.Record
	size     int64
	rows     int64
	skipped  int64
	log      *slog.Logger
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

func (p *plainPart) write(ctx context.Context, r change.Row) error {
	var img []change.Value
	switch r.Op {
	case change.Insert, change.Update:
		img = r.After // an update is appended as a new row
	case change.Delete:
		p.skipped++ // plain tables cannot delete: ignored, as in Flink CDC
		return nil
	default:
		return fmt.Errorf("maxcompute: row with unknown operation %s", r.Op)
	}
	vals, err := p.t.values(img)
	if err != nil {
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
	if p.skipped > 0 {
		p.log.Info("maxcompute: deletes ignored on a table without primary key", "count", p.skipped)
	}
	x, err := json.Marshal(Extra{Kind: kindUpload, Project: p.s.cfg.Project, Table: p.t.table, SessionID: p.us.Id,
		BlockIDs: append([]int{}, p.blockIDs...), Epoch: p.epoch, Rows: p.rows})
	if err != nil {
		return twopc.Prepared{}, fmt.Errorf("maxcompute: encoding prepared extra: %w", err)
	}
	return twopc.Prepared{Sink: SinkName, Target: p.t.id, Label: p.label, TxnID: p.us.Id, Extra: x}, nil
}

func (p *plainPart) abort(context.Context) error { return nil }
