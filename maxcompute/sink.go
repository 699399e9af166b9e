// Package maxcompute is the shardsync sink for Alibaba Cloud MaxCompute.
//
// Targets with a primary key are Delta tables (transactional=true,
// write.bucket.num). Each epoch opens one upsert session per target table;
// rows are routed to buckets by the Java SDK's primary-key hash, inserts and
// updates are sent as upserts, deletes as deletes by key; PreCommit sends
// every buffered bucket, and Commit commits the session once and polls it to
// committed. Targets without a primary key are plain tables written through
// batch upload sessions whose blocks commit atomically with Commit(blockIds);
// as in the Flink CDC connector, deletes are ignored and updates are
// appended as inserts there.
//
// Exactly-once: the session id (and block ids) are in Prepared, which the
// coordinator records in the ledger before Commit. Recovery asks the session
// for its status: committed → done; open → commit now; expired or aborted →
// its data is not there (the coordinator replays the epoch); no trace of it
// (the service forgot it after its retention) → Unknown, an operator
// decides. No sentinel rows are written into user tables.
//
// The Go SDK's calls take no context; every one of them runs under a
// deadline (RequestTimeout, CommitTimeout) and the tunnel calls this
// package makes itself carry the caller's context.
package maxcompute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aliyun/aliyun-odps-go-sdk/odps"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/account"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/restclient"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/tunnel"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/twopc"
)

// SinkName is the sink's name in the ledger, labels and logs.
const SinkName = "maxcompute"

// Sink writes epochs to MaxCompute. It implements twopc.Sink.
type Sink struct {
	cfg  Config
	log  *slog.Logger
	odps *odps.Odps
	acct account.Account

	mu          sync.Mutex
	targets     map[change.TableID]*target
	tun         *tunnel.Tunnel
	upc         *upsertClient
	schemaKnown bool            // schemaOn was read from the project
	schemaOn    bool            // the project has the schema model
	schemas     map[string]bool // schemas ensured to exist
	keepers     map[string]context.CancelFunc
	keepWG      sync.WaitGroup
}

var _ twopc.Sink = (*Sink)(nil)

// New validates cfg and returns a Sink. It does not contact MaxCompute.
func New(cfg Config, log *slog.Logger) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var acct account.Account
	if cfg.StsToken != "" {
		acct = account.NewStsAccount(cfg.AccessID, cfg.AccessKey, cfg.StsToken)
	} else {
		acct = account.NewAliyunAccount(cfg.AccessID, cfg.AccessKey)
	}
	o := odps.NewOdps(acct, cfg.Endpoint)
	o.SetDefaultProjectName(cfg.Project)
	o.SetHttpTimeout(cfg.RequestTimeout)
	o.SetUserAgent("shardsync")
	return &Sink{cfg: cfg, log: log.With("sink", SinkName), odps: o, acct: acct, targets: map[change.TableID]*target{},
		schemas: map[string]bool{}, keepers: map[string]context.CancelFunc{}}, nil
}

// Name implements twopc.Sink.
func (s *Sink) Name() string { return SinkName }

// Close implements twopc.Sink. Nothing is aborted; the keep-alive of open
// upsert sessions stops (recovery settles them by id).
func (s *Sink) Close() error {
	s.mu.Lock()
	for id, cancel := range s.keepers {
		cancel()
		delete(s.keepers, id)
	}
	s.mu.Unlock()
	s.keepWG.Wait()
	return nil
}

// keepAlive reloads an open upsert session every KeepAliveInterval until
// stopKeepAlive (commit, abort, re-open, Close) or until the session is no
// longer open, so that the service does not expire it as idle while an
// epoch is long or its commit waits. A failed reload is logged and tried
// again at the next tick; it never fails the epoch by itself.
func (s *Sink) keepAlive(upc *upsertClient, ref tableRef, id string) {
	ctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	if old, ok := s.keepers[id]; ok {
		old()
	}
	s.keepers[id] = cancel
	s.keepWG.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.keepWG.Done()
		t := time.NewTicker(s.cfg.KeepAliveInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			sess, err := upc.get(ctx, ref, id)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				s.log.Warn("maxcompute: keep-alive reload of upsert session failed", "session", id, "table", ref.String(), "error", describe(err))
				continue
			}
			if st := strings.ToLower(sess.Status); st != "normal" && st != "committing" {
				s.stopKeepAlive(id)
				return
			}
		}
	}()
}

// stopKeepAlive ends the keep-alive of session id, if any.
func (s *Sink) stopKeepAlive(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cancel, ok := s.keepers[id]; ok {
		cancel()
		delete(s.keepers, id)
	}
}

// call runs an SDK call that takes no context under ctx and timeout. When
// the deadline passes first the call is abandoned (the SDK's own HTTP
// timeout ends it later) and the context error is returned.
func call[T any](ctx context.Context, timeout time.Duration, f func() (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("MaxCompute did not answer in time: %w", ctx.Err())
	}
}

// tunnels returns the SDK tunnel and the upsert client, resolving the
// tunnel endpoint on first use.
func (s *Sink) tunnels(ctx context.Context) (*tunnel.Tunnel, *upsertClient, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tun != nil {
		return s.tun, s.upc, nil
	}
	ep := s.cfg.TunnelEndpoint
	if ep == "" {
		var err error
		ep, err = call(ctx, s.cfg.RequestTimeout, func() (string, error) {
			if s.cfg.QuotaName != "" {
				return s.odps.Project(s.cfg.Project).GetTunnelEndpoint(s.cfg.QuotaName)
			}
			return s.odps.Project(s.cfg.Project).GetTunnelEndpoint()
		})
		if err != nil {
			return nil, nil, fmt.Errorf("maxcompute: asking project %s for its tunnel endpoint (set tunnelEndpoint to skip this): %w", s.cfg.Project, err)
		}
	}
	tun := tunnel.NewTunnel(s.odps, ep)
	tun.SetHttpTimeout(s.cfg.RequestTimeout)
	if s.cfg.QuotaName != "" {
		tun.SetQuotaName(s.cfg.QuotaName)
	}
	rc := restclient.NewOdpsRestClient(s.acct, ep)
	rc.HttpTimeout = s.cfg.RequestTimeout
	rc.SetUserAgent("shardsync")
	s.tun = tun
	s.upc = &upsertClient{rc: rc, project: s.cfg.Project, quota: s.cfg.QuotaName, cfg: s.cfg, log: s.log}
	return s.tun, s.upc, nil
}

func (s *Sink) target(id change.TableID) (*target, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.targets[id]
	return t, ok
}

// ---- prepared records ----

// Extra is what Prepared.Extra carries for recovery.
type Extra struct {
	Kind      string `json:"kind"` // "upsert" (Delta table) or "upload" (plain table)
	Project   string `json:"project"`
	Schema    string `json:"schema,omitempty"` // with the schema model
	Table     string `json:"table"`
	Partition string `json:"partition,omitempty"` // "k1=v1,k2=v2" of a partitioned table
	SessionID string `json:"session_id"`
	BlockIDs  []int  `json:"block_ids,omitempty"`
	Epoch     uint64 `json:"epoch"`
	Rows      int64  `json:"rows"`
}

const (
	kindUpsert = "upsert"
	kindUpload = "upload"
)

var labelUnsafe = regexp.MustCompile(`[^-_A-Za-z0-9:]`)

func (x Extra) ref() tableRef {
	return tableRef{Schema: x.Schema, Table: x.Table, Partition: x.Partition}
}

// label names the sink transaction of one target partition in one epoch:
// mc_<db>_<table>_<epoch>, with a tag of the partition spec before the epoch
// for a partitioned target.
func label(t change.TableID, partition string, epoch uint64) string {
	l := fmt.Sprintf("mc_%s_%s_%d", labelUnsafe.ReplaceAllString(t.Database, "_"), labelUnsafe.ReplaceAllString(t.Table, "_"), epoch)
	if partition != "" {
		l = fmt.Sprintf("mc_%s_%s_%s_%d", labelUnsafe.ReplaceAllString(t.Database, "_"), labelUnsafe.ReplaceAllString(t.Table, "_"), partitionTag(partition), epoch)
	}
	if len(l) > 128 {
		l = l[len(l)-128:]
	}
	return l
}

func parseExtra(p twopc.Prepared) (Extra, bool, error) {
	if len(p.Extra) == 0 {
		return Extra{}, false, nil
	}
	var x Extra
	if err := json.Unmarshal(p.Extra, &x); err != nil {
		return Extra{}, false, fmt.Errorf("maxcompute: prepared %s has unreadable extra %s: %w", p, p.Extra, err)
	}
	if x.SessionID == "" || x.Table == "" || (x.Kind != kindUpsert && x.Kind != kindUpload) {
		return Extra{}, false, fmt.Errorf("maxcompute: prepared %s has incomplete extra %s", p, p.Extra)
	}
	return x, true, nil
}

// ---- Commit / Abort (safe to repeat, from any process) ----

// Commit implements twopc.Sink. Outcomes:
//   - Committed: the session reports committed (now or before);
//   - Aborted: the session expired or was aborted before its commit: its
//     rows are not in the table;
//   - Unknown: the service has no trace of the session (its retention after
//     commit passed, or it never existed): an operator must decide;
//   - error: MaxCompute could not be reached or refused in a way that
//     settles nothing; repeat later.
func (s *Sink) Commit(ctx context.Context, p twopc.Prepared) (twopc.Outcome, error) {
	x, ok, err := parseExtra(p)
	if err != nil {
		return twopc.Unknown, err
	}
	if !ok {
		return twopc.Unknown, fmt.Errorf("maxcompute: prepared %s carries no session to commit", p)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CommitTimeout)
	defer cancel()
	if x.Kind == kindUpsert {
		o, err := s.commitUpsert(ctx, x)
		if o != twopc.Unknown {
			s.stopKeepAlive(x.SessionID)
		}
		return o, err
	}
	return s.commitUpload(ctx, x)
}

func isNotFound(err error) bool {
	code := errorCode(err)
	return httpStatus(err) == http.StatusNotFound &&
		(code == "UpsertSessionNotFound" || code == "NoSuchUpload" || code == "StreamSessionNotFound" || code == "NoSuchObject")
}

func (s *Sink) commitUpsert(ctx context.Context, x Extra) (twopc.Outcome, error) {
	_, upc, err := s.tunnels(ctx)
	if err != nil {
		return twopc.Unknown, err
	}
	log := s.log.With("table", x.ref().String(), "session", x.SessionID, "epoch", x.Epoch)
	sess, err := upc.get(ctx, x.ref(), x.SessionID)
	if err != nil {
		if isNotFound(err) {
			log.Error("maxcompute: upsert session is unknown to the service; cannot tell whether it committed")
			return twopc.Unknown, nil
		}
		return twopc.Unknown, fmt.Errorf("maxcompute: committing epoch %d of %s: %w", x.Epoch, x.Table, err)
	}
	posted := false
	delay := 100 * time.Millisecond
	for {
		switch st := strings.ToLower(sess.Status); st {
		case "committed":
			log.Info("maxcompute: upsert session committed", "rows", x.Rows)
			return twopc.Committed, nil
		case "expired", "aborted":
			log.Warn("maxcompute: upsert session ended without commit; its rows are not in the table", "status", st)
			return twopc.Aborted, nil
		case "normal":
			// commit once; a repeated POST on a committing session is harmless
			st2, err := upc.commitOnce(ctx, x.ref(), sess)
			switch {
			case err == nil:
				posted = true
				sess.Status = st2
				continue
			case isNotFound(err) && posted:
				return twopc.Committed, nil // Java/Python SDK rule: gone after our commit = committed
			case classify(err) == retryNever && !isNotFound(err):
				return twopc.Unknown, fmt.Errorf("maxcompute: committing upsert session %s of %s: %s", x.SessionID, x.Table, describe(err))
			}
			log.Warn("maxcompute: commit request failed; asking the session's status", "error", describe(err))
		case "committing":
			posted = true
		default:
			return twopc.Unknown, fmt.Errorf("maxcompute: upsert session %s of %s is in state %q; it needs an operator (see the MaxCompute console)", x.SessionID, x.Table, st)
		}
		select {
		case <-ctx.Done():
			return twopc.Unknown, fmt.Errorf("maxcompute: upsert session %s of %s did not reach committed before the commit timeout (%s); run recovery again: %w", x.SessionID, x.Table, s.cfg.CommitTimeout, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
		ns, err := upc.get(ctx, x.ref(), x.SessionID)
		if err != nil {
			if isNotFound(err) && posted {
				return twopc.Committed, nil
			}
			if isNotFound(err) {
				return twopc.Unknown, nil
			}
			return twopc.Unknown, fmt.Errorf("maxcompute: polling upsert session %s of %s: %w", x.SessionID, x.Table, err)
		}
		sess = ns
	}
}

// attachUpload loads an existing upload session. The SDK's
// AttachToExistedUploadSession drops the schema name (v0.4.24 sets no
// SchemaName on the session it attaches), so the session is built from its
// exported fields and loaded directly.
func (s *Sink) attachUpload(ctx context.Context, x Extra) (*tunnel.UploadSession, error) {
	_, upc, err := s.tunnels(ctx)
	if err != nil {
		return nil, err
	}
	return call(ctx, s.cfg.RequestTimeout, func() (*tunnel.UploadSession, error) {
		us := &tunnel.UploadSession{Id: x.SessionID, ProjectName: x.Project, SchemaName: x.Schema, TableName: x.Table,
			QuotaName: s.cfg.QuotaName, RestClient: upc.rc}
		us.SetPartitionKey(x.Partition)
		return us, us.Load()
	})
}

func (s *Sink) commitUpload(ctx context.Context, x Extra) (twopc.Outcome, error) {
	log := s.log.With("table", x.Table, "session", x.SessionID, "epoch", x.Epoch)
	for attempt := 0; ; attempt++ {
		us, err := s.attachUpload(ctx, x)
		if err != nil {
			if isNotFound(err) {
				log.Error("maxcompute: upload session is unknown to the service; cannot tell whether it committed")
				return twopc.Unknown, nil
			}
			if attempt < s.cfg.Retries && classify(err) != retryNever && ctx.Err() == nil {
				continue
			}
			return twopc.Unknown, fmt.Errorf("maxcompute: loading upload session %s of %s: %s", x.SessionID, x.Table, describe(err))
		}
		switch us.Status() {
		case tunnel.UploadStatusClosed:
			log.Info("maxcompute: upload session committed", "rows", x.Rows)
			return twopc.Committed, nil
		case tunnel.UploadStatusExpired, tunnel.UploadStatusCanceled:
			log.Warn("maxcompute: upload session ended without commit; its rows are not in the table", "status", us.Status())
			return twopc.Aborted, nil
		case tunnel.UploadStatusNormal:
		case tunnel.UploadStatusCommitting, tunnel.UploadStatusClosing:
			if err := sleepCtx(ctx, s.cfg.RetryBaseDelay); err != nil {
				return twopc.Unknown, fmt.Errorf("maxcompute: upload session %s of %s still committing: %w", x.SessionID, x.Table, err)
			}
			continue
		default:
			return twopc.Unknown, fmt.Errorf("maxcompute: upload session %s of %s is %s; it needs an operator", x.SessionID, x.Table, us.Status())
		}
		// Commit(blockIds) checks the server's block list first, then POSTs;
		// its retries may hit the already-closed session, so its error is
		// settled by asking the status again.
		_, cerr := call(ctx, s.cfg.CommitTimeout, func() (struct{}, error) { return struct{}{}, us.Commit(x.BlockIDs) })
		if cerr == nil {
			continue // confirm through the status
		}
		log.Warn("maxcompute: upload commit returned an error; checking the session", "error", describe(cerr))
		if attempt >= s.cfg.Retries || ctx.Err() != nil {
			return twopc.Unknown, fmt.Errorf("maxcompute: committing upload session %s of %s: %s", x.SessionID, x.Table, describe(cerr))
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Abort implements twopc.Sink. A transaction known only by its label (the
// process stopped before its session id was recorded) is reported Aborted:
// nothing commits a session but Commit, and an uncommitted session expires
// with its data. An upload session cannot be cancelled through the tunnel
// API; it is left to expire and reported Aborted.
func (s *Sink) Abort(ctx context.Context, p twopc.Prepared) (twopc.Outcome, error) {
	x, ok, err := parseExtra(p)
	if err != nil {
		return twopc.Unknown, err
	}
	if !ok {
		return twopc.Aborted, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CommitTimeout)
	defer cancel()
	if x.Kind == kindUpload {
		us, err := s.attachUpload(ctx, x)
		if err != nil {
			if isNotFound(err) {
				return twopc.Aborted, nil
			}
			return twopc.Unknown, fmt.Errorf("maxcompute: loading upload session %s of %s to abort it: %s", x.SessionID, x.Table, describe(err))
		}
		if us.Status() == tunnel.UploadStatusClosed {
			return twopc.Committed, nil
		}
		return twopc.Aborted, nil
	}
	_, upc, err := s.tunnels(ctx)
	if err != nil {
		return twopc.Unknown, err
	}
	s.stopKeepAlive(x.SessionID)
	sess, err := upc.get(ctx, x.ref(), x.SessionID)
	if err != nil {
		if isNotFound(err) {
			return twopc.Aborted, nil
		}
		return twopc.Unknown, fmt.Errorf("maxcompute: loading upsert session %s of %s to abort it: %w", x.SessionID, x.Table, err)
	}
	switch strings.ToLower(sess.Status) {
	case "committed", "committing":
		return twopc.Committed, nil
	case "normal":
		if err := upc.abort(ctx, x.ref(), sess); err != nil && !isNotFound(err) {
			return twopc.Unknown, fmt.Errorf("maxcompute: %w", err)
		}
	}
	return twopc.Aborted, nil
}

// errSchema marks schema problems that need an operator.
var errSchema = errors.New("maxcompute: incompatible target schema")
