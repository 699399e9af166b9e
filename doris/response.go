package doris

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

// LoadReply is the JSON answer of a Stream Load PUT (BE
// StreamLoadContext::to_json). Unknown fields are ignored and missing ones
// stay zero, so replies of Doris 1.2 to 3.x all decode. An FE that refuses to
// redirect answers {"status":"FAILED","msg":...}; that decodes into Status
// and Msg.
type LoadReply struct {
	TxnID                int64  `json:"TxnId"`
	Label                string `json:"Label"`
	TwoPhaseCommit       string `json:"TwoPhaseCommit"`
	Status               string `json:"Status"`
	ExistingJobStatus    string `json:"ExistingJobStatus"`
	Message              string `json:"Message"`
	Msg                  string `json:"msg"`
	NumberTotalRows      int64  `json:"NumberTotalRows"`
	NumberLoadedRows     int64  `json:"NumberLoadedRows"`
	NumberFilteredRows   int64  `json:"NumberFilteredRows"`
	NumberUnselectedRows int64  `json:"NumberUnselectedRows"`
	LoadBytes            int64  `json:"LoadBytes"`
	LoadTimeMs           int64  `json:"LoadTimeMs"`
	ErrorURL             string `json:"ErrorURL"`
	FirstErrorMsg        string `json:"FirstErrorMsg"`
}

// twoPCReply is the answer of _stream_load_2pc: {"status": ..., "msg": ...}.
type twoPCReply struct {
	Status string `json:"status"`
	Msg    string `json:"msg"`
}

// loadStateReply is the answer of get_load_state.
type loadStateReply struct {
	Msg  string `json:"msg"`
	Code int    `json:"code"`
	Data string `json:"data"`
}

// Op names the request a reply answers.
type Op uint8

// The requests whose replies Classify understands.
const (
	OpLoad   Op = iota + 1 // PUT _stream_load (also the empty label probe)
	OpCommit               // _stream_load_2pc txn_operation: commit
	OpAbort                // _stream_load_2pc txn_operation: abort
)

func (o Op) String() string {
	switch o {
	case OpLoad:
		return "load"
	case OpCommit:
		return "commit"
	case OpAbort:
		return "abort"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Class is what a Doris reply means for the request that got it.
type Class uint8

// The reply classes.
const (
	ClassInvalid Class = iota
	// ClassSuccess: the request did what it asked (load pre-committed or
	// committed, txn committed, txn aborted).
	ClassSuccess
	// ClassAlreadyDone: the asked-for end state was reached before: commit
	// of a committed/visible txn, abort of an aborted txn, a load whose label
	// belongs to a FINISHED (committed) job.
	ClassAlreadyDone
	// ClassAborted: commit of a txn Doris has aborted (user abort, error, or
	// the pre-commit timeout "timeout by txn manager"). Its data is gone.
	ClassAborted
	// ClassCommitted: abort of a txn that is already committed or visible.
	ClassCommitted
	// ClassNotFound: Doris has no (running) txn by that id or label —
	// never existed, or purged. Resolve with get_load_state.
	ClassNotFound
	// ClassLabelExists: a load whose label is held by a RUNNING or
	// PRECOMMITTED txn; Verdict.TxnID is that txn.
	ClassLabelExists
	// ClassUnsupported: the FE/BE is too old for the request (abort by
	// label before Doris 2.1).
	ClassUnsupported
	// ClassRetryable: transient (5xx, lock timeout, not master, too many
	// running txns); the same request may be repeated.
	ClassRetryable
	// ClassTerminal: anything else; repeating will not help.
	ClassTerminal
)

var classNames = [...]string{"invalid", "success", "already done", "aborted", "committed",
	"not found", "label exists", "unsupported", "retryable", "terminal"}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

// Verdict is a classified reply.
type Verdict struct {
	Class Class
	// TxnID is the txn a load reply names: the new txn on success, the
	// holder of the label on ClassLabelExists; -1 or 0 when none.
	TxnID int64
	// Status is Doris's status word ("Success", "ANALYSIS_ERROR", "Fail" ...)
	// or the HTTP status when there was no JSON.
	Status string
	// Message is Doris's message (msg / Message), trimmed to one line.
	Message string
	// Load is the decoded load reply (OpLoad only).
	Load *LoadReply
}

func (v Verdict) String() string {
	if v.Message == "" {
		return fmt.Sprintf("%s (%s)", v.Class, v.Status)
	}
	return fmt.Sprintf("%s (%s: %s)", v.Class, v.Status, v.Message)
}

var labelExistsRE = regexp.MustCompile(`relate to txn \[(\d+)\]`)

// Classify sorts the reply (HTTP status and body) of request op into a
// Class. It is pure: the same reply always gives the same Verdict. Messages
// are matched by case-insensitive substring, never anchored, because their
// wording differs between Doris 1.2, 2.0 (stack traces appended), 2.1
// ("[CODE]TStatus: errCode = 2, detailMessage = ...") and 3.x.
func Classify(op Op, httpStatus int, body []byte) Verdict {
	switch {
	case httpStatus >= 500, httpStatus == http.StatusTooManyRequests, httpStatus == http.StatusRequestTimeout:
		return Verdict{Class: ClassRetryable, Status: strconv.Itoa(httpStatus), Message: firstLine(string(body))}
	case httpStatus == http.StatusUnauthorized || httpStatus == http.StatusForbidden:
		return Verdict{Class: ClassTerminal, Status: strconv.Itoa(httpStatus),
			Message: "authentication failed: check user and password: " + firstLine(string(body))}
	case httpStatus != http.StatusOK:
		return Verdict{Class: ClassTerminal, Status: strconv.Itoa(httpStatus), Message: firstLine(string(body))}
	}
	if op == OpLoad {
		return classifyLoad(body)
	}
	return classify2PC(op, body)
}

func classifyLoad(body []byte) Verdict {
	var r LoadReply
	if err := json.Unmarshal(body, &r); err != nil {
		return Verdict{Class: ClassTerminal, Status: "200", Message: "reply is not JSON: " + firstLine(string(body))}
	}
	msg := r.Message
	if msg == "" {
		msg = r.Msg
	}
	v := Verdict{TxnID: r.TxnID, Status: r.Status, Message: firstLine(msg), Load: &r}
	lower := strings.ToLower(msg)
	switch strings.ToLower(r.Status) {
	case "success", "publish timeout":
		v.Class = ClassSuccess
	case "label already exists":
		if strings.EqualFold(r.ExistingJobStatus, "FINISHED") {
			v.Class = ClassAlreadyDone
		} else {
			v.Class = ClassLabelExists
		}
		if m := labelExistsRE.FindStringSubmatch(msg); m != nil {
			v.TxnID, _ = strconv.ParseInt(m[1], 10, 64)
		}
	default: // "Fail", or the FE's "FAILED"
		v.Class = ClassTerminal
		if isTransient(lower) {
			v.Class = ClassRetryable
		}
	}
	return v
}

func classify2PC(op Op, body []byte) Verdict {
	var r twoPCReply
	if err := json.Unmarshal(body, &r); err != nil {
		return Verdict{Class: ClassTerminal, Status: "200", Message: "reply is not JSON: " + firstLine(string(body))}
	}
	v := Verdict{Status: r.Status, Message: firstLine(r.Msg)}
	lower := strings.ToLower(r.Msg)
	switch {
	case strings.EqualFold(r.Status, "success") || strings.EqualFold(r.Status, "OK"):
		v.Class = ClassSuccess
	case strings.Contains(lower, "already committed") || strings.Contains(lower, "already visible") ||
		strings.Contains(lower, "could not abort"):
		v.Class = ClassAlreadyDone
		if op == OpAbort {
			v.Class = ClassCommitted
		}
	case strings.Contains(lower, "already aborted") || strings.Contains(lower, "already been aborted"):
		v.Class = ClassAborted
		if op == OpAbort {
			v.Class = ClassAlreadyDone
		}
	case strings.Contains(lower, "no transaction id selected") || strings.Contains(lower, "convert txn_id [] failed"):
		// FE (pre-2.1) demands txn_id; BE (pre-2.1) parses the empty txn_id.
		v.Class = ClassUnsupported
	case strings.Contains(lower, "not found"):
		// "transaction [ID] not found", "transaction not found, label=L",
		// "running transaction not found, label=L".
		v.Class = ClassNotFound
	case strings.EqualFold(r.Status, "NOT_MASTER") || isTransient(lower) ||
		strings.Contains(lower, "not pre-committed"): // still PREPARE: the load has not ended yet
		v.Class = ClassRetryable
	default:
		v.Class = ClassTerminal
	}
	return v
}

// isTransient reports messages of conditions that pass by themselves.
func isTransient(lower string) bool {
	for _, s := range []string{
		"current running txns on db",                    // running-txn quota
		"lock timeout",                                  // get tableList write lock timeout
		"too many versions", "too_many_version", "-235", // compaction behind
		"not master", "not_master",
		"no backend load available", "no available backend", "backend not alive",
		"rpc failed", "thrift rpc error", "failed to get master client",
		"service unavailable", "too many tasks", "too_many_tasks",
	} {
		if strings.Contains(lower, s) {
			return true
		}
	}
	return false
}

// parseLoadState decodes get_load_state's reply into the state word
// (VISIBLE, COMMITTED, PRECOMMITTED, PREPARE, ABORTED, UNKNOWN).
func parseLoadState(httpStatus int, body []byte) (string, Verdict) {
	if httpStatus != http.StatusOK {
		return "", Classify(OpCommit, httpStatus, body)
	}
	var r loadStateReply
	if err := json.Unmarshal(body, &r); err != nil {
		return "", Verdict{Class: ClassTerminal, Status: "200", Message: "get_load_state reply is not JSON: " + firstLine(string(body))}
	}
	if r.Code != 0 || r.Data == "" {
		v := Verdict{Class: ClassTerminal, Status: strconv.Itoa(r.Code), Message: firstLine(r.Msg)}
		if isTransient(strings.ToLower(r.Msg)) {
			v.Class = ClassRetryable
		}
		return "", v
	}
	return strings.ToUpper(strings.TrimSpace(r.Data)), Verdict{Class: ClassSuccess, Status: "0", Message: r.Data}
}

// firstLine trims s to its first line (2.0 appends BE stack traces) and 512
// bytes.
func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = strings.TrimSpace(s[:i])
	}
	if len(s) > 512 {
		s = s[:512] + "…"
	}
	return s
}
