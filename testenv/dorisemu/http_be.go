package dorisemu

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"time"
)

// beConn answers one BE request either through net/http or, once
// hijacked (omitted 100 Continue, dropped replies, resets), on the raw conn.
type beConn struct {
	w    http.ResponseWriter
	r    *http.Request
	conn net.Conn
	brw  *bufio.ReadWriter
	done bool
	// bodyRead is set once the request body was read to its end; a reply
	// sent before that closes the connection (see reply).
	bodyRead bool
}

func (c *beConn) hijack() error {
	if c.conn != nil {
		return nil
	}
	hj, ok := c.w.(http.Hijacker)
	if !ok {
		return errors.New("response writer cannot be hijacked")
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return fmt.Errorf("hijacking BE connection: %w", err)
	}
	c.conn, c.brw = conn, brw
	return nil
}

// rawBody frames the request body from the hijacked connection, bypassing
// net/http's automatic `100 Continue`.
func (c *beConn) rawBody() io.Reader {
	if len(c.r.TransferEncoding) > 0 && c.r.TransferEncoding[0] == "chunked" {
		return httputil.NewChunkedReader(c.brw.Reader)
	}
	if c.r.ContentLength > 0 {
		return io.LimitReader(c.brw.Reader, c.r.ContentLength)
	}
	return strings.NewReader("")
}

func (c *beConn) reply(body []byte, contentType string) {
	if c.done {
		return
	}
	c.done = true
	if c.conn == nil {
		if !c.bodyRead && c.r.Method == http.MethodPut {
			// Replying before the body was read (label conflict, bad
			// headers): close the connection instead of letting net/http
			// drain an endless chunked upload before the reply goes out.
			c.w.Header().Set("Connection", "close")
		}
		c.w.Header().Set("Content-Type", contentType)
		c.w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		c.w.WriteHeader(http.StatusOK)
		_, _ = c.w.Write(body)
		return
	}
	fmt.Fprintf(c.brw, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", contentType, len(body))
	_, _ = c.brw.Write(body)
	_ = c.brw.Flush()
	_ = c.conn.Close()
}

// drop closes the connection without a reply.
func (c *beConn) drop() {
	c.done = true
	if err := c.hijack(); err == nil {
		_ = c.conn.Close()
	}
}

// reset closes the connection with a TCP RST.
func (c *beConn) reset() error {
	c.done = true
	if err := c.hijack(); err != nil {
		return err
	}
	if tc, ok := c.conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.conn.Close()
	return errors.New("connection reset by emulated fault")
}

func (e *Emulator) serveBE(w http.ResponseWriter, r *http.Request) {
	e.handlers.Add(1)
	defer e.handlers.Done()
	parts := splitAPIPath(r.URL.Path)
	e.log.Debug("be request", "method", r.Method, "path", r.URL.Path)
	switch {
	case r.Method == http.MethodPut && len(parts) == 3 && parts[2] == "_stream_load":
		e.beStreamLoad(w, r, parts[0], parts[1])
	case r.Method == http.MethodPut && (len(parts) == 2 || len(parts) == 3) && parts[len(parts)-1] == "_stream_load_2pc":
		e.be2PC(w, r, parts[0])
	case r.Method == http.MethodGet && len(parts) == 1 && parts[0] == "_load_error_log":
		e.mu.Lock()
		content, ok := e.errorLogs[r.URL.Query().Get("file")]
		e.mu.Unlock()
		if !ok {
			http.Error(w, "file not found", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, content)
	case r.Method == http.MethodGet && len(parts) == 1 && parts[0] == "health":
		writeJSON(w, map[string]string{"status": "OK", "msg": "To Be Added"})
	default:
		http.NotFound(w, r)
	}
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

const replyContentType = "text/plain; charset=utf-8"

// beStreamLoad is StreamLoadAction (spec §1.3): header checks, begin (the
// reply may go out before the body is read), plan, streamed body, filter
// ratio, then precommit (2PC) or commit, rolling back on any failure.
func (e *Emulator) beStreamLoad(w http.ResponseWriter, r *http.Request, dbName, tblName string) {
	start := time.Now()
	if st := e.faults.takeFail(BEStreamLoad); st != 0 {
		writeFault(w, st)
		return
	}
	c := &beConn{w: w, r: r}
	var body io.Reader = r.Body
	continueDelay, omit, _ := e.faults.settings()
	if omit {
		if err := c.hijack(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		body = c.rawBody()
	}
	label := r.Header.Get("label")
	if label == "" {
		label = newUUID()
	}
	rep := &loadReply{TxnID: -1, Label: label, TwoPC: r.Header.Get("two_phase_commit") == "true"}
	send := func() {
		rep.LoadTime = time.Since(start)
		c.reply(rep.encode(e.opts.Version), replyContentType)
	}
	fail := func(f *feError) {
		rep.Status = "Fail"
		if f.status == "LABEL_ALREADY_EXISTS" {
			rep.Status = "Label Already Exists"
			rep.ExistingJobStatus = f.jobStatus
		}
		rep.Message = e.loadMessage(f)
		send()
	}
	beLocal := func(status, format string, args ...any) *feError {
		return &feError{status: status, detail: fmt.Sprintf(format, args...), beLocal: true}
	}

	user, pass, ok := r.BasicAuth()
	if !ok {
		fail(beLocal("INTERNAL_ERROR", "no valid Basic authorization"))
		return
	}
	format := strings.ToLower(r.Header.Get("format"))
	if format == "" {
		format = "csv"
	}
	switch format {
	case "csv", "csv_with_names", "csv_with_names_and_types", "json":
	case "parquet", "orc", "arrow":
		fail(beLocal("NOT_IMPLEMENTED_ERROR", "the Doris emulator does not support format=%s", format))
		return
	default:
		fail(beLocal("INTERNAL_ERROR", "unknown data format, format=%s", r.Header.Get("format")))
		return
	}
	if ct := r.Header.Get("compress_type"); ct != "" {
		if format == "json" {
			fail(beLocal("INTERNAL_ERROR", "compress data of JSON format is not supported."))
		} else {
			fail(beLocal("NOT_IMPLEMENTED_ERROR", "the Doris emulator does not support compress_type=%s", ct))
		}
		return
	}
	if gc := r.Header.Get("group_commit"); gc != "" && gc != "off_mode" {
		if r.Header.Get("label") != "" {
			fail(beLocal("INVALID_ARGUMENT", "label and group_commit can't be set at the same time"))
		} else {
			fail(beLocal("NOT_IMPLEMENTED_ERROR", "the Doris emulator does not support group_commit"))
		}
		return
	}
	var timeout time.Duration
	if v := r.Header.Get("timeout"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			fail(beLocal("INVALID_ARGUMENT", "Invalid timeout format, %s", v))
			return
		}
		if n < 1 || n > 259200 {
			fail(analysisErr(2, "Invalid timeout: '%d'. Expected values should be between 1 and 259200 seconds", n))
			return
		}
		timeout = time.Duration(n) * time.Second
	}

	// begin_txn (FE loadTxnBegin) and streamLoadPut (plan).
	e.mu.Lock()
	f := e.checkAuth(user, pass, remoteIP(r))
	var t *txn
	if f == nil {
		t, f = e.beginTxn(dbName, tblName, label, rep.TwoPC, timeout)
	}
	if f != nil {
		e.mu.Unlock()
		rep.BeginTxn = time.Since(start)
		fail(f)
		return
	}
	rep.TxnID = t.ID
	rep.BeginTxn = time.Since(start)
	putStart := time.Now()
	plan, f := e.planLoad(t.db.tables[tblName], r.Header, format)
	if f != nil {
		e.abortTxn(t, e.loadMessage(f))
		e.mu.Unlock()
		fail(f)
		return
	}
	e.mu.Unlock()
	rep.Put = time.Since(putStart)
	log := e.log.With("label", label, "txn_id", t.ID)

	if continueDelay > 0 {
		select {
		case <-time.After(continueDelay):
		case <-r.Context().Done():
		}
	}

	// Body: streamed through the plan.
	cr := &countingReader{r: body}
	rf := e.faults.takeReset()
	if rf != nil {
		cr.armed, cr.trigger, cr.onTrig = true, rf.after, c.reset
	}
	readStart := time.Now()
	res := &loadResult{}
	err := readBody(cr, plan, res)
	rep.Read = time.Since(readStart)
	c.bodyRead = err == nil
	res.stats.Bytes = cr.n
	rep.stats = res.stats
	if err != nil {
		var br *errBodyRead
		if errors.As(err, &br) {
			e.mu.Lock()
			if rf == nil || !rf.keepTxn {
				e.abortTxn(t, "[CANCELLED]cancelled: sender is gone: "+br.err.Error())
			}
			e.mu.Unlock()
			log.Info("load body interrupted", "err", br.err, "bytes", cr.n, "kept_txn", rf != nil && rf.keepTxn)
			if rf == nil {
				fail(beLocal("INTERNAL_ERROR", "receive body failed: %v", br.err))
			}
			return
		}
		f := beLocal("DATA_QUALITY_ERROR", "%v", err)
		e.mu.Lock()
		e.abortTxn(t, e.loadMessage(f))
		e.mu.Unlock()
		fail(f)
		return
	}

	selected := res.stats.Total - res.stats.Unselected
	if res.stats.Filtered > 0 {
		e.mu.Lock()
		rep.ErrorURL = e.errorURLFor(res.errLog.String())
		e.mu.Unlock()
	}
	if selected > 0 && float64(res.stats.Filtered)/float64(selected) > plan.maxRatio {
		f := beLocal("DATA_QUALITY_ERROR", "too many filtered rows")
		e.mu.Lock()
		e.abortTxn(t, e.loadMessage(f))
		e.mu.Unlock()
		fail(f)
		return
	}

	commitStart := time.Now()
	e.mu.Lock()
	if rep.TwoPC {
		f = e.precommitTxn(t, plan.cols, res.ops, res.stats)
	} else {
		f = e.commitLoadTxn(t, plan.cols, res.ops, res.stats)
	}
	state := t.State
	e.mu.Unlock()
	if f != nil {
		fail(f)
		return
	}
	if !rep.TwoPC {
		rep.CommitAndPublish = time.Since(commitStart)
	}
	log.Debug("load finished", "state", state, "rows", res.stats.Loaded, "filtered", res.stats.Filtered, "bytes", cr.n)
	if e.faults.takeDrop(false) {
		c.drop()
		return
	}
	rep.Status, rep.Message = "Success", "OK"
	if !rep.TwoPC && state == StateCommitted {
		rep.Status = "Publish Timeout"
		rep.Message = e.loadMessage(beLocal("PUBLISH_TIMEOUT", "transaction commit successfully, BUT data will be visible later"))
	}
	send()
}

// parseStoull mimics std::stoull: optional leading space and sign, then at
// least one digit; trailing garbage is ignored; "-1" wraps to -1 as int64.
func parseStoull(s string) (int64, bool) {
	s = strings.TrimLeft(s, " \t")
	neg := false
	if s != "" && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		s = s[1:]
	}
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	if n == 0 {
		return 0, false
	}
	u, err := strconv.ParseUint(s[:n], 10, 64)
	if err != nil {
		return 0, false
	}
	v := int64(u)
	if neg {
		v = -v
	}
	return v, true
}

// be2PC is StreamLoad2PCAction (spec §3.1–§3.3).
func (e *Emulator) be2PC(w http.ResponseWriter, r *http.Request, dbName string) {
	if st := e.faults.takeFail(BE2PC); st != 0 {
		writeFault(w, st)
		return
	}
	c := &beConn{w: w, r: r, bodyRead: r.ContentLength == 0}
	reply := func(status, msg string) { c.reply(twoPCBody(status, msg), replyContentType) }
	user, pass, ok := r.BasicAuth()
	if !ok {
		reply("INTERNAL_ERROR", "no valid Basic authorization")
		return
	}
	req := twoPCRequest{user: user, pass: pass, remote: remoteIP(r), db: dbName}
	var msg strings.Builder
	if l := r.Header.Get("label"); l != "" && e.opts.Version == "2.1" {
		req.label = l
		fmt.Fprintf(&msg, "label [%s] ", l)
	}
	if idStr := r.Header.Get("txn_id"); idStr != "" || e.opts.Version != "2.1" {
		fmt.Fprintf(&msg, "transaction [%s] ", idStr)
		id, ok := parseStoull(idStr)
		if !ok {
			reply("INTERNAL_ERROR", fmt.Sprintf("convert txn_id [%s] failed, reason=stoull", idStr))
			return
		}
		req.txnID, req.hasTxnID = id, true
	}
	req.op = r.Header.Get("txn_operation")
	msg.WriteString(req.op + " successfully.")
	if req.op != "commit" && req.op != "abort" {
		reply("INTERNAL_ERROR", "transaction operation should be 'commit' or 'abort'")
		return
	}
	if !req.hasTxnID && req.label == "" {
		reply("INTERNAL_ERROR", fmt.Sprintf("failed %s txn, with illegal input, db=%s txn_id=-1 label=", req.op, dbName))
		return
	}
	e.mu.Lock()
	f := e.operate2PC(req)
	e.mu.Unlock()
	if f != nil {
		reply(f.status, e.twoPCMessage(f))
		return
	}
	e.log.Debug("2pc operation", "db", dbName, "op", req.op, "label", req.label, "txn_id", req.txnID)
	if req.op == "commit" && e.faults.takeDrop(true) {
		c.drop()
		return
	}
	reply("Success", msg.String())
}
