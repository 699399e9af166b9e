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
	table       string
	status      string // normal | committing | committed | expired | aborted
	cols        []columnDef
	pk          []string
	buckets     int
	slots       []upsertSlot
	staged      []stagedOp
	expires     time.Time
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

// statusNow reports the status, moving committing to committed once the
// first poll after commit has happened (the commit is asynchronous).
func (s *upsertSession) statusNow() string {
	if s.status == "normal" && !s.expires.IsZero() && time.Now().After(s.expires) {
		s.status, s.staged = "expired", nil
	}
	return s.status
}

type uploadSession struct {
	id      string
	table   string
	status  string // normal | closed | expired
	cols    []columnDef
	blocks  map[int][][]any
	created time.Time
	commits int
}

func (s *uploadSession) blockIDs() []int {
	ids := make([]int, 0, len(s.blocks))
	for id := range s.blocks {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	return ids
}

func (e *Emulator) serveTunnel(w http.ResponseWriter, r *http.Request, rest []string) *httpError {
	if len(rest) < 2 || rest[0] != "tables" {
		return errf(http.StatusNotFound, "NoSuchObject", "unknown tunnel resource %s", r.URL.Path)
	}
	if v := r.Header.Get("x-odps-tunnel-version"); v != "5" && v != "6" {
		return errf(http.StatusBadRequest, "InvalidVersion", "x-odps-tunnel-version must be 5 or 6, got %q", v)
	}
	tableName := rest[1]
	q := r.URL.Query()
	if q.Get("partition") != "" {
		return errf(http.StatusBadRequest, "InvalidPartitionSpec", "the emulator has no partitioned tables")
	}
	switch {
	case len(rest) == 3 && rest[2] == "upserts":
		return e.serveUpserts(w, r, tableName, q)
	case len(rest) == 2:
		return e.serveUploads(w, r, tableName, q)
	}
	return errf(http.StatusNotFound, "NoSuchObject", "unknown tunnel resource %s", r.URL.Path)
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

func (e *Emulator) serveUploads(w http.ResponseWriter, r *http.Request, tableName string, q url.Values) *httpError {
	switch {
	case r.Method == http.MethodPost && hasParam(q, "uploads"):
		e.mu.Lock()
		defer e.mu.Unlock()
		e.requests["POST uploads"]++
		t, ok := e.tables[strings.ToLower(tableName)]
		if !ok {
			return errf(http.StatusNotFound, "NoSuchTable", "table %s does not exist", tableName)
		}
		if t.transactional {
			return errf(http.StatusBadRequest, "InvalidOperation", "table %s is transactional: write it with upsert sessions", tableName)
		}
		if q.Get("overwrite") == "true" {
			return errf(http.StatusBadRequest, "InvalidOperation", "overwrite is not supported by the emulator")
		}
		s := &uploadSession{id: e.newID("U"), table: t.name, status: "normal", cols: append([]columnDef(nil), t.cols...),
			blocks: map[int][][]any{}, created: time.Now()}
		e.uploads[s.id] = s
		e.writeUploadJSON(w, s)
		return nil
	case r.Method == http.MethodGet && q.Get("uploadid") != "":
		e.mu.Lock()
		defer e.mu.Unlock()
		e.requests["GET uploads"]++
		s, ok := e.uploads[q.Get("uploadid")]
		if !ok || !strings.EqualFold(s.table, tableName) {
			return errf(http.StatusNotFound, "NoSuchUpload", "upload session %s does not exist", q.Get("uploadid"))
		}
		e.writeUploadJSON(w, s)
		return nil
	case r.Method == http.MethodPut && q.Get("uploadid") != "":
		return e.putBlock(w, r, tableName, q)
	case r.Method == http.MethodPost && q.Get("uploadid") != "":
		e.mu.Lock()
		e.requests["POST uploads commit"]++
		s, ok := e.uploads[q.Get("uploadid")]
		if !ok || !strings.EqualFold(s.table, tableName) {
			e.mu.Unlock()
			return errf(http.StatusNotFound, "NoSuchUpload", "upload session %s does not exist", q.Get("uploadid"))
		}
		s.commits++
		switch s.status {
		case "closed": // repeated commit of a committed session: no-op
			e.mu.Unlock()
			w.WriteHeader(http.StatusOK)
			return nil
		case "normal":
		default:
			e.mu.Unlock()
			return errf(http.StatusBadRequest, "InvalidStatusChange", "upload session %s is %s and cannot be committed", s.id, s.status)
		}
		t, ok := e.tables[strings.ToLower(tableName)]
		if !ok {
			e.mu.Unlock()
			return errf(http.StatusNotFound, "NoSuchTable", "table %s does not exist", tableName)
		}
		for _, id := range s.blockIDs() {
			t.rows = append(t.rows, s.blocks[id]...)
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

func (e *Emulator) writeUploadJSON(w http.ResponseWriter, s *uploadSession) {
	blocks := []map[string]any{}
	for _, id := range s.blockIDs() {
		blocks = append(blocks, map[string]any{"BlockID": id, "CreateTime": s.created.Unix(), "Date": "",
			"FileName": fmt.Sprintf("%s_%d", s.id, id), "RecordCount": len(s.blocks[id]), "Version": 1})
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"UploadID": s.id, "Status": s.status, "Owner": "ALIYUN$emulator", "Initiated": s.created.UTC().Format(time.RFC1123),
		"IsOverwrite": false, "MaxFieldSize": 8388608, "QuotaName": "",
		"Schema":            map[string]any{"IsVirtualView": false, "columns": tunnelColumns(s.cols), "partitionKeys": []any{}},
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

func (e *Emulator) putBlock(w http.ResponseWriter, r *http.Request, tableName string, q url.Values) *httpError {
	e.mu.Lock()
	e.requests["PUT uploads"]++
	if st := e.putFaultLocked(); st != 0 {
		e.mu.Unlock()
		return faultError(st)
	}
	s, ok := e.uploads[q.Get("uploadid")]
	if !ok || !strings.EqualFold(s.table, tableName) {
		e.mu.Unlock()
		return errf(http.StatusNotFound, "NoSuchUpload", "upload session %s does not exist", q.Get("uploadid"))
	}
	if s.status != "normal" {
		e.mu.Unlock()
		return errf(http.StatusBadRequest, "InvalidStatusChange", "upload session %s is %s", s.id, s.status)
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
	if s.status != "normal" {
		return errf(http.StatusBadRequest, "InvalidStatusChange", "upload session %s is %s", s.id, s.status)
	}
	s.blocks[blockID] = rows // the same block id overwrites
	w.WriteHeader(http.StatusOK)
	return nil
}

// ---- upsert sessions (Delta tables) ----

func (e *Emulator) sessionJSON(s *upsertSession) map[string]any {
	slots := make([]map[string]any, len(s.slots))
	for i, sl := range s.slots {
		slots[i] = map[string]any{"slot_id": sl.id, "buckets": sl.buckets, "worker_addr": sl.worker}
	}
	return map[string]any{
		"id": s.id, "status": s.statusNow(),
		"schema":   map[string]any{"columns": tunnelColumns(s.cols), "partitionKeys": []any{}},
		"hash_key": s.pk, "hasher": "default", "slots": slots, "quota_name": "", "enable_partial_update": false,
	}
}

func (e *Emulator) lookupUpsertLocked(tableName, id string) (*upsertSession, *httpError) {
	s, ok := e.upserts[id]
	if !ok || !strings.EqualFold(s.table, tableName) {
		return nil, errf(http.StatusNotFound, "UpsertSessionNotFound", "upsert session %s does not exist", id)
	}
	if !s.committedAt.IsZero() && time.Since(s.committedAt) > s.ttl {
		delete(e.upserts, id)
		return nil, errf(http.StatusNotFound, "UpsertSessionNotFound", "upsert session %s does not exist", id)
	}
	return s, nil
}

func (e *Emulator) serveUpserts(w http.ResponseWriter, r *http.Request, tableName string, q url.Values) *httpError {
	id := q.Get("upsertid")
	switch {
	case r.Method == http.MethodPost && id == "":
		e.mu.Lock()
		defer e.mu.Unlock()
		e.requests["POST upserts"]++
		t, ok := e.tables[strings.ToLower(tableName)]
		if !ok {
			return errf(http.StatusNotFound, "NoSuchTable", "table %s does not exist", tableName)
		}
		if !t.transactional || len(t.pk) == 0 {
			return errf(http.StatusBadRequest, "InvalidOperation", "table %s is not a transactional table with a primary key", tableName)
		}
		slotNum := 1
		if v := q.Get("slotnum"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return errf(http.StatusBadRequest, "InvalidParameter", "slotnum %q", v)
			}
			slotNum = min(n, t.buckets)
		}
		life := 24 * time.Hour
		if v := q.Get("lifecycle"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 24 {
				return errf(http.StatusBadRequest, "InvalidParameter", "lifecycle %q must be 1..24 hours", v)
			}
			life = time.Duration(n) * time.Hour
		}
		s := &upsertSession{id: e.newID("S"), table: t.name, status: "normal", cols: append([]columnDef(nil), t.cols...),
			pk: append([]string(nil), t.pk...), buckets: t.buckets, expires: time.Now().Add(life), ttl: e.opts.CommittedTTL}
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
		s, he := e.lookupUpsertLocked(tableName, id)
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
		return e.putUpsert(w, r, tableName, q)
	case r.Method == http.MethodPost && id != "":
		e.mu.Lock()
		e.requests["POST upserts commit"]++
		s, he := e.lookupUpsertLocked(tableName, id)
		if he != nil {
			e.mu.Unlock()
			return he
		}
		s.commits++
		switch s.statusNow() {
		case "normal":
			t, ok := e.tables[strings.ToLower(tableName)]
			if !ok {
				e.mu.Unlock()
				return errf(http.StatusNotFound, "NoSuchTable", "table %s does not exist", tableName)
			}
			t.applyUpserts(s.staged)
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
		s, he := e.lookupUpsertLocked(tableName, id)
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

func (e *Emulator) putUpsert(w http.ResponseWriter, r *http.Request, tableName string, q url.Values) *httpError {
	id := q.Get("upsertid")
	e.mu.Lock()
	e.requests["PUT upserts"]++
	fault := e.putFaultLocked()
	s, he := e.lookupUpsertLocked(tableName, id)
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
func (t *table) applyUpserts(ops []stagedOp) {
	at := make(map[string]int, len(t.rows))
	for i, r := range t.rows {
		at[t.keyOf(r)] = i
	}
	deleted := false
	for _, op := range ops {
		key := t.keyOf(op.row)
		i, ok := at[key]
		switch {
		case op.op == 'D' && ok:
			t.rows[i] = nil
			delete(at, key)
			deleted = true
		case op.op == 'U' && ok:
			t.rows[i] = op.row
		case op.op == 'U':
			at[key] = len(t.rows)
			t.rows = append(t.rows, op.row)
		}
	}
	if deleted {
		kept := t.rows[:0]
		for _, r := range t.rows {
			if r != nil {
				kept = append(kept, r)
			}
		}
		t.rows = kept
	}
}
