package main

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/change"
)

const examplesDir = "../../examples"

// mapEnv is a getenv over a fixed map.
func mapEnv(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// scriptArgs reads the shardsync arguments of an examples/*.sh script: the
// words after `exec shardsync`, with "${VAR}" expanded from env.
func scriptArgs(t *testing.T, path string, env map[string]string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	_, cmd, ok := strings.Cut(text, "exec shardsync")
	require.True(t, ok, "%s has no `exec shardsync` line", path)
	cmd, _, _ = strings.Cut(cmd, "\n")
	cmd = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(cmd), `"$@"`))
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(cmd); i++ {
		switch c := cmd[i]; c {
		case '\'':
			j := strings.IndexByte(cmd[i+1:], '\'')
			require.GreaterOrEqual(t, j, 0, "unterminated quote in %s", path)
			cur.WriteString(cmd[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case '"':
			j := strings.IndexByte(cmd[i+1:], '"')
			require.GreaterOrEqual(t, j, 0, "unterminated quote in %s", path)
			cur.WriteString(os.Expand(cmd[i+1:i+1+j], func(k string) string { return env[k] }))
			i += j + 1
			inWord = true
		case ' ', '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

func flagOptions(t *testing.T, args []string) jobOptions {
	t.Helper()
	var o jobOptions
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	o.addFlags(fs)
	require.NoError(t, fs.Parse(args))
	return o
}

// comparableJob is what must agree between a file and its flags: every
// resolved configuration, without pointers.
type comparableJob struct {
	Opts     jobOptions
	Patterns []string
	Rules    []routeSpec
	Target   *change.TableID
	MySQLPW  string
	Doris    any
	MC       any
	Prefix   string
	Ledger   string
	Interval time.Duration
	MaxRows  int
}

func viewJob(j *job) comparableJob {
	v := comparableJob{Opts: j.opts, Target: j.target, MySQLPW: j.mysqlPW, Prefix: j.prefix, Ledger: j.ledger,
		Interval: j.coordCfg.CheckpointInterval, MaxRows: j.coordCfg.MaxEpochRows}
	v.Opts.fileLines = nil // where a file set a flag, not what the job does
	for _, p := range j.pats {
		v.Patterns = append(v.Patterns, p.src)
	}
	for _, r := range j.rules {
		r.spec.Description = "" // prose; the flag form has none
		v.Rules = append(v.Rules, r.spec)
	}
	if j.dorisCfg != nil {
		v.Doris = *j.dorisCfg
	}
	if j.mcCfg != nil {
		v.MC = *j.mcCfg
	}
	// Secrets are compared resolved (MySQLPW, Doris.Password, MC.AccessKey):
	// the file carries them, the flags take them from the environment.
	v.Opts.mysqlPassword, v.Opts.dorisPassword, v.Opts.mcAccessKey, v.Opts.mcStsToken = "", "", "", ""
	v.Opts.routes = nil
	if len(v.Opts.mcOptions) == 0 {
		v.Opts.mcOptions = nil
	}
	return v
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestPipelineSeedMaxComputeIsTheFlagsJob reads the example of Flink CDC's
// MaxCompute connector documentation, unchanged, and checks that it is the
// same job as its flag form.
func TestPipelineSeedMaxComputeIsTheFlagsJob(t *testing.T) {
	fileOpts, warns, err := loadPipelineFile(filepath.Join(examplesDir, "flink-cdc-maxcompute.yaml"), mapEnv(nil), nil)
	require.NoError(t, err)
	require.Len(t, warns, 2, "plain-text password and access key are flagged: %v", warns)
	for _, w := range warns {
		require.Contains(t, w, "plain text")
		require.NotContains(t, w, ": pass", "a warning never shows the secret")
		require.NotContains(t, w, "sk\n")
	}
	flagOpts := flagOptions(t, []string{
		"--sources", `adb.\.*, bdb.user_table_[0-9]+, [app|web].order_\.*`,
		"--mysql", "127.0.0.1:3306", "--mysql-user", "admin", "--server-id", "5401",
		"--sink", "maxcompute", "--maxcompute-access-id", "ak", "--maxcompute-endpoint", "endpoint",
		"--maxcompute-project", "flink_cdc", "--maxcompute-buckets", "8",
		"--name", "MySQL to MaxCompute Pipeline", "--readers", "2",
	})
	t.Setenv(envMySQLPassword, "pass")
	t.Setenv("MAXCOMPUTE_ACCESS_KEY", "sk")

	// The seed's endpoint is a placeholder, so both forms fail the same way
	// at preparation ...
	_, ferr := prepare(fileOpts, quietLog(), io.Discard)
	_, gerr := prepare(flagOpts, quietLog(), io.Discard)
	require.ErrorContains(t, ferr, `endpoint "endpoint" is not an http(s) URL`)
	require.Equal(t, gerr.Error(), ferr.Error())

	// ... and resolve to the same MaxCompute configuration and source.
	fmc, err := resolveMaxCompute(fileOpts)
	require.NoError(t, err)
	gmc, err := resolveMaxCompute(flagOpts)
	require.NoError(t, err)
	require.Equal(t, gmc, fmc)
	require.Equal(t, "sk", fmc.AccessKey)
	require.Equal(t, 8, fmc.BucketsNum)
	fpw, err := secret(fileOpts.mysqlPasswordFile, fileOpts.mysqlPassword, envMySQLPassword, "MySQL")
	require.NoError(t, err)
	require.Equal(t, "pass", fpw)

	// With a real endpoint both prepare into the same job.
	fileOpts.mcEndpoint, flagOpts.mcEndpoint = "http://127.0.0.1:1/api", "http://127.0.0.1:1/api"
	fj, err := prepare(fileOpts, quietLog(), io.Discard)
	require.NoError(t, err)
	gj, err := prepare(flagOpts, quietLog(), io.Discard)
	require.NoError(t, err)
	require.Equal(t, viewJob(gj), viewJob(fj))
	require.Len(t, fj.pats, 3, "three Flink table patterns")
	require.True(t, fj.pats[2].matches(change.TableID{Database: "a", Table: "order_1"}), "[app|web] is a character class in Flink too")
	require.True(t, fj.pats[0].matches(change.TableID{Database: "adb", Table: "anything"}))
}

var tutorialEnv = map[string]string{
	"MYSQL_HOST": "127.0.0.1", "MYSQL_PORT": "3307", "DORIS_FE": "127.0.0.1:8030", "DORIS_QUERY": "127.0.0.1:9030",
	envMySQLPassword: "my-source-secret", envDorisPassword: "my-doris-secret",
	"MAXCOMPUTE_ENDPOINT": "http://127.0.0.1:1/api", "MAXCOMPUTE_PROJECT": "proj",
	"MAXCOMPUTE_ACCESS_ID": "id", "MAXCOMPUTE_ACCESS_KEY": "mc-secret",
}

// TestPipelineTutorialFilesAreTheirScripts checks that each tutorial
// pipeline file in examples/ is the same job as its flag script.
func TestPipelineTutorialFilesAreTheirScripts(t *testing.T) {
	for k, v := range tutorialEnv {
		t.Setenv(k, v)
	}
	for _, name := range []string{"tutorial-doris", "tutorial-maxcompute"} {
		t.Run(name, func(t *testing.T) {
			fileOpts, warns, err := loadPipelineFile(filepath.Join(examplesDir, name+".yaml"), mapEnv(tutorialEnv), nil)
			require.NoError(t, err)
			require.Empty(t, warns)
			fj, err := prepare(fileOpts, quietLog(), io.Discard)
			require.NoError(t, err)
			gj, err := prepare(flagOptions(t, scriptArgs(t, filepath.Join(examplesDir, name+".sh"), tutorialEnv)), quietLog(), io.Discard)
			require.NoError(t, err)
			require.Equal(t, viewJob(gj), viewJob(fj))
			require.Equal(t, "my-source-secret", fj.mysqlPW)
			routes, err := planJobRoutes(fj.pats, fj.rules, fj.target, []change.TableID{
				{Database: "emp_1", Table: "employees_1"}, {Database: "emp_2", Table: "employees_2"}, {Database: "emp_2", Table: "other"}})
			require.NoError(t, err)
			require.Len(t, routes, 1)
			require.Equal(t, "demo.all_employees_info", routes[0].target.String())
			require.Len(t, routes[0].shards, 2)
		})
	}
	fj, _, err := loadPipelineFile(filepath.Join(examplesDir, "tutorial-doris.yaml"), mapEnv(tutorialEnv), nil)
	require.NoError(t, err)
	j, err := prepare(fj, quietLog(), io.Discard)
	require.NoError(t, err)
	require.Equal(t, "my-doris-secret", j.dorisCfg.Password)
	require.Equal(t, "127.0.0.1:9030", j.dorisCfg.QueryAddr)
	require.Equal(t, map[string]string{"timeout": "600"}, j.dorisCfg.Headers)
	require.Equal(t, 1, j.dorisCfg.Replication)
	require.Equal(t, "doris_demo_emp_001", j.dorisCfg.LabelPrefix)
	require.Equal(t, uint32(5400), j.opts.serverID)
}

func TestPipelineKeyErrors(t *testing.T) {
	base := "source:\n  type: mysql\n  hostname: h\n  tables: a.b\nsink:\n  type: doris\n  fenodes: f:8030\n"
	tests := []struct {
		name, yaml string
		env        map[string]string
		want       []string // all in the error
	}{
		{"misspelt sink key", base + "  sink.lable-prefix: x\n", nil,
			[]string{"pipeline.yaml:8:", `unknown key "sink.lable-prefix" in sink: (doris)`, `did you mean "sink.label-prefix"`}},
		{"misspelt source key", strings.Replace(base, "hostname", "hostnme", 1), nil,
			[]string{"pipeline.yaml:3:", `unknown key "hostnme"`, `did you mean "hostname"`}},
		{"misspelt section", base + "piepline:\n  name: x\n", nil,
			[]string{"pipeline.yaml:8:", `unknown key "piepline" at the top level`, `did you mean "pipeline"`}},
		{"misspelt pipeline key", base + "pipeline:\n  checkpoint-intreval: 1s\n", nil,
			[]string{`unknown key "checkpoint-intreval"`, `did you mean "checkpoint-interval"`}},
		{"misspelt route key", base + "route:\n  - source-table: a.b\n    sink-tabel: c.d\n", nil,
			[]string{"pipeline.yaml:10:", `unknown key "sink-tabel"`, `did you mean "sink-table"`}},
		{"unset variable", strings.Replace(base, "hostname: h", "hostname: ${NO_SUCH_HOST}", 1), nil,
			[]string{"pipeline.yaml:3:", "source.hostname", "${NO_SUCH_HOST} is not set"}},
		{"transform", base + "transform:\n  - source-table: a.b\n", nil, []string{"transform: is not supported"}},
		{"startup mode", base[:strings.Index(base, "sink:")] + "  scan.startup.mode: latest-offset\n" + base[strings.Index(base, "sink:"):], nil,
			[]string{`scan.startup.mode "latest-offset" is not supported`}},
		{"sink type", strings.Replace(base, "type: doris", "type: kafka", 1), nil, []string{`sink type "kafka" is not supported`}},
		{"bad value", base + "pipeline:\n  checkpoint-interval: soon\n", nil, []string{"pipeline.checkpoint-interval \"soon\"", "invalid"}},
		{"no sink", "source:\n  type: mysql\n", nil, []string{"sink: is missing"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := parsePipeline("pipeline.yaml", []byte(tc.yaml), mapEnv(tc.env))
			require.Error(t, err)
			require.ErrorAs(t, err, new(usageError), "a file error is a usage error (exit 2)")
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
}

func TestPipelineFlinkOnlyKeysWarnOnce(t *testing.T) {
	text := `source:
  type: mysql
  hostname: h
  tables: a.b
  password: ${PW}
  heartbeat.interval: 30s
  jdbc.properties.useSSL: "false"
sink:
  type: doris
  fenodes: f:8030
  password: hunter2-doris
  sink.enable-2pc: true
  sink.properties.format: json
  sink.properties.strict_mode: true
`
	o, warns, err := parsePipeline("p.yaml", []byte(text), mapEnv(map[string]string{"PW": "s3cr3t-from-env"}))
	require.NoError(t, err)
	require.Equal(t, "s3cr3t-from-env", o.mysqlPassword)
	require.Equal(t, "hunter2-doris", o.dorisPassword)
	require.Equal(t, map[string]string{"strict_mode": "true"}, o.dorisHeaders)
	joined := strings.Join(warns, "\n")
	require.Len(t, warns, 5, joined)
	for _, k := range []string{"p.yaml:6: source.heartbeat.interval", "p.yaml:7: source.jdbc.properties.useSSL", "p.yaml:11: sink.password is written in the file in plain text",
		"p.yaml:12: sink.sink.enable-2pc", "sink.properties.format: shardsync sets the format header itself"} {
		require.Contains(t, joined, k)
	}
	require.NotContains(t, joined, "hunter2-doris")
	require.NotContains(t, joined, "s3cr3t-from-env")
}

func TestPipelineFlagsOverrideFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`source:
  type: mysql
  hostname: 10.0.0.1
  tables: emp_[0-9]+.employees_[0-9]+
sink:
  type: doris
  fenodes: fe:8030
  sink.properties.timeout: 600
route:
  - source-table: emp_[0-9]+.employees_[0-9]+
    sink-table: demo.t
pipeline:
  checkpoint-interval: 10s
  http-addr: 127.0.0.1:9464
`), 0o600))
	var cliOpts jobOptions
	cli := pflag.NewFlagSet("cli", pflag.ContinueOnError)
	cliOpts.addFlags(cli)
	require.NoError(t, cli.Parse([]string{"--checkpoint-interval", "2s", "--doris-load-header", "strict_mode=true",
		"--route", "emp_[0-9]+.employees_[0-9]+=demo.other", "--mysql", "10.0.0.2:3306"}))
	o, _, err := loadPipelineFile(path, mapEnv(nil), cli)
	require.NoError(t, err)
	require.Equal(t, 2*time.Second, o.checkpointInterval, "the flag wins")
	require.Equal(t, "10.0.0.2:3306", o.mysqlAddr)
	require.Equal(t, "127.0.0.1:9464", o.httpAddr, "file values the flags do not touch stay")
	require.Equal(t, map[string]string{"timeout": "600", "strict_mode": "true"}, o.dorisHeaders, "map flags add to the file")
	require.Equal(t, []routeSpec{{Source: "emp_[0-9]+.employees_[0-9]+", Sink: "demo.other"}}, o.routes, "--route replaces the file's routes")
	require.Equal(t, "emp_[0-9]+.employees_[0-9]+", o.sources)
}

func TestPlanJobRoutesWithRules(t *testing.T) {
	pats, err := parsePatterns(`app_db.\.*, emp_[0-9]+.employees_[0-9]+`, "")
	require.NoError(t, err)
	rules, err := parseRouteRules([]routeSpec{
		{Source: `app_db.order_[0-9]+`, Sink: "ods.orders"},
		{Source: `app_db.\.*`, Sink: "ods.ods_<>", ReplaceSymbol: "<>"},
	}, "")
	require.NoError(t, err)
	shards := []change.TableID{tid("app_db", "order_1"), tid("app_db", "order_2"), tid("app_db", "products"),
		tid("app_db", "shipments"), tid("emp_1", "employees_1"), tid("emp_2", "employees_2"), tid("other", "x")}
	routes, err := planJobRoutes(pats, rules, nil, shards)
	require.NoError(t, err)
	got := map[string][]string{}
	var order []string
	for _, r := range routes {
		order = append(order, r.target.String())
		for _, s := range r.shards {
			got[r.target.String()] = append(got[r.target.String()], s.String())
		}
	}
	require.Equal(t, []string{"ods.orders", "ods.ods_products", "ods.ods_shipments", "emp.employees"}, order, "rules first, in rule order; unrouted shards get derived targets")
	require.Equal(t, []string{"app_db.order_1", "app_db.order_2"}, got["ods.orders"], "the first matching rule wins")
	require.Equal(t, []string{"emp_1.employees_1", "emp_2.employees_2"}, got["emp.employees"])
	require.True(t, routes[1].table.MatchString("products") && !routes[1].table.MatchString("shipments"),
		"a replace-symbol route takes only its own table name")

	_, err = parseRouteRules([]routeSpec{{Source: "nodot", Sink: "a.b"}}, "")
	require.ErrorContains(t, err, "must be db.table")
	_, err = parseRouteRules([]routeSpec{{Source: "a.b", Sink: "a.b.c"}}, "")
	require.ErrorContains(t, err, "must be database.table")
}

func TestConfigDocIsUpToDate(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, writeConfigDoc(&b, newRootCommand()))
	have, err := os.ReadFile(filepath.Join("../..", configDocPath))
	require.NoError(t, err)
	require.True(t, bytes.Equal(b.Bytes(), have),
		"%s is stale: run `go run ./cmd/shardsync docs config > %s` in the module root", configDocPath, configDocPath)
	for _, k := range pipelineKeys {
		require.Contains(t, b.String(), "| `"+k.Key+"` |", "every pipeline key is documented")
	}
}
