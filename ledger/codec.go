package ledger

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/shardsync/shardsync/change"
)

// formatVersion is the version of every record this package writes. A
// record with another version is reported as damage (or as written by a
// newer shardsync), never guessed at.
const formatVersion = 1

// epochKey encodes an epoch number big-endian so that bbolt's byte order is
// epoch order.
func epochKey(n uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], n)
	return k[:]
}

func decodeEpochKey(k []byte) (uint64, error) {
	if len(k) != 8 {
		return 0, fmt.Errorf("epoch key %x has %d bytes, want 8", k, len(k))
	}
	return binary.BigEndian.Uint64(k), nil
}

type epochRecord struct {
	V int `json:"v"`
	Epoch
}

func encodeEpoch(e Epoch) ([]byte, error) {
	b, err := json.Marshal(epochRecord{V: formatVersion, Epoch: e})
	if err != nil {
		return nil, fmt.Errorf("encoding epoch %d: %w", e.Number, err)
	}
	return b, nil
}

// decodeEpoch decodes and validates one epoch record. Any failure is a
// description of the damage, for ErrDamaged.
func decodeEpoch(b []byte) (Epoch, error) {
	var r epochRecord
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Epoch{}, fmt.Errorf("decoding epoch record: %w", err)
	}
	if dec.More() {
		return Epoch{}, fmt.Errorf("decoding epoch record: trailing data after the record")
	}
	if r.V != formatVersion {
		return Epoch{}, fmt.Errorf("epoch record has format version %d, this shardsync reads %d", r.V, formatVersion)
	}
	e := r.Epoch
	if !e.State.valid() {
		return Epoch{}, fmt.Errorf("epoch %d has invalid state %d", e.Number, uint8(e.State))
	}
	for i, t := range append(append([]SinkTxn(nil), e.Intents...), e.Prepared...) {
		if t.Sink == "" || t.Label == "" {
			return Epoch{}, fmt.Errorf("epoch %d transaction %d lacks sink or label", e.Number, i)
		}
	}
	if (e.State == StateOpen) && len(e.Prepared) > 0 {
		return Epoch{}, fmt.Errorf("epoch %d is OPEN but lists prepared transactions", e.Number)
	}
	return e, nil
}

type resumeRecord struct {
	V       int          `json:"v"`
	Token   change.Token `json:"token"`
	Epoch   uint64       `json:"epoch"` // the epoch that set it; 0 for none
	Updated time.Time    `json:"updated"`
}

func encodeResume(r resumeRecord) ([]byte, error) {
	r.V = formatVersion
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encoding resume position: %w", err)
	}
	return b, nil
}

func decodeResume(b []byte) (resumeRecord, error) {
	var r resumeRecord
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return resumeRecord{}, fmt.Errorf("decoding resume record: %w", err)
	}
	if r.V != formatVersion {
		return resumeRecord{}, fmt.Errorf("resume record has format version %d, this shardsync reads %d", r.V, formatVersion)
	}
	return r, nil
}
