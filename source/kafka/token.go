package kafka

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/shardsync/shardsync/change"
)

// ErrBadToken: a resume token is not one this source made for these routes.
var ErrBadToken = errors.New("unusable kafka resume token")

// tokenState is what a resume token holds. Offsets are per partition the
// first offset not yet applied or deliberately dropped: opening the source
// from the token re-reads everything from there.
type tokenState struct {
	Version int    `json:"v"`
	Source  string `json:"source"` // "kafka"
	Routes  string `json:"routes"`
	// Mode is "tidb" once a message with the TiDB extension was seen,
	// "plain" once one without it was, "" before any change.
	Mode string `json:"mode,omitempty"`
	// Released (mode tidb): every change with commitTs < Released has been
	// applied (or was a re-send of an applied one). A message below it read
	// again is a TiCDC re-send and is dropped.
	Released uint64      `json:"released,omitempty"`
	Parts    []partToken `json:"parts"`
	// Shards are the schemas learnt from messages, in registration order,
	// so that a resumed stream rebuilds the same targets.
	Shards []shardToken `json:"shards,omitempty"`
}

type partToken struct {
	Topic     string `json:"t"`
	Partition int32  `json:"p"`
	Offset    int64  `json:"o"`
}

type shardToken struct {
	DB    string      `json:"db"`
	Table string      `json:"table"`
	Cols  [][2]string `json:"cols"` // name, mysqlType
	Key   []string    `json:"key"`
}

func parseToken(tok change.Token, routes string) (*tokenState, error) {
	var st tokenState
	if err := json.Unmarshal(tok, &st); err != nil {
		return nil, fmt.Errorf("%w: it is not a shardsync source token: %w", ErrBadToken, err)
	}
	if st.Source != "kafka" || st.Version != 1 {
		return nil, fmt.Errorf("%w: the ledger's resume position was not made by the Kafka source (source %q, version %d): use another ledger for this job", ErrBadToken, st.Source, st.Version)
	}
	if st.Routes != routes {
		return nil, fmt.Errorf("%w: the token was made with other routes or metadata column names; changing routes needs a new ledger and label prefix", ErrBadToken)
	}
	return &st, nil
}

// TokenInfo is what a Kafka resume token says, for status displays.
type TokenInfo struct {
	Mode     string
	Released uint64
	Offsets  map[string]int64 // "topic/partition" → next offset
}

// DescribeToken decodes a token made by a Source; it fails with ErrBadToken
// for any other token.
func DescribeToken(tok change.Token) (TokenInfo, error) {
	var st tokenState
	if err := json.Unmarshal(tok, &st); err != nil || st.Source != "kafka" {
		return TokenInfo{}, fmt.Errorf("%w: not a Kafka source token", ErrBadToken)
	}
	info := TokenInfo{Mode: st.Mode, Released: st.Released, Offsets: map[string]int64{}}
	for _, p := range st.Parts {
		info.Offsets[fmt.Sprintf("%s/%d", p.Topic, p.Partition)] = p.Offset
	}
	return info, nil
}
