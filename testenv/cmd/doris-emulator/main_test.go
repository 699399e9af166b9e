package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRunRejectsBadOptions(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run([]string{"-doris-version", "9.9", "-fe-http-port", "0", "-be-http-port", "0", "-query-port", "0"}, &out, &errOut)
	require.ErrorContains(t, err, `unsupported Version "9.9"`)
	require.Empty(t, out.String())
	err = run([]string{"-fe-host", "10.0.0.1"}, &out, &errOut)
	require.ErrorContains(t, err, "not a loopback IP")
}
