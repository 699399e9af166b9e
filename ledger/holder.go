package ledger

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// holderPath is the sidecar file naming the process that holds the ledger.
// bbolt's flock does not say who holds it, and a locked bbolt file cannot be
// read by a second process, so the holder is written beside it.
func holderPath(path string) string { return path + ".holder" }

func writeHolder(path string, h Holder) error {
	b, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("encoding ledger holder: %w", err)
	}
	tmp := holderPath(path) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("writing ledger holder file %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, holderPath(path)); err != nil {
		return fmt.Errorf("writing ledger holder file %s: %w", holderPath(path), err)
	}
	return nil
}

// readHolder returns the recorded holder; a missing or unreadable sidecar
// (e.g. the holder was killed before writing it) yields an error.
func readHolder(path string) (Holder, error) {
	b, err := os.ReadFile(holderPath(path))
	if err != nil {
		return Holder{}, err
	}
	var h Holder
	if err := json.Unmarshal(b, &h); err != nil {
		return Holder{}, fmt.Errorf("decoding %s: %w", holderPath(path), err)
	}
	return h, nil
}

// removeHolder removes the sidecar if it still names h.
func removeHolder(path string, h Holder) {
	if cur, err := readHolder(path); err == nil && cur == h {
		_ = os.Remove(holderPath(path))
	}
}

func lockedError(path string) error {
	h, err := readHolder(path)
	if err != nil {
		who := "holder unknown"
		if !errors.Is(err, os.ErrNotExist) {
			who = fmt.Sprintf("holder unknown: %v", err)
		}
		return fmt.Errorf("ledger %s is locked by another process (%s): %w; only one shardsync may use a ledger; stop the other one or give this one its own --ledger",
			path, who, ErrLocked)
	}
	return fmt.Errorf("ledger %s is locked by %s: %w; only one shardsync may use a ledger; stop that process or give this one its own --ledger",
		path, h, ErrLocked)
}
