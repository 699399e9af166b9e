package maxcompute

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sync"
)

// spool keeps, in a temporary file, every body sent to one upsert session,
// so that a re-opened session can be given the same records in the same
// order. The file is created on the first body and removed by close.
type spool struct {
	dir string

	mu sync.Mutex
	f  *os.File
	n  int
}

// add appends one sent body.
func (s *spool) add(bucket int, enc string, count int64, body []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		f, err := os.CreateTemp(s.dir, "shardsync-mc-spool-*")
		if err != nil {
			return err
		}
		s.f = f
	}
	var hdr [4 + 8 + 2 + 4]byte
	binary.BigEndian.PutUint32(hdr[0:], uint32(bucket))
	binary.BigEndian.PutUint64(hdr[4:], uint64(count))
	binary.BigEndian.PutUint16(hdr[12:], uint16(len(enc)))
	binary.BigEndian.PutUint32(hdr[14:], uint32(len(body)))
	for _, b := range [][]byte{hdr[:], []byte(enc), body} {
		if _, err := s.f.Write(b); err != nil {
			return err
		}
	}
	s.n++
	return nil
}

// each calls fn for every body added, in order.
func (s *spool) each(fn func(bucket int, enc string, count int64, body []byte) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	defer func() { _, _ = s.f.Seek(0, io.SeekEnd) }()
	r := bufio.NewReader(s.f)
	for i := 0; i < s.n; i++ {
		var hdr [18]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return fmt.Errorf("reading spool entry %d: %w", i, err)
		}
		enc := make([]byte, binary.BigEndian.Uint16(hdr[12:]))
		body := make([]byte, binary.BigEndian.Uint32(hdr[14:]))
		if _, err := io.ReadFull(r, enc); err != nil {
			return fmt.Errorf("reading spool entry %d: %w", i, err)
		}
		if _, err := io.ReadFull(r, body); err != nil {
			return fmt.Errorf("reading spool entry %d: %w", i, err)
		}
		if err := fn(int(binary.BigEndian.Uint32(hdr[0:])), string(enc), int64(binary.BigEndian.Uint64(hdr[4:])), body); err != nil {
			return err
		}
	}
	return nil
}

// close removes the file; the spool is empty afterwards.
func (s *spool) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil {
		name := s.f.Name()
		_ = s.f.Close()
		_ = os.Remove(name)
		s.f, s.n = nil, 0
	}
}
