package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWithNotesKeepsHandWrittenSection(t *testing.T) {
	doc := "# results\n\n| a |\n"
	old := "# results\n\n| old |\n\n" + notesHeading + " (notes)\n\n- GC is 10 %\n"
	require.Equal(t, "# results\n\n| a |\n\n"+notesHeading+" (notes)\n\n- GC is 10 %\n", withNotes(doc, old))
	require.Equal(t, doc, withNotes(doc, "# results\n\n| old |\n"))
	require.Equal(t, doc, withNotes(doc, ""))
}
