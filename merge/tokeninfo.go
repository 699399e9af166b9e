package merge

import (
	"github.com/shardsync/shardsync/change"
)

// TokenInfo is what a resume token says, for status displays (`shardsync
// status` of a stopped job). The token itself stays opaque.
type TokenInfo struct {
	Flavor       string          // "mariadb" or "mysql"
	Position     string          // the binlog position reading resumes at
	SnapshotDone bool            // the snapshot phase is over
	Tables       []TableProgress // snapshot progress of the tables the token still tracks (Target unset)
}

// DescribeToken decodes a token made by a Source. It fails with ErrBadToken
// when tok is not one.
func DescribeToken(tok change.Token) (TokenInfo, error) {
	st, err := parseToken(tok)
	if err != nil {
		return TokenInfo{}, err
	}
	info := TokenInfo{Flavor: st.Flavor, Position: st.Pos.String(), SnapshotDone: st.SnapshotDone}
	for _, t := range st.Tables {
		info.Tables = append(info.Tables, TableProgress{Table: t.id(), Rows: t.Rows, Chunks: len(t.Chunks),
			Whole: t.Whole, Done: t.Done || st.SnapshotDone})
	}
	return info, nil
}
