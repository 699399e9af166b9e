package dorisemu

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// srcField is one field of the load source mapped onto the table.
type srcField struct {
	name string
	col  int // index into plan.cols; -1 = __DORIS_DELETE_SIGN__
}

// loadPlan is what streamLoadPut produces: how body fields map to columns.
type loadPlan struct {
	cols       []string
	types      []colType
	nullable   []bool
	defaults   []any
	hasDefault []bool
	src        []srcField
	byName     map[string]int // lower-case field name -> src index
	unique     bool
	mergeType  string
	// seqFrom is the column whose value is the row's sequence value and
	// seqTo the hidden __DORIS_SEQUENCE_COL__ entry of cols it is copied
	// to (tables with function_column.sequence_type); -1 when unused.
	seqFrom, seqTo int
	delCond        *condition

	format     string
	sep        []byte
	delim      []byte
	skipLines  int
	trimQuotes bool
	jsonByLine bool
	stripOuter bool
	strict     bool
	maxRatio   float64
	countOnly  bool
}

// condition is `col = literal` (the `delete` header of MERGE loads).
type condition struct {
	col int
	val any
}

func parseSeparator(s string) []byte {
	if strings.HasPrefix(strings.ToLower(s), `\x`) {
		if b, err := hex.DecodeString(s[2:]); err == nil && len(b) > 0 {
			return b
		}
	}
	switch s {
	case `\t`:
		return []byte("\t")
	case `\n`:
		return []byte("\n")
	}
	return []byte(s)
}

func splitColumnsHeader(h string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(h); i++ {
		switch h[i] {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, strings.TrimSpace(h[start:i]))
				start = i + 1
			}
		}
	}
	return append(out, strings.TrimSpace(h[start:]))
}

// planLoad validates the load headers against tbl (FE streamLoadPut).
// Errors here come after begin, so the caller rolls the txn back.
func (e *Emulator) planLoad(tbl *table, h http.Header, format string) (*loadPlan, *feError) {
	p := &loadPlan{
		format: format, sep: []byte("\t"), delim: []byte("\n"), unique: tbl.KeysType == KeysUnique,
		countOnly: e.opts.CountOnly, byName: map[string]int{}, seqFrom: -1, seqTo: -1,
	}
	now := e.now()
	for _, c := range tbl.Columns {
		p.cols = append(p.cols, c.Name)
		p.types = append(p.types, c.Type)
		p.nullable = append(p.nullable, c.Nullable)
		d, ok := c.defaultValue(now)
		p.defaults = append(p.defaults, d)
		p.hasDefault = append(p.hasDefault, ok && (c.Default != nil || c.Nullable))
	}
	if v := h.Get("column_separator"); v != "" {
		p.sep = parseSeparator(v)
	}
	if v := h.Get("line_delimiter"); v != "" {
		p.delim = parseSeparator(v)
	}
	if v := h.Get("skip_lines"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, analysisErr(2, "skip_lines must be a non-negative integer, got %q", v)
		}
		p.skipLines = n
	}
	switch format {
	case "csv_with_names":
		p.skipLines++
	case "csv_with_names_and_types":
		p.skipLines += 2
	}
	p.trimQuotes = strings.EqualFold(h.Get("trim_double_quotes"), "true")
	p.jsonByLine = strings.EqualFold(h.Get("read_json_by_line"), "true")
	p.stripOuter = strings.EqualFold(h.Get("strip_outer_array"), "true")
	p.strict = strings.EqualFold(h.Get("strict_mode"), "true")
	if v := h.Get("max_filter_ratio"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 1 {
			return nil, analysisErr(2, "max_filter_ratio must be between 0 and 1, got %q", v)
		}
		p.maxRatio = f
	}
	for _, unsupported := range []string{"jsonpaths", "json_root", "where", "partial_columns", "enclose", "escape"} {
		if v := h.Get(unsupported); v != "" && !(unsupported == "partial_columns" && v == "false") {
			return nil, &feError{status: "NOT_IMPLEMENTED_ERROR", detail: fmt.Sprintf("the Doris emulator does not support the %s header", unsupported), beLocal: true}
		}
	}

	// Sequence column (FE: the function_column.sequence_col header maps a
	// column onto the hidden sequence column; a table whose sequence is
	// mapped to a column needs no header).
	if v := h.Get("function_column.sequence_col"); v != "" || tbl.SeqType != nil {
		switch {
		case !tbl.hasSequence():
			return nil, analysisErr(2, "There is no sequence column in the table %s", tbl.Name)
		case v == "":
			return nil, analysisErr(2, "Table %s has sequence column, need to specify the sequence column", tbl.Name)
		case tbl.SeqCol != "" && !strings.EqualFold(v, tbl.SeqCol):
			return nil, analysisErr(2, "The sequence column of table %s is mapped to column %s, not %s", tbl.Name, tbl.SeqCol, v)
		case tbl.SeqType != nil:
			from := tbl.colIndex(v)
			if from < 0 {
				return nil, &feError{status: "NOT_IMPLEMENTED_ERROR", detail: fmt.Sprintf("the Doris emulator maps function_column.sequence_col only from a table column, got %s", v), beLocal: true}
			}
			p.seqFrom, p.seqTo = from, len(p.cols)
			p.cols = append(p.cols, SequenceColumnHidden)
			p.types = append(p.types, *tbl.SeqType)
			p.nullable = append(p.nullable, true)
			p.defaults = append(p.defaults, nil)
			p.hasDefault = append(p.hasDefault, true)
		}
	}

	p.mergeType = strings.ToUpper(h.Get("merge_type"))
	if p.mergeType == "" {
		p.mergeType = "APPEND"
	}
	switch p.mergeType {
	case "APPEND":
	case "DELETE", "MERGE":
		if !p.unique {
			return nil, analysisErr(2, "load by MERGE or DELETE is only supported in unique tables.")
		}
	default:
		return nil, analysisErr(2, "unknown merge type %s", p.mergeType)
	}

	// Source fields: the columns header, else the schema (+ hidden columns).
	var names []string
	if v := h.Get("columns"); v != "" {
		for _, item := range splitColumnsHeader(v) {
			if strings.ContainsAny(item, "=()") {
				return nil, &feError{status: "NOT_IMPLEMENTED_ERROR", detail: fmt.Sprintf("the Doris emulator does not support column mapping expressions in the columns header: %s", item), beLocal: true}
			}
			names = append(names, strings.Trim(item, "`"))
		}
	} else {
		for _, c := range tbl.Columns {
			names = append(names, c.Name)
		}
		if hc := h.Get("hidden_columns"); hc != "" {
			for _, item := range strings.Split(hc, ",") {
				names = append(names, strings.Trim(strings.TrimSpace(item), "`"))
			}
		}
	}
	p.src = make([]srcField, 0, len(names))
	mapped := make([]bool, len(p.cols))
	for i, n := range names {
		col := tbl.colIndex(n)
		if col < 0 {
			if p.unique && strings.EqualFold(n, DeleteSignColumn) {
				col = -1
			} else {
				return nil, analysisErr(2, "Unknown column '%s' in '%s'", n, tbl.Name)
			}
		} else {
			if mapped[col] {
				return nil, analysisErr(2, "Duplicate column: %s", n)
			}
			mapped[col] = true
		}
		p.src = append(p.src, srcField{name: n, col: col})
		p.byName[strings.ToLower(n)] = i
	}
	for i, c := range tbl.Columns {
		if !mapped[i] && !p.hasDefault[i] {
			return nil, analysisErr(2, "Column has no default value. column: %s", c.Name)
		}
	}
	if p.mergeType == "MERGE" {
		cond := h.Get("delete")
		if cond == "" {
			return nil, analysisErr(2, "Excepted DELETE ON clause when merge type is MERGE.")
		}
		col, lit, ok := strings.Cut(cond, "=")
		ci := tbl.colIndex(strings.Trim(strings.TrimSpace(col), "`"))
		if !ok || ci < 0 {
			return nil, &feError{status: "NOT_IMPLEMENTED_ERROR", detail: fmt.Sprintf("the Doris emulator only supports `delete: <column>=<literal>`, got %q", cond), beLocal: true}
		}
		v, err := convertValue(tbl.Columns[ci].Type, strings.Trim(strings.TrimSpace(lit), `'"`))
		if err != nil {
			return nil, analysisErr(2, "invalid delete condition %q: %v", cond, err)
		}
		p.delCond = &condition{col: ci, val: v}
	} else if h.Get("delete") != "" {
		return nil, analysisErr(2, "not support DELETE ON clause when merge type is not MERGE.")
	}
	return p, nil
}

// loadResult is the outcome of reading a body.
type loadResult struct {
	ops      []rowOp
	stats    loadStats
	errLog   strings.Builder
	errLines int
}

func (res *loadResult) filter(reason, src string) {
	res.stats.Filtered++
	if res.errLines < 1000 {
		fmt.Fprintf(&res.errLog, "Reason: %s. src line [%s]; \n", reason, truncate(src, 1024))
		res.errLines++
	}
}

func (res *loadResult) add(p *loadPlan, op rowOp) {
	res.stats.Loaded++
	if !p.countOnly {
		res.ops = append(res.ops, op)
	}
}

// errBodyRead marks a failure to read the body (client gone, reset).
type errBodyRead struct{ err error }

func (e *errBodyRead) Error() string { return "reading load body: " + e.err.Error() }
func (e *errBodyRead) Unwrap() error { return e.err }

// errBadJSON is a JSON body the reader cannot continue past.
type errBadJSON struct{ msg string }

func (e *errBadJSON) Error() string { return e.msg }

// countingReader counts body bytes and tags read errors. When armed, it
// calls onTrig once trigger bytes were read and fails with its error.
type countingReader struct {
	r       io.Reader
	n       int64
	trigger int64
	armed   bool
	onTrig  func() error
}

func (c *countingReader) Read(b []byte) (int, error) {
	if c.armed {
		left := c.trigger - c.n
		if left <= 0 {
			c.armed = false
			return 0, &errBodyRead{c.onTrig()}
		}
		if int64(len(b)) > left {
			b = b[:left]
		}
	}
	n, err := c.r.Read(b)
	c.n += int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		err = &errBodyRead{err}
	}
	return n, err
}

// readBody parses the whole body with p, streaming (no full buffering).
func readBody(body io.Reader, p *loadPlan, res *loadResult) error {
	if p.format == "json" {
		if p.jsonByLine {
			return scanLines(body, p.delim, func(line []byte) {
				readJSONLine(p, res, line)
			})
		}
		return readJSONStream(body, p, res)
	}
	skip := p.skipLines
	return scanLines(body, p.delim, func(line []byte) {
		if skip > 0 {
			skip--
			return
		}
		readCSVLine(p, res, line)
	})
}

func scanLines(r io.Reader, delim []byte, fn func([]byte)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 128<<10), 256<<20)
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if i := bytes.Index(data, delim); i >= 0 {
			return i + len(delim), data[:i], nil
		}
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	})
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue // empty lines are skipped
		}
		fn(sc.Bytes())
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return &errBadJSON{msg: "a line of the load body exceeds 256 MiB"}
		}
		return err
	}
	return nil
}

func readCSVLine(p *loadPlan, res *loadResult, line []byte) {
	fields := bytes.Split(line, p.sep)
	if len(fields) != len(p.src) {
		cmp := "less"
		if len(fields) > len(p.src) {
			cmp = "more"
		}
		res.stats.Total++
		res.filter(fmt.Sprintf("actual column number in csv file is %s than schema column number.actual number: %d, schema column number: %d; line delimiter: [%s], column separator: [%s]",
			cmp, len(fields), len(p.src), strconv.Quote(string(p.delim)), strconv.Quote(string(p.sep))), string(line))
		return
	}
	buildRow(p, res, string(line), func(i int) (any, bool) {
		f := fields[i]
		if string(f) == `\N` {
			return nil, true
		}
		s := string(f)
		if p.trimQuotes && len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
			s = s[1 : len(s)-1]
		}
		return s, true
	})
}

func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after the JSON value")
	}
	return v, nil
}

func readJSONLine(p *loadPlan, res *loadResult, line []byte) {
	if vals, present, ok := flatJSONRow(p, line); ok {
		buildRow(p, res, string(line), func(i int) (any, bool) { return vals[i], present[i] })
		return
	}
	v, err := decodeJSON(line)
	if err != nil {
		res.stats.Total++
		res.filter(fmt.Sprintf("Parse json data for JsonDoc failed. code: 3, error info: %v", err), string(line))
		return
	}
	jsonValue(p, res, v, line)
}

func jsonValue(p *loadPlan, res *loadResult, v any, src []byte) {
	switch x := v.(type) {
	case map[string]any:
		jsonRow(p, res, x, src)
	case []any:
		if !p.stripOuter {
			res.stats.Total++
			res.filter("JSON data is array-object, `strip_outer_array` must be TRUE.", string(src))
			return
		}
		for _, el := range x {
			obj, ok := el.(map[string]any)
			if !ok {
				res.stats.Total++
				res.filter("Expected value to be an object", string(src))
				continue
			}
			b, _ := json.Marshal(obj)
			jsonRow(p, res, obj, b)
		}
	default:
		res.stats.Total++
		res.filter("Expected value to be an object or an array", string(src))
	}
}

func jsonRow(p *loadPlan, res *loadResult, obj map[string]any, src []byte) {
	var vals []any
	var present []bool
	vals = make([]any, len(p.src))
	present = make([]bool, len(p.src))
	for k, v := range obj {
		i, ok := p.byName[strings.ToLower(k)]
		if !ok {
			continue
		}
		vals[i], present[i] = v, true
	}
	buildRow(p, res, string(src), func(i int) (any, bool) { return vals[i], present[i] })
}

func readJSONStream(body io.Reader, p *loadPlan, res *loadResult) error {
	dec := json.NewDecoder(body)
	dec.UseNumber()
	if p.stripOuter {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return jsonStreamErr(err)
		}
		if d, ok := tok.(json.Delim); !ok || d != '[' {
			return &errBadJSON{msg: "JSON data is not an array-object, `strip_outer_array` must be FALSE."}
		}
		for dec.More() {
			var obj map[string]any
			if err := dec.Decode(&obj); err != nil {
				return jsonStreamErr(err)
			}
			b, _ := json.Marshal(obj)
			jsonRow(p, res, obj, b)
		}
		if _, err := dec.Token(); err != nil {
			return jsonStreamErr(err)
		}
		return nil
	}
	for {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return jsonStreamErr(err)
		}
		b, _ := json.Marshal(v)
		jsonValue(p, res, v, b)
	}
}

func jsonStreamErr(err error) error {
	var br *errBodyRead
	if errors.As(err, &br) {
		return br
	}
	return &errBadJSON{msg: fmt.Sprintf("Parse json data for JsonDoc failed. code: 3, error info: %v", err)}
}

// buildRow converts one source record; get(i) returns the raw value of
// p.src[i] and whether the record has that field.
func buildRow(p *loadPlan, res *loadResult, src string, get func(i int) (any, bool)) {
	res.stats.Total++
	vals := make([]any, len(p.cols))
	copy(vals, p.defaults)
	del := false
	for i, f := range p.src {
		raw, present := get(i)
		if f.col == -1 {
			if present && raw != nil {
				v, err := convertValue(colType{Kind: "TINYINT"}, raw)
				if err != nil {
					res.filter(fmt.Sprintf("column(%s) value is incorrect: %v", DeleteSignColumn, err), src)
					return
				}
				del = v.(int64) != 0
			}
			continue
		}
		name := p.cols[f.col]
		if !present {
			if p.hasDefault[f.col] {
				continue
			}
			res.filter(fmt.Sprintf("column(%s) values is null while columns is not nullable", name), src)
			return
		}
		if raw == nil {
			if !p.nullable[f.col] {
				res.filter(fmt.Sprintf("column(%s) values is null while columns is not nullable", name), src)
				return
			}
			vals[f.col] = nil
			continue
		}
		v, err := convertValue(p.types[f.col], raw)
		if err != nil {
			var ce *convError
			errors.As(err, &ce)
			if (ce != nil && ce.alwaysFilter) || p.strict {
				res.filter(fmt.Sprintf("column_name[%s], %v", name, err), src)
				return
			}
			if !p.nullable[f.col] {
				res.filter(fmt.Sprintf("column(%s) values is null while columns is not nullable (%v)", name, err), src)
				return
			}
			v = nil
		}
		vals[f.col] = v
	}
	switch p.mergeType {
	case "DELETE":
		del = true
	case "MERGE":
		del = compareValues(p.types[p.delCond.col], vals[p.delCond.col], p.delCond.val) == 0 && vals[p.delCond.col] != nil
	}
	if !p.unique {
		del = false
	}
	if p.seqFrom >= 0 {
		v, err := convertValue(p.types[p.seqTo], vals[p.seqFrom])
		if vals[p.seqFrom] == nil {
			v, err = nil, nil
		}
		if err != nil {
			res.filter(fmt.Sprintf("column(%s) value is incorrect: %v", SequenceColumnHidden, err), src)
			return
		}
		vals[p.seqTo] = v
	}
	res.add(p, rowOp{Del: del, Vals: vals})
}

// loadReply is the BE's StreamLoadContext::to_json (spec §2.1).
type loadReply struct {
	TxnID                               int64
	Label                               string
	TwoPC                               bool
	Status, ExistingJobStatus, Message  string
	stats                               loadStats
	LoadTime, BeginTxn, Put, Read, Wait time.Duration
	CommitAndPublish                    time.Duration
	ErrorURL                            string
}

// encode renders the pretty JSON (4-space indent) plus a trailing newline,
// with the keys and types of the given Doris version.
func (l *loadReply) encode(version string) []byte {
	type kv struct {
		k string
		v any
	}
	ms := func(d time.Duration) int64 { return d.Milliseconds() }
	f := []kv{{"TxnId", l.TxnID}, {"Label", l.Label}}
	if version != "1.2" {
		f = append(f, kv{"Comment", ""})
	}
	f = append(f, kv{"TwoPhaseCommit", strconv.FormatBool(l.TwoPC)}, kv{"Status", l.Status})
	if l.Status == "Label Already Exists" {
		f = append(f, kv{"ExistingJobStatus", l.ExistingJobStatus})
	}
	f = append(f,
		kv{"Message", l.Message},
		kv{"NumberTotalRows", l.stats.Total},
		kv{"NumberLoadedRows", l.stats.Loaded},
		kv{"NumberFilteredRows", l.stats.Filtered},
		kv{"NumberUnselectedRows", l.stats.Unselected},
		kv{"LoadBytes", l.stats.Bytes},
		kv{"LoadTimeMs", ms(l.LoadTime)},
		kv{"BeginTxnTimeMs", ms(l.BeginTxn)},
		kv{"StreamLoadPutTimeMs", ms(l.Put)},
		kv{"ReadDataTimeMs", ms(l.Read)},
		kv{"WriteDataTimeMs", ms(l.Wait)},
	)
	if version == "2.1" {
		f = append(f, kv{"ReceiveDataTimeMs", ms(l.Read)})
	}
	f = append(f, kv{"CommitAndPublishTimeMs", ms(l.CommitAndPublish)})
	if l.ErrorURL != "" {
		f = append(f, kv{"ErrorURL", l.ErrorURL})
	}
	var b bytes.Buffer
	b.WriteString("{\n")
	for i, x := range f {
		fmt.Fprintf(&b, "    %q: %s", x.k, marshalRaw(x.v))
		if i < len(f)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("}\n")
	return b.Bytes()
}

// twoPCBody renders {"status","msg"} pretty, without trailing newline.
func twoPCBody(status, msg string) []byte {
	return []byte(fmt.Sprintf("{\n    \"status\": %s,\n    \"msg\": %s\n}", marshalRaw(status), marshalRaw(msg)))
}

// marshalRaw is json.Marshal without HTML escaping (rapidjson does none).
func marshalRaw(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return bytes.TrimRight(b.Bytes(), "\n")
}
