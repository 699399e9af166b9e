package merge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/go-mysql-org/go-mysql/client"

	"github.com/shardsync/shardsync/change"
)

// Source is an open change stream over every shard of a job's routes.
// Next is called from one goroutine; Targets, Progress and Close may be
// called from any.
type Source struct {
	sh     shared
	flavor string
	mode   string // resolved snapshot mode: SnapshotConsistent or SnapshotWatermark
	cs     *charsets
	// merged counts the watermark-mode chunks into which a binlog slice
	// changed at least one row (observability and tests).
	merged atomic.Int64
	// xaRecoverWarned is set once XA RECOVER failed and that was logged.
	xaRecoverWarned atomic.Bool

	mu          sync.Mutex // guards targets, shards and progress for readers outside the producer
	targets     map[change.TableID]*target
	targetOrder []change.TableID
	shards      map[change.TableID]*shard
	progress    map[change.TableID]*TableProgress
	departed    []Departed

	// owned by the producer goroutine
	// schemaGen counts schema changes of shards and targets (views of
	// past table maps are rebuilt when it moves).
	schemaGen uint64
	state     *tokenState
	enc       tokenEncoder
	filter    map[change.TableID]*tableSnap
	// unseen holds the routed tables a resumed start found that the
	// token's schema history does not know: they appeared after the
	// token's position, by a CREATE (the binlog after the position has all
	// their rows) or by a RENAME into a route (their rows predate the
	// RENAME, so its replay snapshots them). The binlog statement that
	// brings one in clears its entry.
	unseen map[change.TableID]bool

	events chan change.Event
	err    error // set before events is closed
	cancel context.CancelFunc
	done   chan struct{}
}

// TargetInfo describes one target table and the shards routed to it.
type TargetInfo struct {
	Target change.TableID
	Shards []change.TableID
	Schema change.Schema
}

// TableProgress is one shard's snapshot progress.
type TableProgress struct {
	Table         change.TableID
	Target        change.TableID
	Rows          int64 // rows emitted by the snapshot
	Chunks        int   // chunks finished
	EstimatedRows int64 // the server's estimate at start
	// Whole is set for tables read in one piece (no usable chunk key).
	Whole bool
	Done  bool
}

// SnapshotProgress is the state of the snapshot phase.
type SnapshotProgress struct {
	Done   bool
	Tables []TableProgress
}

// Open connects, checks the server's prerequisites, discovers the shards
// and starts the stream. A nil token starts fresh: snapshot every shard,
// then follow the binlog. A token from an earlier stream (with the same
// routes) continues right after the transaction or chunk it was emitted
// with. Open fails when a route matches no table unless
// Config.AllowEmptyRoutes is set.
func Open(ctx context.Context, cfg Config, from change.Token, log *slog.Logger) (*Source, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid source configuration: %w", err)
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Source{
		sh:       shared{cfg: cfg, log: log},
		targets:  map[change.TableID]*target{},
		shards:   map[change.TableID]*shard{},
		progress: map[change.TableID]*TableProgress{},
		filter:   map[change.TableID]*tableSnap{},
	}
	conn, err := s.sh.dial(ctx, "")
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	s.flavor = cfg.Flavor
	if s.flavor == "" {
		s.flavor = detectFlavor(conn)
	}
	if err := checkPrerequisites(conn, &s.sh.cfg, s.flavor); err != nil {
		return nil, err
	}
	s.mode = s.sh.cfg.snapshotMode(s.flavor)
	if s.cs, err = loadCharsets(conn); err != nil {
		return nil, err
	}
	fingerprint := routesFingerprint(cfg.Routes, cfg.DatabaseColumn, cfg.TableColumn)
	if from != nil {
		if s.state, err = parseToken(from); err != nil {
			return nil, err
		}
		if s.state.Routes != fingerprint {
			return nil, fmt.Errorf("%w: the token was made with other routes or metadata column names; changing routes needs a fresh snapshot (open without a token)", ErrBadToken)
		}
		if s.state.Flavor != s.flavor {
			return nil, fmt.Errorf("%w: the token is for a %s server but %s is %s", ErrBadToken, s.state.Flavor, cfg.Addr, s.flavor)
		}
	} else {
		// The binlog phase starts here: before the tables are listed, so a
		// table created after the listing is in the binlog from its CREATE;
		// and when no XA transaction is prepared (see xa.go).
		pos, err := s.startPos(ctx, conn, xaStartWait)
		if err != nil {
			return nil, err
		}
		s.state = &tokenState{Version: 1, Routes: fingerprint, Flavor: s.flavor, Pos: pos}
	}
	if from != nil {
		if err := checkBinlogKept(conn, s.state.Pos); err != nil {
			return nil, err
		}
	}
	if err := s.discover(conn, from == nil); err != nil {
		return nil, err
	}
	for _, t := range s.state.Tables {
		s.filter[t.id()] = t
	}
	s.enc.dirty = true
	s.enc.schemas = s.schemaState
	s.enc.schemaDirty = true

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	// A few batches of slack smooth the hand-over to the sinks; more only
	// hold converted rows in memory (64 batches of BatchRows rows were
	// ~40 MB of live heap, and twice that in RSS, during a snapshot).
	s.events = make(chan change.Event, 8)
	s.done = make(chan struct{})
	for _, id := range s.targetOrder {
		t := s.targets[id]
		log.Info("route target", "target", id.String(), "shards", len(t.shards))
	}
	go s.produce(runCtx)
	return s, nil
}

// discover lists the routed tables, loads their schemas and merges them
// into targets; on a fresh start it also plans the snapshot.
func (s *Source) discover(conn *client.Conn, fresh bool) error {
	found, err := listTables(conn, s.sh.cfg.Routes)
	if err != nil {
		return err
	}
	used := make([]bool, len(s.sh.cfg.Routes))
	for _, f := range found {
		used[f.route] = true
	}
	for i, u := range used {
		if !u {
			if !s.sh.cfg.AllowEmptyRoutes {
				return noMatchError(conn, i, s.sh.cfg.Routes[i])
			}
			s.sh.log.Warn("route matches no table yet; waiting for shards to be created", "route", s.sh.cfg.Routes[i].String())
		}
	}
	inToken := map[change.TableID]*tableSnap{}
	for _, t := range s.state.Tables {
		inToken[t.id()] = t
	}
	if !fresh && s.state.Schemas != nil {
		// The shards the token knows keep their schema as of its
		// position; the binlog after it evolves them in order.
		if err := s.restoreSchemas(s.state.Schemas); err != nil {
			return err
		}
	}
	for _, f := range found {
		sh := s.shards[f.id]
		if sh == nil {
			cols, key, err := loadSchema(conn, f.id)
			if err != nil {
				return err
			}
			if sh, _, err = s.registerTable(f.id, f.route, cols, key, ""); err != nil {
				return err
			}
			if !fresh && s.state.Schemas != nil {
				if s.unseen == nil {
					s.unseen = map[change.TableID]bool{}
				}
				s.unseen[f.id] = true
			}
		}
		ts := inToken[f.id]
		if fresh {
			ts = &tableSnap{DB: f.id.Database, Table: f.id.Table, Whole: len(sh.key) == 0}
			for _, k := range sh.key {
				c := sh.cols[slices.IndexFunc(sh.cols, func(c shardCol) bool { return c.name == k })]
				ts.KeyKinds = append(ts.KeyKinds, c.typ.kind())
				if !orderedKind(c.typ.kind()) {
					ts.Whole = true
				}
			}
			if ts.Whole {
				ts.KeyKinds = nil
			}
			s.state.Tables = append(s.state.Tables, ts)
			if f.engine != "" && f.engine != "InnoDB" {
				s.sh.log.Warn("shard is not InnoDB: its snapshot is not consistent with the binlog position", "shard", f.id.String(), "engine", f.engine)
			}
		}
		if ts != nil {
			s.progress[f.id] = &TableProgress{Table: f.id, Target: sh.target.id, EstimatedRows: f.rows, Whole: ts.Whole,
				Rows: ts.Rows, Chunks: len(ts.Chunks), Done: ts.Done || s.state.SnapshotDone}
		}
	}
	for _, t := range s.state.Tables {
		if !t.Done && s.shards[t.id()] == nil {
			// Dropped (or renamed away) while its snapshot was unfinished:
			// the binlog reaches its DROP, which deletes what was read.
			s.sh.log.Warn("a table whose snapshot was not finished no longer exists: its snapshot ends here and the rows read of it leave the target at its DROP", "shard", t.id().String())
			t.Done, t.Cut = true, true
		}
	}
	return nil
}

func (s *Source) produce(ctx context.Context) {
	err := s.run(ctx)
	if err == nil {
		err = fmt.Errorf("source stream ended")
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("source closed: %w", context.Canceled)
	}
	s.err = err
	close(s.events)
	close(s.done)
}

func (s *Source) run(ctx context.Context) error {
	for _, id := range s.targetOrder {
		if err := s.announce(ctx, s.targets[id], nil, ""); err != nil {
			return err
		}
	}
	if !s.state.SnapshotDone {
		if err := s.runSnapshot(ctx); err != nil {
			return err
		}
	}
	return s.runBinlog(ctx)
}

func (s *Source) emit(ctx context.Context, ev change.Event) error {
	select {
	case s.events <- ev:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Source) announce(ctx context.Context, t *target, changes []change.SchemaChange, cause string) error {
	s.mu.Lock()
	ts := &change.TableSchema{Target: t.id, Schema: t.schema(&s.sh.cfg), Changes: changes, Cause: cause}
	s.mu.Unlock()
	return s.emit(ctx, change.Event{Kind: change.EventSchema, Schema: ts})
}

// addShard registers a shard found while running and announces the
// target's schema when it is new or changed.
func (s *Source) addShard(ctx context.Context, id change.TableID, ri int, cols []shardCol, key []string, cause string) (*shard, error) {
	s.mu.Lock()
	_, existed := s.targets[s.sh.cfg.Routes[ri].Target]
	sh, changes, err := s.registerTable(id, ri, cols, key, cause)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	s.sh.log.Info("new shard", "shard", id.String(), "target", sh.target.id.String(), "cause", cause)
	if !existed || len(changes) > 0 {
		if err := s.announce(ctx, sh.target, changes, cause); err != nil {
			return nil, err
		}
	}
	return sh, nil
}

// changeShard applies a shard's new schema and announces target changes.
func (s *Source) changeShard(ctx context.Context, sh *shard, cols []shardCol, key []string, stmt string) error {
	s.mu.Lock()
	changes, err := s.updateShard(sh, cols, key, stmt)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if len(changes) > 0 {
		s.sh.log.Info("target schema changed", "shard", sh.id.String(), "target", sh.target.id.String(), "statement", stmt)
		return s.announce(ctx, sh.target, changes, stmt)
	}
	return nil
}

// Next returns the next event of the stream. After an error the stream is
// over: Close it and Open again from the last token the consumer kept.
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

// Close stops the stream and releases its connections.
func (s *Source) Close() error {
	s.cancel()
	go func() {
		for range s.events { // unblock the producer
		}
	}()
	<-s.done
	return nil
}

// Flavor is the server flavor in use ("mariadb" or "mysql").
func (s *Source) Flavor() string { return s.flavor }

// Targets lists the targets and their shards, for printing at start and
// for status.
func (s *Source) Targets() []TargetInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]TargetInfo, 0, len(s.targetOrder))
	for _, id := range s.targetOrder {
		t := s.targets[id]
		out = append(out, TargetInfo{Target: id, Shards: sortedIDs(t.shards), Schema: t.schema(&s.sh.cfg)})
	}
	return out
}

// Progress reports the snapshot's progress.
func (s *Source) Progress() SnapshotProgress {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := SnapshotProgress{Done: true}
	for _, tp := range s.progress {
		p.Tables = append(p.Tables, *tp)
		if !tp.Done {
			p.Done = false
		}
	}
	slices.SortFunc(p.Tables, func(a, b TableProgress) int {
		if a.Table.String() < b.Table.String() {
			return -1
		}
		if a.Table.String() > b.Table.String() {
			return 1
		}
		return 0
	})
	return p
}

func (s *Source) noteChunk(t *tableSnap, rows int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.progress[t.id()]; p != nil {
		p.Rows += rows
		p.Chunks++
		p.Done = t.Done
	}
}

func (s *Source) setProgressDone() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.progress {
		p.Done = true
	}
}
