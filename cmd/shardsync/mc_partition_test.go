package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardsync/shardsync/testenv"
	"github.com/shardsync/shardsync/testenv/mcemu"
)

// A pipeline file whose MaxCompute target is partitioned by a source column
// (gender) in a project with the schema model: the job creates
// project.demo.all_employees_info partitioned by gender, and an update that
// changes a row's gender moves the row between partitions.
func TestJobMaxComputePartitionedPipelineFile(t *testing.T) {
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{})
	require.NoError(t, m.Exec(testenv.TutorialSQL))
	memu := mcemu.New(mcemu.Options{SchemaModel: true})
	t.Cleanup(memu.Close)
	dir := t.TempDir()
	pipeline := filepath.Join(dir, "pipeline.yaml")
	require.NoError(t, os.WriteFile(pipeline, []byte(fmt.Sprintf(`source:
  type: mysql
  hostname: %s
  port: %d
  tables: emp_[0-9]+.employees_[0-9]+
sink:
  type: maxcompute
  endpoint: %s
  project: %s
  access-id: %s
  access-key: ${MC_KEY}
  buckets-num: 4
  partition: gender
route:
  - source-table: emp_[0-9]+.employees_[0-9]+
    sink-table: demo.all_employees_info
pipeline:
  checkpoint-interval: 300ms
  ledger: %s
`, m.Host(), m.Port(), memu.Endpoint(), memu.Project(), memu.AccessID(), filepath.Join(dir, "job.ledger"))), 0o600))
	getenv := func(k string) (string, bool) {
		if k == "MC_KEY" {
			return memu.AccessKey(), true
		}
		return "", false
	}
	opts, _, err := loadPipelineFile(pipeline, getenv, nil)
	require.NoError(t, err)
	var out lockedBuffer
	j, err := prepare(opts, slog.New(slog.NewTextHandler(&out, nil)), &out)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- j.run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	// gender of emp_no 10001 per partition, and the row count
	where := func() (string, int) {
		g, n := "", 0
		for _, r := range memu.Rows("demo.all_employees_info") {
			n++
			if fmt.Sprint(r[2]) == "10001" && fmt.Sprint(r[0]) == "emp_1" {
				g += fmt.Sprint(r[len(r)-1])
			}
		}
		return g, n
	}
	require.Eventually(t, func() bool { g, n := where(); return g == "M" && n == testenv.TutorialRows },
		60*time.Second, 200*time.Millisecond, "log:\n%s", &out)
	ti, ok := memu.Table("demo.all_employees_info")
	require.True(t, ok)
	require.Equal(t, []mcemu.Column{{Name: "gender", Type: "STRING"}}, ti.Partitions)
	require.ElementsMatch(t, []string{"gender=F", "gender=M"}, memu.Partitions("demo.all_employees_info"))

	require.NoError(t, m.Exec("UPDATE emp_1.employees_1 SET gender='F' WHERE emp_no=10001"))
	require.Eventually(t, func() bool { g, n := where(); return g == "F" && n == testenv.TutorialRows },
		30*time.Second, 200*time.Millisecond, "the row moved to gender=F and left gender=M; log:\n%s", &out)
}
