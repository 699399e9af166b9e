package doris

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	mysqlclient "github.com/go-mysql-org/go-mysql/client"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/twopc"
)

// ClaimsTable is the table, in each target's database, where the sink
// records which ledger writes a target: one row per (target table, label
// prefix), Unique Key, written by a Stream Load like any other row. Doris
// has no free-form table properties (ALTER TABLE SET rejects unknown
// keys), so the record is data, read back over the FE's MySQL port.
const ClaimsTable = "shardsync_claims"

var _ twopc.Claimer = (*Sink)(nil)

// claim is one row of ClaimsTable.
type claim struct {
	ledgerID   string
	generation int64
	holder     string
	claimedAt  string
}

var claimSchema = change.Schema{
	Columns: []change.Column{
		{Name: "target_table", Type: change.Type{Kind: change.KindString, Length: 256}},
		{Name: "label_prefix", Type: change.Type{Kind: change.KindString, Length: 64}},
		{Name: "ledger_id", Type: change.Type{Kind: change.KindString, Length: 64}, Nullable: true},
		{Name: "generation", Type: change.Type{Kind: change.KindInt}, Nullable: true},
		{Name: "holder", Type: change.Type{Kind: change.KindString, Length: 512}, Nullable: true},
		{Name: "claimed_at", Type: change.Type{Kind: change.KindDateTime}, Nullable: true},
	},
	Key: []string{"target_table", "label_prefix"},
}

// ClaimTargets implements twopc.Claimer: for each target it reads the
// claim of this label prefix from ClaimsTable in the target's database and
// records the owner's ledger where the target is free (missing, empty and
// unclaimed, or holding rows of a pre-id ledger that o.Adopt says is this
// one). A claim by another ledger (even of an empty target: that job may be
// running and not have loaded yet), or unclaimed rows, fail with one error wrapping
// twopc.ErrForeignTarget that lists every such target and the choices;
// with o.Recreate and o.Fresh such a target is emptied (TRUNCATE TABLE:
// its definition stays) and claimed. Two jobs racing for the same free
// target are told apart by Doris's label rule: the claim's label is the
// same for both, so the second load answers "Label Already Exists".
//
// Failure: an error before a TRUNCATE leaves the targets untouched; an
// error after one leaves that target empty and unclaimed, and the next
// start (with the same flag) empties and claims it again. Without a query
// address (Config.QueryAddr) nothing can be read back: the check is
// skipped with a warning.
func (s *Sink) ClaimTargets(ctx context.Context, targets []change.TableID, o twopc.Owner) error {
	if o.LedgerID == "" {
		return errors.New("doris: claiming targets needs the ledger id")
	}
	if s.cfg.QueryAddr == "" {
		s.log.Warn("doris targets cannot be checked for rows of another ledger without a query address (--doris-query); a new ledger pointed at a filled target would load over it")
		return nil
	}
	var foreign []string
	seen := map[change.TableID]bool{}
	for _, id := range targets {
		if seen[id] {
			continue
		}
		seen[id] = true
		why, err := s.claimTarget(ctx, id, o)
		if err != nil {
			return fmt.Errorf("checking which ledger writes doris target %s: %w", id, err)
		}
		if why != "" {
			foreign = append(foreign, why)
		}
	}
	if len(foreign) == 0 {
		return nil
	}
	choices := "Restore the ledger file that wrote them (--ledger) and start again; or start with --recreate-target " +
		"and a new ledger to empty these targets (TRUNCATE TABLE, the definition stays) and snapshot them again; " +
		"if another job is running with this label prefix, stop it or give this job its own --label-prefix"
	if o.Recreate && !o.Fresh {
		choices = "--recreate-target was given, but ledger " + o.LedgerID + " has already committed data, so the sources " +
			"would not be read again from the beginning: start with a new --ledger file and --recreate-target, or restore " +
			"the ledger file that wrote these targets"
	}
	return fmt.Errorf("doris label prefix %s, ledger %s: %s. Loading on would snapshot over these rows and keep the rows deleted at the source meanwhile. %s: %w",
		s.cfg.LabelPrefix, o.LedgerID, strings.Join(foreign, "; "), choices, twopc.ErrForeignTarget)
}

// claimTarget settles one target; why is non-empty when it is foreign.
func (s *Sink) claimTarget(ctx context.Context, id change.TableID, o twopc.Owner) (why string, err error) {
	log := s.log.With("target", id.String())
	claims := change.TableID{Database: id.Database, Table: ClaimsTable}
	if err := s.exec(ctx, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(id.Database), s.claimsDDL(claims)); err != nil {
		return "", fmt.Errorf("creating %s: %w", claims, err)
	}
	cur, found, err := s.readClaim(ctx, claims, id.Table)
	if err != nil {
		return "", err
	}
	if found && cur.ledgerID == o.LedgerID {
		return "", nil
	}
	info, err := s.c.describe(ctx, id)
	if err != nil {
		return "", err
	}
	hasRows := false
	if info.exists {
		if hasRows, err = s.hasRows(ctx, id); err != nil {
			return "", err
		}
	}
	switch {
	case found && info.exists && !hasRows && !(o.Recreate && o.Fresh):
		// Empty but claimed by another ledger: that job may be running and
		// not have loaded its first rows yet; two jobs loading one target
		// would each snapshot over the other.
		return fmt.Sprintf("target %s is empty but claimed by ledger %s (claimed %s by %s), which may be a job still running that has not loaded rows yet",
			id, cur.ledgerID, cur.claimedAt, cur.holder), nil
	case found && !info.exists:
		// The target was dropped: nobody's rows are left to protect.
		log.Warn("doris target does not exist but was claimed by another ledger; claiming it for this ledger",
			"previous_ledger", cur.ledgerID, "ledger", o.LedgerID)
	case !hasRows:
		// Missing, or empty and unclaimed: nothing of anyone's can be
		// overwritten.
	case !found && o.Share != "":
		log.Info("doris target holds rows and no claim of this label prefix; joining it as one more job of a split assignment (its rows are the other jobs')",
			"ledger", o.LedgerID, "label_prefix", o.Share)
	case !found && o.Adopt:
		log.Info("doris target holds rows and no ledger claim; adopting it for this ledger, which was written by a shardsync from before ledger ids",
			"ledger", o.LedgerID)
	case o.Recreate && o.Fresh:
		if err := s.exec(ctx, fmt.Sprintf("TRUNCATE TABLE %s.%s", quoteIdent(id.Database), quoteIdent(id.Table))); err != nil {
			return "", fmt.Errorf("emptying %s for --recreate-target: %w", id, err)
		}
		log.Warn("doris target emptied (--recreate-target): it held rows of another ledger and is snapshotted again",
			"previous_ledger", cur.ledgerID, "ledger", o.LedgerID)
	case found:
		return fmt.Sprintf("target %s holds rows written under ledger %s (claimed %s by %s)", id, cur.ledgerID, cur.claimedAt, cur.holder), nil
	default:
		return fmt.Sprintf("target %s holds rows that no ledger of this label prefix claimed (an earlier job whose ledger was lost, or another writer)", id), nil
	}
	holder := o.Holder
	if len(holder) > 500 {
		holder = strings.ToValidUTF8(holder[:500], "")
	}
	next := claim{ledgerID: o.LedgerID, generation: cur.generation + 1, holder: holder, claimedAt: time.Now().UTC().Format(time.DateTime)}
	won, err := s.writeClaim(ctx, claims, id.Table, next)
	if err != nil {
		return "", err
	}
	if !won {
		other, seen, err := s.readClaim(ctx, claims, id.Table)
		if err != nil {
			return "", err
		}
		who := "another job (its claim is not visible yet)"
		if seen {
			who = fmt.Sprintf("ledger %s (%s)", other.ledgerID, other.holder)
		}
		return fmt.Sprintf("target %s was claimed at the same moment by %s", id, who), nil
	}
	log.Info("doris target claimed for this ledger", "ledger", o.LedgerID, "generation", next.generation)
	return "", nil
}

func (s *Sink) claimsDDL(claims change.TableID) string {
	ddl := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s (\n"+
		"  `target_table` VARCHAR(256) NOT NULL,\n  `label_prefix` VARCHAR(64) NOT NULL,\n"+
		"  `ledger_id` VARCHAR(64) NULL,\n  `generation` BIGINT NULL,\n  `holder` VARCHAR(512) NULL,\n  `claimed_at` DATETIME NULL\n"+
		") UNIQUE KEY(`target_table`, `label_prefix`)\nCOMMENT 'which shardsync ledger writes each target'\n"+
		"DISTRIBUTED BY HASH(`target_table`) BUCKETS 1", quoteIdent(claims.Database), quoteIdent(claims.Table))
	if s.cfg.Replication > 0 {
		ddl += fmt.Sprintf("\nPROPERTIES (\"replication_num\" = \"%d\")", s.cfg.Replication)
	}
	return ddl
}

// readClaim reads the claim of table under this sink's label prefix.
func (s *Sink) readClaim(ctx context.Context, claims change.TableID, table string) (claim, bool, error) {
	q := fmt.Sprintf("SELECT `ledger_id`, `generation`, `holder`, `claimed_at` FROM %s.%s WHERE `target_table` = %s AND `label_prefix` = %s",
		quoteIdent(claims.Database), quoteIdent(claims.Table), quoteString(table), quoteString(s.cfg.LabelPrefix))
	rows, err := s.query(ctx, q)
	if err != nil {
		return claim{}, false, fmt.Errorf("reading %s: %w", claims, err)
	}
	if len(rows) == 0 {
		return claim{}, false, nil
	}
	r := rows[0]
	c := claim{ledgerID: r[0], holder: r[2], claimedAt: r[3]}
	if r[1] != "" {
		if c.generation, err = strconv.ParseInt(r[1], 10, 64); err != nil {
			return claim{}, false, fmt.Errorf("reading %s: generation %q is not a number", claims, r[1])
		}
	}
	return c, true, nil
}

func (s *Sink) hasRows(ctx context.Context, id change.TableID) (bool, error) {
	rows, err := s.query(ctx, fmt.Sprintf("SELECT * FROM %s.%s LIMIT 1", quoteIdent(id.Database), quoteIdent(id.Table)))
	if err != nil {
		return false, fmt.Errorf("looking for rows in %s: %w", id, err)
	}
	return len(rows) > 0, nil
}

// claimLabel is the label of the load that writes generation gen of the
// claim of table: the same for every job of this label prefix, so that
// Doris lets only one of them write it.
func (s *Sink) claimLabel(db, table string, gen int64) string {
	sum := sha256.Sum256([]byte(db + "\x00" + table))
	return s.cfg.LabelPrefix + "_claim_" + hex.EncodeToString(sum[:10]) + "_" + strconv.FormatInt(gen, 10)
}

// writeClaim loads c (two-phase, then commits it). won is false when the
// label was taken: another job wrote this generation first.
func (s *Sink) writeClaim(ctx context.Context, claims change.TableID, table string, c claim) (won bool, err error) {
	label := s.claimLabel(claims.Database, table, c.generation)
	enc, err := newEncoder(claimSchema, nil, claimSchema.Key, true)
	if err != nil {
		return false, err
	}
	st, err := s.c.startLoad(ctx, claims, label, enc, 4096)
	if err != nil {
		return false, fmt.Errorf("writing claim %s: %w", label, err)
	}
	row := change.Row{Op: change.Insert, Target: claims, After: []change.Value{
		table, s.cfg.LabelPrefix, c.ledgerID, c.generation, c.holder, change.DateTime(c.claimedAt)}}
	if err := st.write(ctx, []change.Row{row}); err != nil {
		return false, fmt.Errorf("writing claim %s: %w", label, err)
	}
	if err := st.finish(ctx); err != nil {
		if st.err == nil && (st.verdict.Class == ClassLabelExists || st.verdict.Class == ClassAlreadyDone) {
			return false, nil
		}
		return false, fmt.Errorf("writing claim %s: %w", label, err)
	}
	if r := st.verdict.Load; r == nil || r.NumberLoadedRows != 1 {
		_, _ = s.Abort(ctx, twopc.Prepared{Sink: Name, Target: claims, Label: label, TxnID: strconv.FormatInt(st.verdict.TxnID, 10)})
		return false, fmt.Errorf("writing claim %s: doris did not load the claim row: %s", label, st.verdict)
	}
	v, err := s.c.twoPC(ctx, OpCommit, claims.Database, st.verdict.TxnID, "")
	if err != nil {
		return false, fmt.Errorf("committing claim %s: %w", label, err)
	}
	if v.Class != ClassSuccess && v.Class != ClassAlreadyDone {
		return false, fmt.Errorf("committing claim %s: %s", label, v)
	}
	return true, nil
}

// query runs a SELECT over the FE's MySQL port; NULL reads as "".
func (s *Sink) query(ctx context.Context, q string) ([][]string, error) {
	conn, err := mysqlclient.ConnectWithContext(ctx, s.cfg.QueryAddr, s.cfg.User, s.cfg.Password, "", s.cfg.RequestTimeout)
	if err != nil {
		return nil, fmt.Errorf("connecting to doris query port %s as %s: %w", s.cfg.QueryAddr, s.cfg.User, scrub(err, s.cfg.Password))
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	r, err := conn.Execute(q)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("running %q: %w", firstLine(q), err)
	}
	defer r.Close()
	var out [][]string
	for i := range r.Values {
		row := make([]string, len(r.Values[i]))
		for j := range row {
			row[j], _ = r.GetString(i, j)
		}
		out = append(out, row)
	}
	return slices.Clip(out), nil
}
