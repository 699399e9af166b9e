// Package mcemu is an in-process MaxCompute emulator for tests: the service
// REST API under /api (project, tables, SQL through instances) and the
// tunnel under /tunnel (batch upload sessions and Delta-table upsert
// sessions), on one loopback listener, as described in
// shared/specs/maxcompute.md §5.1. The real aliyun-odps-go-sdk runs against
// it unmodified.
//
// It verifies v2 request signatures, runs only the small SQL subset the
// shardsync sink emits (anything else fails the task, so drift is caught),
// decodes every uploaded record stream checking CRCs and counts, checks that
// every upserted key hashes to the bucket it was sent to, keeps upserts
// invisible until commit, commits a session once, and commits upload blocks
// atomically. Partitioned tables, the schema model (project.schema.table)
// and session idle timeouts and lifetimes are modelled as partition.go and
// docs/maxcompute.md ("What the emulator assumes") describe. Fault knobs (FailPuts, DropNextCommitReply, ExpireSession,
// FailNextTask, ForgetSession) and a state API (Rows, Table, DDLLog,
// UpsertSession, UploadSession) serve tests.
package mcemu

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// Options configure an Emulator.
type Options struct {
	// Project is the only project that exists. Default "shardsync".
	Project string
	// AccessID and AccessKey are the credentials requests must be signed
	// with (v2 signature). Defaults "test-ak" / "test-sk".
	AccessID  string
	AccessKey string
	// CommittedTTL is how long a committed upsert session still answers
	// status "committed" before it is forgotten (404 UpsertSessionNotFound).
	// Default 1 hour.
	CommittedTTL time.Duration
	// Logger receives one line per request at debug level. Default: discard.
	Logger *slog.Logger
	// SchemaModel turns on the project's schema model
	// (odps.schema.model.enabled=true): tables live in schemas, named
	// project.schema.table; the schema "default" exists from the start.
	SchemaModel bool
	// UpsertIdleTimeout expires an open upsert session that received no
	// request for this long (status expired, its staged rows dropped). Zero
	// means never. See docs/maxcompute.md for why the emulator assumes one.
	UpsertIdleTimeout time.Duration
	// LifecycleHour is how long one hour of a session's lifetime lasts: an
	// upsert session created with lifecycle=N expires N of these after its
	// creation, an upload session 24 of them after its creation. Default one
	// hour; tests shrink it.
	LifecycleHour time.Duration
}

// Emulator is a running MaxCompute emulator. Its methods are safe for
// concurrent use.
type Emulator struct {
	opts Options
	srv  *httptest.Server
	addr string // 127.0.0.1:port
	log  *slog.Logger

	mu        sync.Mutex
	tables    map[string]*table
	instances map[string]*instance
	upserts   map[string]*upsertSession
	uploads   map[string]*uploadSession
	schemas   map[string]bool // lower-case names; only with Options.SchemaModel
	ddl       []string
	nextID    int

	// fault knobs
	putSeq       int
	putFaults    map[int]int
	dropCommits  int
	failTaskMsgs []string
	requests     map[string]int
}

type table struct {
	schema        string // "" without the schema model
	name          string
	cols          []columnDef
	partCols      []columnDef          // partition columns, in order
	parts         map[string]*partData // by canonical spec; "" for an unpartitioned table
	pk            []string
	transactional bool
	buckets       int
	props         map[string]string
	comment       string // the table comment
	lifecycle     int    // days; -1 without a lifecycle
	created       time.Time
	lastDDL       time.Time
}

// New starts an emulator on a loopback port; Close stops it.
func New(opts Options) *Emulator {
	if opts.Project == "" {
		opts.Project = "shardsync"
	}
	if opts.AccessID == "" {
		opts.AccessID = "test-ak"
	}
	if opts.AccessKey == "" {
		opts.AccessKey = "test-sk"
	}
	if opts.CommittedTTL == 0 {
		opts.CommittedTTL = time.Hour
	}
	if opts.LifecycleHour == 0 {
		opts.LifecycleHour = time.Hour
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Emulator{
		opts:      opts,
		log:       log,
		tables:    map[string]*table{},
		instances: map[string]*instance{},
		upserts:   map[string]*upsertSession{},
		uploads:   map[string]*uploadSession{},
		schemas:   map[string]bool{},
		putFaults: map[int]int{},
		requests:  map[string]int{},
	}
	if opts.SchemaModel {
		e.schemas["default"] = true
	}
	e.srv = httptest.NewServer(http.HandlerFunc(e.serve))
	e.addr = strings.TrimPrefix(e.srv.URL, "http://")
	return e
}

// Close stops the server.
func (e *Emulator) Close() { e.srv.Close() }

// Endpoint is the service endpoint to give odps.NewOdps.
func (e *Emulator) Endpoint() string { return e.srv.URL + "/api" }

// TunnelEndpoint is the tunnel endpoint (also what GET …/tunnel?service
// announces).
func (e *Emulator) TunnelEndpoint() string { return e.srv.URL + "/tunnel" }

// Project is the emulated project's name.
func (e *Emulator) Project() string { return e.opts.Project }

// AccessID and AccessKey return the credentials the emulator accepts.
func (e *Emulator) AccessID() string  { return e.opts.AccessID }
func (e *Emulator) AccessKey() string { return e.opts.AccessKey }

func (e *Emulator) newID(prefix string) string {
	e.nextID++
	return fmt.Sprintf("%s%014d%04d", prefix, time.Now().UnixNano()%1e14, e.nextID)
}

// ---- HTTP plumbing ----

type httpError struct {
	status  int
	code    string
	message string
}

func (h *httpError) Error() string { return h.code + ": " + h.message }

func errf(status int, code, format string, args ...any) *httpError {
	return &httpError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func (e *Emulator) serve(w http.ResponseWriter, r *http.Request) {
	reqID := fmt.Sprintf("%d", time.Now().UnixNano())
	w.Header().Set("x-odps-request-id", reqID)
	e.log.Debug("mcemu request", "method", r.Method, "url", r.URL.String())
	tunnelSide := strings.HasPrefix(r.URL.Path, "/tunnel/")
	writeErr := func(he *httpError) {
		if tunnelSide {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(he.status)
			_ = json.NewEncoder(w).Encode(map[string]string{"Code": he.code, "Message": he.message, "RequestId": reqID})
			return
		}
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(he.status)
		_ = xml.NewEncoder(w).Encode(struct {
			XMLName   xml.Name `xml:"Error"`
			Code      string
			Message   string
			RequestId string
			HostId    string
		}{Code: he.code, Message: he.message, RequestId: reqID, HostId: e.addr})
	}
	var prefix string
	switch {
	case strings.HasPrefix(r.URL.Path, "/api/"):
		prefix = "/api"
	case tunnelSide:
		prefix = "/tunnel"
	default:
		writeErr(errf(http.StatusNotFound, "NoSuchObject", "unknown path %s", r.URL.Path))
		return
	}
	if he := e.verifySignature(r, prefix); he != nil {
		writeErr(he)
		return
	}
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, prefix), "/"), "/")
	if len(parts) < 2 || parts[0] != "projects" {
		writeErr(errf(http.StatusNotFound, "NoSuchObject", "unknown resource %s", r.URL.Path))
		return
	}
	if !strings.EqualFold(parts[1], e.opts.Project) {
		writeErr(errf(http.StatusNotFound, "NoSuchObject", "project %s does not exist", parts[1]))
		return
	}
	// A table in a schema: /projects/p/schemas/s/tables/t… (tunnel and
	// REST), or ?curr_schema=s on the REST API (the Go SDK's Table.Load).
	rest, schema := parts[2:], ""
	if len(rest) >= 3 && rest[0] == "schemas" && rest[2] == "tables" {
		schema, rest = rest[1], rest[2:]
	} else if prefix == "/api" {
		schema = r.URL.Query().Get("curr_schema")
	}
	e.mu.Lock()
	he := e.checkSchemaLocked(schema)
	e.mu.Unlock()
	if he == nil {
		if prefix == "/api" {
			he = e.serveAPI(w, r, rest, schema)
		} else {
			he = e.serveTunnel(w, r, rest, schema)
		}
	}
	if he != nil {
		writeErr(he)
	}
}

// verifySignature recomputes the v2 signature (specs §2.2).
func (e *Emulator) verifySignature(r *http.Request, prefix string) *httpError {
	auth := r.Header.Get("Authorization")
	const scheme = "ODPS "
	if !strings.HasPrefix(auth, scheme) {
		return errf(http.StatusUnauthorized, "Unauthorized", "missing ODPS Authorization header")
	}
	id, sig, ok := strings.Cut(strings.TrimPrefix(auth, scheme), ":")
	if !ok || id != e.opts.AccessID {
		return errf(http.StatusUnauthorized, "InvalidAccessKeyId", "unknown access id (only v2 signatures are accepted)")
	}
	if r.Header.Get("Date") == "" {
		return errf(http.StatusUnauthorized, "Unauthorized", "missing Date header")
	}
	var b strings.Builder
	b.WriteString(r.Method + "\n")
	b.WriteString(r.Header.Get("Content-MD5") + "\n")
	b.WriteString(r.Header.Get("Content-Type") + "\n")
	b.WriteString(r.Header.Get("Date") + "\n")
	var keys []string
	for k := range r.Header {
		if lk := strings.ToLower(k); strings.HasPrefix(lk, "x-odps-") {
			keys = append(keys, lk)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString(k + ":" + strings.Join(r.Header.Values(k), ",") + "\n")
	}
	b.WriteString(strings.TrimPrefix(r.URL.Path, prefix))
	q := r.URL.Query()
	if len(q) > 0 {
		qk := make([]string, 0, len(q))
		for k := range q {
			qk = append(qk, k)
		}
		sort.Strings(qk)
		b.WriteByte('?')
		for i, k := range qk {
			if i > 0 {
				b.WriteByte('&')
			}
			b.WriteString(k)
			if v := q.Get(k); v != "" {
				b.WriteString("=" + v)
			}
		}
	}
	mac := hmac.New(sha1.New, []byte(e.opts.AccessKey))
	mac.Write([]byte(b.String()))
	want := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return errf(http.StatusUnauthorized, "SignatureNotMatch", "the request signature does not match")
	}
	return nil
}

func writeXML(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(xml.Header))
	_ = xml.NewEncoder(w).Encode(v)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func hasParam(q url.Values, k string) bool {
	_, ok := q[k]
	return ok
}

// ---- fault knobs ----

// FailPuts makes the given PUT requests (1-based, counted over all tunnel
// PUTs from the emulator's start, see PutCount) answer status instead of
// being processed. 308 also moves the bucket's slot to a new routed server,
// reported in odps-tunnel-routed-server.
func (e *Emulator) FailPuts(status int, nth ...int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, n := range nth {
		e.putFaults[n] = status
	}
}

// PutCount is how many tunnel PUTs have arrived so far.
func (e *Emulator) PutCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.putSeq
}

// DropNextCommitReply makes the next session commit (upsert or upload) be
// applied and its connection closed without a reply: the ambiguous commit.
func (e *Emulator) DropNextCommitReply() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dropCommits++
}

// FailNextTask makes the next SQL instance fail with msg, without running.
func (e *Emulator) FailNextTask(msg string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failTaskMsgs = append(e.failTaskMsgs, msg)
}

// ExpireSession expires an open upsert or upload session: its staged data
// is dropped and it reports status expired. It returns false when no open
// session has that id.
func (e *Emulator) ExpireSession(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s, ok := e.upserts[id]; ok && (s.status == "normal" || s.status == "committing") && s.committedAt.IsZero() {
		s.status = "expired"
		s.staged = nil
		return true
	}
	if s, ok := e.uploads[id]; ok && s.status == "normal" {
		s.status = "expired"
		s.blocks = nil
		return true
	}
	return false
}

// ForgetSession drops every trace of a session, as the service does after
// its retention: later requests get 404 …SessionNotFound.
func (e *Emulator) ForgetSession(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.upserts, id)
	delete(e.uploads, id)
}

// ---- state API ----

// TableInfo describes a table as the emulator holds it.
type TableInfo struct {
	Schema        string // "" without the schema model
	Name          string
	Columns       []Column
	Partitions    []Column // partition columns, in order
	PrimaryKey    []string
	Transactional bool
	Buckets       int
	Properties    map[string]string
}

// Column is one column of a TableInfo.
type Column struct {
	Name    string
	Type    string // upper case, e.g. DECIMAL(10,2)
	NotNull bool
}

// Table returns the named table, if it exists. name is "table" (the
// default schema) or "schema.table".
func (e *Emulator) Table(name string) (TableInfo, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.namedTableLocked(name)
	if !ok {
		return TableInfo{}, false
	}
	ti := TableInfo{Schema: t.schema, Name: t.name, PrimaryKey: append([]string(nil), t.pk...), Transactional: t.transactional,
		Buckets: t.buckets, Properties: map[string]string{}}
	for k, v := range t.props {
		ti.Properties[k] = v
	}
	for _, c := range t.cols {
		ti.Columns = append(ti.Columns, Column{Name: c.Name, Type: c.Type, NotNull: c.NotNull})
	}
	for _, c := range t.partCols {
		ti.Partitions = append(ti.Partitions, Column{Name: c.Name, Type: c.Type})
	}
	return ti, true
}

// Partitions returns the partitions of a table as specs such as
// "ds=20240101,region=cn", sorted (nil for a missing or unpartitioned
// table).
func (e *Emulator) Partitions(name string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.namedTableLocked(name)
	if !ok || len(t.partCols) == 0 {
		return nil
	}
	return t.partSpecs()
}

// Rows returns the committed rows of a table (nil for a missing table), each
// padded to the current column count and followed by its partition values
// (as strings), as `select *` shows them: partition by partition in spec
// order, rows in insertion order. name is "table" or "schema.table". See the
// package comment of records.go for the Go types of values.
func (e *Emulator) Rows(name string) [][]any {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.namedTableLocked(name)
	if !ok {
		return nil
	}
	out := [][]any{}
	for _, spec := range t.partSpecs() {
		p := t.parts[spec]
		for _, r := range p.rows {
			row := make([]any, len(t.cols), len(t.cols)+len(p.values))
			copy(row, r)
			for _, v := range p.values {
				row = append(row, v)
			}
			out = append(out, row)
		}
	}
	return out
}

// DDLLog returns every SQL statement run successfully, in order.
func (e *Emulator) DDLLog() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.ddl...)
}

// SessionInfo describes an upsert or upload session.
type SessionInfo struct {
	ID          string
	Table       string
	Schema      string // "" without the schema model
	Partition   string // canonical spec, "" for an unpartitioned table
	Status      string
	StagedRows  int   // rows written but not committed
	Blocks      []int // upload sessions: uploaded block ids
	CommitCount int   // commit requests received
}

// UpsertSession returns the state of an upsert session.
func (e *Emulator) UpsertSession(id string) (SessionInfo, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.upserts[id]
	if !ok {
		return SessionInfo{}, false
	}
	return SessionInfo{ID: s.id, Table: s.table, Schema: s.schema, Partition: s.partition, Status: s.statusNow(),
		StagedRows: len(s.staged), CommitCount: s.commits}, true
}

// UpsertSessions returns all upsert sessions the emulator remembers.
func (e *Emulator) UpsertSessions() []SessionInfo {
	e.mu.Lock()
	ids := make([]string, 0, len(e.upserts))
	for id := range e.upserts {
		ids = append(ids, id)
	}
	e.mu.Unlock()
	sort.Strings(ids)
	var out []SessionInfo
	for _, id := range ids {
		if s, ok := e.UpsertSession(id); ok {
			out = append(out, s)
		}
	}
	return out
}

// UploadSession returns the state of a batch upload session.
func (e *Emulator) UploadSession(id string) (SessionInfo, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.uploads[id]
	if !ok {
		return SessionInfo{}, false
	}
	n := 0
	for _, b := range s.blocks {
		n += len(b)
	}
	return SessionInfo{ID: s.id, Table: s.table, Schema: s.schema, Partition: s.partition, Status: s.statusNow(),
		StagedRows: n, Blocks: s.blockIDs(), CommitCount: s.commits}, true
}

// UploadSessions returns all upload sessions the emulator remembers.
func (e *Emulator) UploadSessions() []SessionInfo {
	e.mu.Lock()
	ids := make([]string, 0, len(e.uploads))
	for id := range e.uploads {
		ids = append(ids, id)
	}
	e.mu.Unlock()
	sort.Strings(ids)
	var out []SessionInfo
	for _, id := range ids {
		if s, ok := e.UploadSession(id); ok {
			out = append(out, s)
		}
	}
	return out
}

// Requests returns how many requests of a kind arrived: keys are like
// "PUT upserts", "POST upserts commit", "GET upserts", "POST uploads commit".
func (e *Emulator) Requests(kind string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.requests[kind]
}
