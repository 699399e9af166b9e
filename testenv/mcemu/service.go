package mcemu

import (
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

type instance struct {
	id       string
	taskName string
	status   string // Success | Failed
	result   string
	start    time.Time
	end      time.Time
}

func (e *Emulator) serveAPI(w http.ResponseWriter, r *http.Request, rest []string, schema string) *httpError {
	q := r.URL.Query()
	switch {
	case len(rest) == 1 && rest[0] == "schemas" && r.Method == http.MethodPost:
		return e.createSchema(w, r)
	case len(rest) == 0 && r.Method == http.MethodGet:
		type prop struct{ Name, Value string }
		writeXML(w, http.StatusOK, struct {
			XMLName    xml.Name `xml:"Project"`
			Name       string
			Owner      string
			State      string
			Properties []prop `xml:"Properties>Property"`
		}{Name: e.opts.Project, Owner: "ALIYUN$emulator", State: "AVAILABLE",
			Properties: []prop{{"odps.schema.model.enabled", strconv.FormatBool(e.opts.SchemaModel)}}})
		return nil
	case len(rest) == 1 && rest[0] == "tunnel" && r.Method == http.MethodGet && hasParam(q, "service"):
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, e.addr+"/tunnel")
		return nil
	case len(rest) == 1 && rest[0] == "instances" && r.Method == http.MethodPost:
		return e.createInstance(w, r)
	case len(rest) == 2 && rest[0] == "instances" && r.Method == http.MethodGet:
		return e.getInstance(w, r, rest[1])
	case len(rest) == 2 && rest[0] == "tables" && r.Method == http.MethodGet:
		return e.getTable(w, schema, rest[1])
	}
	return errf(http.StatusNotFound, "NoSuchObject", "%s %s is not served by the emulator", r.Method, r.URL.Path)
}

func (e *Emulator) createInstance(w http.ResponseWriter, r *http.Request) *httpError {
	if ct := r.Header.Get("Content-Type"); ct != "application/xml" {
		return errf(http.StatusBadRequest, "InvalidParameter", "instance body must be application/xml, got %q", ct)
	}
	var body struct {
		Job struct {
			Tasks struct {
				SQL struct {
					Name   string
					Config struct {
						Props []struct{ Name, Value string } `xml:"Property"`
					}
					Query string
				}
			}
		}
	}
	if err := xml.NewDecoder(r.Body).Decode(&body); err != nil {
		return errf(http.StatusBadRequest, "InvalidXmlRequest", "decoding instance: %v", err)
	}
	task := body.Job.Tasks.SQL
	if task.Query == "" {
		return errf(http.StatusBadRequest, "InvalidParameter", "only SQL tasks with a query are supported")
	}
	hints := map[string]string{}
	for _, p := range task.Config.Props {
		if p.Name == "settings" {
			if err := json.Unmarshal([]byte(p.Value), &hints); err != nil {
				return errf(http.StatusBadRequest, "InvalidParameter", "settings are not a JSON object: %v", err)
			}
		}
	}
	e.mu.Lock()
	inst := &instance{id: e.newID(""), taskName: task.Name, start: time.Now()}
	if len(e.failTaskMsgs) > 0 {
		inst.status, inst.result = "Failed", e.failTaskMsgs[0]
		e.failTaskMsgs = e.failTaskMsgs[1:]
	} else if res, isQuery, err := e.execLocked(task.Query, hints); err != nil {
		inst.status, inst.result = "Failed", err.Error()
	} else {
		inst.status, inst.result = "Success", res
		if !isQuery {
			e.ddl = append(e.ddl, strings.TrimSpace(task.Query))
		}
	}
	inst.end = time.Now()
	e.instances[inst.id] = inst
	e.mu.Unlock()
	w.Header().Set("Location", fmt.Sprintf("http://%s/api/projects/%s/instances/%s", e.addr, e.opts.Project, inst.id))
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (e *Emulator) getInstance(w http.ResponseWriter, r *http.Request, id string) *httpError {
	e.mu.Lock()
	inst, ok := e.instances[id]
	e.mu.Unlock()
	if !ok {
		return errf(http.StatusNotFound, "NoSuchObject", "instance %s does not exist", id)
	}
	q := r.URL.Query()
	type result struct {
		Transform string `xml:"Transform,attr"`
		Format    string `xml:"Format,attr"`
		Content   string `xml:",cdata"`
	}
	type task struct {
		Type      string `xml:"Type,attr"`
		Name      string
		StartTime string  `xml:",omitempty"`
		EndTime   string  `xml:",omitempty"`
		Status    string  `xml:",omitempty"`
		Result    *result `xml:",omitempty"`
	}
	gmt := func(t time.Time) string { return t.UTC().Format(time.RFC1123) }
	switch {
	case hasParam(q, "taskstatus"):
		writeXML(w, http.StatusOK, struct {
			XMLName xml.Name `xml:"Instance"`
			Status  string
			Tasks   []task `xml:"Tasks>Task"`
		}{Status: "Terminated", Tasks: []task{{Type: "SQL", Name: inst.taskName, StartTime: gmt(inst.start),
			EndTime: gmt(inst.end), Status: inst.status}}})
	case hasParam(q, "result"):
		writeXML(w, http.StatusOK, struct {
			XMLName xml.Name `xml:"Instance"`
			Tasks   []task   `xml:"Tasks>Task"`
		}{Tasks: []task{{Type: "SQL", Name: inst.taskName, Status: inst.status, Result: &result{
			Transform: "Base64", Format: "text", Content: base64.StdEncoding.EncodeToString([]byte(inst.result))}}}})
	default:
		w.Header().Set("x-odps-owner", "ALIYUN$emulator")
		w.Header().Set("x-odps-start-time", gmt(inst.start))
		w.Header().Set("x-odps-end-time", gmt(inst.end))
		writeXML(w, http.StatusOK, struct {
			XMLName xml.Name `xml:"Instance"`
			Status  string
		}{Status: "Terminated"})
	}
	return nil
}

func lower(typ string) string { return strings.ToLower(typ) }

// createSchema serves Schemas.Create: POST /projects/p/schemas with
// <Schema><Project/><Name/><Comment/><IfNotExists/></Schema>.
func (e *Emulator) createSchema(w http.ResponseWriter, r *http.Request) *httpError {
	var body struct {
		Name        string
		IfNotExists bool
	}
	if err := xml.NewDecoder(r.Body).Decode(&body); err != nil || body.Name == "" {
		return errf(http.StatusBadRequest, "InvalidXmlRequest", "decoding schema: %v", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.opts.SchemaModel {
		return errf(http.StatusBadRequest, "InvalidParameter", "ODPS-0110061: project %s does not have the schema model enabled", e.opts.Project)
	}
	key := strings.ToLower(body.Name)
	if e.schemas[key] && !body.IfNotExists {
		return errf(http.StatusConflict, "ObjectAlreadyExists", "schema %s.%s already exists", e.opts.Project, body.Name)
	}
	e.schemas[key] = true
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (e *Emulator) getTable(w http.ResponseWriter, schema, name string) *httpError {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.tableLocked(schema, name)
	if !ok {
		return errf(http.StatusNotFound, "NoSuchObject", "ODPS-0110061: Failed to run ddltask - table %s.%s does not exist", e.opts.Project, name)
	}
	type col struct {
		Name       string `json:"name"`
		Type       string `json:"type"`
		IsNullable bool   `json:"isNullable"`
		Comment    string `json:"comment"`
	}
	cols := make([]col, len(t.cols))
	for i, c := range t.cols {
		cols[i] = col{Name: c.Name, Type: lower(c.Type), IsNullable: !c.NotNull, Comment: c.Comment}
	}
	reserved := map[string]any{"Transactional": strconv.FormatBool(t.transactional)}
	if len(t.pk) > 0 {
		reserved["PrimaryKey"] = t.pk
		reserved["ClusterType"] = "hash"
		reserved["ClusterCols"] = t.pk
		reserved["BucketNum"] = t.buckets
	}
	resJSON, _ := json.Marshal(reserved)
	pcols := make([]col, len(t.partCols))
	for i, c := range t.partCols {
		pcols[i] = col{Name: c.Name, Type: lower(c.Type), IsNullable: true, Comment: c.Comment}
	}
	schemaJSON, _ := json.Marshal(map[string]any{
		"columns": cols, "partitionKeys": pcols, "comment": t.comment, "createTime": t.created.Unix(),
		"lastDDLTime": t.lastDDL.Unix(), "lastModifiedTime": t.lastDDL.Unix(), "lifecycle": t.lifecycle,
		"Reserved": string(resJSON),
	})
	writeXML(w, http.StatusOK, struct {
		XMLName    xml.Name `xml:"Table"`
		Name       string
		TableId    string
		Owner      string
		Project    string
		SchemaName string `xml:",omitempty"`
		Type       string
		Schema     struct {
			Content string `xml:",cdata"`
		}
	}{Name: t.name, TableId: "t" + t.name, Owner: "ALIYUN$emulator", Project: e.opts.Project, SchemaName: t.schema,
		Type: "MANAGED_TABLE", Schema: struct {
			Content string `xml:",cdata"`
		}{string(schemaJSON)}})
	return nil
}

// execLocked runs one statement of the SQL subset. e.mu is held. A query
// (SELECT) returns its result as CSV with a header row, as the instance's
// ?result serves it; isQuery tells it from DDL.
func (e *Emulator) execLocked(sql string, hints map[string]string) (result string, isQuery bool, err error) {
	st, err := parseStatement(sql)
	if err != nil {
		return "", false, err
	}
	if st.kind == stmtSelectCount {
		n, err := e.countLocked(st, hints)
		if err != nil {
			return "", true, err
		}
		return fmt.Sprintf("\"_c0\"\n%d\n", n), true, nil
	}
	return "", false, e.ddlLocked(st, hints)
}

// countLocked runs select count(*) on st's table: the committed rows of
// every partition. Like a project with odps.sql.allow.fullscan=false (the
// setting MaxCompute recommends), a partitioned table is scanned whole only
// with the hint odps.sql.allow.fullscan=true.
func (e *Emulator) countLocked(st *statement, hints map[string]string) (int, error) {
	t, err := e.resolveLocked(st, hints)
	if err != nil {
		return 0, err
	}
	if t == nil {
		return 0, fmt.Errorf("ODPS-0130131:[1,1] Table not found - table %s.%s cannot be resolved", e.opts.Project, st.table)
	}
	if len(t.partCols) > 0 && hints["odps.sql.allow.fullscan"] != "true" {
		return 0, fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - full scan with all partitions, please specify partition predicates or set odps.sql.allow.fullscan=true")
	}
	n := 0
	for _, p := range t.parts {
		n += len(p.rows)
	}
	return n, nil
}

// resolveLocked checks st's table name against the project and the
// schema model and returns the table (nil when missing).
func (e *Emulator) resolveLocked(st *statement, hints map[string]string) (*table, error) {
	if st.project != "" && !strings.EqualFold(st.project, e.opts.Project) {
		return nil, fmt.Errorf("ODPS-0130131:[1,1] Table not found - project %s is not the current project", st.project)
	}
	nsHint := hints["odps.namespace.schema"] == "true"
	switch {
	case st.schema != "" && !e.opts.SchemaModel:
		return nil, fmt.Errorf("ODPS-0130161:[1,1] Parse exception - three-part name %s.%s.%s: project %s does not have the schema model enabled", st.project, st.schema, st.table, e.opts.Project)
	case st.schema != "" && !nsHint:
		return nil, fmt.Errorf("ODPS-0130161:[1,1] Parse exception - three-part name %s.%s.%s needs the hint odps.namespace.schema=true", st.project, st.schema, st.table)
	case st.schema != "" && !e.schemas[strings.ToLower(st.schema)]:
		return nil, fmt.Errorf("ODPS-0110061: schema %s.%s does not exist", e.opts.Project, st.schema)
	}
	schema := st.schema
	if schema == "" {
		schema = e.defaultSchema()
	}
	return e.tables[tableKey(schema, st.table)], nil
}

// ddlLocked runs one DDL/DML statement. e.mu is held.
func (e *Emulator) ddlLocked(st *statement, hints map[string]string) error {
	if _, err := e.resolveLocked(st, hints); err != nil {
		return err
	}
	odps2 := hints["odps.sql.type.system.odps2"] == "true"
	for _, c := range append(append([]columnDef(nil), st.columns...), st.partCols...) {
		if needsOdps2(c.Type) && !odps2 {
			return fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - %s type is not enabled in current mode; set odps.sql.type.system.odps2=true", c.Type)
		}
	}
	schema := st.schema
	if schema == "" {
		schema = e.defaultSchema()
	}
	key := tableKey(schema, st.table)
	t, exists := e.tables[key]
	now := time.Now()
	switch st.kind {
	case stmtCreate:
		if exists {
			if st.ifNotExists {
				return nil
			}
			return fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - table %s already exists", st.table)
		}
		nt := &table{schema: st.schema, name: st.table, cols: st.columns, partCols: st.partCols, pk: st.primaryKey, props: st.props,
			comment: st.comment, lifecycle: -1, parts: map[string]*partData{}, created: now, lastDDL: now}
		if st.lifecycle > 0 {
			nt.lifecycle = st.lifecycle
		}
		if st.schema == "" && e.opts.SchemaModel {
			nt.schema = "default"
		}
		if len(st.partCols) == 0 {
			nt.parts[""] = &partData{created: now}
		}
		for _, c := range st.partCols {
			if !partitionTypes[baseType(c.Type)] {
				return fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - partition column %s cannot be %s", c.Name, c.Type)
			}
		}
		seen := map[string]bool{}
		for _, c := range append(append([]columnDef(nil), st.columns...), st.partCols...) {
			if seen[strings.ToLower(c.Name)] {
				return fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - duplicate column %s", c.Name)
			}
			seen[strings.ToLower(c.Name)] = true
		}
		for _, k := range st.primaryKey {
			i := nt.colIndex(k)
			if i < 0 {
				return fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - primary key column %s is not a column", k)
			}
			if !st.columns[i].NotNull {
				return fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - primary key column %s must be NOT NULL", k)
			}
			if b := baseType(st.columns[i].Type); b == "BINARY" || b == "FLOAT" || b == "DOUBLE" {
				return fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - type %s cannot be a primary key", b)
			}
		}
		nt.transactional = st.props["transactional"] == "true"
		if len(st.primaryKey) > 0 {
			if !nt.transactional {
				return fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - a primary key needs tblproperties transactional=true")
			}
			nt.buckets = 16
			if v, ok := st.props["write.bucket.num"]; ok {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 || n > 4096 {
					return fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - invalid write.bucket.num %q", v)
				}
				nt.buckets = n
			}
		}
		e.tables[key] = nt
	case stmtAddColumns:
		if !exists {
			return fmt.Errorf("ODPS-0130131:[1,1] Table not found - table %s.%s cannot be resolved", e.opts.Project, st.table)
		}
		if hints["odps.sql.allow.schema.evolution"] != "true" && t.transactional {
			return fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - schema evolution of a transactional table needs odps.sql.allow.schema.evolution=true")
		}
		for _, c := range st.columns {
			if t.colIndex(c.Name) >= 0 {
				if st.ifNotExists {
					continue
				}
				return fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - column %s already exists", c.Name)
			}
			t.cols = append(t.cols, c)
		}
		t.lastDDL = now
	case stmtChangeType:
		if !exists {
			return fmt.Errorf("ODPS-0130131:[1,1] Table not found - table %s.%s cannot be resolved", e.opts.Project, st.table)
		}
		c := st.columns[0]
		i := t.colIndex(c.Name)
		if i < 0 {
			return fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - column %s cannot be resolved", c.Name)
		}
		if slices.ContainsFunc(t.pk, func(k string) bool { return strings.EqualFold(k, c.Name) }) {
			return fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - primary key column %s cannot change type", c.Name)
		}
		if !widens(t.cols[i].Type, c.Type) {
			return fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - cannot change column %s from %s to %s", c.Name, t.cols[i].Type, c.Type)
		}
		if baseType(t.cols[i].Type) == "FLOAT" && baseType(c.Type) == "DOUBLE" {
			for _, p := range t.parts {
				for _, row := range p.rows {
					if i >= len(row) {
						continue
					}
					if f, ok := row[i].(float32); ok {
						row[i] = float64(f)
					}
				}
			}
		}
		t.cols[i].Type = c.Type
		t.lastDDL = now
	case stmtRename:
		if !exists {
			return fmt.Errorf("ODPS-0130131:[1,1] Table not found - table %s.%s cannot be resolved", e.opts.Project, st.table)
		}
		nk := tableKey(schema, st.newName)
		if _, taken := e.tables[nk]; taken {
			return fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - table %s already exists", st.newName)
		}
		delete(e.tables, key)
		t.name, t.lastDDL = st.newName, now
		e.tables[nk] = t
	case stmtDrop:
		if !exists {
			if st.ifExists {
				return nil
			}
			return fmt.Errorf("ODPS-0130131:[1,1] Table not found - table %s.%s cannot be resolved", e.opts.Project, st.table)
		}
		delete(e.tables, key)
	case stmtAddPartition:
		if !exists {
			return fmt.Errorf("ODPS-0130131:[1,1] Table not found - table %s.%s cannot be resolved", e.opts.Project, st.table)
		}
		for _, kv := range st.partitions {
			spec, vals, err := t.canonicalSpec(kv, fmt.Sprint(kv))
			if err != nil {
				return fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - %v", err)
			}
			if !t.addPartition(spec, vals) && !st.ifNotExists {
				return fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - partition %s already exists", spec)
			}
		}
	case stmtDelete:
		if !exists {
			return fmt.Errorf("ODPS-0130131:[1,1] Table not found - table %s.%s cannot be resolved", e.opts.Project, st.table)
		}
		if !t.transactional {
			return fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - DELETE is only supported on transactional tables and Delta Tables; %s is not transactional", st.table)
		}
		idx := make([]int, len(st.where))
		for i, w := range st.where {
			if idx[i] = t.colIndex(w[0]); idx[i] < 0 {
				return fmt.Errorf("ODPS-0130071:[1,1] Semantic analysis exception - column %s cannot be resolved", w[0])
			}
		}
		for _, pd := range t.parts { // every partition: the conditions name data columns
			pd.rows = slices.DeleteFunc(pd.rows, func(r []any) bool {
				for i, w := range st.where {
					if idx[i] >= len(r) || r[idx[i]] == nil || fmt.Sprint(r[idx[i]]) != w[1] {
						return false
					}
				}
				return true
			})
		}
	}
	return nil
}

func (t *table) colIndex(name string) int {
	for i, c := range t.cols {
		if strings.EqualFold(c.Name, name) {
			return i
		}
	}
	return -1
}
