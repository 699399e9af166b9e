package dorisemu

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// splitAPIPath splits "/api/a/b/c" into ["a","b","c"]; nil if not /api/.
func splitAPIPath(p string) []string {
	rest, ok := strings.CutPrefix(p, "/api/")
	if !ok {
		return nil
	}
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	for i, s := range parts {
		if u, err := url.PathUnescape(s); err == nil {
			parts[i] = u
		}
	}
	return parts
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// feBody is the FE's ResponseBody envelope {"msg","code","data","count"}.
type feBody struct {
	Msg   string `json:"msg"`
	Code  int    `json:"code"`
	Data  any    `json:"data,omitempty"`
	Count int    `json:"count"`
}

func writeJSON(w http.ResponseWriter, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// restBaseResult is the FE's RestBaseResult {"status":"FAILED","msg":...}.
func writeRestFailed(w http.ResponseWriter, msg string) {
	w.Header().Set("Connection", "close") // the unread PUT body must not be drained first
	writeJSON(w, struct {
		Status string `json:"status"`
		Msg    string `json:"msg"`
	}{"FAILED", msg})
}

func writeFault(w http.ResponseWriter, status int) {
	http.Error(w, fmt.Sprintf("emulated fault: HTTP %d", status), status)
}

// feAuth is RestBaseController.executeCheckPassword; on failure it writes
// the unauthorized envelope and returns false.
func (e *Emulator) feAuth(w http.ResponseWriter, r *http.Request) (user, pass string, ok bool) {
	user, pass, ok = r.BasicAuth()
	if !ok {
		writeJSON(w, feBody{Msg: "Unauthorized", Code: 401, Data: "Need auth information."})
		return "", "", false
	}
	if f := e.checkAuth(user, pass, remoteIP(r)); f != nil {
		writeJSON(w, feBody{Msg: "Unauthorized", Code: 401, Data: fmt.Sprintf("errCode = %d, detailMessage = %s", f.errCode, f.detail)})
		return "", "", false
	}
	return user, pass, true
}

func (e *Emulator) serveFE(w http.ResponseWriter, r *http.Request) {
	e.handlers.Add(1)
	defer e.handlers.Done()
	parts := splitAPIPath(r.URL.Path)
	e.log.Debug("fe request", "method", r.Method, "path", r.URL.Path)
	switch {
	case r.Method == http.MethodPut && len(parts) == 3 && parts[2] == "_stream_load":
		e.feStreamLoad(w, r)
	case r.Method == http.MethodPut && (len(parts) == 2 || len(parts) == 3) && parts[len(parts)-1] == "_stream_load_2pc":
		e.fe2PC(w, r)
	case r.Method == http.MethodGet && len(parts) == 2 && parts[1] == "get_load_state":
		e.feLoadState(w, r, parts[0])
	case r.Method == http.MethodGet && len(parts) == 1 && parts[0] == "backends":
		e.feBackends(w, r)
	case r.Method == http.MethodGet && len(parts) == 3 && parts[2] == "_schema":
		e.feSchema(w, r, parts[0], parts[1])
	default:
		http.NotFound(w, r)
	}
}

const noBackendMsg = `No backend load available., policy: cluster|query|load|schedule|tags|medium: |false|true|true|[{"location" : "default"}]|null`

// redirectToBE answers 307 with Location http://user:pass@be/path?query
// (RestBaseController.redirectTo, 2.x: trailing "?" even for an empty query).
func (e *Emulator) redirectToBE(w http.ResponseWriter, r *http.Request, user, pass string) {
	if _, _, d := e.faults.settings(); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	if !e.beAlive() {
		writeRestFailed(w, noBackendMsg)
		return
	}
	u := url.URL{Scheme: "http", User: url.UserPassword(user, pass), Host: e.beAddr, Path: r.URL.Path}
	loc := u.String() + "?" + r.URL.RawQuery
	w.Header().Set("Location", loc)
	w.Header().Set("Connection", "close")
	w.Header().Set("Content-Type", "text/html;charset=utf-8")
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// feStreamLoad is LoadAction.streamLoad: auth, Expect presence, 307. The
// body is never read.
func (e *Emulator) feStreamLoad(w http.ResponseWriter, r *http.Request) {
	if st := e.faults.takeFail(FEStreamLoad); st != 0 {
		writeFault(w, st)
		return
	}
	user, pass, ok := e.feAuth(w, r)
	if !ok {
		return
	}
	if r.Header.Get("Expect") == "" && len(r.Header.Values("Expect")) == 0 {
		writeRestFailed(w, "There is no 100-continue header")
		return
	}
	e.redirectToBE(w, r, user, pass)
}

// fe2PC is LoadAction.streamLoad2PC: needs txn_id or label (txn_id only
// before 2.1) and txn_operation; no Expect check.
func (e *Emulator) fe2PC(w http.ResponseWriter, r *http.Request) {
	if st := e.faults.takeFail(FE2PC); st != 0 {
		writeFault(w, st)
		return
	}
	user, pass, ok := e.feAuth(w, r)
	if !ok {
		return
	}
	if e.opts.Version == "2.1" {
		if r.Header.Get("txn_id") == "" && r.Header.Get("label") == "" {
			writeRestFailed(w, "No transaction id or label selected.")
			return
		}
	} else if r.Header.Get("txn_id") == "" {
		writeRestFailed(w, "No transaction id selected.")
		return
	}
	if r.Header.Get("txn_operation") == "" {
		writeRestFailed(w, "No transaction operation('commit' or 'abort') selected.")
		return
	}
	e.redirectToBE(w, r, user, pass)
}

// feLoadState is GetStreamLoadState.
func (e *Emulator) feLoadState(w http.ResponseWriter, r *http.Request, dbName string) {
	if st := e.faults.takeFail(FELoadState); st != 0 {
		writeFault(w, st)
		return
	}
	if _, _, ok := e.feAuth(w, r); !ok {
		return
	}
	label := r.URL.Query().Get("label")
	if label == "" {
		writeJSON(w, feBody{Msg: "Bad Request", Code: 400, Data: "No label selected"})
		return
	}
	e.mu.Lock()
	e.tickLocked()
	db := e.dbs[dbName]
	var state TxnState
	if db != nil {
		state = e.labelState(db, label)
	}
	e.mu.Unlock()
	if db == nil {
		writeJSON(w, feBody{Msg: "Error", Code: 1, Data: "errCode = 7, detailMessage = unknown databases, dbName=" + dbName})
		return
	}
	writeJSON(w, feBody{Msg: "success", Code: 0, Data: string(state)})
}

// feBackends is BackendsAction: {"backends":[{"ip","http_port","is_alive"}]}.
func (e *Emulator) feBackends(w http.ResponseWriter, r *http.Request) {
	if st := e.faults.takeFail(FEBackends); st != 0 {
		writeFault(w, st)
		return
	}
	if _, _, ok := e.feAuth(w, r); !ok {
		return
	}
	host, portStr, _ := net.SplitHostPort(e.beAddr)
	var port int
	_, _ = fmt.Sscan(portStr, &port)
	alive := e.beAlive()
	type be struct {
		IP       string `json:"ip"`
		HTTPPort int    `json:"http_port"`
		IsAlive  bool   `json:"is_alive"`
	}
	list := []be{}
	if alive || r.URL.Query().Get("is_alive") != "true" {
		list = append(list, be{IP: host, HTTPPort: port, IsAlive: alive})
	}
	writeJSON(w, feBody{Msg: "success", Code: 0, Data: map[string]any{"backends": list}})
}

// feSchema is TableSchemaAction.
func (e *Emulator) feSchema(w http.ResponseWriter, r *http.Request, dbName, tblName string) {
	if st := e.faults.takeFail(FESchema); st != 0 {
		writeFault(w, st)
		return
	}
	if _, _, ok := e.feAuth(w, r); !ok {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	db := e.dbs[dbName]
	if db == nil {
		writeJSON(w, feBody{Msg: "Error", Code: 1, Data: "errCode = 2, detailMessage = Unknown database '" + dbName + "'"})
		return
	}
	tbl := db.tables[tblName]
	if tbl == nil {
		writeJSON(w, feBody{Msg: "Error", Code: 1, Data: "errCode = 2, detailMessage = Unknown table '" + tblName + "'"})
		return
	}
	props := make([]map[string]string, 0, len(tbl.Columns))
	for _, c := range tbl.Columns {
		p := map[string]string{
			"type": c.Type.primitiveName(), "comment": c.Comment, "name": c.Name,
			"aggregation_type": aggregationType(tbl, c),
		}
		if c.Type.Kind == "DECIMAL" {
			p["precision"] = fmt.Sprint(c.Type.Precision)
			p["scale"] = fmt.Sprint(c.Type.Scale)
		}
		props = append(props, p)
	}
	writeJSON(w, feBody{Msg: "success", Code: 0, Data: map[string]any{
		"status": 200, "tableType": "OLAP", "keysType": tbl.KeysType, "properties": props,
	}})
}

// aggregationType is Column.getAggregationType().toSql(): "" for keys,
// REPLACE for Unique values, NONE for Duplicate values.
func aggregationType(t *table, c column) string {
	switch {
	case c.IsKey:
		return ""
	case t.KeysType == KeysUnique:
		return "REPLACE"
	}
	return "NONE"
}
