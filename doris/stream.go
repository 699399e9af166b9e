package doris

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/twopc"
)

// ErrStreamEnded is what writes into a load see after Doris answered it.
var ErrStreamEnded = errors.New("doris ended the load before its body was complete")

// stream is one chunked Stream Load PUT: rows are encoded into a bounded
// buffer, which is drained into the request body through a pipe. A full
// buffer blocks the writer until Doris reads on (back-pressure); memory is
// BufferSize plus the transport's copy buffers, whatever the epoch's size.
type stream struct {
	target change.TableID
	label  string
	enc    *encoder
	seq    *atomic.Int64 // the sink's sequence counter (see Sink)

	pr      *io.PipeReader
	pw      *io.PipeWriter
	bw      *bufio.Writer
	scratch []byte
	sent    atomic.Int64 // body bytes the transport took
	cancel  context.CancelFunc

	done    chan struct{}
	verdict Verdict // valid after done when err is nil
	err     error   // no usable reply; valid after done
	ended   bool    // body closed (finish called)
}

// bodyReader is the request body. Its Close is a no-op: Go closes the body
// when a final answer (the FE's 307) beats "100 Continue", and the same
// reader must survive for the PUT re-issued to the BE.
type bodyReader struct{ s *stream }

func (b bodyReader) Read(p []byte) (int, error) {
	n, err := b.s.pr.Read(p)
	b.s.sent.Add(int64(n))
	return n, err
}

func (bodyReader) Close() error { return nil }

// loadHeaders are the headers of a load of label.
func (c *client) loadHeaders(label string, sign bool) http.Header {
	h := http.Header{}
	for k, v := range c.cfg.Headers {
		h.Set(k, v)
	}
	h.Set("Expect", "100-continue")
	h.Set("label", label)
	h.Set("two_phase_commit", "true")
	h.Set("format", "json")
	h.Set("read_json_by_line", "true")
	if sign {
		h.Set("hidden_columns", DeleteSign)
	}
	return h
}

// loadBase returns the base URL of the node a load for db.table goes to:
// a configured BE, or the BE an FE redirects to. Asking the FE with an empty
// PUT keeps the streamed body away from the FE (whose redirect could
// otherwise arrive after body bytes were sent to it).
func (c *client) loadBase(ctx context.Context, db, table string) (string, error) {
	if len(c.be) > 0 {
		return c.be[int(c.rr.Add(1))%len(c.be)], nil
	}
	h := http.Header{}
	h.Set("Expect", "100-continue")
	a, err := c.do(ctx, http.MethodPut, loadPath(db, table), h, false, retry5xx)
	if err != nil {
		return "", fmt.Errorf("asking an FE for a BE to load %s.%s: %w", db, table, err)
	}
	if isRedirect(a.status) {
		return baseOf(a.location), nil
	}
	v := Classify(OpLoad, a.status, a.body)
	if v.Class == ClassRetryable {
		return "", fmt.Errorf("asking FE %s for a BE to load %s.%s: %s: %w", hostOf(a.node), db, table, v, twopc.ErrUnavailable)
	}
	if v.Class != ClassSuccess {
		return "", fmt.Errorf("asking FE %s for a BE to load %s.%s: %s", hostOf(a.node), db, table, v)
	}
	// The node ran the (empty, unlabelled) load itself: it is a BE.
	c.log.Warn("doris FE node answered a load itself instead of redirecting; using it as a BE (list BEs in BENodes to avoid this)",
		"node", a.node)
	return a.node, nil
}

// startLoad begins the chunked PUT of label for target. The request runs in
// its own goroutine until the body ends (finish) or the stream is killed.
func (c *client) startLoad(ctx context.Context, target change.TableID, label string, enc *encoder, bufSize int) (*stream, error) {
	base, err := c.loadBase(ctx, target.Database, target.Table)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &stream{
		target: target, label: label, enc: enc,
		pr: pr, pw: pw, bw: bufio.NewWriterSize(pw, bufSize),
		cancel: cancel, done: make(chan struct{}),
	}
	go s.run(rctx, c, base+loadPath(target.Database, target.Table), c.loadHeaders(label, enc.sign))
	return s, nil
}

func (s *stream) run(ctx context.Context, c *client, target string, hdr http.Header) {
	defer close(s.done)
	defer s.cancel()
	// Unblock writers once the load is answered; they then read the verdict.
	defer s.pr.CloseWithError(ErrStreamEnded)
	for hop := 0; ; hop++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, target, bodyReader{s})
		if err != nil {
			s.err = fmt.Errorf("building load request: %w", err)
			return
		}
		req.ContentLength = -1 // chunked
		req.Header = hdr.Clone()
		req.SetBasicAuth(c.cfg.User, c.cfg.Password)
		resp, err := c.stream.Do(req)
		if err != nil {
			s.err = fmt.Errorf("streaming load %s to %s: %w", s.label, hostOf(target), err)
			return
		}
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxReply))
		resp.Body.Close()
		if isRedirect(resp.StatusCode) {
			next, err := redirectTarget(target, resp.Header.Get("Location"))
			switch {
			case err != nil:
				s.err = fmt.Errorf("load %s: %w", s.label, err)
				return
			case s.sent.Load() > 0:
				s.err = fmt.Errorf("load %s: %s redirected the load after %d body bytes were sent; list the BEs in BENodes",
					s.label, hostOf(target), s.sent.Load())
				return
			case hop >= maxRedirects:
				s.err = fmt.Errorf("load %s: more than %d redirects", s.label, maxRedirects)
				return
			}
			c.log.Debug("doris load redirected", "label", s.label, "from", hostOf(target), "to", hostOf(next))
			target = next
			continue
		}
		if rerr != nil {
			s.err = fmt.Errorf("reading the reply of load %s from %s: %w", s.label, hostOf(target), rerr)
			return
		}
		s.verdict = Classify(OpLoad, resp.StatusCode, body)
		return
	}
}

// kill abandons the load: the transport fails reading the body, the
// connection drops, and Doris rolls the txn back ("sender is gone").
func (s *stream) kill(cause error) {
	s.pr.CloseWithError(cause)
	s.cancel()
}

// write encodes rows into the stream. It blocks while Doris is slower than
// the caller; cancelling ctx kills the stream.
func (s *stream) write(ctx context.Context, rows []change.Row) error {
	stop := context.AfterFunc(ctx, func() { s.kill(fmt.Errorf("load %s abandoned: %w", s.label, ctx.Err())) })
	defer stop()
	for i := range rows {
		var err error
		var seq int64
		if s.enc.seqKey != nil {
			seq = s.seq.Add(1)
		}
		s.scratch, err = s.enc.appendRow(s.scratch[:0], rows[i], seq)
		if err != nil {
			return fmt.Errorf("encoding a %s row for %s: %w", rows[i].Op, s.target, err)
		}
		if _, err := s.bw.Write(s.scratch); err != nil {
			return s.writeFailed(ctx, err)
		}
	}
	if cap(s.scratch) > 64<<10 {
		s.scratch = nil // a huge row must not pin its buffer
	}
	return nil
}

// writeFailed explains a failed write: Doris's answer if it ended the load,
// else the write error.
func (s *stream) writeFailed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		<-s.done
		return fmt.Errorf("writing load %s: %w", s.label, ctx.Err())
	}
	if errors.Is(err, ErrStreamEnded) {
		<-s.done
		if rerr := s.result(); rerr != nil {
			return rerr
		}
		return fmt.Errorf("load %s of %s: %w", s.label, s.target, ErrStreamEnded)
	}
	s.kill(err)
	<-s.done
	return fmt.Errorf("writing load %s: %w", s.label, err)
}

// finish ends the body and waits for Doris's answer.
func (s *stream) finish(ctx context.Context) error {
	if !s.ended {
		s.ended = true
		stop := context.AfterFunc(ctx, func() { s.kill(fmt.Errorf("load %s abandoned: %w", s.label, ctx.Err())) })
		defer stop()
		if err := s.bw.Flush(); err != nil {
			return s.writeFailed(ctx, err)
		}
		s.pw.Close()
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		s.kill(ctx.Err())
		<-s.done
		return fmt.Errorf("waiting for the reply of load %s: %w", s.label, ctx.Err())
	}
	return s.result()
}

// result turns the answer into nil (pre-committed, no row lost) or an
// error that says what happened.
func (s *stream) result() error {
	if s.err != nil {
		return s.err
	}
	v := s.verdict
	r := v.Load
	if v.Class != ClassSuccess || r == nil {
		msg := fmt.Sprintf("doris load %s into %s failed: %s", s.label, s.target, v)
		if r != nil && r.ErrorURL != "" {
			msg += "; rejected rows are listed at " + r.ErrorURL
		}
		if v.Class == ClassLabelExists || v.Class == ClassAlreadyDone {
			msg += "; the label is taken, which means another writer (or an earlier run with the same label prefix) used it"
		}
		if v.Class == ClassRetryable {
			return fmt.Errorf("%s: %w", msg, twopc.ErrUnavailable)
		}
		return errors.New(msg)
	}
	if !strings.EqualFold(r.TwoPhaseCommit, "true") {
		return fmt.Errorf("doris load %s into %s was committed without two-phase commit (TwoPhaseCommit=%q): the cluster ignores two_phase_commit; enable stream load 2PC (BE disable_stream_load_2pc=false)",
			s.label, s.target, r.TwoPhaseCommit)
	}
	if r.TxnID <= 0 {
		return fmt.Errorf("doris load %s into %s succeeded without a txn id (TxnId=%d)", s.label, s.target, r.TxnID)
	}
	return nil
}
