package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReadmeQuickStart runs the README's first command as written (the
// lines between the quickstart markers): the demo script, which installs
// mariadb-server when missing, builds shardsync and runs the tutorial.
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
	require.Equal(t, []string{"./scripts/demo"}, lines, "the quick start changed: update this test to run the new lines")
	demo := exec.CommandContext(t.Context(), "bash", "-c", lines[0])
	demo.Dir = "../.."
	demo.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	demo.WaitDelay = 5 * time.Second
	out, err := demo.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "Done: 116 rows merged from 4 shards, then 3 deletes and 1 update followed exactly once")
}
