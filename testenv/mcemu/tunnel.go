package mcemu

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aliyun/aliyun-odps-go-sdk/odps/tunnel"
)

type upsertSession struct {
	id          string
	schema      string
	table       string
	partition   string // canonical spec, "" for an unpartitioned table
	status      string // normal | committing | committed | expired | aborted
	cols        []columnDef
	pk          []string
	buckets     int
	slots       []upsertSlot
	staged      []stagedOp
	expires     time.Time     // end of its lifecycle
	idle        time.Duration // Options.UpsertIdleTimeout
	lastAccess  time.Time
	committedAt time.Time
	commits     int
	ttl         time.Duration
}

type upsertSlot struct {
	id      string
	buckets []int
	worker  string
}

type stagedOp struct {
	op  byte // 'U' or 'D'
	row []any
}

// statusNow reports the status, expiring an open session whose lifecycle
// ended or that was idle (no request) longer than its idle timeout.
func (s *upsertSession) statusNow() string {
	now := time.Now()
	if s.status == "normal" && ((!s.expires.IsZero() && now.After(s.expires)) ||
		(s.idle > 0 && !s.lastAccess.IsZero() && now.Sub(s.lastAccess) > s.idle)) {
		s.status, s.staged = "expired", nil
	}
	return s.status
}

type uploadSession struct {
	id        string
	schema    string
	table     string
	partition string // canonical spec, "" for an unpartitioned table
	status    string // normal | closed | expired
	cols      []columnDef
	blocks    map[int][][]any
	created   time.Time
	expires   time.Time // 24 lifecycle hours after creation
	commits   int
}

// statusNow reports the status, expiring an open session past its
// lifetime (its blocks are dropped).
func (s *uploadSession) statusNow() string {
	if s.status == "normal" && !s.expires.IsZero() && time.Now().After(s.expires) {
		s.status, s.blocks = "expired", map[int][][]any{}
	}
	return s.status
}

func (s *uploadSession) blockIDs() []int {
	ids := make([]int, 0, len(s.blocks))
	for id := range s.blocks {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	return ids
}

func (e *Emulator) serveTunnel(w http.ResponseWriter, r *http.Request, rest []string, schema string) *httpError {
	if len(rest) < 2 || rest[0] != "tables" {
		return errf(http.StatusNotFound, "NoSuchObject", "unknown tunnel resource %s", r.URL.Path)
	}
	if v := r.Header.Get("x-odps-tunnel-version"); v != "5" && v != "6" {
		return errf(http.StatusBadRequest, "InvalidVersion", "x-odps-tunnel-version must be 5 or 6, got %q", v)
	}
	tableName := rest[1]
	q := r.URL.Query()
	switch {
	case len(rest) == 3 && rest[2] == "upserts":
		return e.serveUpserts(w, r, schema, tableName, q)
	case len(rest) == 2:
		return e.serveUploads(w, r, schema, tableName, q)
	}
	return errf(http.StatusNotFound, "NoSuchObject", "unknown tunnel resource %s", r.URL.Path)
}

// sessionMatches checks that a request names the session's table and
// partition (both SDKs send the partition with every session request).
func sessionMatches(t *table, schema, tableName, partition string, q url.Values) bool {
	if !strings.EqualFold(t.name, tableName) || !strings.EqualFold(t.schema, schema) {
		return false
	}
	if raw := q.Get("partition"); raw != "" || partition != "" {
		spec, _, err := t.parsePartitionParam(raw)
		return err == nil && spec == partition
	}
	return true
}

func partitionKeysJSON(t *table) []map[string]any {
	out := []map[string]any{}
	for i, c := range t.partCols {
		out = append(out, map[string]any{"column_id": strconv.Itoa(len(t.cols) + i), "name": c.Name, "type": lower(c.Type),
			"nullable": true, "comment": c.Comment})
	}
	return out
}

func tunnelColumns(cols []columnDef) []map[string]any {
	out := make([]map[string]any, len(cols))
	for i, c := range cols {
		out[i] = map[string]any{"column_id": strconv.Itoa(i), "name": c.Name, "type": lower(c.Type),
			"nullable": !c.NotNull, "comment": c.Comment, "default_value": ""}
	}
	return out
}

// ---- upload sessions (plain tables) ----

// uploadLocked finds the upload session a request names; it must be for the
// request's table and partition.
func (e *Emulator) uploadLocked(schema, tableName string, q url.Values) (*uploadSession, *httpError) {
	id := q.Get("uploadid")
	s, ok := e.uploads[id]
	if !ok {
		return nil, errf(http.StatusNotFound, "NoSuchUpload", "upload session %s does not exist", id)
	}
	t, ok := e.tableLocked(schema, tableName)
	if !ok || !strings.EqualFold(t.schema, s.schema) || !sessionMatches(t, s.schema, s.table, s.partition, q) {
		return nil, errf(http.StatusNotFound, "NoSuchUpload", "upload session %s does not exist for table %s and partition %q", id, tableName, q.Get("partition"))
	}
	return s, nil
}

func (e *Emulator) serveUploads(w http.ResponseWriter, r *http.Request, schema, tableName string, q url.Values) *httpError {
	switch {
	case r.Method == http.MethodPost && hasParam(q, "uploads"):
		e.mu.Lock()
		defer e.mu.Unlock()
		e.requests["POST uploads"]++
		t, ok := e.tableLocked(schema, tableName)
		if !ok {
			return errf(http.StatusNotFound, "NoSuchTable", "table %s does not exist", tableName)
		}
		if t.transactional {
			return errf(http.StatusBadRequest, "InvalidOperation", "table %s is transactional: write it with upsert sessions", tableName)
		}
		if q.Get("overwrite") == "true" {
			return errf(http.StatusBadRequest, "InvalidOperation", "overwrite is not supported by the emulator")
		}
		spec, he := t.tunnelPartition(q.Get("partition"), q.Get("create_partition") == "true")
		if he != nil {
			return he
		}
		now := time.Now()
		s := &uploadSession{id: e.newID("U"), schema: t.schema, table: t.name, partition: spec, status: "normal",
			cols: append([]columnDef(nil), t.cols...), blocks: map[int][][]any{}, created: now,
			expires: now.Add(24 * e.opts.LifecycleHour)}
		e.uploads[s.id] = s
		e.writeUploadJSON(w, t, s)
		return nil
	case r.Method == http.MethodGet && q.Get("uploadid") != "":
		e.mu.Lock()
		defer e.mu.Unlock()
		e.requests["GET uploads"]++
		s, he := e.uploadLocked(schema, tableName, q)
		if he != nil {
			return he
		}
		t, _ := e.tableLocked(schema, tableName)
		e.writeUploadJSON(w, t, s)
		return nil
	case r.Method == http.MethodPut && q.Get("uploadid") != "":
		return e.putBlock(w, r, schema, tableName, q)
	case r.Method == http.MethodPost && q.Get("uploadid") != "":
		e.mu.Lock()
		e.requests["POST uploads commit"]++
		s, he := e.uploadLocked(schema, tableName, q)
		if he != nil {
			e.mu.Unlock()
			return he
		}
		s.commits++
		switch st := s.statusNow(); st {
		case "closed": // repeated commit of a committed session: no-op
			e.mu.Unlock()
			w.WriteHeader(http.StatusOK)
			return nil
		case "normal":
		default:
			e.mu.Unlock()
			return errf(http.StatusBadRequest, "InvalidStatusChange", "upload session %s is %s and cannot be committed", s.id, st)
		}
		t, _ := e.tableLocked(schema, tableName)
		p, ok := t.parts[s.partition]
		if !ok {
			e.mu.Unlock()
			return errf(http.StatusNotFound, "NoSuchPartition", "partition %s of table %s does not exist", s.partition, tableName)
		}
		for _, id := range s.blockIDs() {
			p.rows = append(p.rows, s.blocks[id]...)
		}
		s.status = "closed"
		drop := e.takeDropLocked()
		e.mu.Unlock()
		if drop {
			dropConnection(w)
			return nil
		}
		w.WriteHeader(http.StatusOK)
		return nil
	}
	return errf(http.StatusBadRequest, "InvalidParameter", "%s %s is not an upload session request", r.Method, r.URL.String())
}

func (e *Emulator) writeUploadJSON(w http.ResponseWriter, t *table, s *uploadSession) {
	blocks := []map[string]any{}
	for _, id := range s.blockIDs() {
		blocks = append(blocks, map[string]any{"BlockID": id, "CreateTime": s.created.Unix(), "Date": "",
			"FileName": fmt.Sprintf("%s_%d", s.id, id), "RecordCount": len(s.blocks[id]), "Version": 1})
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"UploadID": s.id, "Status": s.statusNow(), "Owner": "ALIYUN$emulator", "Initiated": s.created.UTC().Format(time.RFC1123),
		"IsOverwrite": false, "MaxFieldSize": 8388608, "QuotaName": "",
		"Schema":            map[string]any{"IsVirtualView": false, "columns": tunnelColumns(s.cols), "partitionKeys": partitionKeysJSON(t)},
		"UploadedBlockList": blocks,
	})
}

func (e *Emulator) takeDropLocked() bool {
	if e.dropCommits > 0 {
		e.dropCommits--
		return true
	}
	return false
}

func dropConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("mcemu: response writer cannot be hijacked to drop a reply")
	}
	conn, _, err := hj.Hijack()
	if err == nil {
		_ = conn.Close()
	}
}

// putFaultLocked counts a PUT and returns the injected status, or 0.
func (e *Emulator) putFaultLocked() int {
	e.putSeq++
	st := e.putFaults[e.putSeq]
	delete(e.putFaults, e.putSeq)
	return st
}

func faultError(status int) *httpError {
	switch status {
	case http.StatusTooManyRequests:
		return errf(status, "FlowExceeded", "injected: flow exceeded, retry later")
	case http.StatusPermanentRedirect:
		return errf(status, "SlotReassignment", "injected: slot reassigned")
	}
	return errf(status, "InternalServerError", "injected: server error %d", status)
}

func (e *Emulator) putBlock(w http.ResponseWriter, r *http.Request, schema, tableName string, q url.Values) *httpError {
	e.mu.Lock()
	e.requests["PUT uploads"]++
	if st := e.putFaultLocked(); st != 0 {
		e.mu.Unlock()
		return faultError(st)
	}
	s, he := e.uploadLocked(schema, tableName, q)
	if he != nil {
		e.mu.Unlock()
		return he
	}
	if st := s.statusNow(); st != "normal" {
		e.mu.Unlock()
		return errf(http.StatusBadRequest, "InvalidStatusChange", "upload session %s is %s", s.id, st)
	}
	cols := s.cols
	e.mu.Unlock()
	if hasParam(q, "arrow") {
		return errf(http.StatusBadRequest, "InvalidParameter", "arrow uploads are not supported by the emulator")
	}
	blockID, err := strconv.Atoi(q.Get("blockid"))
	if err != nil || blockID < 0 || blockID >= 20000 {
		return errf(http.StatusBadRequest, "InvalidBlockID", "block id %q must be 0..19999", q.Get("blockid"))
	}
	body := tunnel.WrapByCompressor(r.Body, r.Header.Get("Content-Encoding"))
	rows, derr := decodeRecords(body, cols, -1)
	if derr != nil {
		return errf(http.StatusBadRequest, "MalformedDataStream", "block %d: %v", blockID, derr)
	}
	for i, row := range rows {
		for j, c := range cols {
			if c.NotNull && row[j] == nil {
				return errf(http.StatusBadRequest, "MalformedDataStream", "block %d record %d: column %s is NOT NULL", blockID, i, c.Name)
			}
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if st := s.statusNow(); st != "normal" {
		return errf(http.StatusBadRequest, "InvalidStatusChange", "upload session %s is %s", s.id, st)
	}
	s.blocks[blockID] = rows // the same block id overwrites
	w.WriteHeader(http.StatusOK)
	return nil
}

// ---- upsert sessions (Delta tables) ----

func (e *Emulator) sessionJSON(s *upsertSession) map[string]any {
	pkeys := []map[string]any{}
	if t, ok := e.tableLocked(s.schema, s.table); ok {
		pkeys = partitionKeysJSON(t)
	}
	slots := make([]map[string]any, len(s.slots))
	for i, sl := range s.slots {
		slots[i] = map[string]any{"slot_id": sl.id, "buckets": sl.buckets, "worker_addr": sl.worker}
	}
	return map[string]any{
		"id": s.id, "status": s.statusNow(),
		"schema":   map[string]any{"columns": tunnelColumns(s.cols), "partitionKeys": pkeys},
		"hash_key": s.pk, "hasher": "default", "slots": slots, "quota_name": "", "enable_partial_update": false,
	}
}

// lookupUpsertLocked finds the upsert session a request names (for its
// table and partition) and counts the request as activity: an open session
// is kept from its idle timeout by any request, as the Java SDK's 30 s
// reload does.
func (e *Emulator) lookupUpsertLocked(schema, tableName string, q url.Values) (*upsertSession, *httpError) {
	id := q.Get("upsertid")
	s, ok := e.upserts[id]
	if !ok {
		return nil, errf(http.StatusNotFound, "UpsertSessionNotFound", "upsert session %s does not exist", id)
	}
	t, ok := e.tableLocked(schema, tableName)
	if !ok || !sessionMatches(t, s.schema, s.table, s.partition, q) {
		return nil, errf(http.StatusNotFound, "UpsertSessionNotFound", "upsert session %s does not exist for table %s and partition %q", id, tableName, q.Get("partition"))
	}
	if !s.committedAt.IsZero() && time.Since(s.committedAt) > s.ttl {
		delete(e.upserts, id)
		return nil, errf(http.StatusNotFound, "UpsertSessionNotFound", "upsert session %s does not exist", id)
	}
	if s.statusNow() == "normal" {
		s.lastAccess = time.Now()
	}
	return s, nil
}

func (e *Emulator) serveUpserts(w http.ResponseWriter, r *http.Request, schema, tableName string, q url.Values) *httpError {
	id := q.Get("upsertid")
	switch {
	case r.Method == http.MethodPost && id == "":
		e.mu.Lock()
		defer e.mu.Unlock()
		e.requests["POST upserts"]++
		t, ok := e.tableLocked(schema, tableName)
		if !ok {
			return errf(http.StatusNotFound, "NoSuchTable", "table %s does not exist", tableName)
		}
		if !t.transactional || len(t.pk) == 0 {
			return errf(http.StatusBadRequest, "InvalidOperation", "table %s is not a transactional table with a primary key", tableName)
		}
		// upsert sessions have no create_partition: the partition must exist
		spec, he := t.tunnelPartition(q.Get("partition"), false)
		if he != nil {
			return he
		}
		slotNum := 1
		if v := q.Get("slotnum"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return errf(http.StatusBadRequest, "InvalidParameter", "slotnum %q", v)
			}
			slotNum = min(n, t.buckets)
		}
		life := 24 * e.opts.LifecycleHour
		if v := q.Get("lifecycle"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 24 {
				return errf(http.StatusBadRequest, "InvalidParameter", "lifecycle %q must be 1..24 hours", v)
			}
			life = time.Duration(n) * e.opts.LifecycleHour
		}
		now := time.Now()
		s := &upsertSession{id: e.newID("S"), schema: t.schema, table: t.name, partition: spec, status: "normal",
			cols: append([]columnDef(nil), t.cols...), pk: append([]string(nil), t.pk...), buckets: t.buckets,
			expires: now.Add(life), idle: e.opts.UpsertIdleTimeout, lastAccess: now, ttl: e.opts.CommittedTTL}
		for i := range slotNum {
			s.slots = append(s.slots, upsertSlot{id: strconv.Itoa(i), worker: fmt.Sprintf("127.0.0.1:%d", 20000+i)})
		}
		for b := range t.buckets {
			s.slots[b%slotNum].buckets = append(s.slots[b%slotNum].buckets, b)
		}
		e.upserts[s.id] = s
		writeJSON(w, http.StatusOK, e.sessionJSON(s))
		return nil
	case r.Method == http.MethodGet && id != "":
		e.mu.Lock()
		defer e.mu.Unlock()
		e.requests["GET upserts"]++
		s, he := e.lookupUpsertLocked(schema, tableName, q)
		if he != nil {
			return he
		}
		body := e.sessionJSON(s)
		if s.status == "committing" {
			s.status = "committed"
		}
		writeJSON(w, http.StatusOK, body)
		return nil
	case r.Method == http.MethodPut && id != "":
		return e.putUpsert(w, r, schema, tableName, q)
	case r.Method == http.MethodPost && id != "":
		e.mu.Lock()
		e.requests["POST upserts commit"]++
		s, he := e.lookupUpsertLocked(schema, tableName, q)
		if he != nil {
			e.mu.Unlock()
			return he
		}
		s.commits++
		switch s.statusNow() {
		case "normal":
			t, ok := e.tableLocked(schema, tableName)
			if !ok || t.parts[s.partition] == nil {
				e.mu.Unlock()
				return errf(http.StatusNotFound, "NoSuchTable", "table %s (partition %q) does not exist", tableName, s.partition)
			}
			t.applyUpserts(t.parts[s.partition], s.staged)
			s.staged = nil
			s.status = "committing"
			s.committedAt = time.Now()
		case "committing":
			s.status = "committed"
		case "committed":
		default:
			st := s.status
			e.mu.Unlock()
			return errf(http.StatusBadRequest, "InvalidStatusChange", "upsert session %s is %s and cannot be committed", id, st)
		}
		body := e.sessionJSON(s)
		drop := e.takeDropLocked()
		e.mu.Unlock()
		if drop {
			dropConnection(w)
			return nil
		}
		writeJSON(w, http.StatusOK, body)
		return nil
	case r.Method == http.MethodDelete && id != "":
		e.mu.Lock()
		defer e.mu.Unlock()
		e.requests["DELETE upserts"]++
		s, he := e.lookupUpsertLocked(schema, tableName, q)
		if he != nil {
			return he
		}
		switch s.statusNow() {
		case "normal":
			s.status, s.staged = "aborted", nil
		case "committing", "committed":
			return errf(http.StatusBadRequest, "InvalidStatusChange", "upsert session %s is already committed", id)
		}
		writeJSON(w, http.StatusOK, e.sessionJSON(s))
		return nil
	}
	return errf(http.StatusBadRequest, "InvalidParameter", "%s %s is not an upsert session request", r.Method, r.URL.String())
}

func (e *Emulator) putUpsert(w http.ResponseWriter, r *http.Request, schema, tableName string, q url.Values) *httpError {
	id := q.Get("upsertid")
	e.mu.Lock()
	e.requests["PUT upserts"]++
	fault := e.putFaultLocked()
	s, he := e.lookupUpsertLocked(schema, tableName, q)
	if he != nil {
		e.mu.Unlock()
		return he
	}
	if st := s.statusNow(); st != "normal" {
		e.mu.Unlock()
		if st == "expired" || st == "aborted" {
			return errf(http.StatusNotFound, "UpsertSessionNotFound", "upsert session %s is %s", id, st)
		}
		return errf(http.StatusBadRequest, "InvalidStatusChange", "upsert session %s is %s: no more writes", id, st)
	}
	bucket, err := strconv.Atoi(q.Get("bucketid"))
	if err != nil || bucket < 0 || bucket >= s.buckets {
		e.mu.Unlock()
		return errf(http.StatusBadRequest, "InvalidParameter", "bucketid %q out of range 0..%d", q.Get("bucketid"), s.buckets-1)
	}
	slot := -1
	for i, sl := range s.slots {
		for _, b := range sl.buckets {
			if b == bucket {
				slot = i
			}
		}
	}
	if fault == http.StatusPermanentRedirect {
		s.slots[slot].worker = fmt.Sprintf("127.0.0.1:%d", 30000+e.putSeq)
		w.Header().Set("odps-tunnel-routed-server", s.slots[slot].worker)
	}
	if fault != 0 {
		e.mu.Unlock()
		return faultError(fault)
	}
	if q.Get("slotid") != s.slots[slot].id {
		e.mu.Unlock()
		return errf(http.StatusBadRequest, "InvalidParameter", "bucket %d belongs to slot %s, not %q", bucket, s.slots[slot].id, q.Get("slotid"))
	}
	if got := r.Header.Get("odps-tunnel-routed-server"); got != s.slots[slot].worker {
		worker := s.slots[slot].worker
		e.mu.Unlock()
		w.Header().Set("odps-tunnel-routed-server", worker)
		return errf(http.StatusPermanentRedirect, "SlotReassignment", "slot %s is served by %s, not %q", s.slots[slot].id, worker, got)
	}
	cols := append(append([]columnDef(nil), s.cols...), upsertMetaColumns...)
	tcols, pk := s.cols, s.pk
	buckets := s.buckets
	e.mu.Unlock()

	count, err := strconv.ParseInt(q.Get("record_count"), 10, 64)
	if err != nil {
		return errf(http.StatusBadRequest, "InvalidParameter", "record_count %q", q.Get("record_count"))
	}
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return errf(http.StatusBadRequest, "MalformedDataStream", "reading body: %v", err)
	}
	if r.ContentLength < 0 {
		return errf(http.StatusLengthRequired, "MissingContentLength", "upsert PUTs must carry Content-Length")
	}
	rows, err := decodeRecords(tunnel.WrapByCompressor(io.NopCloser(bytes.NewReader(raw)), r.Header.Get("Content-Encoding")), cols, count)
	if err != nil {
		return errf(http.StatusBadRequest, "MalformedDataStream", "bucket %d: %v", bucket, err)
	}
	n := len(tcols)
	ops := make([]stagedOp, 0, len(rows))
	for i, row := range rows {
		op, _ := row[n+2].(int64)
		if op != 'U' && op != 'D' {
			return errf(http.StatusBadRequest, "MalformedDataStream", "record %d: __operation %v is not 'U' or 'D'", i, row[n+2])
		}
		if vc, _ := row[n+4].([]any); row[n+4] == nil || len(vc) != 0 {
			return errf(http.StatusBadRequest, "MalformedDataStream", "record %d: partial updates are not enabled; __value_cols must be empty", i)
		}
		hashes := make([]int32, len(pk))
		for k, name := range pk {
			j := indexOf(tcols, name)
			if row[j] == nil {
				return errf(http.StatusBadRequest, "MalformedDataStream", "record %d: primary key column %s is null", i, name)
			}
			h, err := hashValue(tcols[j].Type, row[j])
			if err != nil {
				return errf(http.StatusBadRequest, "MalformedDataStream", "record %d: %v", i, err)
			}
			hashes[k] = h
		}
		if b := bucketOf(hashes, buckets); b != bucket {
			return errf(http.StatusBadRequest, "InvalidBucket", "record %d: its key hashes to bucket %d but was sent to bucket %d", i, b, bucket)
		}
		if op == 'U' {
			for j, c := range tcols {
				if c.NotNull && row[j] == nil {
					return errf(http.StatusBadRequest, "MalformedDataStream", "record %d: column %s is NOT NULL", i, c.Name)
				}
			}
		}
		ops = append(ops, stagedOp{op: byte(op), row: row[:n:n]})
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.statusNow() != "normal" {
		return errf(http.StatusNotFound, "UpsertSessionNotFound", "upsert session %s is %s", id, s.status)
	}
	s.staged = append(s.staged, ops...)
	w.WriteHeader(http.StatusOK)
	return nil
}

func indexOf(cols []columnDef, name string) int {
	for i, c := range cols {
		if strings.EqualFold(c.Name, name) {
			return i
		}
	}
	return -1
}

func (t *table) keyOf(row []any) string {
	var b strings.Builder
	for _, k := range t.pk {
		switch v := row[t.colIndex(k)].(type) {
		case int64:
			b.WriteString("i")
			b.WriteString(strconv.FormatInt(v, 10))
		case string:
			b.WriteString("s")
			b.WriteString(strconv.Quote(v))
		default:
			fmt.Fprintf(&b, "%#v", v)
		}
		b.WriteByte(0)
	}
	return b.String()
}

// applyUpserts applies staged operations in arrival order: upsert replaces
// the row with the same key (or appends), delete removes it. Rows keep
// their insertion order.
func (t *table) applyUpserts(p *partData, ops []stagedOp) {
	at := make(map[string]int, len(p.rows))
	for i, r := range p.rows {
		at[t.keyOf(r)] = i
	}
	deleted := false
	for _, op := range ops {
		key := t.keyOf(op.row)
		i, ok := at[key]
		switch {
		case op.op == 'D' && ok:
			p.rows[i] = nil
			delete(at, key)
			deleted = true
		case op.op == 'U' && ok:
			p.rows[i] = op.row
		case op.op == 'U':
			at[key] = len(p.rows)
			p.rows = append(p.rows, op.row)
		}
	}
	if deleted {
		kept := p.rows[:0]
		for _, r := range p.rows {
			if r != nil {
				kept = append(kept, r)
			}
		}
		p.rows = kept
	}
}
