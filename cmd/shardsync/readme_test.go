package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReadmeQuickStart runs the README's quick start as written: the lines
// between the quickstart markers, in order. The package install is checked
// rather than run (the test machine has MariaDB); `go build -o shardsync`
// builds into a temporary directory instead of the checkout, and
// `./shardsync` runs that binary.
func TestReadmeQuickStart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo (about 10s)")
	}
	b, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	_, block, ok := strings.Cut(string(b), "<!-- quickstart:begin -->")
	require.True(t, ok, "README has a quickstart block")
	block, _, ok = strings.Cut(block, "<!-- quickstart:end -->")
	require.True(t, ok)
	var lines []string
	for _, l := range strings.Split(block, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "```") {
			lines = append(lines, l)
		}
	}
	require.Equal(t, []string{
		"sudo apt-get install -y mariadb-server",
		"go build -o shardsync ./cmd/shardsync",
		"./shardsync demo",
	}, lines, "the quick start changed: update this test to run the new lines")

	_, err = os.Stat("/usr/sbin/mariadbd")
	require.NoError(t, err, "line 1 installs mariadb-server")
	bin := filepath.Join(t.TempDir(), "shardsync")
	build := exec.Command("go", strings.Fields(strings.Replace(strings.TrimPrefix(lines[1], "go "), "-o shardsync", "-o "+bin, 1))...)
	build.Dir = "../.."
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	demo := exec.CommandContext(t.Context(), bin, strings.Fields(strings.TrimPrefix(lines[2], "./shardsync "))...)
	demo.WaitDelay = 5 * time.Second
	out, err = demo.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "Done: 116 rows merged from 4 shards, then 3 deletes and 1 update followed exactly once")
}
