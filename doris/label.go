package doris

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strconv"
	"strings"

	"github.com/shardsync/shardsync/change"
)

// MaxLabelLen is Doris's label length limit (FeNameFormat.LABEL_REGEX).
const MaxLabelLen = 128

// LabelRE is the pattern every Doris label must match.
var LabelRE = regexp.MustCompile(`^[-_A-Za-z0-9:]{1,128}$`)

var plainName = regexp.MustCompile(`^[-_A-Za-z0-9]+$`)

// Label returns the Stream Load label of target's transaction in epoch.
//
// The readable form is "{prefix}_{db}:{table}_{epoch}". It is used when db
// and table only hold [-_A-Za-z0-9] and the whole fits in 128 characters;
// since the prefix and db cannot contain ':' and the epoch is the digits
// after the last '_', the label names (target, epoch) unambiguously for a
// fixed prefix. Otherwise the form is "{prefix}_{hint}_{hash}_{epoch}" where
// hint is a sanitised, shortened db_table (for humans) and hash is 80 bits
// of SHA-256 over db and table; it has no ':' so it never equals a readable
// label. Epochs are never reused, so labels are never reused.
//
// prefix must match [-_A-Za-z0-9]{1,97}: the configured prefix (at most 64,
// checked by Config.Validate), optionally followed by "_" and the ledger id.
func Label(prefix string, target change.TableID, epoch uint64) string {
	ep := strconv.FormatUint(epoch, 10)
	if plainName.MatchString(target.Database) && plainName.MatchString(target.Table) {
		l := prefix + "_" + target.Database + ":" + target.Table + "_" + ep
		if len(l) <= MaxLabelLen {
			return l
		}
	}
	sum := sha256.Sum256([]byte(target.Database + "\x00" + target.Table))
	h := hex.EncodeToString(sum[:10])
	room := MaxLabelLen - len(prefix) - len(h) - len(ep) - 3
	hint := sanitize(target.Database + "_" + target.Table)
	if len(hint) > room {
		hint = hint[:max(room, 0)]
	}
	if hint == "" {
		return prefix + "_" + h + "_" + ep
	}
	return prefix + "_" + hint + "_" + h + "_" + ep
}

// sanitize replaces every character outside [-_A-Za-z0-9] by '_'.
func sanitize(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}
